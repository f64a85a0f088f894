"""UI-TARS-1.5 as a model profile (``ui-tars-1.5``): a grammar unlike the pyautogui families'.

What it holds (/work/wt/i21-facts.md 3.2; sources in parser.py and variants.py):
- replies ``Thought: ...`` / ``Action: click(start_box='<|box_start|>(x,y)<|box_end|>')``, read by
  its own parser (agent.models.ui_tars.parser), never run;
- points in absolute pixels of the image the model saw: Qwen2.5-VL's smart_resize with factor 28,
  min_pixels 100*28*28, max_pixels 16384*28*28 (bytedance/UI-TARS README_coordinates.md and
  codes/ui_tars/action_parser.py @ 582f3a7ea5d285ee8ed9e2e84048d1ab01453c49), mapped back exactly by
  ModelProfile.read_reply;
- the layout of OSWorld's UI-TARS agent (``ui-tars`` in agent/history.py; mm_agents/uitars15_v1.py,
  mrwwk/DeskCraft @ 4893b45ee51b57b2c1279d0e140aee02a7d0f6a6): system "You are a helpful assistant.",
  the prompt with the task as the first user turn, the last 5 screenshots (``history_n = 5``, the
  current one included) each as a user turn before its step's reply, older replies as assistant
  turns alone, the current screenshot last; its prompt (``qwen25vl_normal``) in prompts/ui-tars/;
- up to 3 tries of a step (the agent's ``try_times = 3``), the retries at temperature 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.layouts import UI_TARS_LAYOUTS
from agent.models.profile import ModelProfile
from agent.models.qwen_vision import image_tokens as qwen_image_tokens
from agent.models.qwen_vision import model_size as qwen_model_size
from agent.models.reply import ParsedReply
from agent.models.ui_tars.parser import parse_reply
from agent.models.ui_tars.variants import VARIANTS, resolve_variant

MIN_PIXELS = 100 * 28 * 28  # UI-TARS's own (OpenCUA's is 3136)
_NAME_PARTS = ("ui-tars", "ui_tars", "uitars")
# OSWorld success rates (%). UI-TARS-1.5-7B: 27.5 at 100 steps (bytedance/UI-TARS README.md
# @ 582f3a7ea5d285ee8ed9e2e84048d1ab01453c49); OSWorld-Verified 24.5 / 27.3 / 27.4 at 15 / 50 / 100
# steps (xlang-ai/OpenCUA README.md @ f9f965b045ca225b6f8d684d3be3db20491d5d81). The README's 42.5
# is the closed UI-TARS-1.5, not the open 7B a run here serves, so it is not printed beside one.
PUBLISHED: dict[str, tuple[tuple[str, float], ...]] = {
    "ui-tars-1.5-7b": (
        ("UI-TARS README, OSWorld, 100 steps", 27.5),
        ("OpenCUA README, OSWorld-Verified, 15 steps", 24.5),
        ("OpenCUA README, OSWorld-Verified, 50 steps", 27.3),
        ("OpenCUA README, OSWorld-Verified, 100 steps", 27.4),
    )
}


def model_size(width: int, height: int, in_token_limit: int) -> tuple[int, int]:
    return qwen_model_size(width, height, in_token_limit, min_pixels=MIN_PIXELS)


def image_tokens(width: int, height: int, in_token_limit: int) -> int:
    return qwen_image_tokens(width, height, in_token_limit, min_pixels=MIN_PIXELS)


def _parse(text: str, finish_reason: str) -> ParsedReply:
    return parse_reply(text, finish_reason)


def matches(name: str, config: Mapping[str, Any] | None) -> bool:
    """``ByteDance-Seed/UI-TARS-1.5-7B``, a served root or directory named ``ui-tars...``, or a
    config.json whose ``_name_or_path`` says so (its model_type is plain qwen2_5_vl, which says
    nothing about the family)."""
    said = name
    if config is not None:
        said += f" {config.get('_name_or_path') or ''}"
    low = said.lower()
    return any(part in low for part in _NAME_PARTS)


UI_TARS = ModelProfile(
    name="ui-tars-1.5",
    title="UI-TARS-1.5",
    variants=VARIANTS,
    resolve_variant=resolve_variant,
    layouts=UI_TARS_LAYOUTS,
    parse_reply=_parse,
    coordinates="pixels_resized",
    thinking="reasoning_content",  # none: the Thought: line is part of the reply's text
    think_markers=None,
    history_images=5,
    parse_retries=2,  # the OSWorld agent tries 3 times in all
    retry_temperature=1.0,  # ... and samples the retries at temperature 1
    model_size=model_size,
    image_tokens=image_tokens,
    matches=matches,
    published=PUBLISHED,
)
