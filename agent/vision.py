"""MoonViT's image geometry: the resize rule, padding and the LLM token cost of an image.

Facts from the Kimi-VL image processor as documented in shared/docs/kimi-vl.md (and vLLM's
kimi_vl.py): patch 14, 2x2 merge, resize only down so that (W//14)*(H//14) <= in_token_limit.
"""

from __future__ import annotations

import math

PATCH = 14
MERGE = 2
PAD_TO = PATCH * MERGE  # 28
MAX_PATCHES_PER_SIDE = 512


def model_size(width: int, height: int, in_token_limit: int) -> tuple[int, int]:
    """The size MoonViT resizes an image to before padding (never upscales)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    patches = (width // PATCH) * (height // PATCH)
    if patches > in_token_limit:
        s = math.sqrt(in_token_limit / patches)
        width, height = int(width * s), int(height * s)
    return width, height


def padded_size(width: int, height: int) -> tuple[int, int]:
    """Right/bottom zero padding up to multiples of 28."""
    return math.ceil(width / PAD_TO) * PAD_TO, math.ceil(height / PAD_TO) * PAD_TO


def image_tokens(width: int, height: int, in_token_limit: int) -> int:
    """LLM tokens one image of this (original) size costs."""
    w, h = model_size(width, height, in_token_limit)
    return math.ceil(h / PAD_TO) * math.ceil(w / PAD_TO)
