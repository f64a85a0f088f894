"""Kimi-VL's variants (Instruct, Thinking, Thinking-2506): their sampling and image defaults, and
which one a run uses, from ``--variant`` or the names of the checkpoint (shared/docs/kimi-vl.md)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

from agent.models import variants as shared
from agent.models.variants import Family, ResolvedVariant

__all__ = ["FAMILY", "ResolvedVariant", "Variant", "VariantName", "guess_variant", "resolve_variant"]

VariantName = Literal["instruct", "thinking", "thinking-2506"]


@dataclass(frozen=True)
class Variant:
    """What differs between Kimi-VL checkpoints (shared/docs/kimi-vl.md, "Variants")."""

    name: VariantName
    thinking: bool
    temperature: float
    in_token_limit: int
    max_new_tokens: int

    @classmethod
    def named(cls, name: VariantName) -> Variant:
        think = name != "instruct"
        return cls(
            name=name,
            thinking=think,
            temperature=0.8 if think else 0.2,
            in_token_limit=16384 if name == "thinking-2506" else 4096,
            max_new_tokens=8192 if think else 1024,
        )

    @classmethod
    def from_name(cls, model: str) -> Variant:
        return cls.named(guess_variant(model) or "instruct")


def guess_variant(name: str) -> VariantName | None:
    """The variant a checkpoint name or path says it is (Kimi-VL-A3B-Thinking-2506, ...), or None."""
    low = name.lower()
    if "thinking" in low and "2506" in low:
        return "thinking-2506"
    if "thinking" in low:
        return "thinking"
    if "instruct" in low:
        return "instruct"
    return None


FAMILY: Family[Variant] = Family(
    make=Variant.named,  # type: ignore[arg-type]
    guess=guess_variant,
    default="instruct",
)
# --variant wins; else the first checkpoint name that says which; else Instruct. The patch limit:
# --in-token-limit, else the checkpoint's own (preprocessor_config), else the variant's.
resolve_variant = partial(shared.resolve_variant, FAMILY)
