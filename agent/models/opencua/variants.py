"""OpenCUA's checkpoints and which one a run uses (``--variant``, else the checkpoint's names).

Sampling as OSWorld's OpenCUA runner sets it (karakuri-ai/OSWorld-JP run_multienv_opencua.py
@ 3301bf9fd54cef911c6788543fba9da99bd4bfcf: temperature 0, max_tokens 2048, 3 images; top_p 0.9
does not matter at temperature 0). None of them thinks: replies are plain text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from agent.models.profile import VariantResolver
from agent.models.qwen_vision import WIRE_PATCH_LIMIT

# A3B is Kimi-VL-A3B based (relative coordinates, MoonViT); 7B/32B/72B are Qwen2.5-VL based
# (absolute pixels of the smart-resized image). Two profiles, because the coordinate space and the
# image rule are a profile's, not a variant's.
A3B_VARIANTS = ("a3b",)
QWEN_VARIANTS = ("7b", "32b", "72b")
_SIZE = re.compile(r"opencua[-_ ]?(a3b|7b|32b|72b)\b", re.I)


@dataclass(frozen=True)
class Variant:
    name: str
    thinking: bool = False
    temperature: float = 0.0
    in_token_limit: int = WIRE_PATCH_LIMIT
    max_new_tokens: int = 2048


def variant_named(name: str) -> Variant:
    # A3B: Kimi-VL-A3B-Instruct's MoonViT limit (UNKNOWN whether OpenCUA-A3B changed it;
    # --in-token-limit overrides). 7B/32B/72B: the backend sends the screenshot as it is.
    return Variant(name, in_token_limit=4096) if name == "a3b" else Variant(name)


def guess_variant(name: str) -> str | None:
    """``xlangai/OpenCUA-7B`` -> "7b", ``OpenCUA-A3B`` -> "a3b", or None."""
    m = _SIZE.search(name)
    return m.group(1).lower() if m else None


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


def resolver(names_allowed: tuple[str, ...]) -> VariantResolver:
    """The variant resolver of a profile whose variants are ``names_allowed`` (the first: default)."""

    def resolve(
        *,
        override: Any,
        names: Sequence[tuple[str, str]],
        in_token_limit: int | None = None,
        in_token_limit_source: str = "",
        in_token_limit_override: int | None = None,
    ) -> ResolvedVariant:
        if override is not None:
            if override not in names_allowed:
                raise ValueError(f"--variant {override}: OpenCUA's are {', '.join(names_allowed)}")
            name, source = str(override), "--variant"
        else:
            found = next(
                ((g, f"{what} {v!r}") for what, v in names if v and (g := guess_variant(v)) in names_allowed),
                None,
            )
            name, source = found if found else (names_allowed[0], "default (no name said which variant)")
        variant = variant_named(name)
        limit_source = f"the {name} default"
        if in_token_limit_override is not None:
            variant, limit_source = (
                replace(variant, in_token_limit=in_token_limit_override),
                "--in-token-limit",
            )
        elif in_token_limit is not None:
            variant, limit_source = replace(variant, in_token_limit=in_token_limit), in_token_limit_source
        return ResolvedVariant(variant, source, limit_source)

    return resolve
