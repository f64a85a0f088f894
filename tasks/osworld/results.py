"""An OSWorld run on disk, in OSWorld's own results layout so its tools (show_result.py) read it:

    <out>/<action_space>/<observation>/<model>/<domain>/<task_id>/
        traj.jsonl          one line per executed action (OSWorld's lib_run_single fields)
        step_N_<ts>.png     the screen after step N's actions
        recording.mp4       the task's screen recording
        run.json, steps.jsonl, step_NNN.png, report.html   our own trajectory (agent/trajectory)
        outcome.json        how the task ended: score, kind, error, timings (ours)
        result.txt          the score; written atomically and LAST

A task directory with a readable result.txt is finished; any other is cleared and rerun on resume, so
a run killed at any moment (SIGKILL included) loses and duplicates nothing. ``run.json`` in the model
directory (``RUN_FILE``) lists the run's tasks, so the summary divides by the split's size and a report
can be rendered again from files alone.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

ACTION_SPACE = "pyautogui"
OBSERVATION = "screenshot"
RESULT_FILE = "result.txt"
OUTCOME_FILE = "outcome.json"
TRAJ_FILE = "traj.jsonl"
RECORDING_FILE = "recording.mp4"
RUN_FILE = "kimi_run.json"
LOCK_FILE = ".kimi_run.lock"

# scored: the evaluator gave the score; the others score 0.0 and say why in ``error``.
Kind = Literal["scored", "crashed", "timed_out", "unsupported", "setup_failed"]


class Timings(BaseModel):
    reset_s: float = 0.0
    setup_s: float = 0.0
    agent_s: float = 0.0
    evaluate_s: float = 0.0
    total_s: float = 0.0


class Outcome(BaseModel):
    task_id: str
    domain: str
    score: float
    kind: Kind
    error: str | None = None
    last_action: str | None = None  # DONE / FAIL / WAIT / pyautogui code: what infeasible scoring reads
    stop_reason: str | None = None
    steps: int = 0
    worker: str = ""
    timings: Timings = Field(default_factory=Timings)
    details: dict[str, Any] = Field(default_factory=dict)  # the evaluator's own report


class TaskRef(BaseModel):
    domain: str
    task_id: str
    path: str
    infeasible: bool = False  # func == "infeasible": what the always-FAIL baseline scores


class RunManifest(BaseModel):
    split: str
    model: str
    policy: str
    max_steps: int
    started_at: float
    tasks: list[TaskRef]


def model_slug(name: str) -> str:
    """A model name as one path component (a checkpoint path becomes its last part)."""
    base = name.rstrip("/").rsplit("/", 1)[-1] if os.sep in name or name.startswith((".", "~")) else name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "model"
    return slug[:120]


def model_dir(out: Path, model: str) -> Path:
    return Path(out) / ACTION_SPACE / OBSERVATION / model_slug(model)


def task_dir(root: Path, domain: str, task_id: str) -> Path:
    return root / domain / task_id


def write_atomic(path: Path, data: bytes | str) -> None:
    """Under its name only once complete and on disk: a kill leaves the old file or the new one."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_score(task: Path) -> float | None:
    """The score in ``task``/result.txt, or None when the task has not finished."""
    try:
        return float((task / RESULT_FILE).read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def read_outcome(task: Path) -> Outcome | None:
    try:
        return Outcome.model_validate_json((task / OUTCOME_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def finish(task: Path, outcome: Outcome) -> None:
    """outcome.json, then result.txt: the one file whose presence says the task is done."""
    write_atomic(task / OUTCOME_FILE, outcome.model_dump_json(indent=2))
    write_atomic(task / RESULT_FILE, f"{outcome.score}\n")


def prepare(task: Path) -> None:
    """An empty directory for a task that has not finished (what a killed attempt left is removed)."""
    if task.exists():
        shutil.rmtree(task)
    task.mkdir(parents=True)


def pending(root: Path, tasks: list[TaskRef]) -> list[TaskRef]:
    """The tasks without a finished result, in order."""
    return [t for t in tasks if read_score(task_dir(root, t.domain, t.task_id)) is None]


def write_manifest(root: Path, manifest: RunManifest) -> None:
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(root / RUN_FILE, manifest.model_dump_json(indent=2))


def read_manifest(root: Path) -> RunManifest:
    path = root / RUN_FILE
    try:
        return RunManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror or e} (not a kimi-agent OSWorld run?)") from None
    except ValueError as e:
        raise ValueError(f"{path}: not a run manifest: {str(e).splitlines()[0]}") from None


def find_runs(out: Path) -> list[Path]:
    """Model directories under ``out`` (or ``out`` itself) that hold a run manifest."""
    out = Path(out)
    if (out / RUN_FILE).is_file():
        return [out]
    return sorted(p.parent for p in out.glob(f"*/*/*/{RUN_FILE}"))


@contextmanager
def exclusive(root: Path) -> Iterator[None]:
    """One run process per results directory: a second would clear the first one's tasks."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{root} is in use by another `kimi-agent bench osworld run`") from None
        yield


class TrajLog:
    """traj.jsonl as OSWorld's lib_run_single writes it: per executed action, step_num, action_timestamp
    (``%Y%m%d@%H%M%S%f``), action, response, reward, done, info, screenshot_file."""

    def __init__(self, task: Path) -> None:
        self.path = task / TRAJ_FILE

    def append(self, lines: list[dict[str, Any]]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
