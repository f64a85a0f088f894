"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat API (as vLLM does) with scripted replies.

POST {base}/chat/completions takes the next scripted `Reply` (or `default` when the queue is empty);
GET {base}/models answers like vLLM (ModelCard: id, root, max_model_len, ...), or with the next
scripted reply in `model_replies`. Every chat request body and its headers are recorded, in arrival
order. With a ``tokenizer``, POST /tokenize (at the server root, as vLLM serves it) answers vLLM's
completion form ({"model", "prompt", "add_special_tokens"} -> {"count", "tokens", "max_model_len"})
with that tokenizer's ids; without one it is a 404, as a server without the endpoint answers. A
`Reply` can also misbehave: a raw body of any type, a reply dribbled a byte at a time, a body
cut short, or no reply at all until the client hangs up (the time it did is recorded in `hangups`).
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
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
    raw: bytes | None = None  # the whole body as is, whatever the status
    content_type: str = "application/json"
    dribble_s: float = 0.0  # send the response (status line and headers too) one byte per dribble_s
    hang: bool = False  # never answer; wait for the client to hang up
    cut_after: int | None = None  # announce the whole body, send this many bytes of it, hang up
    # Sent as the choice's ``token_ids`` when the request asks with ``return_token_ids`` (as vLLM does)
    token_ids: list[int] | None = None
    # Thinking apart from the content, as Moonshot's API, SGLang and vLLM with a reasoning parser send
    # it: under ``reasoning_field`` (``reasoning_content``; newer vLLM says ``reasoning``)
    reasoning: str | None = None
    reasoning_field: str = "reasoning_content"

    @classmethod
    def json(cls, value: Any, **kw: Any) -> Reply:
        """A 200 whose body is ``value`` as JSON (of any shape)."""
        return cls(raw=json.dumps(value).encode(), **kw)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up mid-reply is expected here, not news

    def get_request(self) -> tuple[Any, Any]:
        # TCP_NODELAY, as uvicorn (vLLM) sets it: otherwise the headers-then-body writes of each
        # reply meet the client's delayed ACK and every request takes ~40 ms more.
        conn, addr = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


