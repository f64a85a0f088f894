"""The full-size Kimi-VL-A3B architecture through our config conversion, on the meta device (no
weights, no memory): parameter counts and key shapes. With CUDA, random-weight bf16 latency of one
agent step: a 1920x1080 screenshot + 3 history screenshots (vision encoder, prefill, decode
tokens/s, peak memory). Without CUDA the same latency code runs once on the tiny checkpoint on
CPU, as a smoke test of that path (its figures mean nothing).

Run: .venv/bin/python tests/bench/bench_model_path.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from agent.backends.transformers import k25_config  # noqa: E402
from agent.messages import ImagePart, Message, TextPart  # noqa: E402
from agent.models.kimi_vl.chat import KimiChat  # noqa: E402
from agent.models.kimi_vl.tokenizer import load_tokenizer  # noqa: E402
from agent.models.kimi_vl.vision import preprocess  # noqa: E402

# The released config's sizes (shared/docs/kimi-vl.md, "Checkpoint"), with Moonlight's extra keys.
RELEASED = {
    "architectures": ["KimiVLForConditionalGeneration"],
    "model_type": "kimi_vl",
    "media_placeholder_token_id": 163605,
    "ignore_index": -100,
    "pad_token_id": 0,
    "vision_config": {"model_type": "moonvit", "patch_size": 14, "init_pos_emb_height": 64, "init_pos_emb_width": 64,
                      "num_attention_heads": 16, "num_hidden_layers": 27, "hidden_size": 1152, "intermediate_size": 4304,
                      "merge_kernel_size": [2, 2]},
    "text_config": {
        "model_type": "deepseek_v3", "vocab_size": 163840, "hidden_size": 2048, "intermediate_size": 11264,
        "moe_intermediate_size": 1408, "num_hidden_layers": 27, "num_attention_heads": 16, "num_key_value_heads": 16,
        "n_shared_experts": 2, "n_routed_experts": 64, "num_experts_per_tok": 6, "n_group": 1, "topk_group": 1,
        "first_k_dense_replace": 1, "moe_layer_freq": 1, "kv_lora_rank": 512, "q_lora_rank": None,
        "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "topk_method": "noaux_tc",
        "scoring_func": "sigmoid", "norm_topk_prob": True, "routed_scaling_factor": 2.446, "aux_loss_alpha": 0.001,
        "seq_aux": True, "ep_size": 1, "hidden_act": "silu", "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
        "rope_scaling": None, "tie_word_embeddings": False, "bos_token_id": 163584, "eos_token_id": 163585,
    },
}  # fmt: skip
HISTORY = 3  # earlier screenshots kept in the prompt (the policy's default)
NEW_TOKENS = 64


def main() -> None:
    from transformers import Kimi_K25ForConditionalGeneration

    cfg = k25_config(RELEASED)
    with torch.device("meta"):
        model = Kimi_K25ForConditionalGeneration(cfg)
    sd = model.state_dict()
    total = sum(t.numel() for t in sd.values())
    vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    projector = sum(p.numel() for p in model.model.mm_projector.parameters())
    text = RELEASED["text_config"]
    experts = sum(t.numel() for k, t in sd.items() if ".mlp.experts." in k)
    active_lm = (
        total - vision - projector - experts * (1 - text["num_experts_per_tok"] / text["n_routed_experts"])
    )
    print(f"parameters: {total / 1e9:.2f} B total (doc: 16.4 B); vision tower {vision / 1e6:.0f} M, "
          f"projector {projector / 1e6:.1f} M; language model active per token {active_lm / 1e9:.2f} B (doc: ~3 B)")  # fmt: skip
    for key in (
        "model.vision_tower.patch_embed.proj.weight",
        "model.vision_tower.patch_embed.pos_emb.position_embeddings",
        "model.vision_tower.layers.0.attn.q_proj.weight",
        "model.mm_projector.in_proj.weight",
        "model.mm_projector.out_proj.weight",
        "model.language_model.layers.0.mlp.gate_proj.weight",
        "model.language_model.layers.1.self_attn.kv_b_proj.weight",
        "model.language_model.layers.1.mlp.experts.gate_up_proj",
        "lm_head.weight",
    ):
        print(f"  {key}: {tuple(sd[key].shape)}")
    assert abs(total / 1e9 - 16.4) < 0.1, total

    with tempfile.TemporaryDirectory() as tmp:
        from tiny_kimi import write_tiny_kimi

        tiny = write_tiny_kimi(Path(tmp))
        # The tiny checkpoint's tokenizer has the official special ids and vocabulary size, so the
        # prompt has the released structure (its text BPE is smaller: text runs a little longer).
        chat = KimiChat(load_tokenizer(tiny), 4096)
        if torch.cuda.is_available():
            torch.manual_seed(0)
            with torch.device("cuda"):
                net = Kimi_K25ForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16).eval()
            step_latency(net, chat, "cuda")
        else:
            print(
                "no CUDA device: latency needs a GPU; smoke-running the same code on the tiny checkpoint (CPU)"
            )
            from agent.backends.transformers import TransformersBackend

            step_latency(TransformersBackend.load(str(tiny)).model, chat, "cpu")


def step_latency(model: torch.nn.Module, chat: KimiChat, device: str) -> None:
    """One agent step: system prompt, task, HISTORY earlier screenshots and the current one."""
    shots = [Image.new("RGB", (1920, 1080), (i * 50, 90, 160)) for i in range(HISTORY + 1)]
    messages = [
        Message.text("system", "You are a GUI agent. " * 40),
        Message.text("user", "# Task\nopen a terminal"),
    ]
    for i, shot in enumerate(shots):
        messages.append(Message("user", (ImagePart(shot), TextPart(f"Screen at step {i + 1}."))))
        if i < HISTORY:
            messages.append(
                Message.text("assistant", f"# Step {i + 1}:\n## Thought\nclick\n## Action:\nclick it")
            )
    rendered = chat.render(messages)
    batch = preprocess(rendered.images, chat.in_token_limit)
    dtype = next(model.parameters()).dtype
    ids = torch.tensor([rendered.ids], device=device)
    kw = {"pixel_values": batch.pixel_values.to(device, dtype), "image_grid_thw": batch.grid_thw.to(device)}

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        for _ in range(2):  # the first round warms up kernels
            sync()
            t0 = time.perf_counter()
            model.model.get_image_features(**kw)
            sync()
            vision_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            model(input_ids=ids, **kw, logits_to_keep=1)
            sync()
            prefill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.generate(
            input_ids=ids, **kw, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False
        )
        sync()
        total_s = time.perf_counter() - t0
    new = out.shape[1] - ids.shape[1]
    print(
        f"[{device}] prompt {ids.shape[1]} tokens ({sum(batch.tokens)} image tokens, {len(shots)} screenshots): "
        f"vision encoder {vision_s:.3f} s, prefill incl. vision {prefill_s:.3f} s ({ids.shape[1] / prefill_s:.0f} tok/s)"
    )
    print(
        f"[{device}] decode {(new - 1) / max(total_s - prefill_s, 1e-9):.1f} tok/s; "
        f"step (prefill + {new} tokens) {total_s:.2f} s"
    )
    if device == "cuda":
        print(f"[cuda] peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
