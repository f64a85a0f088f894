"""UI-TARS-1.5's checkpoint and its sampling (``--variant``; one open checkpoint: 7B).

Sampling as OSWorld's UI-TARS-1.5 runner sets it for ``qwen25vl_normal`` (limenlp/OS_Blind
run_multienv_uitars15_v1.py @ 2d10a46921a3b7c9e9c63ee2f061056e2eee8269): temperature 0, top_p 0.9
(moot at temperature 0), max_tokens 1000, 5 screenshots. The model does not think apart from its
``Thought:`` line: replies are plain text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from agent.models.qwen_vision import WIRE_PATCH_LIMIT

VARIANTS = ("7b",)
_SEVEN_B = re.compile(r"(?:ui[-_]?tars).{0,12}\b7b\b", re.I)  # ByteDance-Seed/UI-TARS-1.5-7B


@dataclass(frozen=True)
class Variant:
    name: str
    thinking: bool = False
    temperature: float = 0.0
    in_token_limit: int = WIRE_PATCH_LIMIT  # the backend sends the screenshot as it is
    max_new_tokens: int = 1000


@dataclass(frozen=True)
class ResolvedVariant:
    variant: Variant
    source: str
    in_token_limit_source: str

    def record(self) -> dict[str, Any]:
        v = self.variant
        return {
            "variant": v.name,
            "variant_from": self.source,
            "in_token_limit": v.in_token_limit,
            "in_token_limit_from": self.in_token_limit_source,
        }


def resolve_variant(
    *,
    override: Any,
    names: Sequence[tuple[str, str]],
    in_token_limit: int | None = None,
    in_token_limit_source: str = "",
    in_token_limit_override: int | None = None,
) -> ResolvedVariant:
    if override is not None and override not in VARIANTS:
        raise ValueError(f"--variant {override}: UI-TARS-1.5's are {', '.join(VARIANTS)}")
    named = next((f"{what} {v!r}" for what, v in names if v and _SEVEN_B.search(v)), None)
    source = "--variant" if override is not None else named or "default (the one open checkpoint)"
    variant, limit_source = Variant(VARIANTS[0]), "the 7b default"
    if in_token_limit_override is not None:
        variant, limit_source = replace(variant, in_token_limit=in_token_limit_override), "--in-token-limit"
    elif in_token_limit is not None:
        variant, limit_source = replace(variant, in_token_limit=in_token_limit), in_token_limit_source
    return ResolvedVariant(variant, source, limit_source)
