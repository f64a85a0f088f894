"""The desktop kimi-agent runs on: mss to see, pyautogui to act."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from env.actions import Action
from env.activity import Activity, XActivity
from env.capture import Box, Grabber, open_mss
from env.desktop import ActionResult, Frame, StopRequested
from env.drivers import HeldInputs, PyAutoGUIDriver
from env.executor import execute_and_settle
from env.geometry import ScreenGeometry
from env.settle import Settle

USER_STOP = (
    "stopped by the user: the pointer is in a corner of the screen (pyautogui's fail-safe); "
    "move it away before the next run"
)


def describe_monitors(monitors: list[dict[str, int]]) -> str:
    return ", ".join(
        f"{i}: {m['width']}x{m['height']} at ({m['left']}, {m['top']})" for i, m in enumerate(monitors) if i
    )


def _x_activity() -> list[Activity]:
    """Window activity where the desktop is an X display (an X11 session, or XWayland's view of
    X apps); elsewhere screenshots are the settle wait's only signal. This machine's processes
    are not watched: on a workstation they are busy with much besides the desktop."""
    display = os.environ.get("DISPLAY")
    if not sys.platform.startswith("linux") or not display:
        return []
    with contextlib.suppress(Exception):  # python-xlib raises several kinds for a display it cannot open
        return [XActivity(display)]
    return []


class LocalDesktop:
    """One monitor of the local desktop (mss numbering: 1 = the first, usually the primary), or an
    explicit ``region`` (left, top, width, height) of the virtual screen. ``scale`` < 1 shrinks
    screenshots (the model sees fewer pixels; clicks still land on the full-size screen).

    mss reports monitor rectangles in the input system's coordinates (points on macOS) while grabs
    are physical pixels (twice as many on Retina): the geometry keeps both, so clicks land where
    the model pointed.

    The run's keys and buttons are released by close(), or at interpreter exit if close() never
    comes. Pushing the pointer into a screen corner stops the run: execute() and screenshot() then
    raise StopRequested.
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
        self._inputs = HeldInputs(self._driver)
        self._signals = _x_activity()
        atexit.register(self.release_held)

    @property
    def geometry(self) -> ScreenGeometry:
        return self._geometry

    @contextmanager
    def _user_stop(self) -> Iterator[None]:
        try:
            yield
        except self._driver.failsafe_error:
            raise StopRequested(USER_STOP) from None

    def screenshot(self) -> Frame:
        with self._user_stop():
            self._driver.check_failsafe()  # the user can stop us while the model thinks, too
        return self._grabber.grab()

    def execute(self, action: Action) -> ActionResult:
        with self._user_stop():
            return execute_and_settle(
                action, self._inputs, self._geometry, self.screenshot, self.settle, self._signals
            )

    def release_held(self) -> None:
        """Release every key and button the run pressed and has not released (a key_down)."""
        self._inputs.release_all()

    def close(self) -> None:
        atexit.unregister(self.release_held)
        try:
            self.release_held()
        finally:
            for signal in self._signals:
                signal.close()
            self._driver.close()
            self._sct.close()

    def __enter__(self) -> LocalDesktop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
