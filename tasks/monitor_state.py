"""What the run monitor's page shows, as one typed snapshot (``GET /TOKEN/state.json``).

The snapshot is read from the run's own bookkeeping, never kept twice: an OSWorld run's counts,
score and ETA from its terminal live view (tasks/osworld/progress.Progress), its workers from the
WorkerStates the runner (or the Ray driver) writes, its finished tasks from the outcomes the runner
hands to that view; a ScreenSpot run's from its Tally. A board is what the monitor's server asks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel

from env.desktop import Frame

THOUGHT_CHARS = 600  # the state stays small: a tile shows the start of a long thought
ACTION_CHARS = 300


class Tile(BaseModel):
    """One worker."""

    name: str
    task: str = ""
    domain: str = ""
    phase: str = "idle"
    step: int = 0
    max_steps: int = 0
    started: float | None = (
        None  # when it began its current task (Unix time): the state stays the same between steps
    )
    thought: str = ""
    action: str = ""
    shot: int = 0  # how many screens it has recorded: the page fetches the image when this changes
    view: str | None = None  # its live view's URL, when the run has one


class DomainRow(BaseModel):
    domain: str
    tasks: int
    done: int
    score: float


class Finished(BaseModel):
    domain: str
    task_id: str
    score: float
    kind: str
    report: str | None = None  # the task's report, relative to the page


class Snapshot(BaseModel):
    kind: Literal["osworld", "screenspot"]
    title: str
    total: int
    done: int
    score: float  # OSWorld: the scores' sum; ScreenSpot: the hits
    mean: float | None  # score / done
    eta_s: float | None
    elapsed_s: float
    ended: bool = False
    workers: list[Tile] = []
    domains: list[DomainRow] = []
    finished: list[Finished] = []
    summary: str | None = None  # the run's summary page, once written


class Board(Protocol):
    def snapshot(self) -> Snapshot: ...

    def frame(self, worker: int) -> tuple[int, Frame] | None:
        """Worker ``worker``'s latest recorded screen and its number, or None."""
        ...


def clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def relative(root: Path, path: Path) -> str | None:
    """``path`` as the monitor's ``results/`` URL, when it is an existing file under ``root``."""
    if not path.is_file():
        return None
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    return "results/" + "/".join(rel.parts)
