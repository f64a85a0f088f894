"""Connections that have not shown the token yet: a deadline for them, and a cap on how many wait.

The server gives each connection a thread. A per-read socket timeout alone lets a client that sends a
byte every few seconds hold its thread forever, before the token is ever checked. So every read of
a connection is bounded by one deadline, counted from its accept, until its request head has shown
the token (trickling bytes cannot stretch it); and at most ``limit`` such connections wait at once,
a new one pushing out the one that has waited longest. A real client sends its head at once, so
it is the slow ones that go, and a request with the token is served however many of them there are.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from typing import Any


class DeadlineReader(io.RawIOBase):
    """A connection's bytes: each read waits at most ``idle_s``, and none starts past ``deadline``
    (None once the request has shown the token)."""

    def __init__(self, sock: socket.socket, idle_s: float, deadline: float) -> None:
        self.sock = sock
        self.idle_s = idle_s
        self.deadline: float | None = deadline
        self.dropped = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        wait = self.idle_s
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0 or self.dropped:
                raise TimeoutError("no request with the token in time")
            wait = min(wait, left)
        self.sock.settimeout(wait)
        return self.sock.recv_into(buffer)

    def trust(self) -> None:
        """The request showed the token: only the idle timeout applies from now on."""
        self.deadline = None
        self.sock.settimeout(self.idle_s)

    def drop(self) -> None:
        """Push the connection out: reads end now, even one blocked in recv."""
        self.dropped = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class Gate:
    """The connections still without the token, oldest first."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._waiting: dict[DeadlineReader, None] = {}
        self._lock = threading.Lock()

    def enter(self, reader: DeadlineReader) -> None:
        with self._lock:
            while len(self._waiting) >= self.limit:
                oldest = next(iter(self._waiting))
                del self._waiting[oldest]
                oldest.drop()
            self._waiting[reader] = None

    def leave(self, reader: DeadlineReader) -> bool:
        """Whether it was still waiting (False: it was pushed out). Called before its socket is
        closed, so ``drop`` never touches a closed socket."""
        with self._lock:
            if reader not in self._waiting:
                return False
            del self._waiting[reader]
            return True

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)
