"""A real HTTP proxy on loopback that counts the requests it forwards, by path.

Put in front of an OSWorld-protocol server (ours with ``serve --osworld-only``, or OSWorld's own), it
shows what a client costs the server: how many ``/screenshot`` requests a step takes. Requests go on
unchanged (headers, body, token); answers come back unchanged. One upstream connection per client
connection, kept alive as the client keeps its own.
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own business on each side.
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class CountingProxy:
    def __init__(self, upstream: str, timeout_s: float = 200.0) -> None:
        """``upstream``: ``http://HOST:PORT`` of the server."""
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://HOST:PORT, got {upstream!r}")
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            upstream_conn: http.client.HTTPConnection | None = None

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                path = urllib.parse.urlsplit(self.path).path
                with proxy._lock:
                    proxy._counts[path] += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                if self.upstream_conn is None:
                    self.upstream_conn = http.client.HTTPConnection(
                        parts.hostname, parts.port, timeout=timeout_s
                    )
                try:
                    self.upstream_conn.request(self.command, self.path, body=body, headers=headers)
                    reply = self.upstream_conn.getresponse()
                    data = reply.read()
                except (OSError, http.client.HTTPException):
                    self.upstream_conn.close()
                    self.upstream_conn = None
                    self.send_error(502, "the upstream server did not answer")
                    return
                self.send_response(reply.status, reply.reason)
                for k, v in reply.getheaders():
                    if k.lower() not in HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def finish(self) -> None:
                super().finish()
                if self.upstream_conn is not None:
                    self.upstream_conn.close()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def counts(self) -> Counter[str]:
        """Requests so far, by path (query left out)."""
        with self._lock:
            return Counter(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> CountingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
