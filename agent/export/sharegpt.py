"""Our chat messages <-> LLaMA-Factory's ShareGPT multimodal samples, token for token.

LLaMA-Factory (data/README.md, "OpenAI Format" and "Multimodal Dataset") reads ``"formatting":
"sharegpt"`` with a ``messages`` column of ``{"role", "content"}`` objects (tags ``role_tag`` /
``content_tag`` / ``user_tag`` / ``assistant_tag`` / ``system_tag``), an optional system prompt as
the first message, user and assistant turns alternating (user in odd positions), and an ``images``
column of paths, one per ``<image>`` placeholder, in order. Its ``kimi_vl`` template writes
``<|im_user|>user<|im_middle|>{content}<|im_end|><|im_assistant|>assistant<|im_middle|>``,
``{content}<|im_end|>`` and ``<|im_system|>system<|im_middle|>{content}<|im_end|>``, and its
kimi_vl plugin turns each ``<image>`` into ``<|media_start|>image<|media_content|>`` + pads +
``<|media_end|>``: our chat template (agent/models/kimi_vl/chat.py), turn for turn.

Our prompts do not always alternate (the ``append`` layout opens with two user turns, ``osworld``
puts an assistant turn right after the system prompt). Such a turn is joined to the one before it
with the very markers the template would have put between them
(``<|im_end|><|im_user|>user<|im_middle|>``): the template's slots and the content are tokenized as
one string in which special-token text is read as the special token, so the ids come out the same.
The system prompt is the first message (not a ``system`` column) because it may have to carry such
a joined turn, and one column keeps the sample whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from PIL import Image

from agent.messages import ImagePart, Message, Part, TextPart

IMAGE = "<image>"  # LLaMA-Factory's IMAGE_PLACEHOLDER
ROLES = ("system", "user", "assistant")
_JOIN = re.compile(r"<\|im_end\|><\|im_(system|user|assistant)\|>(system|user|assistant)<\|im_middle\|>")


def dataset_info(name: str, file_name: str) -> dict[str, Any]:
    """The ``dataset_info.json`` entry for our samples (data/README.md, "OpenAI Format")."""
    return {
        name: {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
    }


def joiner(role: str) -> str:
    return f"<|im_end|><|im_{role}|>{role}<|im_middle|>"


def content(message: Message, image_name: Callable[[ImagePart], str], images: list[str]) -> str:
    """The message as one string, ``<image>`` where each image was (its name appended to ``images``)."""
    out = []
    for part in message.parts:
        if isinstance(part, ImagePart):
            out.append(IMAGE)
            images.append(image_name(part))
        else:
            out.append(part.text)
    return "".join(out)


def to_sample(
    prompt: Sequence[Message], target: str, image_name: Callable[[ImagePart], str]
) -> dict[str, Any]:
    """A LLaMA-Factory sample: the system prompt, alternating turns, ``target`` as the last
    assistant turn."""
    if not prompt or prompt[0].role != "system":
        raise ValueError("a prompt must open with its system message")
    images: list[str] = []
    turns: list[dict[str, str]] = [{"role": "system", "content": content(prompt[0], image_name, images)}]
    for m in [*prompt[1:], Message.text("assistant", target)]:
        expected = "assistant" if turns[-1]["role"] == "user" else "user"
        text = content(m, image_name, images)
        if m.role == expected:
            turns.append({"role": m.role, "content": text})
        else:
            turns[-1]["content"] += joiner(m.role) + text
    return {"messages": turns, "images": images}


def check_sample(sample: Mapping[str, Any]) -> None:
    """LLaMA-Factory's loader rules for a ShareGPT sample: an optional system message first, then
    user and assistant alternating, ending with the assistant; as many ``<image>`` as images."""
    turns = list(sample["messages"])
    if turns and turns[0]["role"] == "system":
        if IMAGE in turns[0]["content"]:  # the plugin expands placeholders in the turns only
            raise ValueError(f"the system message holds {IMAGE}")
        turns = turns[1:]
    if not turns or len(turns) % 2:
        raise ValueError(f"{len(turns)} turns after the system message: expected an even number")
    for i, t in enumerate(turns):
        if t["role"] != ("user" if i % 2 == 0 else "assistant"):
            raise ValueError(f"turn {i + 1} is {t['role']!r}: user and assistant must alternate")
    placeholders = sum(t["content"].count(IMAGE) for t in sample["messages"])
    if placeholders != len(sample["images"]):
        raise ValueError(f"{placeholders} {IMAGE} placeholders for {len(sample['images'])} images")


def to_messages(sample: Mapping[str, Any], load: Callable[[str], Image.Image]) -> list[Message]:
    """A sample back as our messages (the target included), images loaded by ``load(path)``: what
    LLaMA-Factory's template would render, in the form our chat template renders."""
    paths = iter(sample["images"])
    messages: list[Message] = []
    for turn in sample["messages"]:
        pieces = _JOIN.split(turn["content"])
        # split() gives: text, role, role, text, role, role, text, ...
        roles = [turn["role"], *pieces[1::3]]
        for role, text in zip(roles, pieces[0::3], strict=True):
            parts: list[Part] = []
            for i, chunk in enumerate(text.split(IMAGE)):
                if i:
                    parts.append(ImagePart(load(next(paths))))
                if chunk:
                    parts.append(TextPart(chunk))
            messages.append(Message(role, tuple(parts)))  # type: ignore[arg-type]
    return messages


def markers(specials: Sequence[str]) -> re.Pattern[str]:
    """What text must not hold: LLaMA-Factory would read ``<image>`` as an image and a special
    token's name as that token, not as the text it was."""
    return re.compile("|".join(re.escape(s) for s in sorted({IMAGE, *specials}, key=len, reverse=True)))


def find_marker(messages: Sequence[Message], target: str, pattern: re.Pattern[str]) -> str | None:
    for text in (*(p.text for m in messages for p in m.parts if isinstance(p, TextPart)), target):
        found = pattern.search(text)
        if found:
            return found.group(0)
    return None
