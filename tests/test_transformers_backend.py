"""Backend A on the tiny official-layout checkpoint (tests/tiny_kimi.py), through the real
transformers Kimi-K2.5 path: loading, vision numerics, generation and its errors."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from tiny_kimi import write_weights

from agent.backends.base import BackendError, GenerationParams
from agent.backends.transformers import PROJECTOR_KEYS, TransformersBackend, k25_config
from agent.messages import ImagePart, Message, TextPart
from agent.models.kimi_vl.vision import preprocess

IM_END, IM_MIDDLE = 163586, 163601


@pytest.fixture(scope="module")
def backend(tiny_kimi: Path) -> TransformersBackend:
    return TransformersBackend.load(str(tiny_kimi))


@pytest.fixture(scope="module")
def planted(
    tiny_kimi: Path, backend: TransformersBackend, tmp_path_factory: pytest.TempPathFactory
) -> TransformersBackend:
    """The tiny checkpoint with a planted reply: after <|im_middle|> the model says " Done" and then
    <|im_end|> (each token's lm_head row is a scaled copy of the previous token's embedding, which
    dominates the last hidden state); and a 16384 in_token_limit, as Thinking-2506 has."""
    root = tmp_path_factory.mktemp("planted") / "kimi"
    shutil.copytree(tiny_kimi, root)
    pre = json.loads((root / "preprocessor_config.json").read_text())
    (root / "preprocessor_config.json").write_text(json.dumps({**pre, "in_token_limit": 16384}))
    w = {k: v.float() for k, v in load_file(str(root / "model.safetensors")).items()}
    done = backend.chat.text_ids(" Done")
    emb, head = w["language_model.model.embed_tokens.weight"], w["language_model.lm_head.weight"]
    chain = [IM_MIDDLE, *done, IM_END]
    for prev, nxt in itertools.pairwise(chain):
        emb[prev] *= 4
        head[nxt] = emb[prev] * 4
    write_weights(root, w)
    return TransformersBackend.load(str(root))


def test_official_layout_loads_with_zero_missing_or_unexpected_keys(tiny_kimi: Path) -> None:
    from transformers import Kimi_K25ForConditionalGeneration

    raw_cfg = json.loads((tiny_kimi / "config.json").read_text())
    model, info = Kimi_K25ForConditionalGeneration.from_pretrained(
        tiny_kimi, config=k25_config(raw_cfg), key_mapping=PROJECTOR_KEYS, output_loading_info=True
    )
    assert (
        not info["missing_keys"]
        and not info["unexpected_keys"]
        and not info["mismatched_keys"]
        and not info["error_msgs"]
    )
    raw = load_file(str(tiny_kimi / "model.safetensors"))
    # Every number of the checkpoint is in the model, and the model has no weight of its own.
    sd = model.state_dict()
    assert sum(t.numel() for t in raw.values()) == sum(t.numel() for t in sd.values())
    for ours, official in {
        "lm_head.weight": "language_model.lm_head.weight",
        "model.language_model.embed_tokens.weight": "language_model.model.embed_tokens.weight",
        "model.language_model.layers.1.mlp.gate.e_score_correction_bias": "language_model.model.layers.1.mlp.gate.e_score_correction_bias",
        "model.mm_projector.pre_norm.bias": "multi_modal_projector.pre_norm.bias",
        "model.mm_projector.in_proj.weight": "multi_modal_projector.linear_1.weight",
        "model.mm_projector.out_proj.weight": "multi_modal_projector.linear_2.weight",
        "model.vision_tower.patch_embed.pos_emb.position_embeddings": "vision_tower.patch_embed.pos_emb.weight",
        "model.vision_tower.layers.1.norm2.weight": "vision_tower.encoder.blocks.1.norm1.weight",
        "model.vision_tower.final_layernorm.bias": "vision_tower.encoder.final_layernorm.bias",
    }.items():  # fmt: skip
        assert torch.equal(sd[ours], raw[official].float()), ours
    # Sizes come from the checkpoint's config, not the released model's.
    cfg = model.config
    assert (cfg.vision_config.hidden_size, cfg.vision_config.pos_emb_height, cfg.text_config.hidden_size) == (
        32,
        8,
        32,
    )
    assert cfg.image_token_id == raw_cfg["media_placeholder_token_id"] == 163605
    assert cfg.tie_word_embeddings is False and cfg.text_config.vocab_size == 163840
    assert cfg.vision_config.rope_parameters["rope_theta"] == 10000.0


def test_the_language_model_is_deepseek_v3_as_loaded_on_its_own(
    tiny_kimi: Path, backend: TransformersBackend
) -> None:
    """The text path through Kimi_K25 equals transformers' DeepseekV3ForCausalLM loaded straight
    from the checkpoint's ``language_model.*`` weights (the DeepSeek-V3 names, experts one by one)."""
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    text_cfg = DeepseekV3Config(**json.loads((tiny_kimi / "config.json").read_text())["text_config"])
    lm, info = DeepseekV3ForCausalLM.from_pretrained(
        tiny_kimi,
        config=text_cfg,
        key_mapping={r"^language_model\.": ""},
        dtype=torch.float32,
        output_loading_info=True,
    )
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert all(k.startswith(("vision_tower.", "multi_modal_projector.")) for k in info["unexpected_keys"])
    ids = torch.tensor([backend.chat.render([Message.text("user", "Open the terminal, then type ls.")]).ids])
    with torch.inference_mode():
        torch.testing.assert_close(backend.model(input_ids=ids).logits, lm(input_ids=ids).logits)


