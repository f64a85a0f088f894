"""The grounding prompt and the reading of its answer.

As ScreenSpot-Pro's Kimi-VL wrapper asks (shared/docs/kimi-vl.md, "Grounding / agent output format"):
a system prompt asking for ``## Action:`` / ``## Code:`` with a normalised ``pyautogui.click``, then
one user turn holding the screenshot and ``## Task Instruction:\\n{instruction}``. The answer's first
click is the prediction: a normalised point is x*W, y*H of the original image (MoonViT pads right and
bottom, so the original size is the right denominator), a pixel point is taken as it is.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from agent.messages import ImagePart, Message, TextPart
from agent.models.kimi_vl.parser import parse_grounding, parse_reply
from agent.models.profile import ModelProfile
from agent.models.pyautogui_code import first_inline_point
from env.actions import Done, Point
from prompts import load_prompt, placeholders


def system_prompt(path: Path | None = None, *, refusals: bool = False) -> str:
    """The packaged grounding system prompt, or the user's file (to reproduce a published setup).
    ``refusals``: the dataset has targets that are not on the screen (OSWorld-G), so the packaged
    prompt also says how to decline."""
    if path is None:
        text = load_prompt("grounding_system")
        return text + "\n\n" + load_prompt("grounding_refusal") if refusals else text
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--system-prompt {path}: cannot read it as UTF-8 text ({e})") from None
    if not text:
        raise ValueError(f"--system-prompt {path} is empty")
    return text


def user_text(instruction: str) -> str:
    template = load_prompt("grounding_user")
    if placeholders(template, "prompts/grounding_user.md") != {"instruction"}:
        raise ValueError("prompts/grounding_user.md must hold exactly the placeholder {instruction}")
    return template.format(instruction=instruction)


def messages(system: str, image: Image.Image, instruction: str) -> list[Message]:
    """The grounding conversation for an in-process backend (the image decoded)."""
    return [
        Message.text("system", system),
        Message("user", (ImagePart(image), TextPart(user_text(instruction)))),
    ]


def openai_messages(system: str, image_url: str, instruction: str) -> list[dict[str, object]]:
    """The same conversation in the OpenAI chat format, the image given as a (data) URL."""
    return [
        {"role": "system", "content": system},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_url}},
                {"type": "text", "text": user_text(instruction)},
            ],
        },
    ]


def declined(reply: str) -> bool:
    """The reply says the element is not there: ``computer.terminate(status="failure")`` and no
    click. Only a refusal target (OSWorld-G) counts it as right; elsewhere it is no point."""
    actions = parse_reply(reply).actions
    return parse_grounding(reply) is None and any(
        isinstance(a, Done) and a.status == "failure" for a in actions
    )


def read_point(
    reply: str, size: tuple[int, int], profile: ModelProfile | None = None, in_token_limit: int = 0
) -> tuple[float, float] | None:
    """The predicted point in pixels of an image of ``size`` (width, height), or None when the reply
    holds no click (``wrong_format``). parse_grounding reads the answer after ``◁/think▷``.
    ``profile``: another family than Kimi-VL, whose points are read by its coordinate space."""
    if profile is not None:
        return _profile_point(reply, size, profile, in_token_limit)
    point = parse_grounding(reply)
    if point is None:
        return None
    if point.space == "norm":
        return point.x * size[0], point.y * size[1]
    return point.x, point.y


def _profile_point(
    reply: str, size: tuple[int, int], profile: ModelProfile, in_token_limit: int
) -> tuple[float, float] | None:
    """The first click anywhere in the reply (a grounding answer need not follow the agent's format),
    in the profile's space: fractions of the image, or pixels of the image as the model saw it
    (``pixels_resized``: scaled back exactly, x * W / w'; a point beyond that image is no point)."""
    resized = profile.coordinates == "pixels_resized"
    point = first_inline_point(reply, "pixels" if resized else "relative") or _parsed_point(reply, profile)
    if point is None:
        return None
    if point.space == "norm":
        return point.x * size[0], point.y * size[1]
    mw, mh = profile.model_size(*size, in_token_limit)
    if point.x >= mw or point.y >= mh:
        return None
    return point.x * size[0] / mw, point.y * size[1] / mh


def _parsed_point(reply: str, profile: ModelProfile) -> Point | None:
    """The first point the profile's own parser reads, for a family whose calls are not pyautogui's
    (UI-TARS's ``click(start_box='(x,y)')``): the reply as it is, else as a bare call after ``Action:``."""
    for text in (reply, f"Action: {reply.strip()}"):
        parsed = profile.parse_reply(text, "stop")
        for action in parsed.actions if parsed.error is None else []:
            point = getattr(action, "point", None)
            if isinstance(point, Point):
                return point
    return None
