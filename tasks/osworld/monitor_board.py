"""The run monitor's board for `bench osworld run` and `kimi-agent rollout`: a consumer of the
run's terminal live view (Progress: counts, score, ETA, the workers' states) and of the outcomes the
runner hands it, read by tasks/monitor_server.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from env.desktop import Frame
from tasks.monitor_state import (
    ACTION_CHARS,
    THOUGHT_CHARS,
    DomainRow,
    Finished,
    Snapshot,
    Tile,
    clip,
    relative,
)
from tasks.osworld.progress import Progress
from tasks.osworld.report import SUMMARY_HTML
from tasks.osworld.results import RESULT_FILE, Outcome, TaskRef, read_outcome, ref_dir
from tasks.osworld.runner import WorkerState

REPORT_FILE = "report.html"  # agent/report.py's, in each task's directory


def tiles(workers: Sequence[WorkerState]) -> list[Tile]:
    out = []
    for w in workers:
        busy = bool(w.task)
        out.append(
            Tile(
                name=w.name,
                task=w.task,
                domain=w.domain,
                phase=w.phase,
                step=w.step,
                max_steps=w.max_steps,
                started=round(w.started, 1) if busy and w.started else None,
                thought=clip(w.thought, THOUGHT_CHARS) if busy else "",
                action=clip(w.action, ACTION_CHARS) if busy else "",
                shot=w.shot,
                view=w.view,
            )
        )
    return out


def same_run(stored: Outcome | None, o: Outcome) -> bool:
    """Whether ``stored`` (read back from a run's outcome.json) is ``o``: its timings tell one run
    of a task from another (the details may not survive JSON as they were, tuples as lists)."""
    return stored is not None and (stored.timings, stored.score, stored.kind) == (o.timings, o.score, o.kind)


class RunBoard:
    """``refs``: the run's tasks (a rollout's runs); the ones already finished (a resumed run)
    are read back once, here, for the per-domain table and their reports."""

    def __init__(self, title: str, progress: Progress, root: Path, refs: list[TaskRef]) -> None:
        self.title, self.progress, self.root = title, progress, root
        self._lock = threading.Lock()
        self._totals: dict[str, int] = {}
        for r in refs:
            self._totals[r.domain] = self._totals.get(r.domain, 0) + 1
        self._unlinked = list(refs)  # the refs whose outcome has not come yet
        self._finished: list[Finished] = []
        self.ended = False
        for r in refs:
            o = read_outcome(ref_dir(root, r))
            if o is not None and o.domain == r.domain and o.task_id == r.task_id:
                self.finished(o)

    def finished(self, o: Outcome) -> None:
        """Called with each outcome as the runner records it (after its result is written)."""
        with self._lock:
            # A rollout runs one task K times: its outcome is the one its run's outcome.json holds.
            runs = [r for r in self._unlinked if r.domain == o.domain and r.task_id == o.task_id]
            ref = next((r for r in runs if same_run(read_outcome(ref_dir(self.root, r)), o)), None)
            if ref is None:  # an outcome.json that would not read: the first of its runs with a result
                ref = next((r for r in runs if (ref_dir(self.root, r) / RESULT_FILE).is_file()), None)
            if ref is not None:
                self._unlinked.remove(ref)
            report = relative(self.root, ref_dir(self.root, ref) / REPORT_FILE) if ref else None
            self._finished.append(
                Finished(domain=o.domain, task_id=o.task_id, score=o.score, kind=o.kind, report=report)
            )

    def end(self) -> None:
        self.ended = True

    def snapshot(self) -> Snapshot:
        p = self.progress
        with self._lock:
            finished = list(self._finished)
        done: dict[str, int] = {}
        score: dict[str, float] = {}
        for f in finished:
            done[f.domain] = done.get(f.domain, 0) + 1
            score[f.domain] = score.get(f.domain, 0.0) + f.score
        now = time.time()
        eta = p.eta_s(now)
        return Snapshot(
            kind="osworld",
            title=self.title,
            total=p.total,
            done=p.done,
            score=p.score,
            mean=p.score / p.done if p.done else None,
            eta_s=None if eta is None else round(eta, 1),
            elapsed_s=round(now - p.started, 1),
            ended=self.ended,
            workers=tiles(p.workers),
            domains=[
                DomainRow(domain=d, tasks=n, done=done.get(d, 0), score=score.get(d, 0.0))
                for d, n in self._totals.items()
            ],
            finished=finished,
            summary=relative(self.root, self.root / SUMMARY_HTML) if self.ended else None,
        )

    def frame(self, worker: int) -> tuple[int, Frame] | None:
        workers = self.progress.workers
        if not 0 <= worker < len(workers):
            return None
        w = workers[worker]
        shot, frame = w.shot, w.frame  # read together enough: a newer frame under an older number is harmless
        return None if frame is None else (shot, frame)
