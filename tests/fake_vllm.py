"""A loopback HTTP server that imitates vLLM's OpenAI server for one Kimi-VL checkpoint, with each
setting `kimi-agent doctor` checks open to misconfiguration.

Endpoints as vLLM serves them (shared: /work/wt/i21-facts.md section 4): GET /version, GET
/v1/models (ModelCards with root and max_model_len), POST /tokenize (prompt and messages forms, at
the server root) and POST /v1/chat/completions. Prompts are rendered as vLLM does: the chat
template (Jinja, through transformers' apply_chat_template) on the OpenAI messages, tokenized with
the checkpoint's tokenizer, each image's <|media_pad|> expanded to the processor's token count of
the image as received. The reply is scripted text, cut at max_tokens (or a default) by tokens.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image

from agent.models.kimi_vl.tokenizer import load_tokenizer
from agent.models.kimi_vl.vision import image_tokens, model_size


@dataclass
class VllmSetup:
    checkpoint: Path  # the tokenizer and chat template
    served: str = "kimi-vl"
    root: str = "moonshotai/Kimi-VL-A3B-Instruct"
    version: str | None = "0.11.0"  # None: no /version (404)
    max_model_len: int = 32768
    tokenize: bool = True  # False: /tokenize is a 404
    chat_template: str | None = None  # None: the checkpoint's chat_template.jinja
    in_token_limit: int = 4096
    double_resize: bool = False  # the processor resizes an image already resized by its rule
    image_limit: int = 64  # --limit-mm-per-prompt '{"image": N}'
    default_max_tokens: int | None = None  # what a request without max_tokens gets (None: the rest)
    reply: str = "I click the button.\n## Action:\nclick(x=0.5, y=0.5)"
    # The served model's processor: (width, height, in_token_limit) -> tokens; None: Kimi-VL's MoonViT.
    image_rule: Callable[[int, int, int], int] | None = None


class FakeVllm:
    def __init__(self, setup: VllmSetup) -> None:
        self.setup = setup
        self.tok = load_tokenizer(setup.checkpoint)
        self.template = setup.chat_template or (setup.checkpoint / "chat_template.jinja").read_text(
            encoding="utf-8"
        )
        self.pad = self.tok.convert_tokens_to_ids("<|media_pad|>")
        self.requests: list[tuple[str, dict[str, Any]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/version" and fake.setup.version is not None:
                    self.send(200, {"version": fake.setup.version})
                elif self.path == "/v1/models":
                    self.send(200, fake.models())
                else:
                    self.send(404, {"detail": "Not Found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                fake.requests.append((self.path, body))
                if self.path == "/tokenize" and fake.setup.tokenize:
                    self.send(*fake.tokenize(body))
                elif self.path == "/v1/chat/completions":
                    self.send(*fake.chat(body))
                else:
                    self.send(404, {"detail": "Not Found"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def models(self) -> dict[str, Any]:
        card = {
            "id": self.setup.served,
            "object": "model",
            "created": 0,
            "owned_by": "vllm",
            "root": self.setup.root,
            "parent": None,
            "max_model_len": self.setup.max_model_len,
            "permission": [],
        }
        return {"object": "list", "data": [card]}

    def render(self, messages: list[dict[str, Any]], generation_prompt: bool = True) -> list[int]:
        text = self.tok.apply_chat_template(
            messages, chat_template=self.template, tokenize=False, add_generation_prompt=generation_prompt
        )
        ids = self.tok.encode(text, add_special_tokens=False)
        counts = iter(self.image_tokens(img) for img in _images(messages))
        out: list[int] = []
        for i in ids:
            out += [self.pad] * next(counts) if i == self.pad else [i]
        return out

    def image_tokens(self, image: Image.Image) -> int:
        limit = self.setup.in_token_limit
        w, h = image.size
        if self.setup.double_resize:
            w, h = model_size(w, h, limit)
        return (self.setup.image_rule or image_tokens)(w, h, limit)

    def tokenize(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "messages" in body:
            ids = self.render(body["messages"], body.get("add_generation_prompt", True))
        elif isinstance(body.get("prompt"), str):
            ids = self.tok.encode(
                body["prompt"], add_special_tokens=bool(body.get("add_special_tokens", True))
            )
        else:
            return 400, {"object": "error", "message": "prompt or messages required", "code": 400}
        return 200, {"count": len(ids), "max_model_len": self.setup.max_model_len, "tokens": ids}

    def chat(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("model") != self.setup.served:
            return 404, {
                "object": "error",
                "message": f"The model `{body.get('model')}` does not exist.",
                "code": 404,
            }
        n = len(_images(body["messages"]))
        if n > self.setup.image_limit:
            # vLLM's wording (seen in UI-TARS-desktop#92)
            message = f"At most {self.setup.image_limit} image(s) may be provided in one request."
            return 400, {"object": "error", "message": message, "type": "BadRequestError", "code": 400}
        prompt = self.render(body["messages"])
        cap = (
            body.get("max_tokens")
            or self.setup.default_max_tokens
            or (self.setup.max_model_len - len(prompt))
        )
        out = self.tok.encode(self.setup.reply, add_special_tokens=False)
        finish = "length" if len(out) > cap else "stop"
        out = out[:cap]
        message = {"role": "assistant", "content": self.tok.decode(out)}
        usage = {
            "prompt_tokens": len(prompt),
            "completion_tokens": len(out),
            "total_tokens": len(prompt) + len(out),
        }
        choice = {"index": 0, "message": message, "finish_reason": finish}
        return 200, {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [choice],
            "usage": usage,
        }

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


def _images(messages: list[dict[str, Any]]) -> list[Image.Image]:
    out = []
    for m in messages:
        if isinstance(m.get("content"), list):
            for part in m["content"]:
                if part.get("type") == "image_url":
                    data = part["image_url"]["url"].split(",", 1)[1]
                    out.append(Image.open(io.BytesIO(base64.b64decode(data))))
    return out
