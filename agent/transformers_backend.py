"""Backend A: Kimi-VL on transformers' native Kimi-K2.5 classes, without remote code.

Kimi-VL is MoonViT + a 2x2-merge projector + a DeepSeek-V3 MoE, which is what transformers'
Kimi_K25 model is; its weight conversion already reads the official MoonViT and language_model
names. What differs is the config (built here from the checkpoint's own) and the projector's
names (mapped with ``key_mapping``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from agent.backend import BackendError, Completion, GenerationParams
from agent.chat import KimiChat
from agent.messages import Message
from agent.tokenizer import load_tokenizer
from agent.vision import preprocess, read_in_token_limit

PROJECTOR_KEYS = {
    r"^multi_modal_projector\.pre_norm": "mm_projector.pre_norm",
    r"^multi_modal_projector\.linear_1": "mm_projector.in_proj",
    r"^multi_modal_projector\.linear_2": "mm_projector.out_proj",
}
HOW_TO_GET_WEIGHTS = (
    "get the weights with `huggingface-cli download {model} --local-dir DIR` and pass --model DIR, "
    "or serve them with vLLM and pass --backend openai --base-url URL"
)


def k25_config(raw: dict) -> object:
    """A Kimi_K25Config with every size taken from a Kimi-VL config.json (nothing hard-coded to
    the released sizes, so derived and fine-tuned checkpoints load too)."""
    from transformers import Kimi_K25Config

    if raw.get("model_type") != "kimi_vl":
        raise BackendError(f"not a Kimi-VL checkpoint: config.json has model_type {raw.get('model_type')!r}")
    v = raw["vision_config"]
    text = dict(raw["text_config"])
    text["model_type"] = "deepseek_v3"
    image_token = raw.get("media_placeholder_token_id", 163605)
    return Kimi_K25Config(
        text_config=text,
        vision_config={
            "patch_size": v.get("patch_size", 14),
            "pos_emb_height": v["init_pos_emb_height"],
            "pos_emb_width": v["init_pos_emb_width"],
            "num_attention_heads": v["num_attention_heads"],
            "num_hidden_layers": v["num_hidden_layers"],
            "hidden_size": v["hidden_size"],
            "intermediate_size": v["intermediate_size"],
            "merge_kernel_size": list(v.get("merge_kernel_size", [2, 2])),
            "hidden_act": "gelu_pytorch_tanh",  # MoonViT's MLP activation
        },
        projection_hidden_size=v["hidden_size"],  # the projector's LayerNorm runs before the merge
        image_token_id=image_token,
        video_token_id=text["vocab_size"],  # no video in Kimi-VL: an id no input can contain
        vision_start_token_id=image_token - 3,  # <|media_start|>
        vision_end_token_id=image_token - 1,  # <|media_end|>
        tie_word_embeddings=False,
    )


def resolve_checkpoint(model: str) -> Path:
    path = Path(model).expanduser()
    if model.startswith((".", "/", "~")) and not path.is_dir():
        raise BackendError(
            f"no checkpoint directory at {model}; {HOW_TO_GET_WEIGHTS.format(model='moonshotai/Kimi-VL-A3B-Instruct')}"
        )
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BackendError(f"{path} has no config.json; {HOW_TO_GET_WEIGHTS.format(model=model)}")
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:
        raise BackendError(f"no local copy of {model}; {HOW_TO_GET_WEIGHTS.format(model=model)}") from None


class TransformersBackend:
    def __init__(self, model: torch.nn.Module, chat: KimiChat, in_token_limit: int, device: str) -> None:
        self.model = model
        self.chat = chat
        self.in_token_limit = in_token_limit
        self.device = device
        self.count_text_tokens = chat.count_text_tokens
        self.stop_id = chat.ids["<|im_end|>"]

    @classmethod
    def load(
        cls, model: str, *, trust_remote_code: bool = False, device: str | None = None
    ) -> TransformersBackend:
        path = resolve_checkpoint(model)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        in_token_limit = read_in_token_limit(path)
        chat = KimiChat(load_tokenizer(path), in_token_limit)
        if trust_remote_code:
            from transformers import AutoModelForCausalLM

            # The official code accepts eager or flash_attention_2 only.
            net = AutoModelForCausalLM.from_pretrained(
                path, trust_remote_code=True, dtype=dtype, attn_implementation="eager"
            )
        else:
            from transformers import Kimi_K25ForConditionalGeneration

            raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
            net, info = Kimi_K25ForConditionalGeneration.from_pretrained(
                path,
                config=k25_config(raw),
                key_mapping=PROJECTOR_KEYS,
                dtype=dtype,
                output_loading_info=True,
            )
            bad = {k: sorted(v)[:5] for k, v in info.items() if k != "error_msgs" and v}
            if bad or info.get("error_msgs"):
                raise BackendError(f"{path} does not match the Kimi-VL layout: {bad or info['error_msgs']}")
        return cls(net.to(device).train(False), chat, in_token_limit, device)  # inference mode

    @torch.inference_mode()
    def generate(self, messages: list[Message], params: GenerationParams) -> Completion:
        t0 = time.perf_counter()
        rendered = self.chat.render(messages)
        ids = torch.tensor([rendered.ids], device=self.device)
        inputs: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if rendered.images:
            batch = preprocess(rendered.images, self.in_token_limit)
            inputs["pixel_values"] = batch.pixel_values.to(self.device, self.model.dtype)
            inputs["image_grid_thw"] = batch.grid_thw.to(self.device)
        sampling = params.temperature > 0
        out = self.model.generate(
            **inputs,
            max_new_tokens=params.max_new_tokens,
            do_sample=sampling,
            temperature=params.temperature if sampling else None,
            top_p=None,
            top_k=None,
            eos_token_id=self.stop_id,
            pad_token_id=self.stop_id,
        )
        new = out[0, ids.shape[1] :].tolist()
        stopped = bool(new) and new[-1] == self.stop_id
        text = self.chat.tok.decode(new[:-1] if stopped else new, skip_special_tokens=True)
        return Completion(
            text=text,
            tokens_in=ids.shape[1],
            tokens_out=len(new),
            latency_s=time.perf_counter() - t0,
            finish_reason="stop" if stopped else "length",
        )
