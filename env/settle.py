"""Waiting for the screen to settle after an action, instead of fixed sleeps.

Pixels alone say too little: a key that starts a program changes none until the program has
started, so a wait that ends when two frames match ends before the change has begun. Where the
desktop can be watched (env/activity.py: windows mapping, processes running) any sign of a reaction
counts as a change. An action nothing reacts to is watched for ``react_s`` and ends "unchanged";
one something reacts to ends once nothing has changed for ``quiet_s`` (``window_quiet_s`` after a
window came or went); ``timeout_s`` bounds both (a video or a busy program never goes quiet). ``sleep_after_s`` replaces all of it with
OSWorld's fixed sleep after every action (its runners' ``--sleep_after_execution``).

On screenshots alone (a server without ``/kimi``, OSWorld's own) ``settle_by_looks`` waits instead:
every look there is a request, a PNG encoded by the server and, on OSWorld's, an X connection it never
closes, so it looks as few times as it can (see its doc).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import ImageChops

from env.activity import Activity
from env.desktop import Frame

# settled: changed, then went quiet; unchanged: nothing reacted within react_s; timeout: still
# changing at timeout_s; fixed: slept sleep_after_s without looking.
SettleReason = Literal["settled", "unchanged", "timeout", "fixed"]


@dataclass(frozen=True)
class Settle:
    # What one action may cost at most: LibreOffice's first start takes about 5 s on a loaded machine.
    timeout_s: float = 5.0
    interval_s: float = 0.03
    # Once the screen has changed: how long nothing may change before it counts as settled.
    quiet_s: float = 0.1
    # ... and how long no window may come, go or move: what the desktop does in turn (a panel
    # hiding behind a new window, an app's second layout pass) runs on timers of a few hundred ms.
    window_quiet_s: float = 0.5
    # Until the screen has changed: how long after the last sign of activity (or the action) to
    # wait for it to.
    # A program at work before its first pixel (a dialog checking a file, an app starting) may go
    # still for a few hundred milliseconds. On screenshots alone (an OSWorld VM) this is the only
    # guard against a late start, and what every no-op costs.
    react_s: float = 0.5
    # A fixed sleep after every action instead of watching (OSWorld's runners: 3 s).
    sleep_after_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("timeout_s", "interval_s", "quiet_s", "window_quiet_s", "react_s", "sleep_after_s"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and 0 <= value < float("inf")):
                raise ValueError(f"settle {name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class Waited:
    reason: SettleReason
    seconds: float

    @property
    def settled(self) -> bool:
        return self.reason != "timeout"


def wait_until_settled(grab: Callable[[], Frame], cfg: Settle, signals: Sequence[Activity] = ()) -> Waited:
    """Wait after an action until the screen has settled (see the module's doc). ``signals`` were
    reset just before the action, so they hold what happened since it began."""
    t0 = time.perf_counter()
    if cfg.sleep_after_s is not None:
        time.sleep(cfg.sleep_after_s)
        return Waited("fixed", time.perf_counter() - t0)
    prev = grab()
    last_sign = t0  # of any activity, pixels or not
    shown: float | None = None  # when the screen last changed
    last_window = t0 - cfg.window_quiet_s  # when a window last came, went or moved
    while True:
        time.sleep(cfg.interval_s)
        cur = grab()
        now = time.perf_counter()
        # Every signal is read, not just up to the first active one: reading drains what it saw.
        seen = [s.active() for s in signals]
        if any(seen):
            last_sign = now
        if any(s.windows and a for s, a in zip(signals, seen, strict=True)):
            last_window = now
        if not cur.same_pixels(prev):
            last_sign = shown = now
        prev = cur
        if shown is None and now - last_sign >= cfg.react_s:
            return Waited("unchanged", now - t0)
        if shown is not None and now - last_sign >= cfg.quiet_s and now - last_window >= cfg.window_quiet_s:
            return Waited("settled", now - t0)
        if now - t0 >= cfg.timeout_s:
            return Waited("timeout", now - t0)


# What changes on its own without counting as a reaction: a text caret blinking (a few dozen pixels),
# a panel clock's minute (a few hundred), both at once. A share of the screen, so HiDPI scales it.
NOISE_SHARE = 1 / 2000
NOISE_MIN_PX = 300


def changed_pixels(a: Frame, b: Frame) -> int:
    """Pixels that differ in any channel (a frame of another size differs everywhere)."""
    if (a.width, a.height) != (b.width, b.height):
        return max(a.width * a.height, b.width * b.height)
    if a.bgra == b.bgra:
        return 0
    r, g, bl = ImageChops.difference(a.to_image(), b.to_image()).split()
    most = ImageChops.lighter(ImageChops.lighter(r, g), bl)
    return a.width * a.height - most.histogram()[0]


def looks_same(a: Frame, b: Frame) -> bool:
    """Equal but for what changes on its own (a caret, a clock): see NOISE_SHARE."""
    return changed_pixels(a, b) <= max(NOISE_MIN_PX, int(a.width * a.height * NOISE_SHARE))


def settle_by_looks(grab: Callable[[], Frame], before: Frame | None, cfg: Settle) -> tuple[Waited, Frame]:
    """The wait after an action where each screenshot is a request (OSWorld's protocol without
    ``/kimi``). Returns why it ended and its last frame, which is the screen the model should see next:
    the caller hands it out as the next screenshot instead of asking again.

    ``before`` is the last screen seen before the action (the step's own screenshot). The first look
    comes ``react_s`` after the action; if it looks the same as ``before`` (``looks_same``: a caret or a
    clock do not count) nothing reacted: "unchanged", one request in all, and that look is the next
    step's screenshot. Otherwise the screen is looked at again ``window_quiet_s`` later (on pixels
    alone any change may be a window coming), and again with the gap doubled each time it still
    changed: the longer something has been changing, the longer it must stay still to count as done,
    and a video or a progress bar costs five looks to ``timeout_s``, not one per ``interval_s``. A
    change over by the second look (most: a menu, a dialog, typed text) costs two requests, one of
    them the next step's screenshot. ``sleep_after_s`` sleeps, then looks once (OSWorld's runners)."""
    t0 = time.perf_counter()
    if cfg.sleep_after_s is not None:
        time.sleep(cfg.sleep_after_s)
        return Waited("fixed", time.perf_counter() - t0), grab()
    time.sleep(cfg.react_s)
    cur = grab()
    if before is not None and looks_same(before, cur):
        return Waited("unchanged", time.perf_counter() - t0), cur
    gap = cfg.window_quiet_s
    while True:
        left = cfg.timeout_s - (time.perf_counter() - t0)
        if left <= 0:
            return Waited("timeout", time.perf_counter() - t0), cur
        time.sleep(min(gap, left))
        prev, cur = cur, grab()
        if looks_same(prev, cur):
            return Waited("settled", time.perf_counter() - t0), cur
        gap *= 2
