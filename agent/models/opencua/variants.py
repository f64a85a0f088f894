"""OpenCUA's checkpoints and which one a run uses (``--variant``, else the checkpoint's names).

Sampling as OSWorld's OpenCUA runner sets it (karakuri-ai/OSWorld-JP run_multienv_opencua.py
@ 3301bf9fd54cef911c6788543fba9da99bd4bfcf: temperature 0, max_tokens 2048, 3 images; top_p 0.9
does not matter at temperature 0). None of them thinks: replies are plain text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial

from agent.models import variants as shared
from agent.models.profile import VariantResolver
from agent.models.qwen_vision import WIRE_PATCH_LIMIT
from agent.models.variants import Family

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


def resolver(names_allowed: tuple[str, ...]) -> VariantResolver:
    """The variant resolver of a profile whose variants are ``names_allowed`` (the first: default)."""
    family = Family(
        make=variant_named,
        guess=guess_variant,
        default=names_allowed[0],
        allowed=names_allowed,
        bad_override=lambda o: f"--variant {o}: OpenCUA's are {', '.join(names_allowed)}",
    )
    return partial(shared.resolve_variant, family)
