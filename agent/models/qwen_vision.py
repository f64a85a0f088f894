"""The image size Qwen2.5-VL based checkpoints (OpenCUA-7B/32B/72B, UI-TARS-1.5) see a screenshot at:
Qwen2.5-VL's ``smart_resize`` rule. Shared: each family passes its own min_pixels.

The rule, as the OpenCUA OSWorld agent applies it (OSWorld fork karakuri-ai/OSWorld-JP,
mm_agents/opencua/opencua_agent.py @ 3301bf9fd54cef911c6788543fba9da99bd4bfcf, ``coordinate_type
qwen25``: factor 28, min_pixels 3136, max_pixels 12845056) and as Qwen's qwen_vl_utils states it
(summarised in /work/wt/i21-facts.md 2.4), written here from that statement:

1. an aspect ratio above 200 is refused;
2. each side is rounded (Python's ``round``: halves to even) to a multiple of 28, at least 28;
3. if that area exceeds max_pixels, both sides shrink by beta = sqrt(H*W / max_pixels) and are
   floored to multiples of 28; if it is below min_pixels, both grow by beta = sqrt(min_pixels / (H*W))
   and are ceiled to multiples of 28.

1920x1080 -> 1932x1092, 1280x800 -> 1288x812: the model's pixels are slightly larger than the
screen's, so its coordinates must be scaled back, never used as screen pixels.
"""

from __future__ import annotations

import math

from agent.models.kimi_vl.vision import wire_size

FACTOR = 28
MIN_PIXELS = 3136  # 56 * 56
MAX_PIXELS = 12845056  # 16384 * 28 * 28
MAX_RATIO = 200
# MoonViT's patch limit (14x14 patches) that equals max_pixels: the openai backend applies MoonViT's
# rule before sending (agent.models.kimi_vl.vision.wire_image); at this limit it leaves every image
# up to max_pixels as it is, so the server's smart_resize sees the screenshot itself.
WIRE_PATCH_LIMIT = MAX_PIXELS // (14 * 14)  # 65536


def smart_resize(
    width: int, height: int, factor: int = FACTOR, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> tuple[int, int]:
    """(width, height) after Qwen2.5-VL's resize rule (see the module's docstring)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if max(width, height) / min(width, height) > MAX_RATIO:
        raise ValueError(f"image of {width}x{height}: aspect ratio above {MAX_RATIO}")
    w = max(factor, round(width / factor) * factor)
    h = max(factor, round(height / factor) * factor)
    if w * h > max_pixels:
        beta = math.sqrt(width * height / max_pixels)
        w = max(factor, math.floor(width / beta / factor) * factor)
        h = max(factor, math.floor(height / beta / factor) * factor)
    elif w * h < min_pixels:
        beta = math.sqrt(min_pixels / (width * height))
        w = math.ceil(width * beta / factor) * factor
        h = math.ceil(height * beta / factor) * factor
    return w, h


def model_size(width: int, height: int, in_token_limit: int, min_pixels: int = MIN_PIXELS) -> tuple[int, int]:
    """The size the served model sees a ``width`` x ``height`` screenshot at: the image the openai
    backend sends (MoonViT's wire rule at ``in_token_limit``: the screenshot itself up to
    WIRE_PATCH_LIMIT), then the server's smart_resize of it (at the family's ``min_pixels``)."""
    return smart_resize(*wire_size(width, height, in_token_limit), min_pixels=min_pixels)


def image_tokens(width: int, height: int, in_token_limit: int, min_pixels: int = MIN_PIXELS) -> int:
    """LLM tokens one screenshot costs: Qwen2.5-VL's ViT merges its 14-pixel patches 2x2, so one
    token per 28x28 cell of the smart_resize size (a multiple of 28 on both sides)."""
    w, h = model_size(width, height, in_token_limit, min_pixels)
    return (w // FACTOR) * (h // FACTOR)
