"""Streamable HTTP for `kimi-agent mcp --http`: the SDK's app behind a bearer token, and a
session's sandboxes closed when that session ends (the client's DELETE, or idle too long)."""

from __future__ import annotations

import hmac
import logging
import sys
import threading
import time
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

from tasks.mcp.sandboxes import Registry

SESSION_HEADER = b"mcp-session-id"
IDLE_TIMEOUT_S = 30 * 60.0  # a session nobody has used for this long is over, with its sandboxes
log = logging.getLogger(__name__)

Scope = dict[str, Any]


class BearerAuth:
    """ASGI: 401 without a bearer token, 403 with a wrong one; records when each session was used
    and closes its sandboxes once the client ends it (DELETE)."""

    def __init__(self, app: Any, token: str, registry: Registry) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.registry = registry
        self.last_seen: dict[str, float] = {}
        self.lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization")
        if given is None or not hmac.compare_digest(given, self.expected):
            status, what = (401, b"a bearer token is required") if given is None else (403, b"wrong token")
            extra = [(b"www-authenticate", b"Bearer")] if given is None else []
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"text/plain"), *extra]})  # fmt: skip
            await send({"type": "http.response.body", "body": what})
            return
        session = headers.get(SESSION_HEADER, b"").decode(errors="replace") or None
        if session is not None:
            with self.lock:
                self.last_seen[session] = time.monotonic()
        await self.app(scope, receive, send)
        if session is not None and scope.get("method") == "DELETE":
            self.end(session)

    def end(self, session: str) -> None:
        with self.lock:
            self.last_seen.pop(session, None)
        # In a thread: closing a sandbox waits for its processes.
        threading.Thread(target=self.registry.close_owned, args=(session,), daemon=True).start()

    def sweep(self, idle_s: float) -> None:
        now = time.monotonic()
        with self.lock:
            idle = [s for s, t in self.last_seen.items() if now - t > idle_s]
        for s in idle:
            log.info("session %s idle for %.0f s: closing its sandboxes", s, idle_s)
            self.end(s)


def serve_http(server: MCPServer, registry: Registry, host: str, port: int, token: str) -> None:
    import uvicorn

    loopback_names = [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*loopback_names, f"{host}:{port}"],
        allowed_origins=[f"http://{h}" for h in loopback_names],
    )
    app = server.streamable_http_app(
        transport_security=security, host=host, session_idle_timeout=IDLE_TIMEOUT_S
    )
    guarded = BearerAuth(app, token, registry)
    stop = threading.Event()

    def sweeper() -> None:
        while not stop.wait(60):
            guarded.sweep(IDLE_TIMEOUT_S)

    threading.Thread(target=sweeper, daemon=True).start()
    print(f"kimi-agent mcp: serving http://{host}:{port}/mcp", file=sys.stderr, flush=True)
    try:
        uvicorn.Server(uvicorn.Config(guarded, host=host, port=port, log_level="warning")).run()
    finally:
        stop.set()
