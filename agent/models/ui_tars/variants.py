"""UI-TARS-1.5's checkpoint and its sampling (``--variant``; one open checkpoint: 7B).

Sampling as OSWorld's UI-TARS-1.5 runner sets it for ``qwen25vl_normal`` (limenlp/OS_Blind
run_multienv_uitars15_v1.py @ 2d10a46921a3b7c9e9c63ee2f061056e2eee8269): temperature 0, top_p 0.9,
max_tokens 1000, 5 screenshots; the agent sends frequency_penalty 1 with every request and retries an
unparsable reply at temperature 1 (mm_agents/uitars15_v1.py, mrwwk/DeskCraft
@ 4893b45ee51b57b2c1279d0e140aee02a7d0f6a6; the retry temperature is the profile's). top_p matters
only on those retries. The model does not think apart from its ``Thought:`` line: replies are plain
text.
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
    top_p: float = 0.9
    frequency_penalty: float = 1.0


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
    extra_record=("top_p", "frequency_penalty"),
)
resolve_variant = partial(shared.resolve_variant, FAMILY)
