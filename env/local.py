"""The desktop kimi-agent runs on: mss to see, pyautogui to act."""

from __future__ import annotations

from env.actions import Action
from env.capture import Box, Grabber, open_mss
from env.desktop import ActionResult, Frame
from env.drivers import PyAutoGUIDriver
from env.executor import execute_and_settle
from env.geometry import ScreenGeometry
from env.settle import Settle


def describe_monitors(monitors: list[dict[str, int]]) -> str:
    return ", ".join(
        f"{i}: {m['width']}x{m['height']} at ({m['left']}, {m['top']})" for i, m in enumerate(monitors) if i
    )


class LocalDesktop:
    """One monitor of the local desktop (mss numbering: 1 = the first, usually the primary), or an
    explicit ``region`` (left, top, width, height) of the virtual screen. ``scale`` < 1 shrinks
    screenshots (the model sees fewer pixels; clicks still land on the full-size screen).

    mss reports monitor rectangles in the input system's coordinates (points on macOS) while grabs
    are physical pixels (twice as many on Retina): the geometry keeps both, so clicks land where
    the model pointed.
    """

    def __init__(
        self,
        monitor: int = 1,
        *,
        region: Box | None = None,
        scale: float = 1.0,
        settle: Settle = Settle(),
    ) -> None:
        self.settle = settle
        self._sct = open_mss()
        try:
            if region is None:
                monitors = self._sct.monitors
                if not 1 <= monitor < len(monitors):
                    raise ValueError(f"no monitor {monitor}; this desktop has {describe_monitors(monitors)}")
                m = monitors[monitor]
                region = (m["left"], m["top"], m["width"], m["height"])
            elif region[2] <= 0 or region[3] <= 0:
                raise ValueError(f"region {region} must have a positive width and height")
            self._grabber = Grabber(self._sct, region, scale)
            left, top, width, height = region
            self._geometry = ScreenGeometry(*self._grabber.size, width, height, left, top)
            self._driver = PyAutoGUIDriver()
        except BaseException:
            self._sct.close()
            raise

    @property
    def geometry(self) -> ScreenGeometry:
        return self._geometry

    def screenshot(self) -> Frame:
        return self._grabber.grab()

    def execute(self, action: Action) -> ActionResult:
        return execute_and_settle(action, self._driver, self._geometry, self.screenshot, self.settle)

    def close(self) -> None:
        self._driver.close()
        self._sct.close()

    def __enter__(self) -> LocalDesktop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
