"""MoonViT's image geometry: the resize rule, padding and the LLM token cost of an image.

Facts from the Kimi-VL image processor (image_processing_kimi_vl.py in the released checkpoints,
as summarised in shared/docs/kimi-vl.md and mirrored by vLLM's kimi_vl.py and mlx-vlm's port):
patch 14, 2x2 merge, bicubic resize only down so that (W//14)*(H//14) <= in_token_limit, zero
padding right/bottom to multiples of 28 (``pad_input``), mean = std = 0.5, and a ValueError
("Exceed pos emb") when a padded side reaches 512 patches: the official processor does not shrink
such an image further, it refuses it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:  # imported where used: the openai backend needs the geometry, not torch (seconds)
    import torch

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
    """The image as MoonViT sees it before padding (bicubic, never upscaled, then RGB).

    The official processor resizes the image in its own mode and converts to RGB afterwards
    (image_processing_kimi_vl.py: ``rescale`` then ``to_tensor(image.convert("RGB"))``); so do we,
    which keeps RGBA screenshots bit-identical to it.
    """
    size = model_size(image.width, image.height, in_token_limit)
    check_sides(*size)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image.convert("RGB")


def wire_size(width: int, height: int, in_token_limit: int) -> tuple[int, int]:
    """The size to send an image of this size at to a server that applies MoonViT's rule itself
    (vLLM runs the official processor), so that it resizes no more than the official processor does.

    The rule can land a little over the limit (1366x768 -> 1207x679 = 4128 patches at 4096) and the
    server would shrink such a result a second time (to 1202x676: 1075 tokens instead of 1100). So
    the rule's result is sent only when the rule leaves it as it is; otherwise the original size,
    which the server resizes once, as the official processor does. Either way the server ends up with
    ``model_size`` and counts ``image_tokens`` of the original.
    """
    size = model_size(width, height, in_token_limit)
    return size if model_size(*size, in_token_limit) == size else (width, height)


def wire_image(image: Image.Image, in_token_limit: int) -> Image.Image:
    """The image at ``wire_size``, RGB: vLLM converts what it receives to RGB before the processor,
    compositing RGBA on white, whereas the official processor drops alpha (the same for the opaque
    screenshots the runtime sends)."""
    small = resize_for_model(image, in_token_limit)  # also refuses a side MoonViT cannot take
    return small if wire_size(*image.size, in_token_limit) == small.size else image.convert("RGB")


@dataclass
class PixelBatch:
    """What Kimi_K25VisionModel consumes: patches (N, 3, 14, 14) (its patch_embed is a Conv2d with
    kernel = stride = 14), row-major patch order per image, images one after another, and each
    image's patch grid (t=1, h, w)."""

    pixel_values: torch.Tensor
    grid_thw: torch.Tensor
    tokens: list[int]  # LLM tokens per image = h * w / 4
    sizes: list[tuple[int, int]]  # (width, height) after the resize, before the padding


def preprocess(images: Sequence[Image.Image], in_token_limit: int) -> PixelBatch:
    """Resize (MoonViT rule), zero-pad right/bottom to multiples of 28, normalise with
    mean = std = 0.5 and cut into 14x14 patches, row-major. Raises ValueError for an image with
    a side of 512 patches or more, as the official processor does ("Exceed pos emb")."""
    import torch

    if not images:
        raise ValueError("preprocess needs at least one image")
    patches, grids, tokens, sizes = [], [], [], []
    for img in images:
        small = resize_for_model(img, in_token_limit)
        pw, ph = padded_size(small.width, small.height)
        x = torch.zeros(ph, pw, 3, dtype=torch.uint8)
        x[: small.height, : small.width] = torch.frombuffer(
            bytearray(small.tobytes()), dtype=torch.uint8
        ).view(small.height, small.width, 3)
        # Pad, then normalise (as the official processor does): padding becomes -1.
        x = x.permute(2, 0, 1).float().div_(255).sub_(0.5).div_(0.5)
        gh, gw = ph // PATCH, pw // PATCH
        p = x.view(3, gh, PATCH, gw, PATCH).permute(1, 3, 0, 2, 4).reshape(gh * gw, 3, PATCH, PATCH)
        patches.append(p)
        grids.append((1, gh, gw))
        tokens.append(gh * gw // (MERGE * MERGE))
        sizes.append(small.size)
    return PixelBatch(torch.cat(patches), torch.tensor(grids, dtype=torch.long), tokens, sizes)


def default_in_token_limit(name: str) -> int:
    """The per-image patch budget of a checkpoint by its name (shared/docs/kimi-vl.md, "Variants"):
    16384 for Kimi-VL-A3B-Thinking-2506 (3.2 MP), 4096 for Instruct and the first Thinking."""
    return 16384 if "2506" in name else 4096


def read_in_token_limit(checkpoint: Path, default: int | None = None) -> int:
    """``in_token_limit`` from the checkpoint's preprocessor_config.json (the key the official
    KimiVLImageProcessor takes); without one, ``default`` or the variant's default by name."""
    checkpoint = Path(checkpoint)
    if default is None:
        default = default_in_token_limit(_checkpoint_name(checkpoint))
    path = checkpoint / "preprocessor_config.json"
    if not path.is_file():
        return default
    value = json.loads(path.read_text(encoding="utf-8")).get("in_token_limit")
    return default if value is None else int(value)


def _checkpoint_name(checkpoint: Path) -> str:
    """The directory's name, the hub cache's ``models--owner--name`` folder when it is a snapshot,
    and config.json's ``_name_or_path``."""
    parts = [checkpoint.resolve().name, *(p for p in checkpoint.resolve().parts if p.startswith("models--"))]
    config = checkpoint / "config.json"
    if config.is_file():
        parts.append(str(json.loads(config.read_text(encoding="utf-8")).get("_name_or_path", "")))
    return " ".join(parts)
