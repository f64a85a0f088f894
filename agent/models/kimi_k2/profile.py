"""Kimi K2.5 / K2.6 as a model profile: OSWorld's ``mm_agents/kimi`` agent's grammar, sampling and
history (/work/wt/i21-facts.md 1.1-1.5; sources named in parser.py and variants.py).

One profile with two variants, not two profiles: everything a profile holds (prompts, grammar,
coordinates, thinking, history) is the same for K2.5 and K2.6; what differs is the checkpoint (its
output budget and published numbers), which is what a variant is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.models.kimi_k2.parser import parse_reply
from agent.models.kimi_k2.variants import VARIANTS, guess_variant, resolve_variant
from agent.models.kimi_k2.vision import image_tokens, model_size
from agent.models.profile import ModelProfile
from agent.models.reply import ParsedReply

# The checkpoints' config.json model_type (transformers ``kimi_k25``; K2.6 ships the same architecture).
MODEL_TYPES = {"kimi_k25"}


def _parse(text: str, finish_reason: str) -> ParsedReply:
    return parse_reply(text, finish_reason=finish_reason)


def matches(name: str, config: Mapping[str, Any] | None) -> bool:
    """A checkpoint whose config.json says ``kimi_k25``, or a name that says K2.5 / K2.6 (Moonshot's
    ``kimi-k2.5``, ``moonshotai/Kimi-K2.6``, a served root, a quantised copy's directory)."""
    if config is not None and config.get("model_type") in MODEL_TYPES:
        return True
    low = name.lower()
    return "kimi" in low and guess_variant(low) is not None


KIMI_K2 = ModelProfile(
    name="kimi-k2",
    title="Kimi K2.5 / K2.6",
    variants=VARIANTS,
    resolve_variant=resolve_variant,
    # The reference agent's layout first (the default for this family), then the append-only one.
    layouts=("osworld", "append"),
    parse_reply=_parse,
    coordinates="relative",  # the parser also takes screenshot pixels where both values exceed 1
    thinking="reasoning_content",
    think_markers=None,
    history_images=3,  # max_image_history_length
    parse_retries=4,  # the agent retries a reply that does not parse up to 5 times in all
    model_size=model_size,
    image_tokens=image_tokens,
    matches=matches,
    prompt_family="kimi_k2",
    max_context=262144,  # the model card's context length; a server that takes less lowers it
)
