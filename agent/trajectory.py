"""A run on disk: run.json, steps.jsonl (one line per step, flushed as it happens), step_NNN.png.

Everything is written so that a run killed at any moment (SIGKILL included) leaves a readable
record: run.json is replaced atomically after every step, PNGs appear under their name only once
complete, and a torn last line of steps.jsonl is skipped by the readers.

PNG encoding costs ~45 ms at 1080p, so screenshots are encoded on a background thread; the loop
only hands over the raw frame.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from agent.jsonfile import JSONFileError, loads_json, read_model
from agent.policy import Attempt, Decision, PromptState
from agent.prompt_record import PromptRecord
from agent.text import storable
from agent.version import VersionRecord, version_record
from env.actions import Action, Point, action_from_dict, describe
from env.desktop import ActionResult, Frame
from env.geometry import ScreenGeometry

StopReason = Literal["done", "max_steps", "interrupted", "loop_detected", "declined", "error"]
FINAL_SCREENSHOT = "final.png"
# How a benchmark scored the run, written beside run.json by the benchmark (bench osworld run).
OUTCOME_FILE = "outcome.json"


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
    settle_reason: str = ""  # settled, unchanged, timeout or fixed (env/settle.py)

    def to_action(self) -> Action:
        return action_from_dict(self.action)


class StepTiming(BaseModel):
    capture_s: float = 0.0
    model_s: float = 0.0
    execute_s: float = 0.0
    settle_s: float = 0.0
    # Handing the screenshot to the encoder and building the record (the final append excluded).
    record_s: float = 0.0


class Takeover(BaseModel):
    """The person watching the live view held the mouse and keyboard (--view-control), and the
    agent waited, from ``started_at`` to ``ended_at`` (time.time())."""

    started_at: float
    ended_at: float


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
    notes: list[str] = Field(default_factory=list)
    # Every model call of the step, the retried ones included (the last is the one taken).
    attempts: list[Attempt] = Field(default_factory=list)
    actions: list[ActionRecord] = Field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    prompt: PromptState | None = None  # how the prompt was cut (None: no model prompt, e.g. a script)
    timing: StepTiming = Field(default_factory=StepTiming)
    error: str | None = None
    # The agent waited before this step while a person held the desktop: this step's screenshot
    # shows what they did.
    takeover: Takeover | None = None

    @classmethod
    def start(cls, step: int, frame: Frame, started_at: float) -> StepRecord:
        return cls(
            step=step,
            started_at=started_at,
            screenshot=f"step_{step:03d}.png",
            screenshot_size=(frame.width, frame.height),
        )

    @property
    def decided(self) -> bool:
        return bool(self.attempts or self.raw or self.actions or self.parse_error)

    def take_decision(self, d: Decision) -> None:
        self.thought, self.action_text, self.thinking = d.thought, d.action_text, d.thinking
        self.raw, self.parse_error, self.notes = d.raw, d.error, list(d.notes)
        self.attempts = list(d.attempts)
        self.tokens_in, self.tokens_out = d.tokens_in, d.tokens_out
        self.prompt = d.prompt

    @property
    def retries(self) -> int:
        return max(0, len(self.attempts) - 1)


def action_points(action: Action) -> list[Point]:
    if action.kind == "drag":
        return [action.start, action.end]
    point = getattr(action, "point", None)
    return [point] if point is not None else []


def action_record(action: Action, geometry: ScreenGeometry, result: ActionResult | None) -> ActionRecord:
    """Record an action; ``result=None`` means it was decided but not executed (dry run, declined,
    interrupted)."""
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
        rec.settle_reason = result.settle_reason
    return rec


def not_executed(action: Action, geometry: ScreenGeometry, why: str) -> ActionRecord:
    rec = action_record(action, geometry, None)
    rec.ok, rec.error = False, f"not executed: {why}"
    return rec


class RunInfo(BaseModel):
    task: str
    started_at: float
    policy: str
    desktop: str
    screen: tuple[int, int]
    dry_run: bool = False
    # What the model ran with (backend, model, variant, in_token_limit, temperature, ...).
    model: dict[str, Any] = Field(default_factory=dict)
    finished_at: float | None = None
    stop_reason: StopReason | None = None  # None while running (or if the process was killed)
    status: Literal["success", "failure"] | None = None
    answer: str | None = None
    error: str | None = None
    steps: int = 0  # step records in steps.jsonl
    tokens_in: int = 0
    tokens_out: int = 0
    parse_retries: int = 0  # model calls repeated because a reply did not parse
    final_screenshot: str | None = None  # the screen after the last action
    # How the prompts were built (templates, layout, budget), so `kimi-agent export` can rebuild
    # each step's prompt exactly; None for runs without a model prompt and runs before it existed.
    prompt: PromptRecord | None = None
    # The kimi-agent that recorded the run (and its git commit from a checkout); None in runs
    # recorded before this field existed.
    kimi_agent: VersionRecord | None = None

    @property
    def duration_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at


class Verdict(BaseModel):
    """What report.html shows of OUTCOME_FILE: the score and why. The benchmark's own record has
    more (timings, the evaluator's details); those keys are ignored here."""

    score: float
    kind: str = "scored"  # scored, or why there is no real score (crashed, timed_out, ...)
    error: str | None = None
    reasons: list[str] = Field(default_factory=list)  # the evaluator's, one line each


def read_verdict(run_dir: Path) -> Verdict | None:
    """The run's OUTCOME_FILE, or None when no benchmark scored it (a JSONFileError when broken)."""
    path = Path(run_dir) / OUTCOME_FILE
    return read_model(path, Verdict, "a score record") if path.is_file() else None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class TrajectoryWriter:
    """Appends steps to ``run_dir`` as they happen, so a crash or Ctrl-C loses nothing."""

    def __init__(self, run_dir: Path, info: RunInfo) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.info = info if info.kimi_agent else info.model_copy(update={"kimi_agent": version_record()})
        self._steps = (self.run_dir / "steps.jsonl").open("a", encoding="utf-8")
        self._png = ThreadPoolExecutor(max_workers=1, thread_name_prefix="png")
        self._pending: list[Future[None]] = []
        self._write_info()

    def _write_info(self) -> None:
        _write_atomic(self.run_dir / "run.json", _dump(self.info, indent=2).encode("utf-8"))

    def update(self, **fields: Any) -> None:
        """Set run.json fields now (atomically, like every write of it)."""
        self.info = self.info.model_copy(update=fields)
        self._write_info()

    def screenshot(self, name: str, frame: Frame) -> None:
        """Queue ``frame`` to be saved as PNG off the hot path (under its name only when complete)."""
        path = self.run_dir / name

        def save() -> None:
            tmp = path.with_name(f".{name}.tmp")
            frame.to_image().save(tmp, format="PNG", compress_level=1)
            os.replace(tmp, path)

        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._png.submit(save))

    def step(self, record: StepRecord) -> None:
        t0 = time.perf_counter()
        data = record.model_dump(mode="json")
        record.timing.record_s += time.perf_counter() - t0
        data["timing"]["record_s"] = record.timing.record_s
        self._steps.write(json.dumps(storable(data), ensure_ascii=False) + "\n")
        self._steps.flush()
        i = self.info
        self.info = i.model_copy(
            update={
                "steps": i.steps + 1,
                "tokens_in": i.tokens_in + record.tokens_in,
                "tokens_out": i.tokens_out + record.tokens_out,
                "parse_retries": i.parse_retries + record.retries,
            }
        )
        self._write_info()

    def close(self, **final: object) -> RunInfo:
        for f in self._pending:
            f.result()
        self._png.shutdown(wait=True)
        self._steps.close()
        self.info = self.info.model_copy(update={"finished_at": time.time(), **storable(final)})
        self._write_info()
        from agent.report import write_report

        write_report(self.run_dir)
        return self.info


