"""The full-size Kimi-VL-A3B architecture through our config conversion, on the meta device
(no weights, no memory): parameter count and key shapes. With CUDA, also random-weight latency
for a 1920x1080 screenshot + 3 history images (prefill, decode tokens/s, peak memory).

Run: .venv/bin/python tests/bench/bench_model_path.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.transformers_backend import k25_config

# The released config's sizes (shared/docs/kimi-vl.md, "Checkpoint").
RELEASED = {
    "model_type": "kimi_vl",
    "media_placeholder_token_id": 163605,
    "vision_config": {"model_type": "moonvit", "patch_size": 14, "init_pos_emb_height": 64, "init_pos_emb_width": 64, "num_attention_heads": 16, "num_hidden_layers": 27, "hidden_size": 1152, "intermediate_size": 4304, "merge_kernel_size": [2, 2]},
    "text_config": {
        "model_type": "deepseek_v3", "vocab_size": 163840, "hidden_size": 2048, "intermediate_size": 11264, "moe_intermediate_size": 1408,
        "num_hidden_layers": 27, "num_attention_heads": 16, "num_key_value_heads": 16, "n_shared_experts": 2, "n_routed_experts": 64,
        "num_experts_per_tok": 6, "n_group": 1, "topk_group": 1, "first_k_dense_replace": 1, "moe_layer_freq": 1, "kv_lora_rank": 512,
        "q_lora_rank": None, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "topk_method": "noaux_tc",
        "scoring_func": "sigmoid", "norm_topk_prob": True, "routed_scaling_factor": 2.446, "hidden_act": "silu",
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
    },
}  # fmt: skip


def main() -> None:
    from transformers import Kimi_K25ForConditionalGeneration

    cfg = k25_config(RELEASED)
    with torch.device("meta"):
        model = Kimi_K25ForConditionalGeneration(cfg)
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    sd = model.state_dict()
    print(f"parameters: {total / 1e9:.2f} B total (vision tower {vision / 1e6:.0f} M)")
    for key in (
        "model.mm_projector.in_proj.weight",
        "model.mm_projector.out_proj.weight",
        "lm_head.weight",
        "model.vision_tower.patch_embed.pos_emb.position_embeddings",
    ):
        print(f"  {key}: {tuple(sd[key].shape)}")
    if not torch.cuda.is_available():
        print("no CUDA device: latency figures need a GPU")
        return
    _gpu_latency(cfg)


def _gpu_latency(cfg: object) -> None:
    from PIL import Image
    from transformers import Kimi_K25ForConditionalGeneration

    from agent.vision import preprocess

    torch.manual_seed(0)
    model = Kimi_K25ForConditionalGeneration(cfg).to("cuda", torch.bfloat16).eval()
    images = [Image.new("RGB", (1920, 1080), (i * 50, 90, 160)) for i in range(4)]
    batch = preprocess(images, 4096)
    image_id = cfg.image_token_id  # type: ignore[attr-defined]
    ids: list[int] = []
    for n in batch.tokens:
        ids += [163602, 1] + [image_id] * n + [163604] + list(range(1000, 1100))
    input_ids = torch.tensor([ids], device="cuda")
    kw = {
        "pixel_values": batch.pixel_values.to("cuda", torch.bfloat16),
        "image_grid_thw": batch.grid_thw.cuda(),
    }
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        for _ in range(2):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(input_ids=input_ids, **kw)
            torch.cuda.synchronize()
            prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.generate(input_ids=input_ids, **kw, max_new_tokens=64, min_new_tokens=64, do_sample=False)
        torch.cuda.synchronize()
        total = time.perf_counter() - t0
    new = out.shape[1] - input_ids.shape[1]
    print(
        f"prompt {input_ids.shape[1]} tokens: prefill {prefill:.3f} s ({input_ids.shape[1] / prefill:.0f} tok/s)"
    )
    print(
        f"decode: {new / max(total - prefill, 1e-9):.1f} tok/s; step latency (prefill + 64 tokens) {total:.2f} s"
    )
    print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
