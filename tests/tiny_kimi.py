"""Writes a tiny, randomly initialised Kimi-VL checkpoint in the official layout.

The names and shapes follow the released checkpoints (shared/docs/kimi-vl.md, "Checkpoint";
MoonViT's blocks as in vLLM's moonvit.py: norm0/norm1/wqkv/wo/mlp.fc0/mlp.fc1), written out here
independently of our loader, so loading it proves the loader honours the official layout.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import save_file

# Offsets of the named special tokens from the first special id (163584 in the released models).
SPECIAL_NAMES = {
    0: "[BOS]", 1: "[EOS]", 2: "<|im_end|>", 3: "<|im_user|>", 4: "<|im_assistant|>", 6: "<|start_header_id|>",
    7: "<|end_header_id|>", 9: "[EOT]", 10: "<|im_system|>", 17: "<|im_middle|>", 18: "<|media_start|>",
    19: "<|media_content|>", 20: "<|media_end|>", 21: "<|media_pad|>",
}  # fmt: skip

CORPUS = """You are a GUI agent operating a computer. Click the Save button, then type the file name.
## Thought ## Action: ## Code: pyautogui.click(x=0.512, y=0.204) pyautogui.write("hello") the screen shows
a terminal window with the prompt; the task is to rename every file in the documents folder to lower case.
computer.terminate(status="success", answer="done") computer.wait() Screen at step 12. 你好世界 héllo wörld ✓
"""

CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' -%}"
    "<|im_system|>system<|im_middle|>You are a helpful assistant<|im_end|>"
    "{%- endif -%}"
    "{%- for m in messages -%}"
    "<|im_{{ m['role'] }}|>{{ m['role'] }}<|im_middle|>"
    "{%- if m['content'] is string -%}{{ m['content'] }}"
    "{%- else -%}{%- for c in m['content'] -%}"
    "{%- if c['type'] == 'image' -%}<|media_start|>image<|media_content|><|media_pad|><|media_end|>"
    "{%- else -%}{{ c['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "<|im_end|>"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_assistant|>assistant<|im_middle|>{%- endif -%}"
)


def train_bpe(text: str, merges: int) -> list[bytes]:
    """A small byte-level BPE vocabulary (256 bytes, then merges in rank order)."""
    words = Counter(tuple(bytes([b]) for b in w.encode()) for w in re.findall(r" ?\S+|\s+", text))
    vocab = [bytes([b]) for b in range(256)]
    for _ in range(merges):
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for w, n in words.items():
            for a, b in itertools.pairwise(w):
                pairs[(a, b)] += n
        if not pairs:
            break
        (a, b), _ = pairs.most_common(1)[0]
        vocab.append(a + b)
        merged: Counter[tuple[bytes, ...]] = Counter()
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return vocab


def tiny_config(num_base: int) -> dict:
    vocab = num_base + 258
    return {
        "architectures": ["KimiVLForConditionalGeneration"],
        "model_type": "kimi_vl",
        "media_placeholder_token_id": num_base + 21,
        "ignore_index": -100,
        "pad_token_id": 0,
        "torch_dtype": "float32",
        "vision_config": {
            "model_type": "moonvit",
            "patch_size": 14,
            "init_pos_emb_height": 8,
            "init_pos_emb_width": 8,
            "num_attention_heads": 2,
            "num_hidden_layers": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "merge_kernel_size": [2, 2],
        },
        "text_config": {
            "model_type": "deepseek_v3",
            "vocab_size": vocab,
            "hidden_size": 64,
            "intermediate_size": 128,
            "moe_intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "n_shared_experts": 1,
            "n_routed_experts": 4,
            "num_experts_per_tok": 2,
            "n_group": 1,
            "topk_group": 1,
            "first_k_dense_replace": 1,
            "moe_layer_freq": 1,
            "kv_lora_rank": 16,
            "q_lora_rank": None,
            "qk_nope_head_dim": 8,
            "qk_rope_head_dim": 8,
            "v_head_dim": 8,
            "topk_method": "noaux_tc",
            "scoring_func": "sigmoid",
            "norm_topk_prob": True,
            "routed_scaling_factor": 2.446,
            "hidden_act": "silu",
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5,
            "rope_theta": 50000.0,
            "rope_scaling": None,
            "tie_word_embeddings": False,
            "bos_token_id": num_base,
            "eos_token_id": num_base + 1,
        },
    }


def _weights(cfg: dict, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w: dict[str, torch.Tensor] = {}

    def t(name: str, *shape: int, scale: float = 0.05) -> None:
        w[name] = torch.randn(*shape, generator=g) * scale

    def ln(name: str, dim: int, bias: bool = True) -> None:
        w[f"{name}.weight"] = torch.ones(dim)
        if bias:
            w[f"{name}.bias"] = torch.zeros(dim)

    v, x = cfg["vision_config"], cfg["text_config"]
    d, inter = v["hidden_size"], v["intermediate_size"]
    t("vision_tower.patch_embed.proj.weight", d, 3, 14, 14)
    t("vision_tower.patch_embed.proj.bias", d)
    t("vision_tower.patch_embed.pos_emb.weight", v["init_pos_emb_height"], v["init_pos_emb_width"], d)
    for i in range(v["num_hidden_layers"]):
        b = f"vision_tower.encoder.blocks.{i}"
        ln(f"{b}.norm0", d)
        ln(f"{b}.norm1", d)
        t(f"{b}.wqkv.weight", 3 * d, d)
        t(f"{b}.wqkv.bias", 3 * d)
        t(f"{b}.wo.weight", d, d)
        t(f"{b}.wo.bias", d)
        t(f"{b}.mlp.fc0.weight", inter, d)
        t(f"{b}.mlp.fc0.bias", inter)
        t(f"{b}.mlp.fc1.weight", d, inter)
        t(f"{b}.mlp.fc1.bias", d)
    ln("vision_tower.encoder.final_layernorm", d)
    merged, hidden = d * 4, x["hidden_size"]
    ln("multi_modal_projector.pre_norm", d)
    t("multi_modal_projector.linear_1.weight", merged, merged)
    t("multi_modal_projector.linear_1.bias", merged)
    t("multi_modal_projector.linear_2.weight", hidden, merged)
    t("multi_modal_projector.linear_2.bias", hidden)

    heads, nope, rope, vdim = (
        x["num_attention_heads"],
        x["qk_nope_head_dim"],
        x["qk_rope_head_dim"],
        x["v_head_dim"],
    )
    kv = x["kv_lora_rank"]
    t("language_model.model.embed_tokens.weight", x["vocab_size"], hidden, scale=0.5)
    for i in range(x["num_hidden_layers"]):
        p = f"language_model.model.layers.{i}"
        ln(f"{p}.input_layernorm", hidden, bias=False)
        ln(f"{p}.post_attention_layernorm", hidden, bias=False)
        t(f"{p}.self_attn.q_proj.weight", heads * (nope + rope), hidden)
        t(f"{p}.self_attn.kv_a_proj_with_mqa.weight", kv + rope, hidden)
        ln(f"{p}.self_attn.kv_a_layernorm", kv, bias=False)
        t(f"{p}.self_attn.kv_b_proj.weight", heads * (nope + vdim), kv)
        t(f"{p}.self_attn.o_proj.weight", hidden, heads * vdim)
        if i < x["first_k_dense_replace"]:
            for proj, shape in (
                ("gate_proj", (x["intermediate_size"], hidden)),
                ("up_proj", (x["intermediate_size"], hidden)),
                ("down_proj", (hidden, x["intermediate_size"])),
            ):
                t(f"{p}.mlp.{proj}.weight", *shape)
            continue
        m = x["moe_intermediate_size"]
        t(f"{p}.mlp.gate.weight", x["n_routed_experts"], hidden)
        w[f"{p}.mlp.gate.e_score_correction_bias"] = torch.zeros(x["n_routed_experts"])
        for k in range(x["n_routed_experts"]):
            t(f"{p}.mlp.experts.{k}.gate_proj.weight", m, hidden)
            t(f"{p}.mlp.experts.{k}.up_proj.weight", m, hidden)
            t(f"{p}.mlp.experts.{k}.down_proj.weight", hidden, m)
        s = m * x["n_shared_experts"]
        t(f"{p}.mlp.shared_experts.gate_proj.weight", s, hidden)
        t(f"{p}.mlp.shared_experts.up_proj.weight", s, hidden)
        t(f"{p}.mlp.shared_experts.down_proj.weight", hidden, s)
    ln("language_model.model.norm", hidden, bias=False)
    t("language_model.lm_head.weight", x["vocab_size"], hidden, scale=0.5)
    return w


def write_tiny_kimi(root: Path, seed: int = 0, in_token_limit: int = 4096) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    vocab = train_bpe(CORPUS * 3, merges=300)
    (root / "tiktoken.model").write_text(
        "".join(f"{base64.b64encode(tok).decode()} {rank}\n" for rank, tok in enumerate(vocab)),
        encoding="utf-8",
    )
    num_base = len(vocab)
    cfg = tiny_config(num_base)
    (root / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    added = {
        str(num_base + i): {
            "content": SPECIAL_NAMES.get(i, f"<|reserved_token_{num_base + i}|>"),
            "special": True,
        }
        for i in range(258)
    }
    (root / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "TikTokenTokenizer",
                "bos_token": "[BOS]",
                "eos_token": "[EOS]",
                "added_tokens_decoder": added,
            }
        ),
        encoding="utf-8",
    )
    (root / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "KimiVLImageProcessor",
                "patch_size": 14,
                "pad_input": True,
                "image_mean": [0.5] * 3,
                "image_std": [0.5] * 3,
                "in_token_limit": in_token_limit,
                "merge_kernel_size": [2, 2],
            }
        ),
        encoding="utf-8",
    )
    (root / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    (root / "generation_config.json").write_text(json.dumps({"eos_token_id": num_base + 2}), encoding="utf-8")
    save_file(
        {k: v.contiguous() for k, v in _weights(cfg, seed).items()},
        str(root / "model.safetensors"),
        metadata={"format": "pt"},
    )
    return root
