"""A small HTTP server for local pages (the live view, the run monitor): loopback only, every URL
under ``/TOKEN/``, anything else 403. It serves static folders and a few routes of the caller's.

The token is the only key: it is in the URL the user opens, so every answer says ``Referrer-Policy:
no-referrer`` (it must not leak to anything the page links to) and ``Cache-Control: no-store``.
A ``Host`` other than 127.0.0.1/localhost is refused too (a DNS-rebinding page would not know the
token anyway, but it is not ours to serve)."""

from __future__ import annotations

import hmac
import mimetypes
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

MAX_BODY = 4096  # what a route may be sent; pages post short commands only
TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".html": "text/html"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # after /TOKEN, e.g. "/" or "/control"
    query: str
    body: bytes


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)

    @staticmethod
    def text(status: int, message: str) -> Reply:
        return Reply(status, (message + "\n").encode())


Route = Callable[[Request], Reply]


class TokenServer:
    """``static``: URL folder (``"novnc"``) -> directory served under ``/TOKEN/novnc/``;
    ``routes``: (method, path) -> handler; ``csp``: the Content-Security-Policy of every answer.
    Serves from a thread of its own once started, until close()."""

    def __init__(
        self,
        *,
        static: Mapping[str, Path] = {},
        routes: Mapping[tuple[str, str], Route] = {},
        csp: str = "default-src 'self'",
        port: int = 0,
        token: str | None = None,
    ) -> None:
        for name in static:
            if not name or "/" in name:
                raise ValueError(f"a static folder's URL name is one path component, not {name!r}")
        self.token = token or secrets.token_urlsafe(24)
        self._static = {name: d.resolve() for name, d in static.items()}
        self._routes = dict(routes)
        self.csp = csp
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._httpd.daemon_threads = True
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="token-http", daemon=True)

    @property
    def url(self) -> str:
        """The page's address, token included: what the user opens."""
        return f"http://127.0.0.1:{self.port}/{self.token}/"

    def start(self) -> TokenServer:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- answering ---------------------------------------------------------------------------
    def answer(self, method: str, target: str, host: str | None, body: bytes) -> Reply:
        if host is not None and host not in (f"127.0.0.1:{self.port}", f"localhost:{self.port}"):
            return Reply.text(403, "forbidden")
        parts = urlsplit(target)
        head, _, rest = parts.path.lstrip("/").partition("/")
        if not hmac.compare_digest(head.encode(), self.token.encode()):
            return Reply.text(403, "forbidden")
        path = "/" + rest
        route = self._routes.get((method, path))
        if route is not None:
            return route(Request(method, path, parts.query, body))
        if method in ("GET", "HEAD"):
            return self._file(rest)
        return Reply.text(405 if any(p == path for _, p in self._routes) else 404, "not here")

    def _file(self, rest: str) -> Reply:
        folder, _, name = rest.partition("/")
        root = self._static.get(folder)
        segments = [unquote(s) for s in name.split("/")]
        if root is None or any(s in ("", ".", "..") or "/" in s or "\\" in s for s in segments):
            return Reply.text(404, "not found")
        path = root.joinpath(*segments).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return Reply.text(404, "not found")
        kind = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if kind.startswith("text/"):
            kind += "; charset=utf-8"
        return Reply(200, path.read_bytes(), kind)


def _handler_for(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "kimi-agent"
        sys_version = ""

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(Reply.text(413, "too large"), method)
                return
            body = self.rfile.read(length) if length else b""
            try:
                reply = server.answer(method, self.path, self.headers.get("Host"), body)
            except Exception as e:  # one bad request must not take the page down
                reply = Reply.text(500, f"error: {type(e).__name__}")
            self._send(reply, method)

        def _send(self, reply: Reply, method: str) -> None:
            self.send_response(reply.status, HTTPStatus(reply.status).phrase)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Content-Security-Policy", server.csp)
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(reply.body)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_HEAD(self) -> None:
            self._serve("HEAD")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: object) -> None:
            pass  # the URL holds the token: never logged

    return Handler
