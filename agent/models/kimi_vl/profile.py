"""Kimi-VL (Kimi-VL-A3B Instruct, Thinking, Thinking-2506) as a model profile: today's behaviour."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.models.kimi_vl.parser import THINK_CLOSE, THINK_OPEN, parse_reply
from agent.models.kimi_vl.variants import resolve_variant
from agent.models.kimi_vl.vision import image_tokens, model_size
from agent.models.profile import ModelProfile
from agent.models.reply import ParsedReply


def _parse(text: str, finish_reason: str) -> ParsedReply:
    return parse_reply(text, finish_reason=finish_reason)


def matches(name: str, config: Mapping[str, Any] | None) -> bool:
    """A checkpoint whose config.json says ``kimi_vl`` (the released one does), or a name that says
    Kimi-VL (moonshotai/Kimi-VL-A3B-Instruct, a directory named after it, a served root)."""
    if config is not None and config.get("model_type") == "kimi_vl":
        return True
    low = name.lower().replace("_", "-")
    return "kimi-vl" in low


KIMI_VL = ModelProfile(
    name="kimi-vl",
    title="Kimi-VL",
    variants=("instruct", "thinking", "thinking-2506"),
    resolve_variant=resolve_variant,
    layouts=("append", "osworld"),
    parse_reply=_parse,
    coordinates="relative",  # the parser also takes screenshot pixels where both values exceed 1
    thinking="inline",
    think_markers=(THINK_OPEN, THINK_CLOSE),
    history_images=3,
    parse_retries=2,
    model_size=model_size,
    image_tokens=image_tokens,
    matches=matches,
)
