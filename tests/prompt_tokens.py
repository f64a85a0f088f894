"""Flatten a prompt into a comparable token sequence: text as its UTF-8 bytes (an upper bound on
BPE tokens, and byte-identical text gives identical tokens; the template's words ``system``,
``user``, ``assistant`` and ``image`` too, as the byte counter counts them), images as their token
count of placeholders tagged with the screenshot they show."""

from __future__ import annotations

from agent.messages import ImagePart, Message
from agent.models.kimi_vl.vision import image_tokens

# <|im_assistant|> assistant <|im_middle|>: what the prompt ends with, as the byte counter counts it
GENERATION = 2 + len(b"assistant")


def layout(messages: list[Message], in_token_limit: int) -> list[object]:
    out: list[object] = []
    for m in messages:
        out.extend([("im", m.role), *m.role.encode(), "im_middle"])
        for p in m.parts:
            if isinstance(p, ImagePart):
                n = image_tokens(p.image.width, p.image.height, in_token_limit)
                out.extend(["media_start", *b"image", "media_content", *[("img", p.key)] * n, "media_end"])
            else:
                out.extend(p.text.encode("utf-8"))
        out.append("im_end")
    return out


def common_prefix(a: list[object], b: list[object]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
