"""Waiting for the screen to settle after an action, instead of fixed sleeps.

Pixels alone say too little: a key that starts a program changes none until the program has
started, so a wait that ends when two frames match ends before the change has begun. Where the
desktop can be watched (env/activity.py: windows mapping, processes running) any sign of a reaction
counts as a change. An action nothing reacts to is watched for ``react_s`` and ends "unchanged";
one something reacts to ends once nothing has changed for ``quiet_s`` (``window_quiet_s`` after a
window came or went); ``timeout_s`` bounds both (a video or a busy program never goes quiet). ``sleep_after_s`` replaces all of it with
OSWorld's fixed sleep after every action (its runners' ``--sleep_after_execution``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

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
