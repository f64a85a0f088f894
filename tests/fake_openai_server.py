"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat API with scripted replies.

POST {base}/chat/completions takes the next scripted `Reply` (or `default` when the queue is empty);
GET {base}/models lists `models`. Every chat request body and its headers are recorded, in arrival order.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    text: str = ""  # "{echo}" is replaced by the last message's (last) text
    status: int = 200
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    finish_reason: str = "stop"
    body: dict[str, Any] | None = None  # a raw error body
    usage: tuple[int, int] = (1234, 56)  # prompt_tokens, completion_tokens


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up mid-reply is expected here, not news


class FakeOpenAI:
    def __init__(self, models: tuple[str, ...] = ("kimi-vl",), prefix: str = "/v1") -> None:
        self.models = models
        self.replies: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # each chat request's headers, lower-case names
        self.default: Reply | None = None
        self.in_flight = 0
        self.max_in_flight = 0  # the most chat requests being answered at once
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as vLLM's server does

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == f"{prefix}/models":
                    data = [{"id": m, "object": "model", "owned_by": "vllm"} for m in server.models]
                    self._send(200, {"object": "list", "data": data})
                else:
                    self._send(404, {"detail": "Not Found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path != f"{prefix}/chat/completions":
                    self._send(404, {"detail": "Not Found"})
                    return
                with server._lock:
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    reply = server.replies.popleft() if server.replies else server.default
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer(body, reply)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _answer(self, body: dict[str, Any], reply: Reply | None) -> None:
                if reply is None:
                    self._send(500, {"error": {"message": "no scripted reply"}})
                    return
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if body.get("model") not in server.models:  # vLLM's answer to an unknown model
                    message = f"The model `{body.get('model')}` does not exist."
                    error = {"object": "error", "message": message, "type": "NotFoundError", "code": 404}
                    self._send(404, error)
                    return
                if reply.status != 200:
                    error = reply.body or {"error": {"message": f"scripted {reply.status}"}}
                    self._send(reply.status, error, reply.headers)
                    return
                text = reply.text.replace("{echo}", _last_text(body))
                prompt, completion = reply.usage
                choice = {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": reply.finish_reason,
                }
                self._send(
                    200,
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [choice],
                        "usage": {
                            "prompt_tokens": prompt,
                            "completion_tokens": completion,
                            "total_tokens": prompt + completion,
                        },
                    },
                    reply.headers,
                )

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{prefix}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


def _last_text(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    texts = [p["text"] for p in content if p.get("type") == "text"]
    return texts[-1] if texts else ""
