"""The live view of an OSWorld run: one line per worker (its task, phase, step, elapsed time) and the
run's count, redrawn in place on a terminal; elsewhere (CI logs) one line per finished task."""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tasks.osworld.results import Outcome
from tasks.osworld.runner import WorkerState


class Progress:
    def __init__(self, console: Console, total: int, already: int = 0) -> None:
        self.console = console
        self.total, self.done, self.score = total, already, 0.0
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

    def watch(self, workers: list[WorkerState]) -> None:
        self._workers = workers
        if self._live is not None:
            self._live.update(self._render())

    def finished(self, o: Outcome) -> None:
        self.done += 1
        self.score += o.score
        why = f" ({o.kind}: {' '.join((o.error or '').split())[:160]})" if o.kind != "scored" else ""
        line = Text(f"[{self.done}/{self.total}] {o.domain}/{o.task_id}: {o.score:g}{why}")
        line.append(f"  {o.timings.total_s:.0f} s, {o.steps} steps", style="dim")
        self.console.print(line, soft_wrap=True, highlight=False)

    def _render(self) -> Table:
        t = Table(title=f"OSWorld run: {self.done}/{self.total} tasks, {time.time() - self.started:.0f} s")
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
        return t
