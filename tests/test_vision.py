"""MoonViT geometry: token counts equal the documented formula and the tensors the tower gets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from agent.models.kimi_vl.vision import (
    default_in_token_limit,
    image_tokens,
    model_size,
    preprocess,
    read_in_token_limit,
    wire_image,
    wire_size,
)

SIZES = [
    (28, 28), (14, 14), (1, 1), (27, 29), (100, 37), (640, 480), (800, 600), (1024, 768), (1280, 720),
    (1280, 800), (1366, 768), (1440, 900), (1600, 900), (1920, 1080), (1920, 1200), (2048, 1536),
    (2560, 1440), (2880, 1800), (3024, 1964), (3200, 1800), (3840, 2160), (5120, 2880), (6016, 3384),
    (7680, 4320), (1080, 1920), (4320, 7680), (4000, 300), (300, 4000), (1792, 1792), (1791, 1793),
    (7140, 28), (28, 7140), (7150, 28), (10000, 200), (7168, 7168), (3440, 1440), (5120, 1440),
]  # fmt: skip


def formula(w: int, h: int, limit: int) -> tuple[int, int, int]:
    """shared/docs/kimi-vl.md, "Image preprocessing and token cost", written out independently:
    (tokens, resized width, resized height)."""
    p = (w // 14) * (h // 14)
    if p > limit:
        s = math.sqrt(limit / p)
        w, h = int(w * s), int(h * s)
    return math.ceil(h / 28) * math.ceil(w / 28), w, h


@pytest.mark.parametrize("limit", [4096, 16384])
@pytest.mark.parametrize(("w", "h"), SIZES)
def test_token_count_matches_formula_and_merged_patches(w: int, h: int, limit: int) -> None:
    expected, rw, rh = formula(w, h, limit)
    assert image_tokens(w, h, limit) == expected
    image = Image.new("RGB", (w, h), (10, 200, 30))
    if math.ceil(rw / 28) * 2 >= 512 or math.ceil(rh / 28) * 2 >= 512:
        # The official processor refuses a padded side of 512 patches or more ("Exceed pos emb").
        with pytest.raises(ValueError, match="fewer than 512"):
            preprocess([image], limit)
        return
    batch = preprocess([image], limit)
    _, gh, gw = batch.grid_thw[0].tolist()
    assert batch.sizes == [(rw, rh)] == [model_size(w, h, limit)] and rw <= w and rh <= h  # never upscaled
    assert (gh, gw) == (math.ceil(rh / 28) * 2, math.ceil(rw / 28) * 2)  # padded to multiples of 28
    assert batch.tokens == [expected] == [gh * gw // 4]
    assert batch.pixel_values.shape == (gh * gw, 3, 14, 14) and batch.pixel_values.dtype == torch.float32
    # That the vision tower turns this grid into one feature per LLM token is checked through the model's
    # public path (get_image_features) in test_transformers_backend.py, not through one of its internals.


def test_the_official_rule_may_land_a_little_over_the_limit() -> None:
    """The scale is computed from floored patch counts, so the result can exceed the limit by a
    few patches (1366x768 -> 86 x 48 = 4128 > 4096). We reproduce the rule, not an idealised one."""
    w, h = model_size(1366, 768, 4096)
    assert (w // 14) * (h // 14) == 4128


def test_documented_table() -> None:
    table = {(1920, 1080): (1032, 2691), (1280, 800): (1066, 1334), (2560, 1440): (1075, 4214)}
    for (w, h), (t4k, t16k) in table.items():
        assert (image_tokens(w, h, 4096), image_tokens(w, h, 16384)) == (t4k, t16k)
    assert model_size(1920, 1080, 4096) == (1196, 672)
    assert model_size(1280, 800, 4096) == (1137, 710)


def test_pixels_are_normalised_padded_and_row_major() -> None:
    img = Image.new("RGB", (30, 20), (255, 0, 0))
    img.putpixel((29, 0), (0, 0, 255))  # top-right pixel: patch (0, 2), offset (0, 1)
    batch = preprocess([img], 4096)
    assert batch.grid_thw.tolist() == [[1, 2, 4]]
    px = batch.pixel_values
    assert torch.equal(px[0, :, 0, 0], torch.tensor([1.0, -1.0, -1.0]))  # red -> (1, -1, -1)
    assert torch.equal(px[2, :, 0, 1], torch.tensor([-1.0, -1.0, 1.0]))
    assert torch.equal(px[3, :, 0, 0], torch.tensor([-1.0, -1.0, -1.0]))  # padding: 0 -> -1
    assert torch.equal(px[4 + 0, :, 6, 0], torch.tensor([-1.0, -1.0, -1.0]))  # row 20 is padding


def test_too_long_a_side_is_refused_like_the_official_processor() -> None:
    with pytest.raises(ValueError, match="MoonViT takes fewer than 512"):
        preprocess([Image.new("RGB", (8000, 28))], 4096)


def test_several_images_are_concatenated_in_order() -> None:
    a, b = Image.new("RGB", (56, 28), (255, 255, 255)), Image.new("RGB", (28, 84), (0, 0, 0))
    batch = preprocess([a, b], 4096)
    assert batch.grid_thw.tolist() == [[1, 2, 4], [1, 6, 2]] and batch.tokens == [2, 3]
    assert batch.pixel_values.shape[0] == 8 + 12
    assert torch.all(batch.pixel_values[:8] == 1) and torch.all(batch.pixel_values[8:] == -1)


def test_modes_are_resized_first_and_converted_after_as_the_official_processor() -> None:
    rgba = Image.effect_noise((1500, 900), 50).convert("RGBA")
    rgba.putalpha(Image.effect_noise((1500, 900), 90).convert("L"))
    size = model_size(1500, 900, 4096)
    official = rgba.resize(size, Image.Resampling.BICUBIC).convert("RGB")  # rescale, then to_tensor(convert)
    want = torch.frombuffer(bytearray(official.tobytes()), dtype=torch.uint8).view(size[1], size[0], 3)
    px = preprocess([rgba], 4096).pixel_values
    gw = math.ceil(size[0] / 28) * 2
    got = px.view(-1, gw, 3, 14, 14).permute(0, 3, 1, 4, 2).reshape(-1, gw * 14, 3)[: size[1], : size[0]]
    assert torch.equal(((got + 1) / 2 * 255).round().to(torch.uint8), want)


def test_in_token_limit_from_the_checkpoint(tmp_path: Path) -> None:
    assert read_in_token_limit(tmp_path) == 4096
    (tmp_path / "preprocessor_config.json").write_text('{"in_token_limit": 16384, "patch_size": 14}')
    assert read_in_token_limit(tmp_path) == 16384
    (tmp_path / "preprocessor_config.json").write_text('{"patch_size": 14}')
    assert read_in_token_limit(tmp_path) == 4096 and read_in_token_limit(tmp_path, default=123) == 123
    thinking_2506 = tmp_path / "Kimi-VL-A3B-Thinking-2506"
    thinking_2506.mkdir()
    assert read_in_token_limit(thinking_2506) == 16384
    snapshot = tmp_path / "hub" / "models--moonshotai--Kimi-VL-A3B-Thinking-2506" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    assert read_in_token_limit(snapshot) == 16384
    for name, limit in {
        "moonshotai/Kimi-VL-A3B-Instruct": 4096,
        "moonshotai/Kimi-VL-A3B-Thinking": 4096,
        "moonshotai/Kimi-VL-A3B-Thinking-2506": 16384,
    }.items():
        assert default_in_token_limit(name) == limit


@pytest.mark.parametrize("limit", [4096, 16384])
def test_the_server_resizes_what_we_send_once_as_the_official_processor(limit: int) -> None:
    """Issue 6.1 over a grid of sizes (odd, portrait, up to 8K): the server applies MoonViT's rule to
    what it receives; applied to ``wire_size`` it gives the official size of the original, and so the
    token count ``image_tokens`` reports. Sending ``model_size`` instead fails on ~13% of the grid."""
    twice = 0
    for w in range(14, 8000, 37):
        for h in range(14, 5000, 41):
            official = model_size(w, h, limit)
            sent = wire_size(w, h, limit)
            assert sent in (official, (w, h))  # the rule's result, or the original
            server = model_size(*sent, limit)
            assert server == official, (w, h, sent, server)
            assert math.ceil(server[1] / 28) * math.ceil(server[0] / 28) == image_tokens(w, h, limit)
            twice += model_size(*official, limit) != official
    assert twice > 1000  # the grid holds the sizes that were resized twice


def test_wire_image_is_rgb_and_refuses_what_moonvit_cannot_take() -> None:
    rgba = Image.new("RGBA", (1366, 768), (1, 2, 3, 255))
    assert wire_image(rgba, 4096).mode == "RGB" and wire_image(rgba, 4096).size == (1366, 768)
    assert wire_image(rgba, 16384).size == (1366, 768)  # under the limit: as it is
    assert wire_image(Image.new("L", (1920, 1080)), 4096).size == (1196, 672)
    assert wire_image(Image.new("L", (1920, 1080)), 4096).mode == "RGB"
    with pytest.raises(ValueError, match="MoonViT takes fewer than 512"):
        wire_image(Image.new("RGB", (8000, 28)), 4096)
