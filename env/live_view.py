"""The desktop side of a sandbox's live view: x11vnc reading the sandbox's X server, and websockify
turning its VNC stream into a websocket a browser (noVNC) can open. The page that shows it is
tasks/view_server.py's.

What can reach what (anything the sandbox can write is hostile to the host):
- x11vnc connects to the sandbox's display with the cookie in ``Sandbox.xauthority``, which lives in
  the sandbox's control directory: the host's own, bound read-only inside, so nothing inside can
  swap the file or its name. The display's socket is Xvfb's, on the host, where the sandbox (with
  a /tmp of its own) cannot reach it.
- x11vnc listens on no TCP port at all (``-rfbport 0``, ``-rfbportv6 -1``), only on a unix socket
  in a directory of ours that only we can enter (0700, Sandbox.helper_dir): no other local user can
  connect around the token, and no VNC password has to be passed on a command line or kept in a
  file.
- x11vnc ignores what X clients (the sandbox's programs) can ask of it through window properties:
  ``-noremote`` (no remote control), ``-novncconnect`` (no reverse connection to a host they
  name), ``-nocmds`` (never runs a command); ``-norc`` and a HOME of ours: no rc file is read.
- websockify listens on 127.0.0.1 only, on a socket we bind ourselves and hand it (inetd mode),
  and proxies a websocket only when its URL carries the view's token (a token file of ours).
- Both are the sandbox's helpers (Sandbox.start_helper): killed by process group when the view or
  the sandbox closes, and by the sandbox's reaper if we die.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

NOVNC_DIR = Path("/usr/share/novnc")  # Debian's novnc package
VNC_SOCKET = "vnc.sock"
TOKENS = "tokens"


class LiveViewError(RuntimeError):
    pass


class ViewableDesktop(Protocol):
    """What the live view needs of a sandbox (env/sandbox.py's Sandbox)."""

    display: str
    xauthority: Path

    def start_helper(
        self, argv: list[str], *, stdin: int | None = None, env: dict[str, str] | None = None, cwd: Path
    ) -> subprocess.Popen[bytes]: ...

    def stop_helper(self, p: subprocess.Popen[bytes], grace_s: float = 1.0) -> None: ...

    def helper_dir(self, name: str) -> Path: ...


@dataclass(frozen=True)
class Endpoint:
    """Where a browser opens the VNC stream: ``ws://127.0.0.1:{port}/websockify?token={token}``."""

    port: int
    token: str
    control: bool  # whether x11vnc takes input from the viewer at all

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/websockify?token={self.token}"


def missing() -> str | None:
    """Why a live view cannot start here, or None."""
    for tool, package in (("x11vnc", "x11vnc"), ("websockify", "websockify")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install {package})"
    if not (NOVNC_DIR / "core" / "rfb.js").is_file():
        return f"noVNC is not in {NOVNC_DIR} (Debian: apt-get install novnc)"
    return None


def x11vnc_argv(display: str, xauthority: Path, unix_socket: Path, *, control: bool) -> list[str]:
    return [
        *("x11vnc", "-display", display, "-auth", str(xauthority)),
        *("-rfbport", "0", "-rfbportv6", "-1", "-unixsock", str(unix_socket)),  # no TCP port
        *("-nopw", "-norc", "-noremote", "-novncconnect", "-nocmds"),
        *("-forever", "-shared", "-quiet", "-noipv6", "-nolookup"),
        *([] if control else ["-viewonly"]),
    ]


def websockify_argv(token_file: Path) -> list[str]:
    # The listening socket arrives on stdin; a websocket is proxied only for a token in the file.
    return ["websockify", "--inetd", "--token-plugin", "ReadOnlyTokenFile", "--token-source", str(token_file)]


class LiveDesktop:
    """x11vnc and websockify for one sandbox, until close() (or the sandbox's close)."""

    def __init__(self, box: ViewableDesktop, *, control: bool = False, start_timeout_s: float = 10.0) -> None:
        if why := missing():
            raise LiveViewError(why)
        self._box = box
        self._procs: list[subprocess.Popen[bytes]] = []
        self._dir = box.helper_dir(f"view-{secrets.token_hex(3)}")  # 0700: ours alone, gone with the sandbox
        self._closed = False
        try:
            vnc = self._dir / VNC_SOCKET
            self._procs.append(
                box.start_helper(
                    x11vnc_argv(box.display, box.xauthority, vnc, control=control),
                    env={"XAUTHORITY": str(box.xauthority), "HOME": str(self._dir)},
                    cwd=self._dir,
                )
            )
            self._wait_for(vnc, start_timeout_s)
            token = secrets.token_urlsafe(24)
            tokens = self._dir / TOKENS
            tokens.write_text(f"{token}: unix_socket:{vnc}\n", encoding="utf-8")
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(("127.0.0.1", 0))
                listener.listen(16)
                port = listener.getsockname()[1]
                self._procs.append(
                    box.start_helper(
                        websockify_argv(tokens),
                        stdin=listener.fileno(),
                        env={"HOME": str(self._dir)},
                        cwd=self._dir,
                    )
                )
            self.endpoint = Endpoint(port=port, token=token, control=control)
        except BaseException:
            self.close()
            raise

    def _wait_for(self, vnc: Path, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        x11vnc = self._procs[0]
        while not vnc.exists():
            if x11vnc.poll() is not None:
                raise LiveViewError(f"x11vnc exited with status {x11vnc.returncode} before it listened")
            if time.monotonic() > deadline:
                raise LiveViewError(f"x11vnc did not listen within {timeout_s:g} s")
            time.sleep(0.02)

    @property
    def pids(self) -> list[int]:
        """x11vnc's and websockify's (each leads a process group of its own)."""
        return [p.pid for p in self._procs]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for p in reversed(self._procs):
            with contextlib.suppress(Exception):
                self._box.stop_helper(p)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> LiveDesktop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