def _dump(model: BaseModel, indent: int | None = None) -> str:
    return json.dumps(storable(model.model_dump(mode="json")), ensure_ascii=False, indent=indent)


def _complete_lines(path: Path) -> list[tuple[int, str]]:
    """The complete lines of a file that may have been cut mid-line or mid-character by a kill.
    A last line without its newline is kept only if it reads as a whole."""
    data = path.read_bytes()
    out: list[tuple[int, str]] = []
    pieces = data.split(b"\n")
    for n, raw in enumerate(pieces, 1):
        if not raw.strip():
            continue
        last = n == len(pieces)  # no newline after it: possibly torn
        try:
            out.append((n, raw.decode("utf-8")))
        except UnicodeDecodeError:
            if last:
                break
            raise ValueError(f"{path}:{n}: not UTF-8 text") from None
    return out


def read_steps(run_dir: Path) -> list[StepRecord]:
    """Steps of a recorded run, up to the last complete record (a killed run may have torn the
    last line, even mid-character)."""
    steps, problem = read_steps_lenient(run_dir)
    if problem is not None and not problem.endswith(TORN):
        raise ValueError(problem)
    return steps


TORN = "torn by a kill mid-write"


def read_steps_lenient(run_dir: Path) -> tuple[list[StepRecord], str | None]:
    """The steps up to the first record that cannot be read, and what was wrong there (None when
    every line read; a torn last line is reported too, ending with ``TORN``)."""
    path = Path(run_dir) / "steps.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: it has no steps.jsonl")
    try:
        lines = _complete_lines(path)
    except ValueError as e:
        return [], str(e)
    data = path.read_bytes()
    torn = len(data.split(b"\n")) if data.strip() and not data.endswith(b"\n") else None
    steps: list[StepRecord] = []
    for i, (n, line) in enumerate(lines):
        try:
            steps.append(StepRecord.model_validate(loads_json(line, f"{path}:{n}")))
            continue
        except JSONFileError as e:  # not JSON, or nested too deeply for Python's parser
            problem = str(e)
        except ValueError as e:
            problem = f"{path}:{n}: not a step record: {str(e).splitlines()[0]}"
        if i == len(lines) - 1:  # the run was killed mid-write
            return steps, f"{path}:{n}: the last record is {TORN}"
        return steps, problem
    if torn is not None and (not lines or lines[-1][0] != torn):
        return steps, f"{path}:{torn}: the last record is {TORN}"
    return steps, None


def read_info(run_dir: Path) -> RunInfo:
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: it has no run.json")
    return read_model(path, RunInfo, "a run record")
