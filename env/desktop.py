"""The desktop protocol every backend implements, and the values that cross it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from PIL import Image
from pydantic import BaseModel

from env.actions import Action
from env.geometry import ScreenGeometry


@dataclass(frozen=True, eq=False)
class Frame:
    """One raw capture. Kept as the grabber's BGRA bytes so the hot path never encodes PNG."""

    width: int
    height: int
    bgra: bytes
    taken_at: float = field(default_factory=time.time)

    def to_image(self) -> Image.Image:
        return Image.frombuffer("RGB", (self.width, self.height), self.bgra, "raw", "BGRX", 0, 1)

    @classmethod
    def from_image(cls, image: Image.Image) -> Frame:
        """For desktops that receive encoded images (a VM server) rather than raw grabs."""
        rgba = image.convert("RGB").convert("RGBA")
        r, g, b, a = rgba.split()
        return cls(image.width, image.height, Image.merge("RGBA", (b, g, r, a)).tobytes())

    def same_pixels(self, other: Frame | None) -> bool:
        return other is not None and self.width == other.width and self.bgra == other.bgra


class StopRequested(Exception):
    """The user asked, at the desktop itself, to stop the run (pyautogui's fail-safe: the pointer
    pushed into a screen corner). The loop ends the run as ``interrupted``; never raised for an
    action of our own."""


class ActionResult(BaseModel):
    """What executing one action did. Errors are values: the loop goes on and tells the model."""

    ok: bool
    error: str | None = None
    # Where the pointer went, in input-system coordinates (a drag has two points).
    screen_points: list[tuple[int, int]] = []
    execute_s: float = 0.0
    settle_s: float = 0.0
    settled: bool = True
    # Why the wait after the action ended (env/settle.py's SettleReason); "" when there was none.
    settle_reason: str = ""

    @classmethod
    def failed(cls, error: str) -> ActionResult:
        return cls(ok=False, error=error)


@runtime_checkable
class Desktop(Protocol):
    """Eyes and hands. ``execute`` never raises for a bad action: it returns ``ok=False``."""

    @property
    def geometry(self) -> ScreenGeometry: ...

    def screenshot(self) -> Frame: ...

    def execute(self, action: Action) -> ActionResult: ...

    def close(self) -> None: ...
