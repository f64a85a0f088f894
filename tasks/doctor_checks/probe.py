"""What the doctor's checks judge, gathered: HTTP exchanges with a vLLM-like server (standard
library only: nothing here should be able to hide a server's answer behind retries), the probe
conversation and screenshots, and the local look-ups (packages, GPUs, a checkpoint)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from PIL import Image

from agent.messages import ImagePart, Message, TextPart
from tasks.doctor_checks.local import CheckpointInfo, Gpu

# 1366x768: MoonViT's rule takes it to 1207x679 (4128 patches, over the 4096 limit), so a server that
# resizes a second time counts 1075 tokens instead of 1100 (agent/models/kimi_vl/vision.py, wire_size).
PROBE_SIZE = (1366, 768)


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no HTTP answer at all
    data: Any  # the JSON body, or None
    error: str | None = None  # why there was no answer, or the server's error message

    def message(self) -> str:
        if self.error:
            return self.error
        if isinstance(self.data, dict):
            err = self.data.get("error")
            msg = err.get("message") if isinstance(err, dict) else self.data.get("message")
            if msg:
                return str(msg)
        return f"HTTP {self.status}"


class Http:
    def __init__(self, base_url: str, api_key: str | None, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        # vLLM serves /version and /tokenize at the server's root, the OpenAI API under /v1.
        self.root = self.base_url.removesuffix("/v1")
        self.api_key = api_key
        self.timeout_s = timeout_s

    def call(self, method: str, url: str, body: dict[str, Any] | None = None) -> Answer:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                return Answer(r.status, _json(r.read()))
        except urllib.error.HTTPError as e:
            return Answer(e.code, _json(e.read()))
        except (urllib.error.URLError, OSError) as e:
            return Answer(None, None, str(getattr(e, "reason", e)))

    def chat(
        self, model: str, messages: list[dict[str, Any]], max_tokens: int | None, temperature: float = 0.0
    ) -> Answer:
        body: dict[str, Any] = {"model": model, "messages": messages, "temperature": temperature}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return self.call("POST", f"{self.base_url}/chat/completions", body)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def choice(a: Answer) -> tuple[str, str | None]:
    """(content, finish_reason) of a chat completion."""
    try:
        c = a.data["choices"][0]
        return str(c["message"].get("content") or ""), c.get("finish_reason")
    except (TypeError, KeyError, IndexError):
        return "", None


def prompt_tokens(a: Answer) -> int | None:
    try:
        return int(a.data["usage"]["prompt_tokens"])
    except (TypeError, KeyError, ValueError):
        return None


def probe_screenshot(size: tuple[int, int] = PROBE_SIZE) -> Image.Image:
    """A screenshot-like image: a light desktop with a darker bar and a button (content does not
    matter to the counts; a flat image would compress to nothing and hide a transfer problem)."""
    w, h = size
    img = Image.new("RGB", size, (222, 226, 231))
    img.paste((48, 52, 60), (0, 0, w, 28))
    img.paste((30, 120, 220), (w // 2 - 60, h // 2 - 18, w // 2 + 60, h // 2 + 18))
    return img


def probe_conversation() -> list[Message]:
    """Text only, with the parts a run's prompts have: a system prompt, a task, an earlier reply
    with thinking markers, feedback, non-ASCII text and a newline."""
    return [
        Message.text("system", "You are a GUI agent. Reply with one action."),
        Message.text("user", "Open the Files app, then the folder «Documents».\nWhat next?"),
        Message.text("assistant", "◁think▷The dock has Files.◁/think▷I click the Files icon."),
        Message.text("user", "The click landed. Continue."),
    ]


def image_message(images: list[Image.Image], text: str) -> Message:
    return Message("user", (*(ImagePart(i) for i in images), TextPart(text)))


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def tested_pins(constraints: Path) -> dict[str, str]:
    """``name==version`` lines of constraints.txt (the set CI tested)."""
    pins: dict[str, str] = {}
    if constraints.is_file():
        for line in constraints.read_text(encoding="utf-8").splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                pins[name.strip().lower()] = version.strip()
    return pins


def gpus() -> tuple[list[Gpu], str]:
    """The CUDA GPUs torch sees, with free memory; or none and why."""
    try:
        import torch
    except ImportError:
        return [], "torch is not installed"
    if not torch.cuda.is_available():
        return [], "torch.cuda.is_available() is False"
    out = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        out.append(Gpu(torch.cuda.get_device_name(i), total / 1e9, free / 1e9))
    return out, ""


def read_checkpoint(path: Path) -> CheckpointInfo:
    config = _read_json(path / "config.json")
    index = _read_json(path / "model.safetensors.index.json")
    shards = sorted(set(index.get("weight_map", {}).values())) if isinstance(index, dict) else []
    pre = _read_json(path / "preprocessor_config.json")
    limit = pre.get("in_token_limit") if isinstance(pre, dict) else None
    return CheckpointInfo(
        path=str(path),
        config=config if isinstance(config, dict) else None,
        has_tokenizer=(path / "tiktoken.model").is_file(),
        shards_missing=[s for s in shards if not (path / s).is_file()],
        has_weights=any(path.glob("*.safetensors")),
        in_token_limit=int(limit) if isinstance(limit, int) else None,
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
