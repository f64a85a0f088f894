"""Waiting for the screen to settle after an action, instead of fixed sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from env.desktop import Frame


@dataclass(frozen=True)
class Settle:
    timeout_s: float = 2.0
    interval_s: float = 0.03
    # How long the screen must stay unchanged. Two equal frames 30 ms apart can come before the app
    # has even reacted to the input (a shell running a command after Enter); a quiet window does not.
    quiet_s: float = 0.1


def wait_until_settled(grab: Callable[[], Frame], cfg: Settle) -> tuple[bool, float]:
    """Grab until the screen has not changed for ``quiet_s``, or ``timeout_s`` passes.

    Returns (settled, seconds waited). A blinking cursor never settles; the timeout bounds that.
    """
    t0 = time.perf_counter()
    prev = grab()
    quiet_since = t0
    while True:
        time.sleep(cfg.interval_s)
        cur = grab()
        now = time.perf_counter()
        if not cur.same_pixels(prev):
            quiet_since = now
        elif now - quiet_since >= cfg.quiet_s:
            return True, now - t0
        if now - t0 >= cfg.timeout_s:
            return False, now - t0
        prev = cur
