"""X authorization for sandbox displays: Xvfb accepts only clients that present the sandbox's
MIT-MAGIC-COOKIE-1, so another local user (or another sandbox) cannot watch or type into it."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

FAMILY_LOCAL, FAMILY_WILD = 256, 65535  # Xau families (X11/Xauth.h)
PROTOCOL = b"MIT-MAGIC-COOKIE-1"
_env_lock = threading.Lock()


def new_cookie() -> bytes:
    return secrets.token_bytes(16)


def write_authority(
    path: Path, cookie: bytes, display_number: int | None = None, also_hosts: tuple[str, ...] = ()
) -> None:
    """An Xauthority file holding ``cookie``: for the server (``-auth``; it reads every entry and
    ignores their addresses) or, with the display number, for clients. A local entry for this host
    (and ``also_hosts``: a sandbox's own hostname) and a wildcard one, since clients look entries up
    by hostname and display number, and python-xlib knows no wildcard."""
    number = b"" if display_number is None else str(display_number).encode()

    def field(b: bytes) -> bytes:
        return struct.pack(">H", len(b)) + b

    hosts = [(FAMILY_LOCAL, h.encode()) for h in (socket.gethostname(), *also_hosts)]
    entries = [
        struct.pack(">H", family) + field(addr) + field(number) + field(PROTOCOL) + field(cookie)
        for family, addr in (*hosts, (FAMILY_WILD, b""))
    ]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(b"".join(entries))


@contextlib.contextmanager
def authority(path: Path | None) -> Iterator[None]:
    """XAUTHORITY set to ``path`` while our own X clients (python-xlib, mss) connect: both read it
    from the environment at connect time only. Serialised, as the environment is process-wide."""
    if path is None:
        yield
        return
    with _env_lock:
        old = os.environ.get("XAUTHORITY")
        os.environ["XAUTHORITY"] = str(path)
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("XAUTHORITY", None)
            else:
                os.environ["XAUTHORITY"] = old
