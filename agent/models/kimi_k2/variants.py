"""Kimi K2.5 and K2.6: one family, two checkpoints. They share the prompt, the reply grammar, the
coordinates and the sampling of OSWorld's Kimi agent; what differs is the checkpoint (its published
numbers, the vLLM that serves it, the output budget its runners give it).

Sources (/work/wt/i21-facts.md 1.3, 1.7, 1.9): OSWorld's ``mm_agents/kimi/kimi_agent.py`` in the forks
YangYzzzz/OSSymphony-Selfuse @ 2f96870592cf44d31a0436204bb91574414ea00f and ljxpython/OSWorldUse
@ 4c8127b50bdfed671e51bb9ddd434e448ad17e07 (temperature 1, top_p 0.95, max_tokens 4096; the K2.6 runner's
docstring there: max_tokens 32768, thinking on); mrwwk/DeskCraft ``run_multienv_kimi_k25.py``
@ a5f0fd6704d0110de9ab6db492b75f91d94154c3 (K2.5: max_tokens 4096). Image patch limit 16384 (the
checkpoint's media_proc_cfg ``in_patch_limit``).

Instant mode (``k2.5-instant``, ``k2.6-instant``, chosen with --variant only: a checkpoint's name never
says it): the same checkpoint with its thinking switched off per request (agent.backends.openai
``thinking_switch``). Temperature 0.6, as Moonshot's API fixes it for its non-thinking K2 models
(platform.kimi.ai/docs/api/models-overview, "Parameter Comparison"); no published OSWorld run uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

from agent.models import variants as shared
from agent.models.variants import Family

VariantName = Literal["k2.5", "k2.6", "k2.5-instant", "k2.6-instant"]
CHECKPOINTS: tuple[VariantName, ...] = ("k2.5", "k2.6")
VARIANTS: tuple[VariantName, ...] = (*CHECKPOINTS, "k2.5-instant", "k2.6-instant")
INSTANT = "-instant"
IN_PATCH_LIMIT = 16384  # media_proc_cfg in_patch_limit (14-px patches per image, before the 2x2 merge)


@dataclass(frozen=True)
class Variant:
    name: VariantName
    thinking: bool
    temperature: float
    top_p: float
    in_token_limit: int
    max_new_tokens: int
    request_thinking: bool | None = None  # False: the request switches thinking off (instant)

    @classmethod
    def named(cls, name: VariantName) -> Variant:
        if name.endswith(INSTANT):
            return cls(name, False, 0.6, 0.95, IN_PATCH_LIMIT, 4096, request_thinking=False)
        # Thinking counts against max_tokens: K2.6's runner gives it 32768, K2.5's 4096.
        return cls(
            name=name,
            thinking=True,  # the API's default and the published runs' mode
            temperature=1.0,
            top_p=0.95,
            in_token_limit=IN_PATCH_LIMIT,
            max_new_tokens=32768 if name == "k2.6" else 4096,
        )


def guess_variant(name: str) -> VariantName | None:
    """kimi-k2.5, moonshotai/Kimi-K2.5, Kimi-K2_6, a path ending in Kimi-K2.6-NVFP4 ... -> the variant."""
    low = name.lower().replace("_", ".").replace("-k2-", "-k2.")
    for v in CHECKPOINTS:
        if v in low:
            return v
    return None


FAMILY: Family[Variant] = Family(
    make=Variant.named,  # type: ignore[arg-type]
    guess=guess_variant,
    default="k2.6",  # the newer, what Moonshot's API serves by default today
    allowed=VARIANTS,
    bad_override=lambda o: f"--variant {o!r} is not a Kimi K2 variant (choose from {', '.join(VARIANTS)})",
    limit_default_source=lambda name: f"the {name} default (media_proc_cfg in_patch_limit)",
    extra_record=("top_p",),
)
# --variant (k2.5 or k2.6; ValueError, one line, for another family's), else the first checkpoint
# name that says which, else K2.6.
resolve_variant = partial(shared.resolve_variant, FAMILY)
