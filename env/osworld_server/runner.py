"""Serving the app: on TCP (loopback by default) or a unix socket, in this thread or a background one."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from env.osworld_server.app import ServerConfig, create_app
from env.osworld_server.auth import token_matches
from env.osworld_server.gate import DeadlineReader, Gate

log = logging.getLogger(__name__)
SOCKET_IDLE_S = 60.0  # a client that sends nothing for this long loses its connection


class _Handler(WSGIRequestHandler):
    """One connection (werkzeug answers one request per connection, then closes it)."""

    server: _Server
    timeout = SOCKET_IDLE_S  # socketserver applies it to every read and write of the connection

    def setup(self) -> None:
        super().setup()
        config = self.server.config
        self.reader = DeadlineReader(
            self.connection, SOCKET_IDLE_S, time.monotonic() + config.header_timeout_s
        )
        self.rfile.close()  # socketserver's reader: ours replaces it (and must not hold the socket open)
        self.rfile = io.BufferedReader(self.reader)
        self.server.gate.enter(self.reader)

    def parse_request(self) -> bool:
        """The request head is in: with the token, the connection leaves the gate and its deadline;
        without it, Flask answers 401 within the deadline and the connection closes."""
        if not super().parse_request():
            return False
        token = self.headers.get("Authorization")
        if token_matches(self.server.config.token, token) and self.server.gate.leave(self.reader):
            self.reader.trust()
            return True
        if self.reader.dropped:  # pushed out while its head was read: a cut head is no request
            self.close_connection = True
            return False
        return True

    def finish(self) -> None:
        self.server.gate.leave(self.reader)  # before socketserver closes the socket
        super().finish()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (a malformed request line or head) as JSON, like all others."""
        self.log_error("code %d, message %s", code, message)
        body = (
            json.dumps({"status": "error", "message": message or self.responses[code][0]}) + "\n"
        ).encode()
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The path never carries the token; a request line refused as malformed left none.
        log.debug("%s %s %s", self.command, getattr(self, "path", "-"), code)

    def log_error(self, format: str, *args: Any) -> None:
        log.debug(format, *args)  # timeouts of slow clients: not worth a line each on the console


class _Server(ThreadedWSGIServer):
    def __init__(self, config: ServerConfig, host: str, port: int, app: Flask, fd: int | None = None) -> None:
        self.config = config
        self.gate = Gate(config.max_unauthenticated)
        super().__init__(host, port, app, handler=_Handler, fd=fd)
        self.daemon_threads = True


@dataclass
class RunningServer:
    """A server on a background thread. ``url`` has no token in it; ``vm_ip`` is the host part
    OSWorld's controllers take (``TOKEN:@127.0.0.1``) for a TCP server: ``requests`` turns the URL's user
    part into basic auth only when a password, even an empty one, follows a colon."""

    config: ServerConfig
    url: str
    socket_path: Path | None
    _server: _Server
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
) -> _Server:
    app = create_app(config)
    if fd is not None:  # a unix socket someone else made, bound and handed to us (a sandbox's host)
        server = _Server(config, "unix://", 0, app, fd=fd)
    elif socket_path is not None:
        if socket_path.exists():
            raise OSError(f"{socket_path} exists; remove it or pick another --socket path")
        server = _Server(config, f"unix://{socket_path}", 0, app)
        os.chmod(socket_path, 0o600)  # the token still applies; this keeps other users off too
    else:
        server = _Server(config, host, port, app)
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
