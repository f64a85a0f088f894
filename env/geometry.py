"""Mapping a model's point to the pixel the pointer must reach.

Three sizes can differ: the screenshot the model saw (``shot_*``), the monitor in the input
system's coordinates (``width``/``height``: logical points on macOS Retina, where screenshots are
physical pixels), and the monitor's place on the virtual desktop (``left``/``top``).
"""

from __future__ import annotations

from dataclasses import dataclass

from env.actions import Point


class OutOfScreen(ValueError):
    """A point that would land outside the chosen monitor."""


@dataclass(frozen=True)
class ScreenGeometry:
    shot_width: int
    shot_height: int
    width: int
    height: int
    left: int = 0
    top: int = 0

    @classmethod
    def plain(cls, width: int, height: int) -> ScreenGeometry:
        return cls(width, height, width, height)

    @property
    def scale(self) -> float:
        """Screenshot pixels per input unit (2.0 on a Retina display, <1 for a downscaled shot)."""
        return self.shot_width / self.width

    def to_screen(self, point: Point) -> tuple[int, int]:
        """Input-system coordinates for ``point``; raises OutOfScreen naming the bad coordinate."""
        if point.space == "norm":
            fx, fy = point.x, point.y
        else:
            if point.x >= self.shot_width or point.y >= self.shot_height:
                raise OutOfScreen(
                    f"pixel point ({point.x:g}, {point.y:g}) lies outside the "
                    f"{self.shot_width}x{self.shot_height} screenshot"
                )
            # The centre of pixel i of the screenshot is at (i + 0.5) / shot_width of the width.
            fx, fy = (point.x + 0.5) / self.shot_width, (point.y + 0.5) / self.shot_height
        # floor(f * size) picks the input pixel that contains the point; 1.0 is the last pixel.
        x = min(int(fx * self.width), self.width - 1)
        y = min(int(fy * self.height), self.height - 1)
        return self.left + x, self.top + y

    def to_norm(self, screen_x: int, screen_y: int) -> tuple[float, float]:
        """The inverse of ``to_screen`` for a point on this monitor (pixel centre)."""
        return (screen_x - self.left + 0.5) / self.width, (screen_y - self.top + 0.5) / self.height
