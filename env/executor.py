"""Executing one validated action with an input driver: the logic shared by every desktop."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from env.actions import Action
from env.activity import Activity
from env.desktop import ActionResult, Frame
from env.drivers import HeldInputs
from env.geometry import OutOfScreen, ScreenGeometry
from env.settle import Settle, wait_until_settled

DRAG_STEPS = 12
TYPED_KEYS = {"\n": "enter", "\t": "tab"}  # characters typed with a named key


def split_runs(text: str) -> list[tuple[bool, str]]:
    """Split text into (is_ascii, run) pieces: ASCII is typed key by key, the rest pasted."""
    runs: list[tuple[bool, str]] = []
    for ch in text:
        ascii_ok = ch in "\n\t" or 0x20 <= ord(ch) < 0x7F
        if runs and runs[-1][0] == ascii_ok:
            runs[-1] = (ascii_ok, runs[-1][1] + ch)
        else:
            runs.append((ascii_ok, ch))
    return runs


def execute(action: Action, inputs: HeldInputs, geometry: ScreenGeometry) -> ActionResult:
    """Run ``action``; a point off the screen or a driver failure is a failed result, not an exception.

    Whatever ends the action early (a driver error, Ctrl-C, the user's fail-safe) releases the keys
    and buttons it pressed; keys held by an earlier ``key_down`` stay held until its ``key_up`` or
    the desktop's ``release_held()``.
    """
    t0 = time.perf_counter()
    try:
        points = _screen_points(action, geometry)
    except OutOfScreen as e:
        return ActionResult.failed(f"not executed: {e}")
    before = inputs.held()
    try:
        _dispatch(action, inputs, points)
    except (ValueError, OSError, RuntimeError) as e:
        inputs.release_all(keep=before)
        return ActionResult(ok=False, error=f"{action.kind} failed: {e}", execute_s=time.perf_counter() - t0)
    except BaseException:
        inputs.release_all(keep=before)
        raise
    return ActionResult(ok=True, screen_points=points, execute_s=time.perf_counter() - t0)


def execute_and_settle(
    action: Action,
    inputs: HeldInputs,
    geometry: ScreenGeometry,
    grab: Callable[[], Frame],
    settle: Settle,
    signals: Sequence[Activity] = (),
) -> ActionResult:
    """What every desktop's execute() does: run the action, then wait for the screen to settle.
    ``signals`` (the desktop's activity watchers) start from the action, not from before it."""
    for s in signals:
        s.reset()
    result = execute(action, inputs, geometry)
    if result.ok and action.kind not in ("wait", "done"):
        waited = wait_until_settled(grab, settle, signals)
        result.settled, result.settle_s, result.settle_reason = waited.settled, waited.seconds, waited.reason
    return result


def _screen_points(action: Action, g: ScreenGeometry) -> list[tuple[int, int]]:
    if action.kind == "drag":
        return [g.to_screen(action.start), g.to_screen(action.end)]
    point = getattr(action, "point", None)
    return [g.to_screen(point)] if point is not None else []


def _tap(inputs: HeldInputs, kind: str, name: str) -> None:
    inputs.press(kind, name)
    inputs.release(kind, name)


def _hotkey(inputs: HeldInputs, keys: Sequence[str]) -> None:
    for k in keys:
        inputs.press("key", k)
    for k in reversed(keys):
        inputs.release("key", k)


def _dispatch(action: Action, inputs: HeldInputs, pts: list[tuple[int, int]]) -> None:
    match action.kind:
        case "click":
            inputs.move_to(*pts[0])
            for _ in range(action.clicks):
                _tap(inputs, "button", action.button)
        case "move":
            inputs.move_to(*pts[0])
        case "drag":
            (x1, y1), (x2, y2) = pts
            inputs.move_to(x1, y1)
            inputs.press("button", action.button)
            # Intermediate motion so toolkits see a drag, not a teleport.
            for i in range(1, DRAG_STEPS + 1):
                inputs.move_to(round(x1 + (x2 - x1) * i / DRAG_STEPS), round(y1 + (y2 - y1) * i / DRAG_STEPS))
                time.sleep(0.005)
            inputs.release("button", action.button)
        case "scroll":
            if pts:
                inputs.move_to(*pts[0])
            sign = 1 if action.direction in ("up", "right") else -1
            inputs.scroll(sign * action.amount, horizontal=action.direction in ("left", "right"))
        case "type":
            for is_ascii, run in split_runs(action.text):
                if not is_ascii:
                    inputs.driver.paste_text(run, lambda: _hotkey(inputs, inputs.driver.paste_keys))
                    continue
                # Key by key through the tracker: Ctrl-C between a press and its release still releases.
                for ch in run:
                    _tap(inputs, "key", TYPED_KEYS.get(ch, ch))
        case "key":
            for _ in range(action.presses):
                _tap(inputs, "key", action.key)
        case "hotkey":
            _hotkey(inputs, action.keys)
        case "key_down":
            inputs.press("key", action.key)  # held until a key_up, or the desktop lets go at the end
        case "key_up":
            inputs.release("key", action.key)
        case "wait":
            time.sleep(action.seconds)
        case "done":
            pass
