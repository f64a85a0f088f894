"""Backend B: an OpenAI-compatible chat server (vLLM `serve`).

Images are resized to MoonViT's resolution here (agent.vision.resize_for_model) and sent as PNG data
URLs: the server would resize them by the same rule anyway, so this saves bandwidth and keeps the
pixels the model sees exactly the ones the runtime computed coordinates for.

No ``stop`` is sent: Kimi-VL's checkpoint declares ``<|im_end|>`` as its generation EOS, which vLLM
stops at already, and a stop *string* would not match it (special tokens are dropped from the text).

Retries are our own loop with the client's turned off (``max_retries=0``). The client's policy is
jittered, retries 408/409 too, and its final error does not say how many tries were made; ours is
deterministic (``backoff_s * 2**attempt``, capped by ``max_backoff_s``), its sleeps go through an
injectable ``sleep`` so tests can observe them, and the error a user sees names the tries. Retried:
connection errors, timeouts, 429 (``Retry-After`` in seconds or as an HTTP date, capped by
``max_backoff_s``) and 5xx. Other 4xx fail at once.

Thread safety: a call keeps all of its state in locals; the instance only holds settings fixed at
construction and the openai client, which is safe to share between threads.
"""

from __future__ import annotations

import base64
import io
import math
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import openai
from PIL import Image

from agent.backend import BackendError, Completion, GenerationParams
from agent.messages import ImagePart, Message, TextPart
from agent.vision import resize_for_model

SERVE_HINT = "vllm serve moonshotai/Kimi-VL-A3B-Instruct --served-model-name {model} --trust-remote-code"


def data_url(image: Image.Image, in_token_limit: int) -> str:
    """The image at MoonViT's resolution (never upscaled) as a PNG data URL."""
    buf = io.BytesIO()
    resize_for_model(image, in_token_limit).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def to_openai(messages: list[Message], in_token_limit: int) -> list[dict[str, Any]]:
    """Messages in the OpenAI chat format. System and assistant turns, and user turns without an
    image, are plain strings (the chat template puts nothing between parts); a user turn with an
    image is a list of content parts in the original order."""
    out: list[dict[str, Any]] = []
    for m in messages:
        has_image = any(isinstance(p, ImagePart) for p in m.parts)
        if has_image and m.role != "user":
            raise ValueError(f"only user messages can hold images, not {m.role} messages")
        if not has_image:
            out.append(
                {"role": m.role, "content": "".join(p.text for p in m.parts if isinstance(p, TextPart))}
            )
            continue
        content = [
            {"type": "image_url", "image_url": {"url": data_url(p.image, in_token_limit)}}
            if isinstance(p, ImagePart)
            else {"type": "text", "text": p.text}
            for p in m.parts
        ]
        out.append({"role": m.role, "content": content})
    return out


class OpenAIBackend:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        in_token_limit: int = 4096,
        timeout_s: float = 300.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_retries < 0 or backoff_s < 0 or max_backoff_s < 0 or timeout_s <= 0:
            raise ValueError("max_retries, backoff_s and max_backoff_s must be >= 0 and timeout_s > 0")
        self.base_url, self.model, self.in_token_limit = base_url.rstrip("/"), model, in_token_limit
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_s, self.max_backoff_s, self.sleep = backoff_s, max_backoff_s, sleep
        self.client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            timeout=timeout_s,
            max_retries=0,
        )

    def generate(self, messages: list[Message], params: GenerationParams) -> Completion:
        payload = to_openai(messages, self.in_token_limit)
        t0 = time.perf_counter()
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                r = self.client.chat.completions.create(
                    model=self.model,
                    messages=payload,  # type: ignore[arg-type]
                    temperature=params.temperature,
                    max_tokens=params.max_new_tokens,
                )
                break
            except openai.APITimeoutError:  # a subclass of APIConnectionError: test it first
                if last:
                    raise BackendError(
                        f"the model server at {self.base_url} did not answer within {self.timeout_s:g} s "
                        f"({_tries(attempt)}); is it overloaded, or is the timeout too short?"
                    ) from None
                self.sleep(self.delay(attempt))
            except openai.APIConnectionError as e:
                if last:
                    raise BackendError(
                        f"cannot reach the model server at {self.base_url}: {_cause(e)} ({_tries(attempt)})"
                        f" — start one with `{SERVE_HINT.format(model=self.model)}` or pass --base-url"
                    ) from None
                self.sleep(self.delay(attempt))
            except openai.APIStatusError as e:
                code = e.status_code
                if (code == 429 or code >= 500) and not last:
                    self.sleep(self.delay(attempt, e.response.headers.get("retry-after")))
                    continue
                if code == 404:
                    raise BackendError(self._not_found(e)) from None
                hint = " (set OPENAI_API_KEY to the server's key)" if code in (401, 403) else ""
                tries = f" after {_tries(attempt)}" if attempt else ""
                raise BackendError(
                    f"the model server at {self.base_url} answered {code}{tries}: {_brief(e)}{hint}"
                ) from None
        if not r.choices:
            raise BackendError(f"the model server at {self.base_url} returned no choices")
        choice, usage = r.choices[0], r.usage
        return Completion(
            text=choice.message.content or "",
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
            latency_s=time.perf_counter() - t0,  # what the caller waited, retries included
            finish_reason="length" if choice.finish_reason == "length" else "stop",
        )

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry ``attempt + 1``: exponential backoff, or longer when the server
        asks for it with Retry-After; never more than ``max_backoff_s``."""
        delay = self.backoff_s * 2**attempt
        asked = _retry_after_s(retry_after)
        if asked is not None:
            delay = max(delay, asked)
        return min(self.max_backoff_s, delay)

    def _not_found(self, e: openai.APIStatusError) -> str:
        """A 404 from chat/completions: an unknown model name (vLLM's answer), or a base URL without
        the API (then /models is missing too)."""
        try:
            served = [m.id for m in self.client.models.list()]
        except openai.OpenAIError:
            return (
                f"the server at {self.base_url} has no /chat/completions or /models endpoint; "
                f"check --base-url (vLLM serves them under /v1)"
            )
        if self.model in served:
            return f"the model server at {self.base_url} answered 404: {_brief(e)}"
        names = ", ".join(served) if served else "none"
        return f"the model server at {self.base_url} has no model {self.model!r}; it serves: {names} (pass --model NAME)"


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _tries(attempt: int) -> str:
    return "1 try" if attempt == 0 else f"{attempt + 1} tries"


def _cause(e: BaseException) -> str:
    """The innermost reason for a connection error ("Connection refused" rather than "Connection error.")."""
    for _ in range(10):  # bounded: a chain could loop
        inner = e.__cause__ or e.__context__
        if inner is None:
            break
        e = inner
    return " ".join(str(e).split())[:200] or type(e).__name__


def _brief(e: openai.APIStatusError) -> str:
    """The server's own words: the client unwraps {"error": ...} into ``body``; vLLM's errors are
    {"message": ...} (or {"error": "Unauthorized"} for a wrong key)."""
    body = e.body
    if isinstance(body, dict):
        err = body.get("error")
        body = body.get("message") or (err.get("message") if isinstance(err, dict) else err)
    return " ".join(str(body or e.message).split())[:300]
