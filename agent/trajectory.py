"""A run on disk: run.json, steps.jsonl (one line per step, flushed as it happens), step_NNN.png.

PNG encoding costs ~45 ms at 1080p, so screenshots are encoded on a background thread; the loop
only hands over the raw frame.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from agent.policy import Decision
from env.actions import Action, Point, action_from_dict
from env.desktop import ActionResult, Frame
from env.geometry import ScreenGeometry

StopReason = Literal["done", "max_steps", "interrupted", "loop_detected", "declined", "error"]


class ActionRecord(BaseModel):
    action: dict
    description: str
    # Where the model pointed, as fractions of the screenshot, and where the pointer went.
    model_points: list[tuple[float, float]] = Field(default_factory=list)
    screen_points: list[tuple[int, int]] = Field(default_factory=list)
    executed: bool = False
    ok: bool = True
    error: str | None = None
    execute_s: float = 0.0
    settle_s: float = 0.0
    settled: bool = True

    def to_action(self) -> Action:
        return action_from_dict(self.action)


class StepTiming(BaseModel):
    capture_s: float = 0.0
    model_s: float = 0.0
    execute_s: float = 0.0
    settle_s: float = 0.0
    record_s: float = 0.0


class StepRecord(BaseModel):
    step: int
    started_at: float
    finished_at: float = 0.0
    screenshot: str
    screenshot_size: tuple[int, int]
    thought: str = ""
    action_text: str = ""
    thinking: str | None = None
    raw: str = ""
    parse_error: str | None = None
    actions: list[ActionRecord] = Field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    timing: StepTiming = Field(default_factory=StepTiming)
    error: str | None = None

    @classmethod
    def start(cls, step: int, frame: Frame, started_at: float) -> StepRecord:
        return cls(
            step=step,
            started_at=started_at,
            screenshot=f"step_{step:03d}.png",
            screenshot_size=(frame.width, frame.height),
        )

    def take_decision(self, d: Decision) -> None:
        self.thought, self.action_text, self.thinking = d.thought, d.action_text, d.thinking
        self.raw, self.parse_error = d.raw, d.error
        self.tokens_in, self.tokens_out = d.tokens_in, d.tokens_out


def action_points(action: Action) -> list[Point]:
    if action.kind == "drag":
        return [action.start, action.end]
    point = getattr(action, "point", None)
    return [point] if point is not None else []


def action_record(action: Action, geometry: ScreenGeometry, result: ActionResult | None) -> ActionRecord:
    """Record an action; ``result=None`` means it was decided but not executed (dry run, declined)."""
    from env.actions import describe

    model_points = []
    for p in action_points(action):
        if p.space == "norm":
            model_points.append((p.x, p.y))
        else:
            model_points.append((p.x / geometry.shot_width, p.y / geometry.shot_height))
    rec = ActionRecord(action=action.model_dump(), description=describe(action), model_points=model_points)
    if result is not None:
        rec.executed = True
        rec.ok, rec.error = result.ok, result.error
        rec.screen_points = list(result.screen_points)
        rec.execute_s, rec.settle_s, rec.settled = result.execute_s, result.settle_s, result.settled
    return rec


class RunInfo(BaseModel):
    task: str
    started_at: float
    policy: str
    desktop: str
    screen: tuple[int, int]
    finished_at: float | None = None
    stop_reason: StopReason | None = None
    status: Literal["success", "failure"] | None = None
    answer: str | None = None
    steps: int = 0
    error: str | None = None


class TrajectoryWriter:
    """Appends steps to ``run_dir`` as they happen, so a crash or Ctrl-C loses nothing."""

    def __init__(self, run_dir: Path, info: RunInfo) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.info = info
        self._steps = (self.run_dir / "steps.jsonl").open("a", encoding="utf-8")
        self._png = ThreadPoolExecutor(max_workers=1, thread_name_prefix="png")
        self._pending: list[Future[None]] = []
        self._write_info()

    def _write_info(self) -> None:
        (self.run_dir / "run.json").write_text(self.info.model_dump_json(indent=2), encoding="utf-8")

    def screenshot(self, name: str, frame: Frame) -> None:
        """Queue ``frame`` to be saved as PNG off the hot path."""
        path = self.run_dir / name
        self._pending.append(self._png.submit(lambda: frame.to_image().save(path, compress_level=1)))

    def step(self, record: StepRecord) -> None:
        self._steps.write(record.model_dump_json() + "\n")
        self._steps.flush()

    def close(self, **final: object) -> RunInfo:
        for f in self._pending:
            f.result()
        self._png.shutdown(wait=True)
        self._steps.close()
        self.info = self.info.model_copy(update={"finished_at": time.time(), **final})
        self._write_info()
        from agent.report import write_report

        write_report(self.run_dir)
        return self.info


def read_steps(run_dir: Path) -> list[StepRecord]:
    """Steps of a recorded run; a torn last line (a killed run) is skipped, not fatal."""
    path = Path(run_dir) / "steps.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: it has no steps.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    steps: list[StepRecord] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            steps.append(StepRecord.model_validate(json.loads(line)))
        except ValueError as e:
            if n == len(lines):
                break  # the run was killed mid-write
            raise ValueError(f"{path}:{n}: not a step record: {e}") from e
    return steps


def read_info(run_dir: Path) -> RunInfo:
    return RunInfo.model_validate_json((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