class FakeOpenAI:
    def __init__(
        self,
        models: tuple[str, ...] = ("kimi-vl",),
        prefix: str = "/v1",
        roots: dict[str, str] | None = None,  # served name -> the checkpoint it was loaded from
        max_model_len: int = 32768,
        ssl_context: ssl.SSLContext | None = None,  # serve HTTPS
        tokenizer: Callable[[str], list[int]] | None = None,  # text -> ids: serve /tokenize
    ) -> None:
        self.tokenizer = tokenizer
        self.tokenize_requests: list[dict[str, Any]] = []  # every POST /tokenize body, answered or not
        self.models = models
        self.roots = roots or {}
        self.max_model_len = max_model_len
        self.replies: deque[Reply] = deque()
        self.model_replies: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # each chat request's headers, lower-case names
        self.default: Reply | None = None
        self.in_flight = 0
        self.max_in_flight = 0  # the most chat requests being answered at once
        self.hangups: list[float] = []  # time.monotonic() when a client left a hanging reply
        self._closed = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as vLLM's server does

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                self._send_raw(status, json.dumps(body).encode(), "application/json", headers or {})

            def _send_raw(self, status: int, data: bytes, content_type: str, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path != f"{prefix}/models":
                    self._send(404, {"detail": "Not Found"})
                    return
                with server._lock:
                    reply = server.model_replies.popleft() if server.model_replies else None
                if reply is None:
                    self._send(200, server.model_list())
                elif not self._misbehave(reply):
                    error = {"error": {"message": f"scripted {reply.status}"}}
                    data = reply.raw if reply.raw is not None else json.dumps(reply.body or error).encode()
                    self._send_raw(reply.status, data, reply.content_type, reply.headers)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/tokenize":
                    with server._lock:
                        server.tokenize_requests.append(body)
                    if server.tokenizer is not None:
                        self._tokenize(body)
                        return
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

            def _tokenize(self, body: dict[str, Any]) -> None:
                if body.get("model") not in server.models or not isinstance(body.get("prompt"), str):
                    self._send(400, {"object": "error", "message": "bad tokenize request", "code": 400})
                    return
                assert server.tokenizer is not None
                tokens = server.tokenizer(body["prompt"])
                self._send(
                    200, {"count": len(tokens), "tokens": tokens, "max_model_len": server.max_model_len}
                )

            def _misbehave(self, reply: Reply) -> bool:
                """Hang or dribble as scripted; True when the reply was handled so."""
                if reply.hang:
                    self._wait_for_hangup()
                    return True
                if reply.dribble_s:
                    self._dribble(reply)
                    return True
                if reply.cut_after is not None:
                    data = reply.raw if reply.raw is not None else _completion_body(reply, "kimi-vl", "cut")
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: reply.cut_after])
                    self.close_connection = True
                    return True
                return False

            def _wait_for_hangup(self) -> None:
                self.close_connection = True
                deadline = time.monotonic() + 30
                while not server._closed.is_set() and time.monotonic() < deadline:
                    readable, _, _ = select.select([self.connection], [], [], 0.02)
                    if readable and not self.connection.recv(1, socket.MSG_PEEK):
                        with server._lock:
                            server.hangups.append(time.monotonic())
                        return

            def _dribble(self, reply: Reply) -> None:
                data = reply.raw if reply.raw is not None else _completion_body(reply, "kimi-vl", "dribbled")
                head = (
                    f"HTTP/1.1 200 OK\r\nContent-Type: {reply.content_type}\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n"
                ).encode()
                self.close_connection = True
                for i in range(len(head + data)):
                    if server._closed.is_set():
                        return
                    self.wfile.write((head + data)[i : i + 1])
                    self.wfile.flush()
                    time.sleep(reply.dribble_s)

            def _answer(self, body: dict[str, Any], reply: Reply | None) -> None:
                if reply is None:
                    self._send(500, {"error": {"message": "no scripted reply"}})
                    return
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if self._misbehave(reply):
                    return
                if body.get("model") not in server.models:  # vLLM's answer to an unknown model
                    message = f"The model `{body.get('model')}` does not exist."
                    error = {"object": "error", "message": message, "type": "NotFoundError", "code": 404}
                    self._send(404, error)
                    return
                if reply.raw is not None:
                    self._send_raw(reply.status, reply.raw, reply.content_type, reply.headers)
                    return
                if reply.status != 200:
                    error = reply.body or {"error": {"message": f"scripted {reply.status}"}}
                    self._send(reply.status, error, reply.headers)
                    return
                data = _completion_body(
                    reply, body["model"], _last_text(body), bool(body.get("return_token_ids"))
                )
                self._send_raw(200, data, "application/json", reply.headers)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        if ssl_context is not None:
            self.httpd.socket = ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}{prefix}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def model_list(self) -> dict[str, Any]:
        """GET /v1/models as vLLM answers it (vllm/entrypoints/openai/serving_models.py,
        show_available_models: a ModelList of ModelCards)."""
        cards = [
            {
                "id": m,
                "object": "model",
                "created": int(time.time()),
                "owned_by": "vllm",
                "root": self.roots.get(m, m),  # vLLM: the --model argument (hub id or path)
                "parent": None,
                "max_model_len": self.max_model_len,
                "permission": [
                    {
                        "id": "modelperm-fake",
                        "object": "model_permission",
                        "created": int(time.time()),
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            for m in self.models
        ]
        return {"object": "list", "data": cards}

    def close(self) -> None:
        self._closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


def _completion_body(reply: Reply, model: str, echo: str, token_ids: bool = False) -> bytes:
    prompt, completion = reply.usage
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": reply.text.replace("{echo}", echo)},
        "finish_reason": reply.finish_reason,
    }
    if reply.reasoning is not None:
        choice["message"][reply.reasoning_field] = reply.reasoning
    if token_ids and reply.token_ids is not None:
        choice["token_ids"] = reply.token_ids  # vLLM's reply to return_token_ids
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    body = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model}
    return json.dumps({**body, "choices": [choice], "usage": usage}).encode()


def _last_text(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    texts = [p["text"] for p in content if p.get("type") == "text"]
    return texts[-1] if texts else ""
