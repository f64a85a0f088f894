"""A sandbox with OSWorld's VM server (`kimi-agent serve`) for it: what one benchmark worker owns.

Clients reach it as they reach an OSWorld VM: ``url`` for our client, ``vm_ip`` + ``port`` for
OSWorld's own controller code (the token rides in the URL's user part as basic auth).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from env.isolation import Isolation
from env.osworld_server import RunningServer, ServerConfig, start_server
from env.sandbox import DesktopName, Sandbox


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
    ) -> None:
        self.sandbox = Sandbox(
            width, height, apps, desktop=desktop, isolation=isolation, keep=keep, parent_dir=parent_dir
        )
        try:
            self._server: RunningServer = start_server(
                ServerConfig(
                    display=self.sandbox.display, env=self.sandbox.env, execute_timeout_s=execute_timeout_s
                )
            )
        except BaseException:
            self.sandbox.close()
            raise

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, no token in it."""
        return self._server.url

    @property
    def token(self) -> str:
        return self._server.token

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def vm_ip(self) -> str:
        """What OSWorld's ``PythonController(vm_ip=..., server_port=port)`` takes."""
        return f"{self.token}:@{self.host}"

    def close(self) -> None:
        try:
            self._server.stop()
        finally:
            self.sandbox.close()

    def __enter__(self) -> ServedSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
