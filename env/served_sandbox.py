"""A sandbox with OSWorld's VM server running inside it: what one benchmark worker owns.

The server is one more program of the sandbox, so what a request executes (``/execute``,
``/run_python``, the pyautogui code of OSWorld's controllers) runs as the sandbox's user, walled off
like everything else there. It serves a unix socket that the host made and bound in the sandbox's
control directory (read-only inside, so no program there can put another socket or a link in its
place) and hands it over as the server's stdin: the host, root perhaps, only ever connects to that
socket, never to a name the sandbox could change. A loopback TCP port forwards to it, so clients reach the sandbox as they reach an OSWorld VM on port
5000 (``url`` for ours, ``vm_ip`` + ``port`` for OSWorld's own code: the token rides in the URL's
user part as basic auth), with or without a network inside.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from env.isolation import Isolation
from env.osworld_client import OSWorldClient, OSWorldError
from env.osworld_server.auth import new_token
from env.sandbox import DesktopName, Sandbox, SandboxError
from env.supervisor import SandboxProcess
from env.unix_forward import UnixForward

SOCKET_NAME = "osworld.sock"
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the final NUL


class ServedSandbox:
    def __init__(
        self,
        width: int = 1920,
        height: int = 1080,
        apps: Sequence[Sequence[str]] = (),
        *,
        desktop: DesktopName | None = "xfce",
        isolation: Isolation | None = Isolation(),
        keep: bool = False,
        parent_dir: Path | None = None,
        execute_timeout_s: float = 120.0,
        start_timeout_s: float = 20.0,
        port: int = 0,
    ) -> None:
        """``port``: the loopback TCP port to forward (0: a free one)."""
        self.sandbox = Sandbox(
            width, height, apps, desktop=desktop, isolation=isolation, keep=keep, parent_dir=parent_dir
        )
        self._forward: UnixForward | None = None
        try:
            self.token = new_token()
            box = self.sandbox
            token_file = box.control_file("osworld-token", self.token.encode())
            self.socket_path = token_file.with_name(SOCKET_NAME)
            if len(bytes(self.socket_path)) > MAX_SOCKET_PATH:
                raise SandboxError(
                    f"{self.socket_path} is too long for a unix socket ({MAX_SOCKET_PATH} bytes at most): "
                    "put the sandbox in a directory with a shorter path"
                )
            argv = [sys.executable, "-m", "env.osworld_server"]
            for name, shown in box.title_aliases.items():  # its google-chrome is Chromium (env/image.py)
                argv += ["--title-alias", f"{name}={shown}"]
            argv += ["-", box.inside(token_file)]
            argv.append(f"{execute_timeout_s:g}")
            # The code the host runs, wherever it is imported from (a checkout or site-packages).
            env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listening:
                listening.bind(str(self.socket_path))
                os.chmod(self.socket_path, 0o600)  # the token still applies; this keeps others off too
                listening.listen(64)
                self._server = box.launch(argv, env, stdin=listening.fileno())
            # Ours is closed: if the server dies, connecting fails at once rather than waiting.
            self._wait_ready(start_timeout_s)
            self._forward = UnixForward(self.socket_path, port=port)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        client = OSWorldClient(f"unix:{self.socket_path}", token=self.token, timeout_s=5)
        try:
            while True:
                if self._server.poll() is not None:
                    raise SandboxError(
                        f"the server in the sandbox exited with status {self._server.returncode}: "
                        f"{self.sandbox.last_log_line(self._server) or 'no output'}"
                    )
                try:
                    client.platform()
                    return
                except OSWorldError:
                    pass
                if time.monotonic() > deadline:
                    raise SandboxError(f"the server in the sandbox did not answer within {timeout_s:g} s")
                time.sleep(0.02)
        finally:
            client.close()

    @property
    def server_process(self) -> SandboxProcess:
        return self._server

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, no token in it."""
        return f"http://{self.host}:{self.port}"

    @property
    def socket_url(self) -> str:
        """The server's own socket (``unix:/...``): one hop fewer than ``url`` for our client."""
        return f"unix:{self.socket_path}"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        assert self._forward is not None
        return self._forward.port

    @property
    def vm_ip(self) -> str:
        """What OSWorld's ``PythonController(vm_ip=..., server_port=port)`` takes."""
        return f"{self.token}:@{self.host}"

    def close(self) -> None:
        if self._forward is not None:
            self._forward.close()
        self.sandbox.close()  # the server goes with everything else inside

    def __enter__(self) -> ServedSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
