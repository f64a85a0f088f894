"""Backend B: an OpenAI-compatible chat server (vLLM `serve`).

Images are resized to MoonViT's resolution here and sent as PNG data URLs: the server would resize
them anyway, so this saves bandwidth and keeps the coordinates the model sees exact. Retries are
our own loop (the client's are off) so the policy is explicit: connection errors, timeouts, 429 and
5xx are retried with exponential backoff (429's Retry-After honoured, bounded); other 4xx are not.
"""

from __future__ import annotations

import base64
import io
import os
import time

import openai

from agent.backend import BackendError, Completion, GenerationParams
from agent.messages import ImagePart, Message
from agent.vision import resize_for_model


def data_url(image: object, in_token_limit: int) -> str:
    buf = io.BytesIO()
    resize_for_model(image, in_token_limit).save(buf, format="PNG")  # type: ignore[arg-type]
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def to_openai(messages: list[Message], in_token_limit: int) -> list[dict]:
    out: list[dict] = []
    for m in messages:
        if m.role != "user" or not any(isinstance(p, ImagePart) for p in m.parts):
            out.append({"role": m.role, "content": "".join(getattr(p, "text", "") for p in m.parts)})
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
    ) -> None:
        self.base_url, self.model, self.in_token_limit = base_url, model, in_token_limit
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self.client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY", "EMPTY"),
            timeout=timeout_s,
            max_retries=0,
        )

    def generate(self, messages: list[Message], params: GenerationParams) -> Completion:
        payload = to_openai(messages, self.in_token_limit)
        t0 = time.perf_counter()
        for attempt in range(self.max_retries + 1):
            try:
                r = self.client.chat.completions.create(
                    model=self.model,
                    messages=payload,  # type: ignore[arg-type]
                    temperature=params.temperature,
                    max_tokens=params.max_new_tokens,
                )
                break
            except (openai.APIConnectionError, openai.APITimeoutError) as e:
                if attempt == self.max_retries:
                    kind = "timed out" if isinstance(e, openai.APITimeoutError) else "is unreachable"
                    raise BackendError(
                        f"the model server at {self.base_url} {kind} after {attempt + 1} tries; start one with "
                        f"`vllm serve moonshotai/Kimi-VL-A3B-Instruct ...` or pass --base-url"
                    ) from None
                self._sleep(attempt, None)
            except openai.APIStatusError as e:
                if e.status_code == 404:
                    raise BackendError(self._not_found()) from None
                if (e.status_code == 429 or e.status_code >= 500) and attempt < self.max_retries:
                    self._sleep(attempt, e.response.headers.get("retry-after"))
                    continue
                raise BackendError(
                    f"the model server at {self.base_url} answered {e.status_code}: {_brief(e)}"
                ) from None
        choice = r.choices[0]
        usage = r.usage
        return Completion(
            text=choice.message.content or "",
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
            latency_s=time.perf_counter() - t0,
            finish_reason="length" if choice.finish_reason == "length" else "stop",
        )

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        if retry_after and retry_after.replace(".", "", 1).isdigit():  # seconds; an HTTP date keeps ours
            delay = min(self.max_backoff_s, max(delay, float(retry_after)))
        time.sleep(delay)

    def _not_found(self) -> str:
        try:
            served = [m.id for m in self.client.models.list()]
        except openai.OpenAIError:
            served = []
        names = f"; it serves: {', '.join(served)}" if served else ""
        return f"the model server at {self.base_url} has no model {self.model!r}{names} (pass --model NAME)"


def _brief(e: openai.APIStatusError) -> str:
    body = e.body if isinstance(e.body, dict) else {}
    msg = body.get("message") or (body.get("error") or {}).get("message") if body else None
    return " ".join(str(msg or e.message).split())[:300]
