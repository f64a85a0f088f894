"""Screen grabs with mss, as raw BGRA Frames, optionally downscaled."""

from __future__ import annotations

from typing import Any

from PIL import Image

from env.desktop import Frame

Box = tuple[int, int, int, int]  # left, top, width, height on the virtual screen


def open_mss(display: str | None = None) -> Any:
    """An mss grabber; ``display`` (Linux) picks the X display instead of $DISPLAY."""
    import mss

    kwargs = {"display": display} if display else {}
    # mss >= 10.2 exposes the class and deprecates the mss() factory; older releases have only it.
    factory = getattr(mss, "MSS", None) or mss.mss
    return factory(**kwargs)


class Grabber:
    """Grabs one rectangle; ``size`` is the Frame size (smaller than the grab when scaling down)."""

    def __init__(self, sct: Any, box: Box, scale: float = 1.0) -> None:
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        self.sct = sct
        self.box = dict(zip(("left", "top", "width", "height"), box, strict=True))
        self.scale = scale
        shot = sct.grab(self.box)  # physical pixels: twice the box on a Retina display
        self.grab_size = (shot.width, shot.height)
        self.size = (max(1, round(shot.width * scale)), max(1, round(shot.height * scale)))

    def grab(self) -> Frame:
        shot = self.sct.grab(self.box)
        if self.size == (shot.width, shot.height):
            return Frame(shot.width, shot.height, bytes(shot.raw))
        # Resampling treats BGRA as if it were RGBA: channels are filtered independently.
        img = Image.frombuffer("RGBA", (shot.width, shot.height), bytes(shot.raw), "raw", "RGBA", 0, 1)
        small = img.resize(self.size, Image.Resampling.BILINEAR)
        return Frame(self.size[0], self.size[1], small.tobytes())
