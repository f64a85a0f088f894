"""Serving the app: on TCP (loopback by default) or a unix socket, in this thread or a background one."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from env.osworld_server.app import ServerConfig, create_app

log = logging.getLogger(__name__)
SOCKET_IDLE_S = 60.0  # a client that sends nothing for this long loses its connection


class _Handler(WSGIRequestHandler):
    timeout = SOCKET_IDLE_S  # socketserver applies it to every read and write of the connection

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s %s", self.command, self.path, code)  # the path never carries the token


@dataclass
class RunningServer:
    """A server on a background thread. ``url`` has no token in it; ``vm_ip`` is the host part
    OSWorld's controllers take (``TOKEN:@127.0.0.1``) for a TCP server: ``requests`` turns the URL's user
    part into basic auth only when a password, even an empty one, follows a colon."""

    config: ServerConfig
    url: str
    socket_path: Path | None
    _server: BaseWSGIServer
    _thread: threading.Thread

    @property
    def token(self) -> str:
        return self.config.token

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    @property
    def vm_ip(self) -> str:
        return f"{self.token}:@{self._server.host}"

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)
        self._server.server_close()
        self._server.app.extensions["kimi"].close()  # type: ignore[attr-defined]
        if self.socket_path is not None:
            with contextlib.suppress(OSError):
                self.socket_path.unlink()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _make(
    config: ServerConfig, host: str, port: int, socket_path: Path | None, fd: int | None = None
) -> BaseWSGIServer:
    app = create_app(config)
    if fd is not None:  # a unix socket someone else made, bound and handed to us (a sandbox's host)
        server = make_server("unix://", 0, app, threaded=True, request_handler=_Handler, fd=fd)
    elif socket_path is not None:
        if socket_path.exists():
            raise OSError(f"{socket_path} exists; remove it or pick another --socket path")
        server = make_server(f"unix://{socket_path}", 0, app, threaded=True, request_handler=_Handler)
        os.chmod(socket_path, 0o600)  # the token still applies; this keeps other users off too
    else:
        server = make_server(host, port, app, threaded=True, request_handler=_Handler)
    server.daemon_threads = True  # type: ignore[attr-defined]
    return server


def start_server(
    config: ServerConfig, host: str = "127.0.0.1", port: int = 0, socket_path: str | Path | None = None
) -> RunningServer:
    """Serve on a background thread (port 0: a free one) and return at once, ready for requests."""
    path = Path(socket_path) if socket_path is not None else None
    server = _make(config, host, port, path)
    thread = threading.Thread(target=server.serve_forever, name="kimi-serve", daemon=True)
    thread.start()
    url = f"unix:{path}" if path is not None else f"http://{_url_host(host)}:{server.server_port}"
    return RunningServer(config, url, path, server, thread)


def serve_forever(
    config: ServerConfig,
    host: str = "127.0.0.1",
    port: int = 5000,
    socket_path: str | Path | None = None,
    fd: int | None = None,
) -> None:
    """``fd``: a listening unix socket to serve on, instead of binding one."""
    path = Path(socket_path) if socket_path is not None else None
    server = _make(config, host, port, path, fd)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        server.app.extensions["kimi"].close()  # type: ignore[attr-defined]
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
