"""The live view of an OSWorld run: one line per worker (its task, phase, step, elapsed time) under
the run's count, running score and ETA, redrawn in place on a terminal; elsewhere (CI logs) one line
per finished task, with the same count, score and ETA.

The ETA divides the time this process has run by the tasks it finished (resumed tasks excluded):
with N workers that rate already counts their parallelism.
"""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tasks.osworld.results import Outcome
from tasks.osworld.runner import WorkerState


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """``already``/``already_score``: the tasks a resumed run had finished, and their scores' sum.
    ``views``: print a worker's live-view URL (--view) each time it changes (with --monitor the
    worker's tile links to it instead)."""

    def __init__(
        self,
        console: Console,
        total: int,
        already: int = 0,
        already_score: float = 0.0,
        views: bool = False,
    ) -> None:
        self.console = console
        self.views = views
        self._said_views: dict[str, str] = {}
        self.total, self.done, self.score = total, already, already_score
        self.finished_here = 0
        self.started = time.time()
        self._live: Live | None = None
        self._workers: list[WorkerState] = []

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            self._live = Live(self._render(), console=self.console, refresh_per_second=2, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds until every task is done at this process's pace so far; None before a task ends."""
        if not self.finished_here:
            return None
        elapsed = (time.time() if now is None else now) - self.started
        return elapsed / self.finished_here * max(0, self.total - self.done)

    def standing(self, now: float | None = None) -> str:
        """``12/26 done, score 7 (mean 0.58), ETA 14 min``."""
        mean = f"{self.score / self.done:.2f}" if self.done else "-"
        eta = self.eta_s(now)
        return (
            f"{self.done}/{self.total} done, score {self.score:g} (mean {mean}), "
            f"ETA {'-' if eta is None else duration(eta)}"
        )

    @property
    def workers(self) -> list[WorkerState]:
        """The workers' states as the runner last handed them (the run monitor reads them too)."""
        return self._workers

    def watch(self, workers: list[WorkerState]) -> None:
        self._workers = workers
        if self.views:
            self._say_views(workers)
        if self._live is not None:
            self._live.update(self._render())

    def _say_views(self, workers: list[WorkerState]) -> None:
        for w in workers:
            url = w.view  # read once: the worker's thread writes it
            if url is not None and self._said_views.get(w.name) != url:
                self._said_views[w.name] = url
                self.console.print(Text(f"{w.name}: live view {url}"), soft_wrap=True, highlight=False)

    def finished(self, o: Outcome) -> None:
        self.done += 1
        self.finished_here += 1
        self.score += o.score
        why = f" ({o.kind}: {' '.join((o.error or '').split())[:160]})" if o.kind != "scored" else ""
        line = Text(f"[{self.done}/{self.total}] {o.domain}/{o.task_id}: {o.score:g}{why}")
        line.append(
            f"  {o.timings.total_s:.0f} s, {o.steps} step{'' if o.steps == 1 else 's'}; {self.standing()}",
            style="dim",
        )
        self.console.print(line, soft_wrap=True, highlight=False)
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Group:
        elapsed = duration(time.time() - self.started)
        head = Text(f"OSWorld run: {self.standing()}, {elapsed} so far", style="bold")
        t = Table()
        for col in ("worker", "task", "phase", "step", "elapsed"):
            t.add_column(col)
        now = time.time()
        for w in self._workers:
            busy = bool(w.task)
            t.add_row(
                w.name,
                f"{w.domain}/{w.task}" if busy else "",
                w.phase,
                f"{w.step}/{w.max_steps}" if busy and w.phase == "agent" else "",
                f"{now - w.started:.0f} s" if busy else "",
            )
        return Group(head, t)
