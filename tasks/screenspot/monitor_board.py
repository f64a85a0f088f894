"""The run monitor's board for `bench screenspot run`: a consumer of the run's Tally (the counts
its progress line shows, its request slots, its groups), read by tasks/monitor_server.py. A slot's
tile shows the sample it asks about and the model's last answer; a ScreenSpot run records no screens,
so it has no image."""

from __future__ import annotations

import time
from pathlib import Path

from env.desktop import Frame
from tasks.monitor_state import ACTION_CHARS, THOUGHT_CHARS, DomainRow, Snapshot, Tile, clip, relative
from tasks.screenspot.runner import Tally


class GroundingBoard:
    """``report``: the run's report.html, linked once the run has written it (end())."""

    def __init__(self, title: str, tally: Tally, report: Path) -> None:
        self.title, self.tally, self.report = title, tally, report
        self.ended = False

    def end(self) -> None:
        self.ended = True

    def snapshot(self) -> Snapshot:
        t = self.tally
        elapsed = time.monotonic() - t.started
        scored = t.done - t.errors
        eta = elapsed / t.new * max(0, t.total - t.done) if t.new else None
        return Snapshot(
            kind="screenspot",
            title=self.title,
            total=t.total,
            done=t.done,
            score=float(t.correct),
            mean=t.correct / scored if scored else None,
            eta_s=None if eta is None else round(eta, 1),
            elapsed_s=round(elapsed, 1),
            ended=self.ended,
            workers=[
                Tile(
                    name=s.name,
                    task=s.sample,
                    phase="asking" if s.sample else "idle",
                    started=round(s.started, 1) if s.sample else None,
                    thought=clip(s.instruction, THOUGHT_CHARS),
                    action=clip(s.answer, ACTION_CHARS),
                )
                for s in list(t.slots)
            ],
            domains=[
                DomainRow(domain=name, tasks=g.samples, done=g.done, score=float(g.correct))
                for name, g in list(t.groups.items())
            ],
            summary=relative(self.report.parent, self.report) if self.ended else None,
        )

    def frame(self, worker: int) -> tuple[int, Frame] | None:
        return None
