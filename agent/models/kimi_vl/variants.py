"""Kimi-VL's variants (Instruct, Thinking, Thinking-2506): their sampling and image defaults, and
which one a run uses, from ``--variant`` or the names of the checkpoint (shared/docs/kimi-vl.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

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


@dataclass(frozen=True)
class ResolvedVariant:
    """The variant a run uses and where each part of it came from (recorded in run.json)."""

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
    override: VariantName | None,
    names: Sequence[tuple[str, str]],
    in_token_limit: int | None = None,
    in_token_limit_source: str = "",
    in_token_limit_override: int | None = None,
) -> ResolvedVariant:
    """``--variant`` wins; else the first of ``names`` ((what, value), most reliable first: the
    checkpoint the server loaded, the checkpoint directory, the served name) that says which; else
    Instruct. The patch limit: ``--in-token-limit``, else the checkpoint's own (preprocessor_config),
    else the variant's."""
    if override is not None:
        name, source = override, "--variant"
    else:
        found = next(
            ((guess_variant(v), f"{what} {v!r}") for what, v in names if v and guess_variant(v)), None
        )
        name, source = found if found else ("instruct", "default (no name said which variant)")
    variant = Variant.named(name)  # type: ignore[arg-type]
    limit_source = f"the {variant.name} default"
    if in_token_limit_override is not None:
        variant, limit_source = replace(variant, in_token_limit=in_token_limit_override), "--in-token-limit"
    elif in_token_limit is not None:
        variant, limit_source = replace(variant, in_token_limit=in_token_limit), in_token_limit_source
    return ResolvedVariant(variant, source, limit_source)
