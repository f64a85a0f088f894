"""For the slow-client test and bench: whether the server still holds a connection."""

from __future__ import annotations

import select
import socket


def held(s: socket.socket) -> bool:
    """Whether the server still holds this connection (it has neither closed nor reset it). A
    select first: a recv on a socket with a timeout waits for data, MSG_DONTWAIT or not."""
    if not select.select([s], [], [], 0)[0]:
        return True
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except OSError:
        return False
