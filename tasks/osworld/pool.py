"""A warm pool: served sandboxes started ahead of use, so a reset takes a ready desktop instead of
waiting 1-3 s for a fresh one to boot.

``take`` hands out a ready sandbox and starts its replacement at once; ``give_back`` closes the used
one on a thread of its own. One pool serves every environment (and runner worker) of a process.

Bounded: ``size`` sandboxes wait ready at most; each has its isolation's memory and process limits
(``Isolation.memory_mb``, ``max_procs``); ``max_alive`` caps every sandbox the pool has at once (ready,
starting, in use and closing), and starts wait below it. A start that fails is retried up to
``attempts`` times in a row, each failure kept in ``failures``; a sandbox that failed never reaches
a caller, and a ``take`` that nothing can serve raises PoolError with the last failure's reason.

Nothing outlives the process, SIGKILL included: every sandbox has its reaper (env/reaper.py), and
``close`` closes the ready ones and waits for those in flight; a pool made with
``close_with_last_user`` closes itself when its last user (a runner target, an environment) detaches.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from env.isolation import Isolation
from env.osworld_client import OSWorldClient
from env.sandbox import DesktopName
from env.served_sandbox import ServedSandbox

SCREEN = (1920, 1080)  # OSWorld's default screen

Starter = Callable[[], ServedSandbox]

# The threads that start sandboxes, for the life of the process. bwrap's --die-with-parent ends a
# sandbox when the thread that started it ends (the kernel's parent-death signal is per thread), so a
# sandbox started on a short-lived thread would die under its user; these threads never end.
_STARTERS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="sandbox-start")


class PoolError(RuntimeError):
    """No sandbox can be handed out: the pool is closed, or starts keep failing."""


@dataclass(frozen=True)
class PoolSettings:
    size: int = 1  # sandboxes kept ready
    desktop: DesktopName | None = "xfce"
    isolation: Isolation | None = Isolation()
    screen: tuple[int, int] = SCREEN
    max_alive: int | None = None  # every sandbox at once; None: size + those in use + those closing
    attempts: int = 3  # starts in a row before a take gives up
    # Sandboxes the pool will ever start (a run's task count): none is started that no one will take.
    max_starts: int | None = None
    parent_dir: Path | None = None  # where the sandboxes' directories go (default: the temp directory)

    def check(self) -> None:
        if self.size < 1:
            raise ValueError(f"a pool holds at least 1 sandbox, not {self.size}")
        if self.max_alive is not None and self.max_alive < 1:
            raise ValueError(f"max_alive must be at least 1, not {self.max_alive}")
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")


@dataclass(frozen=True)
class Taken:
    """How a take went: ``warm`` when a sandbox was ready, else how long the caller waited."""

    warm: bool
    wait_s: float


@dataclass
class PoolStats:
    started: int = 0
    failed: int = 0


class SandboxPool:
    def __init__(
        self,
        settings: PoolSettings = PoolSettings(),
        start: Starter | None = None,
        *,
        close_with_last_user: bool = False,
    ) -> None:
        """``start``: how one sandbox starts (default: a ServedSandbox of the settings)."""
        settings.check()
        self._close_with_last_user = close_with_last_user
        self.settings = settings
        self._start = start or self._default_start
        self._ready: collections.deque[ServedSandbox] = collections.deque()
        self._starting = 0
        self._in_use = 0
        self._closing = 0
        self._users = 0
        self._closed = False
        self._failed_in_a_row = 0
        self._cond = threading.Condition()
        self.failures: list[str] = []  # every failed start's reason, in order
        self.stats = PoolStats()
        self._fill()

    def _default_start(self) -> ServedSandbox:
        s = self.settings
        box = ServedSandbox(*s.screen, desktop=s.desktop, isolation=s.isolation, parent_dir=s.parent_dir)
        try:
            warm_up(box)
        except BaseException:
            box.close()
            raise
        return box

    # -- users ---------------------------------------------------------------------------------
    def attach(self) -> SandboxPool:
        """One more user (a runner target, an environment)."""
        with self._cond:
            if self._closed:
                raise PoolError("the sandbox pool is closed")
            self._users += 1
        return self

    def detach(self) -> None:
        with self._cond:
            self._users -= 1
            last = self._users <= 0 and self._close_with_last_user
        if last:
            self.close()

    # -- sandboxes -----------------------------------------------------------------------------
    def take(self, timeout_s: float | None = None) -> tuple[ServedSandbox, Taken]:
        """A ready sandbox (waiting for one to start if none is); its replacement starts now."""
        t0 = time.perf_counter()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            warm = bool(self._ready)
            while not self._ready:
                if self._closed:
                    raise PoolError("the sandbox pool is closed")
                if self._starting == 0 and self.stats.started == self.settings.max_starts:
                    raise PoolError(f"the pool has started the {self.settings.max_starts} sandboxes it may")
                if self._starting == 0 and self._failed_in_a_row >= self.settings.attempts:
                    self._failed_in_a_row = 0  # the next take tries afresh
                    raise PoolError(
                        f"no sandbox could start ({self.settings.attempts} tries): {self.failures[-1]}"
                    )
                if self._starting == 0:
                    self._fill_locked(at_least=1)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise PoolError(f"no sandbox was ready within {timeout_s:g} s")
                self._cond.wait(left)
            box = self._ready.popleft()
            self._in_use += 1
            self._fill_locked()
        return box, Taken(warm, time.perf_counter() - t0)

    def give_back(self, box: ServedSandbox) -> None:
        """Close a taken sandbox, in the background: the caller goes on at once."""
        with self._cond:
            self._in_use -= 1
            self._closing += 1
        threading.Thread(target=self._close_one, args=(box,), name="pool-close", daemon=True).start()

    def _close_one(self, box: ServedSandbox) -> None:
        try:
            box.close()
        finally:
            with self._cond:
                self._closing -= 1
                self._fill_locked()  # a place under max_alive may have opened
                self._cond.notify_all()

    def _alive(self) -> int:
        return len(self._ready) + self._starting + self._in_use + self._closing

    def _fill(self) -> None:
        with self._cond:
            self._fill_locked()

    def _fill_locked(self, at_least: int = 0) -> None:
        """Start what brings the ready and starting sandboxes up to ``size`` (or ``at_least``)."""
        if self._closed:
            return
        want = max(self.settings.size, at_least) - len(self._ready) - self._starting
        if self.settings.max_alive is not None:
            want = min(want, self.settings.max_alive - self._alive())
        if self.settings.max_starts is not None:
            want = min(want, self.settings.max_starts - self.stats.started - self._starting)
        if self._failed_in_a_row >= self.settings.attempts and at_least == 0:
            return  # a take asks again; starting forever in the background would only burn CPU
        for _ in range(max(0, want)):
            self._starting += 1
            _STARTERS.submit(self._start_one)

    def _start_one(self) -> None:
        try:
            box = self._start()
        except Exception as e:
            with self._cond:
                self._starting -= 1
                self._failed_in_a_row += 1
                self.stats.failed += 1
                self.failures.append(" ".join(f"{type(e).__name__}: {e}".split()))
                self._fill_locked()  # the retry
                self._cond.notify_all()
            return
        with self._cond:
            self._starting -= 1
            self._failed_in_a_row = 0
            self.stats.started += 1
            closed = self._closed
            if not closed:
                self._ready.append(box)
            self._cond.notify_all()
        if closed:
            box.close()

    @property
    def ready(self) -> int:
        with self._cond:
            return len(self._ready)

    def wait_ready(self, n: int | None = None, timeout_s: float = 60.0) -> None:
        """Block until ``n`` (default: size) sandboxes are ready; PoolError after ``timeout_s``."""
        want = self.settings.size if n is None else n
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self._ready) < want:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    why = f"; last failure: {self.failures[-1]}" if self.failures else ""
                    raise PoolError(
                        f"{len(self._ready)} of {want} sandboxes ready after {timeout_s:g} s{why}"
                    )
                self._cond.wait(left)

    def close(self) -> None:
        """Close the ready sandboxes and wait for those starting or closing (in use: the user's)."""
        with self._cond:
            self._closed = True
            ready, self._ready = list(self._ready), collections.deque()
            self._cond.notify_all()
        for box in ready:
            box.close()
        with self._cond:
            while self._starting or self._closing:
                self._cond.wait(1.0)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def warm_up(box: ServedSandbox) -> None:
    """Ask the server what a reset will ask, once: its first answers cost ~0.1 s more (imports, the
    screen grabber), which this moves off the critical path; a server that cannot answer fails the
    start instead of a reset."""
    with OSWorldClient(box.socket_url, token=box.token) as client:
        client.call("GET", "/kimi/info")
        client.screen_size()
        client.call("GET", "/kimi/frame?encoding=raw")
