"""Chat messages as the model backends consume them (images already at model resolution)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

from PIL import Image


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True, eq=False)
class ImagePart:
    """An image resized to the model's resolution (see agent.models.kimi_vl.vision.fit_to_budget)."""

    image: Image.Image
    # Which screenshot this is (step index), so the history can tell images apart.
    key: str = ""


Part = Union[TextPart, ImagePart]


@dataclass(frozen=True)
class Message:
    role: Literal["system", "user", "assistant"]
    parts: tuple[Part, ...] = field(default_factory=tuple)

    @classmethod
    def text(cls, role: Literal["system", "user", "assistant"], text: str) -> Message:
        return cls(role, (TextPart(text),))

    @property
    def images(self) -> list[Image.Image]:
        return [p.image for p in self.parts if isinstance(p, ImagePart)]
