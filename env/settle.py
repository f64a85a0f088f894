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


def wait_until_settled(grab: Callable[[], Frame], cfg: Settle) -> tuple[bool, float]:
    """Grab until two consecutive frames are identical or ``timeout_s`` passes.

    Returns (settled, seconds waited). A blinking cursor never settles; the timeout bounds that.
    """
    t0 = time.perf_counter()
    prev = grab()
    while True:
        time.sleep(cfg.interval_s)
        cur = grab()
        if cur.same_pixels(prev):
            return True, time.perf_counter() - t0
        if time.perf_counter() - t0 >= cfg.timeout_s:
            return False, time.perf_counter() - t0
        prev = cur
