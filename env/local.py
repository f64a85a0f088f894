"""The desktop kimi-agent runs on: mss to see, pyautogui to act."""

from __future__ import annotations

from PIL import Image

from env.actions import Action
from env.desktop import ActionResult, Frame
from env.drivers import PyAutoGUIDriver
from env.executor import execute_and_settle
from env.geometry import ScreenGeometry
from env.settle import Settle


class LocalDesktop:
    """One monitor of the local desktop (mss numbering: 1 = primary), or an explicit ``region``
    (left, top, width, height) of the virtual screen. ``scale`` < 1 downsizes screenshots.

    Monitor rectangles are in the input system's coordinates (points on macOS), while grabs are
    physical pixels; the geometry keeps both, so HiDPI clicks land where the model pointed.
    """

    def __init__(
        self,
        monitor: int = 1,
        *,
        region: tuple[int, int, int, int] | None = None,
        scale: float = 1.0,
        settle: Settle = Settle(),
    ) -> None:
        import mss

        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        self._mss = mss.MSS()
        monitors = self._mss.monitors
        if region is None:
            if not 1 <= monitor < len(monitors):
                sizes = ", ".join(f"{i}: {m['width']}x{m['height']}" for i, m in enumerate(monitors) if i)
                raise ValueError(f"no monitor {monitor}; this desktop has {sizes}")
            m = monitors[monitor]
            region = (m["left"], m["top"], m["width"], m["height"])
        self._box = dict(zip(("left", "top", "width", "height"), region, strict=True))
        self.scale = scale
        self.settle = settle
        probe = self._grab_raw()
        left, top, width, height = region
        self._geometry = ScreenGeometry(
            round(probe.width * scale), round(probe.height * scale), width, height, left, top
        )
        self._driver = PyAutoGUIDriver()

    def _grab_raw(self):  # type: ignore[no-untyped-def]
        return self._mss.grab(self._box)

    @property
    def geometry(self) -> ScreenGeometry:
        return self._geometry

    def screenshot(self) -> Frame:
        shot = self._grab_raw()
        if self.scale == 1.0:
            return Frame(shot.width, shot.height, bytes(shot.raw))
        g = self._geometry
        img = Image.frombuffer("RGBA", (shot.width, shot.height), bytes(shot.raw), "raw", "RGBA", 0, 1)
        small = img.resize((g.shot_width, g.shot_height), Image.Resampling.BILINEAR)
        return Frame(g.shot_width, g.shot_height, small.tobytes())  # still BGRA byte order

    def execute(self, action: Action) -> ActionResult:
        return execute_and_settle(action, self._driver, self._geometry, self.screenshot, self.settle)

    def close(self) -> None:
        self._mss.close()
