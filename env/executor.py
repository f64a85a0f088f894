"""Executing one validated action with an input driver: the logic shared by every desktop."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from env.actions import Action
from env.desktop import ActionResult, Frame
from env.drivers import InputDriver
from env.geometry import OutOfScreen, ScreenGeometry
from env.settle import Settle, wait_until_settled

DRAG_STEPS = 12


def _split_runs(text: str) -> list[tuple[bool, str]]:
    """Split text into (is_ascii, run) pieces: ASCII is typed key by key, the rest pasted."""
    runs: list[tuple[bool, str]] = []
    for ch in text:
        ascii_ok = ch in "\n\t" or 0x20 <= ord(ch) < 0x7F
        if runs and runs[-1][0] == ascii_ok:
            runs[-1] = (ascii_ok, runs[-1][1] + ch)
        else:
            runs.append((ascii_ok, ch))
    return runs


def execute(action: Action, driver: InputDriver, geometry: ScreenGeometry) -> ActionResult:
    """Run ``action``; a point off the screen or a driver failure is a failed result, not an exception."""
    t0 = time.perf_counter()
    held: list[tuple[str, str]] = []  # ("key"|"button", name) pressed and not yet released
    try:
        points = _screen_points(action, geometry)
        _dispatch(action, driver, points, held)
    except OutOfScreen as e:
        return ActionResult.failed(f"not executed: {e}")
    except (ValueError, OSError, RuntimeError) as e:
        return ActionResult(ok=False, error=f"{action.kind} failed: {e}", execute_s=time.perf_counter() - t0)
    finally:
        # An interrupted or failed action must not leave a key or button held down.
        for kind, name in reversed(held):
            with contextlib.suppress(Exception):  # the error that got us here is the one to report
                (driver.key_up if kind == "key" else driver.button_up)(name)
    return ActionResult(ok=True, screen_points=points, execute_s=time.perf_counter() - t0)


def execute_and_settle(
    action: Action, driver: InputDriver, geometry: ScreenGeometry, grab: Callable[[], Frame], settle: Settle
) -> ActionResult:
    """What every desktop's execute() does: run the action, then wait for the screen to settle."""
    result = execute(action, driver, geometry)
    if result.ok and action.kind not in ("wait", "done"):
        result.settled, result.settle_s = wait_until_settled(grab, settle)
    return result


def _screen_points(action: Action, g: ScreenGeometry) -> list[tuple[int, int]]:
    if action.kind == "drag":
        return [g.to_screen(action.start), g.to_screen(action.end)]
    point = getattr(action, "point", None)
    return [g.to_screen(point)] if point is not None else []


def _press(driver: InputDriver, held: list[tuple[str, str]], kind: str, name: str) -> None:
    held.append((kind, name))  # before pressing: an interrupt mid-press still gets a release
    (driver.key_down if kind == "key" else driver.button_down)(name)


def _release(driver: InputDriver, held: list[tuple[str, str]], kind: str, name: str) -> None:
    (driver.key_up if kind == "key" else driver.button_up)(name)
    held.remove((kind, name))


def _dispatch(
    action: Action, d: InputDriver, pts: list[tuple[int, int]], held: list[tuple[str, str]]
) -> None:
    match action.kind:
        case "click":
            d.move_to(*pts[0])
            for _ in range(action.clicks):
                _press(d, held, "button", action.button)
                _release(d, held, "button", action.button)
        case "move":
            d.move_to(*pts[0])
        case "drag":
            (x1, y1), (x2, y2) = pts
            d.move_to(x1, y1)
            _press(d, held, "button", action.button)
            # Intermediate motion so toolkits see a drag, not a teleport.
            for i in range(1, DRAG_STEPS + 1):
                d.move_to(round(x1 + (x2 - x1) * i / DRAG_STEPS), round(y1 + (y2 - y1) * i / DRAG_STEPS))
                time.sleep(0.005)
            _release(d, held, "button", action.button)
        case "scroll":
            if pts:
                d.move_to(*pts[0])
            sign = 1 if action.direction in ("up", "right") else -1
            d.scroll(sign * action.amount, horizontal=action.direction in ("left", "right"))
        case "type":
            for is_ascii, run in _split_runs(action.text):
                (d.type_ascii if is_ascii else d.paste_text)(run)
        case "key":
            for _ in range(action.presses):
                _press(d, held, "key", action.key)
                _release(d, held, "key", action.key)
        case "hotkey":
            for k in action.keys:
                _press(d, held, "key", k)
            for k in reversed(action.keys):
                _release(d, held, "key", k)
        case "key_down":
            d.key_down(action.key)  # deliberately held until a key_up
        case "key_up":
            d.key_up(action.key)
        case "wait":
            time.sleep(action.seconds)
        case "done":
            pass