def moonvit_reference(
    w: dict[str, torch.Tensor], vcfg: dict, px: torch.Tensor, grids: list
) -> list[torch.Tensor]:
    """Kimi-VL's vision path written from vLLM's moonvit.py / kimi_vl.py facts, on the official
    weight names: conv patch embedding + the learned grid (bicubically resized when the image grid
    differs), 2D RoPE on complex pairs with frequencies theta^(-4i/d) for x (width) then y (height),
    pre-LayerNorm blocks (fused wqkv, tanh-GELU MLP fc0/fc1), final LayerNorm, 2x2 merge in (row,
    col) order, projector LayerNorm -> Linear -> GELU -> Linear."""
    heads, dim = vcfg["num_attention_heads"], vcfg["hidden_size"]
    hd = dim // heads
    x = F.conv2d(
        px, w["vision_tower.patch_embed.proj.weight"], w["vision_tower.patch_embed.proj.bias"]
    ).flatten(1)
    grid = w["vision_tower.patch_embed.pos_emb.weight"]
    freqs = 10000.0 ** (-torch.arange(0, hd, 4).float() / hd)
    pos, cis = [], []
    for _, h, wd in grids:
        if (h, wd) == tuple(grid.shape[:2]):
            pos.append(grid.flatten(0, 1))
        else:
            pos.append(
                F.interpolate(grid.permute(2, 0, 1)[None], size=(h, wd), mode="bicubic")[0].flatten(1).T
            )
        yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(wd).float(), indexing="ij")
        angles = torch.stack(
            [torch.outer(xx.flatten(), freqs), torch.outer(yy.flatten(), freqs)], -1
        ).flatten(1)
        cis.append(torch.polar(torch.ones_like(angles), angles))
    x, rope = x + torch.cat(pos), torch.cat(cis)[:, None]
    lengths = [h * wd for _, h, wd in grids]

    def rotate(t: torch.Tensor) -> torch.Tensor:
        return torch.view_as_real(torch.view_as_complex(t.reshape(*t.shape[:-1], -1, 2)) * rope).flatten(-2)

    def ln(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(t, (t.shape[-1],), w[f"{name}.weight"], w[f"{name}.bias"])

    def linear(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(t, w[f"{name}.weight"], w[f"{name}.bias"])

    for i in range(vcfg["num_hidden_layers"]):
        b = f"vision_tower.encoder.blocks.{i}"
        q, k, v = linear(ln(x, f"{b}.norm0"), f"{b}.wqkv").view(-1, 3, heads, hd).unbind(1)
        q, k = rotate(q), rotate(k)
        out = []
        for qs, ks, vs in zip(q.split(lengths), k.split(lengths), v.split(lengths), strict=True):
            att = torch.softmax(torch.einsum("qhd,khd->hqk", qs, ks) * hd**-0.5, -1)
            out.append(torch.einsum("hqk,khd->qhd", att, vs).flatten(1))
        x = x + linear(torch.cat(out), f"{b}.wo")
        x = x + linear(
            F.gelu(linear(ln(x, f"{b}.norm1"), f"{b}.mlp.fc0"), approximate="tanh"), f"{b}.mlp.fc1"
        )
    x = ln(x, "vision_tower.encoder.final_layernorm")
    feats = []
    for xs, (_, h, wd) in zip(x.split(lengths), grids, strict=True):
        merged = xs.view(h // 2, 2, wd // 2, 2, dim).permute(0, 2, 1, 3, 4).reshape(-1, 4, dim)
        merged = ln(merged, "multi_modal_projector.pre_norm").flatten(1)
        hidden = F.gelu(linear(merged, "multi_modal_projector.linear_1"))
        feats.append(linear(hidden, "multi_modal_projector.linear_2"))
    return feats


def test_vision_features_equal_an_independent_moonvit_and_fill_the_image_tokens(
    tiny_kimi: Path, backend: TransformersBackend
) -> None:
    images = [
        Image.effect_noise((300, 200), 60).convert("RGB"),  # grid 16 x 22: the learned 8x8 grid resampled
        Image.effect_noise((112, 112), 40).convert("RGB"),  # grid 8 x 8: the learned grid as is
        Image.effect_noise((57, 141), 80).convert("RGB"),
        Image.effect_noise((27, 29), 50).convert("RGB"),  # smaller than one merged patch: padded up
        Image.effect_noise((4000, 300), 70).convert("RGB"),  # over the token limit: scaled down first
    ]
    batch = preprocess(images, backend.in_token_limit)
    w = {k: v.float() for k, v in load_file(str(tiny_kimi / "model.safetensors")).items()}
    vcfg = json.loads((tiny_kimi / "config.json").read_text())["vision_config"]
    with torch.inference_mode():
        want = moonvit_reference(w, vcfg, batch.pixel_values, batch.grid_thw.tolist())
        got = backend.model.model.get_image_features(batch.pixel_values, batch.grid_thw).pooler_output
    for g, r in zip(got, want, strict=True):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    # One image token per feature row, image by image.
    ids = backend.chat.render([Message("user", (*(ImagePart(i) for i in images), TextPart("?")))]).ids
    assert ids.count(163605) == sum(g.shape[0] for g in got) == sum(batch.tokens)
    assert [g.shape[0] for g in got] == batch.tokens


def test_greedy_generation_is_deterministic_and_within_budget(backend: TransformersBackend) -> None:
    shot = Image.new("RGB", (1280, 800), (40, 80, 120))
    messages = [
        Message.text("system", "You are a GUI agent."),
        Message("user", (ImagePart(shot), TextPart("next?"))),
    ]
    a = backend.generate(messages, GenerationParams(max_new_tokens=6))
    b = backend.generate(messages, GenerationParams(max_new_tokens=6))
    assert a.text == b.text and a.tokens_out == b.tokens_out
    assert a.tokens_in == len(backend.chat.render(messages).ids) and a.tokens_in > 1066  # 1066 image tokens
    assert 1 <= a.tokens_out <= 6 and a.latency_s > 0
    assert a.finish_reason == ("length" if a.tokens_out == 6 else "stop")


def test_sampling_follows_the_seed_and_the_temperature(backend: TransformersBackend) -> None:
    messages = [Message.text("user", "Say something.")]
    texts = []
    for seed in (0, 1, 0):
        torch.manual_seed(seed)
        texts.append(backend.generate(messages, GenerationParams(max_new_tokens=8, temperature=1.0)).text)
    assert texts[0] == texts[2] != texts[1]


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_stops_at_im_end_and_returns_the_text(planted: TransformersBackend, temperature: float) -> None:
    shot = Image.new("RGB", (1280, 800), (200, 200, 200))
    messages = [Message("user", (ImagePart(shot), TextPart("Are you done?")))]
    c = planted.generate(messages, GenerationParams(max_new_tokens=32, temperature=temperature))
    assert (c.text, c.finish_reason) == (" Done", "stop")
    assert c.tokens_out == len(planted.chat.text_ids(" Done")) + 1  # the reply and <|im_end|>
    # The checkpoint's in_token_limit (16384): 1280x800 is not resized, 1334 tokens (1066 at 4096).
    ids = planted.chat.render(messages).ids
    assert planted.in_token_limit == 16384 and ids.count(163605) == 1334 and c.tokens_in == len(ids)
    short = planted.generate(messages, GenerationParams(max_new_tokens=2, temperature=temperature))
    assert short.finish_reason == "length" and short.tokens_out == 2


def test_decoding_drops_special_tokens_and_keeps_the_thinking_markers(backend: TransformersBackend) -> None:
    reply = "◁think▷The Save button is top left.◁/think▷## Action:\nclick Save"
    ids = backend.chat.text_ids(reply)
    assert backend.decode([*ids, IM_END]) == (reply, "stop")
    assert backend.decode([*ids, 163585]) == (reply, "stop")  # [EOS] ends it too
    assert backend.decode([163584, *ids]) == (reply, "length")  # a stray [BOS] is dropped


def test_an_image_the_official_processor_refuses_is_a_backend_error(backend: TransformersBackend) -> None:
    strip = Image.new("RGB", (7200, 28))  # 515 patches wide after padding
    with pytest.raises(BackendError, match=r"cannot send this image to Kimi-VL: .* fewer than 512"):
        backend.generate([Message("user", (ImagePart(strip),))], GenerationParams(max_new_tokens=1))


def test_config_conversion_refuses_what_the_native_classes_cannot_run(tiny_kimi: Path) -> None:
    raw = json.loads((tiny_kimi / "config.json").read_text())
    with pytest.raises(BackendError, match="not a Kimi-VL checkpoint"):
        k25_config({**raw, "model_type": "kimi_k25"})
    wide = {**raw, "vision_config": {**raw["vision_config"], "init_pos_emb_width": 16}}
    with pytest.raises(BackendError, match="square grids only"):
        k25_config(wide)
