"""Writes a tiny, randomly initialised Kimi-VL checkpoint in the official layout.

Everything here is written from the published facts, independently of our loader, so loading
it proves the loader honours the official layout:

- config.json as the released one (model_type ``kimi_vl``, a ``moonvit`` vision_config, a
  DeepSeek-V3 text_config with Moonlight's keys), with tiny sizes but the official vocabulary
  (163840) so the official special-token ids hold;
- model.safetensors (bf16, like the release) with the official names: MoonViT's
  ``vision_tower.patch_embed.{proj,pos_emb}`` and ``encoder.blocks.N.{norm0,norm1,wqkv,wo,mlp.fc0,
  mlp.fc1}`` + ``encoder.final_layernorm`` (vLLM moonvit.py), ``multi_modal_projector.{pre_norm,
  linear_1,linear_2}`` (vLLM kimi_vl.py; LayerNorm(vision hidden), Linear(4D, 4D), Linear(4D, text
  hidden)), and the DeepSeek-V3 language model under ``language_model.`` (``model.layers.N.
  self_attn.{q_proj,kv_a_proj_with_mqa,kv_a_layernorm,kv_b_proj,o_proj}``, ``mlp.{gate,
  shared_experts,experts.K}``, a dense MLP below ``first_k_dense_replace``, ``lm_head``);
- tiktoken.model with exactly 163584 ranks (256 bytes, some BPE merges learnt from a small corpus,
  then filler tokens that no UTF-8 text can reach), so the 256 + 2 special tokens land on
  163584..163841 as in the release; tokenizer_config.json, preprocessor_config.json and a
  chat_template.jinja written from the documented format.
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

VOCAB = 163840  # the released text_config.vocab_size
NUM_BASE = 163584  # BPE ranks in the released tiktoken.model; the first special id
# The named special ids of the released tokenizer_config.json (Moonlight's list plus Kimi-VL's media tokens).
SPECIAL_NAMES = {
    163584: "[BOS]", 163585: "[EOS]", 163586: "<|im_end|>", 163587: "<|im_user|>", 163588: "<|im_assistant|>",
    163590: "<|start_header_id|>", 163591: "<|end_header_id|>", 163593: "[EOT]", 163594: "<|im_system|>",
    163601: "<|im_middle|>", 163602: "<|media_start|>", 163603: "<|media_content|>", 163604: "<|media_end|>",
    163605: "<|media_pad|>", 163838: "[UNK]", 163839: "[PAD]",
}  # fmt: skip

CORPUS = """You are a GUI agent operating a computer. Click the Save button, then type the file name.
## Thought ## Action: ## Code: pyautogui.click(x=0.512, y=0.204) pyautogui.write("hello") the screen shows
a terminal window with the prompt; the task is to rename every file in the documents folder to lower case.
computer.terminate(status="success", answer="done") computer.wait() Screen at step 12. 你好世界 héllo wörld ✓
◁think▷ The user wants the terminal. ◁/think▷ # Step 1: camelCaseWords HTTPServer isn't we'll
"""

# The released template's rules (shared/docs/kimi-vl.md, "Prompt format"): a default system message
# when the first is not one; role token + role name + <|im_middle|> + content + <|im_end|>; an image
# item (type "image", or an "image"/"image_url" key) as the media block; nothing in between.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "<|im_system|>system<|im_middle|>You are a helpful assistant<|im_end|>"
    "{%- endif -%}"
    "<|im_{{ message['role'] }}|>{{ message['role'] }}<|im_middle|>"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' or 'image' in item or 'image_url' in item -%}"
    "<|media_start|>image<|media_content|><|media_pad|><|media_end|>"
    "{%- else -%}{{ item['text'] }}{%- endif -%}"
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


def tiktoken_ranks(merges: int = 400) -> list[bytes]:
    """NUM_BASE tokens in rank order: bytes, learnt merges, then 4-byte fillers starting with 0xFF
    (never in UTF-8, and no split of one is a token, so they add no merges and match nothing)."""
    vocab = train_bpe(CORPUS * 3, merges)
    need = NUM_BASE - len(vocab)
    fillers = (bytes([0xFF, a, b, c]) for a, b, c in itertools.product(range(256), repeat=3))
    return vocab + list(itertools.islice(fillers, need))


def tiny_config() -> dict:
    return {
        "architectures": ["KimiVLForConditionalGeneration"],
        "model_type": "kimi_vl",
        "media_placeholder_token_id": 163605,
        "ignore_index": -100,
        "pad_token_id": 0,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.50.3",
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
            "torch_dtype": "bfloat16",
        },
        "text_config": {
            "architectures": ["DeepseekV3ForCausalLM"],
            "model_type": "deepseek_v3",
            "vocab_size": VOCAB,
            "hidden_size": 32,
            "intermediate_size": 64,
            "moe_intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
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
            "aux_loss_alpha": 0.001,
            "seq_aux": True,
            "ep_size": 1,
            "num_nextn_predict_layers": 0,
            "pretraining_tp": 1,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-5,
            "rope_theta": 800000.0,
            "rope_scaling": None,
            "tie_word_embeddings": False,
            "use_cache": True,
            "bos_token_id": 163584,
            "eos_token_id": 163585,
            "torch_dtype": "bfloat16",
        },
    }


def _weights(cfg: dict, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w: dict[str, torch.Tensor] = {}

    def t(name: str, *shape: int, scale: float = 0.05) -> None:
        w[name] = torch.randn(*shape, generator=g) * scale

    def norm(name: str, dim: int, bias: bool = True) -> None:
        w[f"{name}.weight"] = 1 + torch.randn(dim, generator=g) * 0.1
        if bias:
            w[f"{name}.bias"] = torch.randn(dim, generator=g) * 0.1

    v, x = cfg["vision_config"], cfg["text_config"]
    d, inter, patch = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    t("vision_tower.patch_embed.proj.weight", d, 3, patch, patch)
    t("vision_tower.patch_embed.proj.bias", d)
    t(
        "vision_tower.patch_embed.pos_emb.weight",
        v["init_pos_emb_height"],
        v["init_pos_emb_width"],
        d,
        scale=0.5,
    )
    for i in range(v["num_hidden_layers"]):
        b = f"vision_tower.encoder.blocks.{i}"
        norm(f"{b}.norm0", d)
        norm(f"{b}.norm1", d)
        t(f"{b}.wqkv.weight", 3 * d, d, scale=0.3)  # q, k, v stacked (vLLM: QKVParallelLinear "wqkv")
        t(f"{b}.wqkv.bias", 3 * d)
        t(f"{b}.wo.weight", d, d)
        t(f"{b}.wo.bias", d)
        t(f"{b}.mlp.fc0.weight", inter, d)
        t(f"{b}.mlp.fc0.bias", inter)
        t(f"{b}.mlp.fc1.weight", d, inter)
        t(f"{b}.mlp.fc1.bias", d)
    norm("vision_tower.encoder.final_layernorm", d)
    kh, kw = v["merge_kernel_size"]
    merged, hidden = d * kh * kw, x["hidden_size"]
    norm("multi_modal_projector.pre_norm", d)
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
        norm(f"{p}.input_layernorm", hidden, bias=False)
        norm(f"{p}.post_attention_layernorm", hidden, bias=False)
        t(f"{p}.self_attn.q_proj.weight", heads * (nope + rope), hidden)  # q_lora_rank null: one q_proj
        t(f"{p}.self_attn.kv_a_proj_with_mqa.weight", kv + rope, hidden)
        norm(f"{p}.self_attn.kv_a_layernorm", kv, bias=False)
        t(f"{p}.self_attn.kv_b_proj.weight", heads * (nope + vdim), kv)
        t(f"{p}.self_attn.o_proj.weight", hidden, heads * vdim)
        if i < x["first_k_dense_replace"]:
            dense = x["intermediate_size"]
            t(f"{p}.mlp.gate_proj.weight", dense, hidden)
            t(f"{p}.mlp.up_proj.weight", dense, hidden)
            t(f"{p}.mlp.down_proj.weight", hidden, dense)
            continue
        m, experts = x["moe_intermediate_size"], x["n_routed_experts"]
        t(f"{p}.mlp.gate.weight", experts, hidden)
        t(f"{p}.mlp.gate.e_score_correction_bias", experts, scale=0.01)
        for k in range(experts):
            t(f"{p}.mlp.experts.{k}.gate_proj.weight", m, hidden)
            t(f"{p}.mlp.experts.{k}.up_proj.weight", m, hidden)
            t(f"{p}.mlp.experts.{k}.down_proj.weight", hidden, m)
        s = m * x["n_shared_experts"]
        t(f"{p}.mlp.shared_experts.gate_proj.weight", s, hidden)
        t(f"{p}.mlp.shared_experts.up_proj.weight", s, hidden)
        t(f"{p}.mlp.shared_experts.down_proj.weight", hidden, s)
    norm("language_model.model.norm", hidden, bias=False)
    t("language_model.lm_head.weight", x["vocab_size"], hidden, scale=0.5)
    return w


def write_weights(root: Path, weights: dict[str, torch.Tensor]) -> None:
    save_file(
        {k: v.to(torch.bfloat16).contiguous() for k, v in weights.items()},
        str(root / "model.safetensors"),
        metadata={"format": "pt"},
    )


def write_tiny_kimi(root: Path, seed: int = 0, in_token_limit: int = 4096) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    ranks = tiktoken_ranks()
    assert len(ranks) == NUM_BASE and len(set(ranks)) == NUM_BASE
    (root / "tiktoken.model").write_text(
        "".join(f"{base64.b64encode(tok).decode()} {rank}\n" for rank, tok in enumerate(ranks)),
        encoding="utf-8",
    )
    cfg = tiny_config()
    (root / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    added = {
        str(i): {
            "content": SPECIAL_NAMES.get(i, f"<|reserved_token_{i}|>"),
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i in range(NUM_BASE, NUM_BASE + 258)
    }
    tokenizer_config = {
        "tokenizer_class": "TikTokenTokenizer",
        "bos_token": "[BOS]",
        "eos_token": "[EOS]",
        "unk_token": "[UNK]",
        "pad_token": "[PAD]",
        "model_max_length": 1048576,
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_end|>", "<|im_user|>", "<|im_assistant|>", "<|start_header_id|>",
                                      "<|end_header_id|>", "[EOT]", "<|im_system|>", "<|im_middle|>"],
    }  # fmt: skip
    (root / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    (root / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "KimiVLImageProcessor",
                "processor_class": "KimiVLProcessor",
                "patch_size": 14,
                "pad_input": True,
                "image_mean": [0.5] * 3,
                "image_std": [0.5] * 3,
                "in_token_limit": in_token_limit,
                "merge_kernel_size": [2, 2],
                "num_pooled_tokens": 1024,
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    (root / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    (root / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 163584, "eos_token_id": 163586, "pad_token_id": 163839}), encoding="utf-8"
    )
    write_weights(root, _weights(cfg, seed))
    return root
