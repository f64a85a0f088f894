"""A loopback TCP port that forwards to a unix socket: how host-side clients that only speak TCP
(OSWorld's controllers and getters: ``http://{vm_ip}:{port}``) reach a server inside a sandbox,
even one with no network of its own.

It connects, with our rights, to whatever socket ``target`` names at that moment: ``target`` must be
a path nothing less trusted can change (a served sandbox's is in its control directory, which the
host owns and the sandbox sees read-only), never one inside a directory a sandbox can write."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from pathlib import Path

_CHUNK = 1 << 16


class UnixForward:
    def __init__(self, target: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = target
        self._listener = socket.create_server((host, port))
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="kimi-forward", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._pump, args=(client,), daemon=True).start()

    def _pump(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(str(self.target))
        except OSError:
            upstream.close()
            client.close()  # the client sees a closed connection, as from a server that is gone
            return
        with self._lock:
            self._conns.update((client, upstream))
        peer = {client: upstream, upstream: client}
        sel = selectors.DefaultSelector()
        for s in peer:
            sel.register(s, selectors.EVENT_READ)
        try:
            open_ends = 2
            while open_ends:
                for key, _ in sel.select():
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(_CHUNK)
                    if data:
                        peer[src].sendall(data)
                        continue
                    # One side finished sending: pass the half-close on, keep reading the other.
                    sel.unregister(src)
                    with contextlib.suppress(OSError):
                        peer[src].shutdown(socket.SHUT_WR)
                    open_ends -= 1
        except OSError:
            pass
        finally:
            sel.close()
            with self._lock:
                self._conns.difference_update((client, upstream))
            client.close()
            upstream.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for s in self._conns:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
