"""Flatten a prompt into a comparable token sequence: text as its UTF-8 bytes (an upper bound on
BPE tokens, and byte-identical text gives identical tokens), images as their token count of
placeholders tagged with the screenshot they show."""

from __future__ import annotations

from agent.messages import ImagePart, Message
from agent.vision import image_tokens


def layout(messages: list[Message], in_token_limit: int) -> list[object]:
    out: list[object] = []
    for m in messages:
        out.extend([("im", m.role), ("name", m.role), "im_middle"])
        for p in m.parts:
            if isinstance(p, ImagePart):
                n = image_tokens(p.image.width, p.image.height, in_token_limit)
                out.extend(["media_start", "image", "media_content", *[("img", p.key)] * n, "media_end"])
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
