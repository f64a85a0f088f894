"""What is known about serving each model profile, with the source of each fact.

Kept beside the doctor (keyed by the profile's name) rather than on the profile: these are facts
about servers and hardware, which the runtime itself never reads. A profile without an entry here
is still checked, with the checks that need these facts reporting WARN ("no serving facts").
A fact the gathered sources leave open is UNKNOWN (the value, or None): the doctor says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.messages import Message
from agent.models.kimi_vl.profile import KIMI_VL

Render = Callable[[list[Message]], list[int]]  # messages -> the prompt's ids, generation prompt added
RendererFactory = Callable[[Path, int], Render]  # (tokenizer directory, in_token_limit) -> Render
ImageTokens = Callable[[int, int, int], int]  # (width, height, in_token_limit) -> tokens of one image


@dataclass(frozen=True)
class Cited:
    """A value and where it comes from (a URL or a repository path)."""

    value: str
    source: str


UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class ServingFacts:
    hub_id: str  # the checkpoint `vllm serve` is given
    min_vllm: Cited  # the first vLLM release known to serve the model correctly (value may be UNKNOWN)
    weights_gb: Cited | None  # GB (10^9 bytes) of weights at their released precision; None: UNKNOWN
    trust_remote_code: bool
    reasoning_parser: Cited | None  # --reasoning-parser; None: vLLM has none for this model
    image_limit: Cited  # --limit-mm-per-prompt's image count recommended
    notes: tuple[Cited, ...]  # known serving problems, printed under the command
    image_tokens: ImageTokens | None  # the LLM tokens (pads) one image costs; None: no local rule
    image_wrapper_tokens: int  # the prompt tokens around one image's pads in the chat template
    render: RendererFactory | None  # our own prompt rendering; None: we cannot render this template
    # The published command's GPUs, when it gives them (else computed from weights_gb).
    tensor_parallel: Cited | None = None
    extra_args: Cited | None = None  # further `vllm serve` arguments of the published command
    unknowns: tuple[Cited, ...] = ()  # what the sources leave open, printed as such


def _kimi_vl_render(tokenizer_dir: Path, in_token_limit: int) -> Render:
    # Imported here: transformers takes seconds to import and most of doctor does not need it.
    from agent.models.kimi_vl.chat import KimiChat
    from agent.models.kimi_vl.tokenizer import load_tokenizer

    chat = KimiChat(load_tokenizer(tokenizer_dir), in_token_limit)
    return lambda messages: chat.render(messages).ids


KIMI_VL_FACTS = ServingFacts(
    hub_id="moonshotai/Kimi-VL-A3B-Instruct",
    # "Kimi-VL support is not released in vllm v0.8.4, you can use it through the main branch"
    # (2025-04-20); 0.8.5 is the first release after it (inferred).
    min_vllm=Cited("0.8.5", "https://github.com/MoonshotAI/Kimi-VL/issues/15"),
    # 16.4B parameters in bf16 (shared/docs/kimi-vl.md, "Variants"; the model card).
    weights_gb=Cited("32.8", "https://huggingface.co/moonshotai/Kimi-VL-A3B-Instruct"),
    trust_remote_code=True,  # vLLM PR #16387's example command
    # vLLM's reasoning parsers (vllm/reasoning/__init__.py @ 0064cc9cb1ae57b1308015d48a57462fa27a68f2)
    # have none for Kimi-VL's ◁think▷ markers: they stay inline and the profile's parser splits them.
    reasoning_parser=None,
    # 64 images: shared/docs/kimi-vl.md's command; JSON syntax since vLLM 0.10 (`image=256` is refused:
    # vllm-project/vllm#21615); the PR's example allowed 256.
    image_limit=Cited("64", "https://github.com/vllm-project/vllm/issues/21615"),
    notes=(
        Cited(
            "MoonViT's head size 72 is not supported by vllm-flash-attn: install flash-attn, or the SDPA "
            "fallback may run out of GPU memory",
            "https://github.com/vllm-project/vllm/pull/16387",
        ),
        Cited(
            "out of memory while vLLM profiles the vision encoder on 24 GB cards: lower --max-num-seqs",
            "https://github.com/MoonshotAI/Kimi-VL/issues/57",
        ),
        Cited(
            "the vision encoder is not tensor-parallel; an OOM at start-up with 2x80 GB was fixed by "
            "flash-attn and later by vLLM PR #31738",
            "https://github.com/vllm-project/vllm/issues/17952",
        ),
    ),
    image_tokens=KIMI_VL.image_tokens,  # the profile's own rule (MoonViT)
    # <|media_start|> image <|media_content|> ... <|media_end|> (shared/docs/kimi-vl.md, "Prompt
    # format"; "image" is one token of the released tokenizer). Used only without a local tokenizer.
    image_wrapper_tokens=4,
    render=_kimi_vl_render,
)


def facts_for(profile_name: str, served_root: str = "") -> ServingFacts | None:
    """The facts of a profile's checkpoint; ``served_root`` (the server's root or the model name)
    picks the variant where the facts differ (K2.5 / K2.6, OpenCUA 7B / 32B / 72B)."""
    # Imported here: serving_facts imports this module's types.
    from tasks.doctor_checks.serving_facts import facts_by_profile

    return facts_by_profile(profile_name, served_root)
