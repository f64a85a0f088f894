"""UI-TARS-1.5's checkpoint and its sampling (``--variant``; one open checkpoint: 7B).

Sampling as OSWorld's UI-TARS-1.5 runner sets it for ``qwen25vl_normal`` (limenlp/OS_Blind
run_multienv_uitars15_v1.py @ 2d10a46921a3b7c9e9c63ee2f061056e2eee8269): temperature 0, top_p 0.9
(moot at temperature 0), max_tokens 1000, 5 screenshots. The model does not think apart from its
``Thought:`` line: replies are plain text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial

from agent.models import variants as shared
from agent.models.qwen_vision import WIRE_PATCH_LIMIT
from agent.models.variants import Family

VARIANTS = ("7b",)
_SEVEN_B = re.compile(r"(?:ui[-_]?tars).{0,12}\b7b\b", re.I)  # ByteDance-Seed/UI-TARS-1.5-7B


@dataclass(frozen=True)
class Variant:
    name: str
    thinking: bool = False
    temperature: float = 0.0
    in_token_limit: int = WIRE_PATCH_LIMIT  # the backend sends the screenshot as it is
    max_new_tokens: int = 1000


def guess_variant(name: str) -> str | None:
    """``ByteDance-Seed/UI-TARS-1.5-7B`` -> "7b", or None."""
    return VARIANTS[0] if _SEVEN_B.search(name) else None


FAMILY: Family[Variant] = Family(
    make=Variant,
    guess=guess_variant,
    default=VARIANTS[0],
    default_source="default (the one open checkpoint)",
    allowed=VARIANTS,
    bad_override=lambda o: f"--variant {o}: UI-TARS-1.5's are {', '.join(VARIANTS)}",
)
resolve_variant = partial(shared.resolve_variant, FAMILY)
