"""What a model backend is: chat messages in, one completion out."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, SerializerFunctionWrapHandler, field_validator, model_serializer

from agent.messages import Message
from agent.text import storable


class GenerationParams(BaseModel):
    max_new_tokens: int = 1024
    temperature: float = 0.0  # 0 = greedy
    # Nucleus sampling; None: not sent, the server's default (Kimi-VL's requests never carried it).
    top_p: float | None = None
    # OpenAI's frequency_penalty; None: not sent (UI-TARS-1.5's runner sends 1, no other family any).
    frequency_penalty: float | None = None
    # False: ask the server to switch the model's thinking off (Kimi K2.x instant mode); None: the
    # server's default, nothing sent (every family but K2's instant variants).
    thinking: bool | None = None

    @model_serializer(mode="wrap")
    def _without_unset_top_p(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Records of runs without top_p (every Kimi-VL run) stay as they were written before it existed.
        data = handler(self)
        for key in ("top_p", "frequency_penalty", "thinking"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class Completion(BaseModel):
    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    # "stop" (hit <|im_end|>) or "length" (ran out of max_new_tokens)
    finish_reason: str = "stop"
    # The thinking a server returned apart from ``text`` (``reasoning_content``, or ``reasoning`` in
    # newer vLLM), where it did; None: none was returned (Kimi-VL's thinking is inline in ``text``).
    reasoning: str | None = None
    # The ids the model sampled, in order (the stop id it ended on included), where the backend
    # knows them: ours in-process always, an OpenAI-compatible server when it returns them (vLLM's
    # ``return_token_ids``). None: unknown (the text is all there is).
    token_ids: list[int] | None = None
    # The ids the model was fed (the rendered prompt, each image's pads expanded), where the backend
    # knows them; never written to a run's records (they are rebuilt from run.json's prompt record).
    prompt_ids: list[int] | None = None

    @field_validator("text", mode="before")
    @classmethod
    def _encodable(cls, text: object) -> object:
        # A lone surrogate from a server would break the next prompt's encoding and every record:
        # it becomes the visible text "\ud800" at the boundary, once.
        return storable(text)


class BackendError(RuntimeError):
    """A backend failure a user can act on (server unreachable, unknown model, missing weights)."""


class Backend(Protocol):
    def generate(self, messages: list[Message], params: GenerationParams) -> Completion: ...
