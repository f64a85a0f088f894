"""MoonViT's image geometry: the resize rule, padding and the LLM token cost of an image.

Facts from the Kimi-VL image processor as documented in shared/docs/kimi-vl.md (and vLLM's
kimi_vl.py): patch 14, 2x2 merge, resize only down so that (W//14)*(H//14) <= in_token_limit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

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


def check_sides(width: int, height: int) -> None:
    """MoonViT's learned position grid is interpolated up to 512 patches a side; the official
    processor refuses anything longer ("Exceed pos emb")."""
    w, h = padded_size(width, height)
    if w // PATCH >= MAX_PATCHES_PER_SIDE or h // PATCH >= MAX_PATCHES_PER_SIDE:
        raise ValueError(
            f"image of {width}x{height} has a side of {max(w, h) // PATCH} patches after resizing; "
            f"MoonViT takes fewer than {MAX_PATCHES_PER_SIDE}"
        )


def resize_for_model(image: Image.Image, in_token_limit: int) -> Image.Image:
    """The image as MoonViT sees it before padding (RGB, bicubic, never upscaled)."""
    image = image.convert("RGB")
    size = model_size(image.width, image.height, in_token_limit)
    check_sides(*size)
    return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)


@dataclass
class PixelBatch:
    """What the vision tower consumes: patches (N, 3, 14, 14) in row-major patch order per image,
    and each image's patch grid (t=1, h, w)."""

    pixel_values: torch.Tensor
    grid_thw: torch.Tensor
    tokens: list[int]  # LLM tokens per image = h * w / 4


def preprocess(images: Sequence[Image.Image], in_token_limit: int) -> PixelBatch:
    patches, grids, tokens = [], [], []
    for img in images:
        small = resize_for_model(img, in_token_limit)
        pw, ph = padded_size(small.width, small.height)
        x = torch.zeros(ph, pw, 3, dtype=torch.uint8)
        x[: small.height, : small.width] = torch.frombuffer(
            bytearray(small.tobytes()), dtype=torch.uint8
        ).view(small.height, small.width, 3)
        # Zero padding becomes -1 after normalisation, as in the official processor (pad, then normalise).
        x = x.permute(2, 0, 1).float().div_(255).sub_(0.5).div_(0.5)  # mean = std = 0.5
        gh, gw = ph // PATCH, pw // PATCH
        p = x.view(3, gh, PATCH, gw, PATCH).permute(1, 3, 0, 2, 4).reshape(gh * gw, 3, PATCH, PATCH)
        patches.append(p)
        grids.append((1, gh, gw))
        tokens.append(gh * gw // (MERGE * MERGE))
    return PixelBatch(torch.cat(patches), torch.tensor(grids, dtype=torch.long), tokens)


def read_in_token_limit(checkpoint: Path, default: int = 4096) -> int:
    """``in_token_limit`` from the checkpoint's preprocessor_config.json (16384 for 2506)."""
    path = Path(checkpoint) / "preprocessor_config.json"
    if not path.is_file():
        return default
    return int(json.loads(path.read_text(encoding="utf-8")).get("in_token_limit", default))
