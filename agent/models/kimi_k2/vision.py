"""K2.5 / K2.6's image size rule (MoonViT-3d's "navit" resize), for the profile's ``model_size``.

Source: huggingface/transformers ``src/transformers/models/kimi_k25/image_processing_kimi_k25.py``
@ 043bb8dde14aae1a56b84cd230737cf5d0877912 with the checkpoint's media_proc_cfg (in_patch_limit 16384,
patch_limit_on_one_side 512, patch 14): never upscale; shrink so that the 14-px patches fit the limit and
neither side exceeds 512 patches. The facts are summarised in /work/wt/i21-facts.md 1.9.
"""

from __future__ import annotations

import math

PATCH = 14
PATCHES_PER_SIDE = 512


def model_size(width: int, height: int, in_token_limit: int) -> tuple[int, int]:
    """The size the processor resizes a ``width`` x ``height`` image to (before padding to 28)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    by_area = math.sqrt(in_token_limit / (max(1, width // PATCH) * max(1, height // PATCH)))
    side = PATCHES_PER_SIDE * PATCH
    s = min(1.0, by_area, side / width, side / height)
    return min(side, max(1, int(width * s))), min(side, max(1, int(height * s)))


def image_tokens(width: int, height: int, in_token_limit: int) -> int:
    """LLM tokens one image costs: its resized size in 28-px cells (2x2 merge of 14-px patches)."""
    w, h = model_size(width, height, in_token_limit)
    return math.ceil(h / (2 * PATCH)) * math.ceil(w / (2 * PATCH))
