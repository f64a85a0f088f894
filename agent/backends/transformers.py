"""Backend A: Kimi-VL on transformers' native Kimi-K2.5 classes, without remote code.

Kimi-VL is MoonViT + a 2x2-merge projector + a DeepSeek-V3 MoE (shared/docs/kimi-vl.md), which is
what transformers' Kimi_K25 model is: its vision tower is MoonViT (learned 2D position grid
resampled bicubically, 2D rotary embedding with theta 10000 over (w, h) pairs, LayerNorms,
tanh-GELU MLP, final LayerNorm, 2x2 merge) and its projector is LayerNorm(vision hidden) ->
Linear(4D, 4D) -> GELU -> Linear(4D, text hidden), Kimi-VL's ``multi_modal_projector``.
transformers' ``kimi_k25`` weight conversion already reads the official MoonViT
(``encoder.blocks.N.{norm0,norm1,wqkv,wo,mlp.fc0,mlp.fc1}``) and ``language_model.*`` names; what
differs is the config, built here from the checkpoint's own, and the projector's names, mapped
with ``key_mapping``. For images (t = 1) K2.5's temporal terms vanish (a zero time embedding, a
mean over one frame).
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import DynamicCache

from agent.backends.base import BackendError, Completion, GenerationParams
from agent.backends.reuse import Digests, FeatureCache, ImageKey, PrefixCache, Prompt
from agent.backends.weights import reason
from agent.deps import check_transformers
from agent.messages import Message
from agent.models.kimi_vl.chat import KimiChat
from agent.models.kimi_vl.tokenizer import load_tokenizer
from agent.models.kimi_vl.vision import image_tokens, model_size, preprocess, read_in_token_limit

# Kimi-VL's projector (vLLM kimi_vl.py: KimiVLMultiModalProjector.{pre_norm,linear_1,linear_2})
# -> Kimi_K25MultimodalProjection.{pre_norm,in_proj,out_proj}.
PROJECTOR_KEYS = {
    r"^multi_modal_projector\.pre_norm": "mm_projector.pre_norm",
    r"^multi_modal_projector\.linear_1": "mm_projector.in_proj",
    r"^multi_modal_projector\.linear_2": "mm_projector.out_proj",
}
VISION_ROPE_THETA = 10000.0  # MoonViT's Rope2DPosEmb theta_base (vLLM moonvit.py)


def k25_config(raw: dict, *, media_start_id: int | None = None, media_end_id: int | None = None) -> Any:
    """A Kimi_K25Config with every size taken from a Kimi-VL config.json (nothing hard-coded to
    the released sizes, so derived and fine-tuned checkpoints load too)."""
    from transformers import Kimi_K25Config

    if raw.get("model_type") != "kimi_vl":
        raise BackendError(f"not a Kimi-VL checkpoint: config.json has model_type {raw.get('model_type')!r}")
    v = raw["vision_config"]
    text = dict(raw["text_config"])
    text["model_type"] = "deepseek_v3"
    text["tie_word_embeddings"] = False  # Kimi-VL ships a separate language_model.lm_head
    if v["init_pos_emb_height"] != v["init_pos_emb_width"]:
        # Kimi_K25 resamples a square learned grid (num_grid_per_side = pos_emb_height).
        raise BackendError(
            f"vision_config has a {v['init_pos_emb_height']}x{v['init_pos_emb_width']} position grid; "
            "the native path supports square grids only (serve it with vLLM and use --backend openai)"
        )
    image_token = raw.get("media_placeholder_token_id", 163605)
    return Kimi_K25Config(
        text_config=text,
        vision_config={
            "patch_size": v.get("patch_size", 14),
            "pos_emb_height": v["init_pos_emb_height"],
            "pos_emb_width": v["init_pos_emb_width"],
            "pos_emb_time": 1,  # unused for images (t = 1 adds the zero row); K2.5 video only
            "num_attention_heads": v["num_attention_heads"],
            "num_hidden_layers": v["num_hidden_layers"],
            "hidden_size": v["hidden_size"],
            "intermediate_size": v["intermediate_size"],
            "merge_kernel_size": list(v.get("merge_kernel_size", [2, 2])),
            "hidden_act": "gelu_pytorch_tanh",  # MoonViT's MLP activation (vLLM moonvit.py)
            "rope_parameters": {"rope_type": "axial", "rope_theta": VISION_ROPE_THETA},
        },
        projection_hidden_size=v["hidden_size"],  # the projector's LayerNorm runs before the merge
        projection_layer_norm_eps=1e-5,  # nn.LayerNorm's default, as in Kimi-VL's projector
        image_token_id=image_token,
        video_token_id=text["vocab_size"],  # no video in Kimi-VL: an id no input can contain
        vision_start_token_id=image_token - 3 if media_start_id is None else media_start_id,
        vision_end_token_id=image_token - 1 if media_end_id is None else media_end_id,
        tie_word_embeddings=False,
    )


@functools.cache
def _forward_params(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


def cache_keyword(lm: torch.nn.Module) -> str:
    """The keyword the text model takes its KV cache under: ``cache`` since transformers 5.2x renamed
    ``past_key_values`` (which warns there, and goes in 5.40); 5.20 knows only the old name."""
    return "cache" if "cache" in _forward_params(type(lm)) else "past_key_values"


def load_native(path: Path, dtype: torch.dtype, chat: KimiChat) -> torch.nn.Module:
    """Kimi_K25ForConditionalGeneration with the checkpoint's weights; refuses a checkpoint whose
    weights do not match the layout one for one (no missing, unexpected or mismatched keys)."""
    from transformers import Kimi_K25ForConditionalGeneration

    raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    config = k25_config(
        raw, media_start_id=chat.ids["<|media_start|>"], media_end_id=chat.ids["<|media_end|>"]
    )
    try:
        net, info = Kimi_K25ForConditionalGeneration.from_pretrained(
            path, config=config, key_mapping=PROJECTOR_KEYS, dtype=dtype, output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError) as e:
        raise BackendError(f"{path} does not match the Kimi-VL layout: {reason(e, 300)}") from None
    bad = {k: sorted(v)[:5] for k, v in info.items() if k != "error_msgs" and v}
    if bad or info.get("error_msgs"):
        raise BackendError(f"{path} does not match the Kimi-VL layout: {bad or info['error_msgs'][:3]}")
    return net


@dataclass
class Run:
    """One call's outcome: the new ids, the logits that chose the first of them, and what the call
    computed (prompt tokens prefilled vs taken from the kept cache, images run through MoonViT)."""

    new: list[int]
    first_logits: torch.Tensor
    prompt_tokens: int
    reused: int
    encoded: int
    prompt_ids: list[int]  # what was fed: the template's ids, each image's pads expanded

    @property
    def prefilled(self) -> int:
        return self.prompt_tokens - self.reused


class TransformersBackend:
    """Kimi-VL in-process. ``load`` builds it; ``generate`` is the Backend protocol.

    With ``kv_reuse`` (the default) the KV cache of the last prompt + reply and MoonViT's features of
    the last prompt's images are kept, so a call prefills only what the new prompt does not share
    with the last one (agent.backends.reuse). One caller at a time: the kept cache is the instance's state."""

    def __init__(
        self,
        model: torch.nn.Module,
        chat: KimiChat,
        in_token_limit: int,
        device: str,
        *,
        kv_reuse: bool = True,
    ) -> None:
        self.model = model
        self.chat = chat
        self.in_token_limit = in_token_limit
        self.device = device
        self.kv_reuse = kv_reuse
        self.count_text_tokens = chat.count_text_tokens
        # <|im_end|> ends a turn (the template's stop token); [EOS] ends a document: stop on either.
        self.stop_ids = [chat.ids["<|im_end|>"], chat.tok.convert_tokens_to_ids("[EOS]")]
        self.pad_id = chat.ids["<|media_pad|>"]
        # Prefill in chunks: on CPU, SDPA materialises (queries x keys) scores and masks, which for
        # one 100K-token prefill is tens of GB (and slower than chunks); CUDA kernels do not.
        self.chunk = 8192 if device.startswith("cuda") else 1024
        self.prefix = PrefixCache()
        self.features = FeatureCache()
        self.digest = Digests()

    @classmethod
    def load(
        cls,
        model: str | Path,
        *,
        device: str | None = None,
        in_token_limit: int | None = None,
        kv_reuse: bool = True,
    ) -> TransformersBackend:
        """Load a checkpoint directory (agent.backends.weights.resolve_checkpoint finds or fetches one).
        ``in_token_limit``: MoonViT's patch limit; default the checkpoint's preprocessor_config.json."""
        check_transformers()
        path = Path(model)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        in_token_limit = in_token_limit or read_in_token_limit(path)
        try:
            chat = KimiChat(load_tokenizer(path), in_token_limit)
        except (OSError, ValueError) as e:
            raise BackendError(f"cannot build the tokenizer of {path}: {e}") from None
        net = load_native(path, dtype, chat)
        return cls(net.to(device).train(False), chat, in_token_limit, device, kv_reuse=kv_reuse)

    def generate(self, messages: list[Message], params: GenerationParams) -> Completion:
        t0 = time.perf_counter()
        run = self.run(messages, params)
        text, finish = self.decode(run.new)
        return Completion(
            text=text,
            tokens_in=run.prompt_tokens,
            tokens_out=len(run.new),
            latency_s=time.perf_counter() - t0,
            finish_reason=finish,
            token_ids=list(run.new),
            prompt_ids=list(run.prompt_ids),
        )

    @torch.inference_mode()
    def run(self, messages: list[Message], params: GenerationParams) -> Run:
        """Prefill what the kept cache lacks, then decode one token at a time: greedy at
        temperature 0, else plain sampling from softmax(logits / temperature) (no top-k or top-p,
        as the openai path asks of vLLM), until a stop id or ``max_new_tokens``."""
        prompt, images = self.prompt(messages)
        start, kv = self.prefix.take(prompt) if self.kv_reuse else (0, None)
        kv = kv if kv is not None else DynamicCache(config=self.model.config.get_text_config())
        embeds, encoded = self.embed(prompt, images, start)
        for i in range(0, embeds.shape[1], self.chunk):
            logits = self.forward(embeds[:, i : i + self.chunk], kv)
        first = logits
        new: list[int] = []
        while True:
            token = self.pick(logits, params.temperature)
            new.append(token)
            if token in self.stop_ids or len(new) >= params.max_new_tokens:
                break
            ids = torch.tensor([[token]], device=self.device)
            logits = self.forward(self.text_embeddings()(ids), kv)
        if self.kv_reuse:
            # The last token was never fed: the cache holds the prompt and the reply but it.
            self.prefix.keep(kv, Prompt(prompt.ids + new[:-1], prompt.keys, prompt.starts))
            self.features.retain(prompt.keys)
        return Run(new, first, len(prompt.ids), start, encoded, prompt.ids)

    def prompt(self, messages: list[Message]) -> tuple[Prompt, list[Image.Image]]:
        """The template's ids (each image's pad expanded), each image's key and first pad."""
        rendered = self.chat.render(messages)
        ids, keys, starts = rendered.ids, [], []
        at = 0
        for image in rendered.images:
            try:
                size = model_size(image.width, image.height, self.in_token_limit)
            except ValueError as e:
                raise BackendError(f"cannot send this image to Kimi-VL: {e}") from None
            at = ids.index(self.pad_id, at)
            keys.append((self.digest(image), size))
            starts.append(at)
            at += image_tokens(image.width, image.height, self.in_token_limit)
        return Prompt(ids, keys, starts), rendered.images

    def embed(self, prompt: Prompt, images: list[Image.Image], start: int) -> tuple[torch.Tensor, int]:
        """Input embeddings of ``prompt.ids[start:]``: the text embedding, image pads replaced by
        MoonViT's features (Kimi_K25Model does the same for a whole prompt); and how many images
        had to be encoded for it."""
        ids = torch.tensor([prompt.ids[start:]], device=self.device)
        pads = ids == self.pad_id
        embeds = self.text_embeddings()(ids.masked_fill(pads, 0))
        if not bool(pads.any()):
            return embeds, 0
        sizes = [image_tokens(im.width, im.height, self.in_token_limit) for im in images]
        wanted = [i for i, (s, n) in enumerate(zip(prompt.starts, sizes, strict=True)) if s + n > start]
        feats, encoded = self.image_features([images[i] for i in wanted], [prompt.keys[i] for i in wanted])
        # Rows of the wanted images' features that fall at or after ``start``.
        first = wanted[0]
        skip = max(0, start - prompt.starts[first])
        rows = torch.cat(feats)[skip:]
        if rows.shape[0] != int(pads.sum()):  # the prompt's pads and the images disagree
            raise RuntimeError(f"{int(pads.sum())} image tokens to fill with {rows.shape[0]} image features")
        embeds[pads] = rows.to(embeds.dtype)
        return embeds, encoded

    def image_features(
        self, images: list[Image.Image], keys: list[ImageKey]
    ) -> tuple[list[torch.Tensor], int]:
        """Each image's projected MoonViT features, from the cache where kept; the rest in one batch."""
        cached = [self.features.get(k) if self.kv_reuse else None for k in keys]
        todo = [i for i, f in enumerate(cached) if f is None]
        if todo:
            try:
                batch = preprocess([images[i] for i in todo], self.in_token_limit)
            except ValueError as e:
                raise BackendError(f"cannot send this image to Kimi-VL: {e}") from None
            out = self.model.model.get_image_features(
                batch.pixel_values.to(self.device, self.model.dtype), batch.grid_thw.to(self.device)
            ).pooler_output
            for i, f in zip(todo, out, strict=True):
                cached[i] = f
                if self.kv_reuse:
                    self.features.put(keys[i], f)
        return [f for f in cached if f is not None], len(todo)

    def text_embeddings(self) -> torch.nn.Module:
        return self.model.model.language_model.get_input_embeddings()

    def forward(self, embeds: torch.Tensor, kv: DynamicCache) -> torch.Tensor:
        """The next-token logits (float32) after ``embeds``, appended to ``kv``; positions follow
        the cache's length (DeepseekV3Model's default position_ids)."""
        lm = self.model.model.language_model
        out = lm(inputs_embeds=embeds, use_cache=True, **{cache_keyword(lm): kv})
        return self.model.lm_head(out.last_hidden_state[:, -1]).float()[0]

    @staticmethod
    def pick(logits: torch.Tensor, temperature: float) -> int:
        if temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / temperature, dim=-1)
        return int(torch.multinomial(probs, 1))

    def decode(self, new: list[int]) -> tuple[str, str]:
        """Completion text and finish reason. Special tokens are dropped; the thinking markers
        ◁think▷ / ◁/think▷ are plain text in Kimi's vocabulary and stay."""
        stopped = bool(new) and new[-1] in self.stop_ids
        text = self.chat.tok.decode(new[:-1] if stopped else new, skip_special_tokens=True)
        return text, "stop" if stopped else "length"
