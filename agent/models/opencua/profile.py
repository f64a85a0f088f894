"""OpenCUA as two model profiles: ``opencua`` (7B/32B/72B) and ``opencua-a3b``.

Why two: what differs between them is what a profile holds, not a variant. 7B/32B/72B are
Qwen2.5-VL based and answer in absolute pixels of the smart-resized image (``coordinate_type qwen25``
in OSWorld's runner); A3B is Kimi-VL-A3B based and answers in fractions of the screen (``relative``)
and sees the image through MoonViT's rule. Both share the reply grammar, the prompts and the
sampling (karakuri-ai/OSWorld-JP mm_agents/opencua/opencua_agent.py and run_multienv_opencua.py
@ 3301bf9fd54cef911c6788543fba9da99bd4bfcf).

Prompt layouts (--prompt-profile): opencua-l2 (the default, OSWorld's ``cot_level l2``), opencua-l1,
opencua-l3: the V2 system prompt of each level (``build_sys_prompt``, OSWorld's default and 72B's);
opencua-v1-l1/l2/l3: the training data's V1 prompts (``SYSTEM_PROMPT_V1_L*``, which OSWorld's runner
docstring uses for 7B/32B with ``--use_old_sys_prompt``). All use OSWorld's history layout
(3 screenshots) with the action-only history OSWorld's runner uses (``history_type action_history``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from agent.layouts import OPENCUA_LAYOUTS
from agent.models.kimi_vl.vision import image_tokens as moonvit_tokens
from agent.models.kimi_vl.vision import model_size as moonvit_size
from agent.models.opencua.parser import parse_reply
from agent.models.opencua.variants import A3B_VARIANTS, QWEN_VARIANTS, guess_variant, resolver
from agent.models.profile import ModelProfile
from agent.models.qwen_vision import image_tokens, model_size
from agent.models.reply import ParsedReply

LAYOUTS = OPENCUA_LAYOUTS
# OSWorld-Verified success rates (%), mean of 3 runs at 15 / 50 / 100 steps: xlang-ai/OpenCUA
# README.md @ f9f965b045ca225b6f8d684d3be3db20491d5d81. A3B has grounding figures only there; its
# OSWorld-Verified 17.7 (15 steps) is the GroundCUA paper's table as kimi-agent's shared docs quote it
# (/work/shared/docs/peers.md, landscape.md), not re-read from the paper here: the source line says so.
_SOURCE = "OpenCUA README, OSWorld-Verified"
_FIGURES = {"7b": (24.3, 27.9, 26.6), "32b": (29.7, 34.1, 34.8), "72b": (39.0, 44.9, 45.0)}
PUBLISHED: dict[str, tuple[tuple[str, float], ...]] = {
    f"opencua-{size}": tuple(
        (f"{_SOURCE}, {steps} steps", value) for steps, value in zip((15, 50, 100), figures, strict=True)
    )
    for size, figures in _FIGURES.items()
}
A3B_PUBLISHED: dict[str, tuple[tuple[str, float], ...]] = {
    "opencua-a3b": (
        ("GroundCUA paper (as quoted in kimi-agent's shared docs), OSWorld-Verified, 15 steps", 17.7),
    ),
}


def _parse_pixels(text: str, finish_reason: str) -> ParsedReply:
    return parse_reply(text, finish_reason, points="pixels")


def _parse_relative(text: str, finish_reason: str) -> ParsedReply:
    return parse_reply(text, finish_reason, points="relative")


def _named(config: Mapping[str, Any] | None) -> str:
    """What config.json says the checkpoint is: model_type, architectures, _name_or_path."""
    if config is None:
        return ""
    arch = config.get("architectures")
    parts = [config.get("model_type"), config.get("_name_or_path"), *(arch if isinstance(arch, list) else [])]
    return " ".join(str(p) for p in parts if p)


def _is_opencua(name: str, config: Mapping[str, Any] | None) -> tuple[bool, str | None]:
    said = f"{name} {_named(config)}"
    return "opencua" in said.lower(), guess_variant(said)


def matches_qwen(name: str, config: Mapping[str, Any] | None) -> bool:
    """xlangai/OpenCUA-7B (-32B, -72B), a directory or served root named so, or a config.json that
    says OpenCUA (``model_type`` "opencua", as vLLM's OpenCUAConfig has it: vllm-project/vllm
    vllm/transformers_utils/configs/opencua.py @ 84e613438d88c1dcdf06cc9875462c272f8f9df9) and not A3B."""
    found, variant = _is_opencua(name, config)
    return found and variant != "a3b"


def matches_a3b(name: str, config: Mapping[str, Any] | None) -> bool:
    """xlangai/OpenCUA-A3B (its config says kimi_vl, so the name or _name_or_path must say A3B)."""
    found, variant = _is_opencua(name, config)
    return found and variant == "a3b"


OPENCUA = ModelProfile(
    name="opencua",
    title="OpenCUA (7B/32B/72B)",
    variants=QWEN_VARIANTS,
    resolve_variant=resolver(QWEN_VARIANTS),
    layouts=LAYOUTS,
    parse_reply=_parse_pixels,
    coordinates="pixels_resized",
    thinking="reasoning_content",  # none: OpenCUA does not think; nothing is inline
    think_markers=None,
    history_images=3,
    parse_retries=2,
    model_size=model_size,
    image_tokens=image_tokens,
    matches=matches_qwen,
    published=PUBLISHED,
)

# The same agent (prompts, history, retries, no thinking) around a Kimi-VL-A3B model: what differs
# is the coordinate space, the image rule and the checkpoints.
OPENCUA_A3B = dataclasses.replace(
    OPENCUA,
    name="opencua-a3b",
    title="OpenCUA-A3B",
    variants=A3B_VARIANTS,
    resolve_variant=resolver(A3B_VARIANTS),
    parse_reply=_parse_relative,
    coordinates="relative",
    model_size=moonvit_size,
    image_tokens=moonvit_tokens,
    matches=matches_a3b,
    published=A3B_PUBLISHED,
)
