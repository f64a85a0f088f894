"""An OSWorld run on disk, in OSWorld's own results layout so its tools (show_result.py) read it:

    <out>/<action_space>/<observation>/<model>/<domain>/<task_id>/
        traj.jsonl          one line per executed action (OSWorld's lib_run_single fields)
        step_N_<ts>.png     the screen after step N's actions
        recording.mp4       the task's screen recording
        run.json, steps.jsonl, step_NNN.png, report.html   our own trajectory (agent/trajectory)
        outcome.json        how the task ended: score, kind, error, the evaluator's reasons, timings (ours)
        result.txt          the score; written atomically and LAST

A task directory with a readable result.txt is finished; any other is cleared and rerun on resume, so
a run killed at any moment (SIGKILL included) loses and duplicates nothing. ``run.json`` in the model
directory (``RUN_FILE``) lists the run's tasks, so the summary divides by the split's size and a report
can be rendered again from files alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from agent.jsonfile import JSONFileError, read_model
from agent.trajectory import OUTCOME_FILE
from agent.version import VersionRecord, version_record

ACTION_SPACE = "pyautogui"
OBSERVATION = "screenshot"
RESULT_FILE = "result.txt"
TRAJ_FILE = "traj.jsonl"
RECORDING_FILE = "recording.mp4"
RUN_FILE = "kimi_run.json"
LOCK_FILE = ".kimi_run.lock"

_OK_STEP = re.compile(r"step \d+ \S+: ok(:|$)")  # a setup step's line (tasks/osworld/setup) that went well
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

    @computed_field  # type: ignore[prop-decorator]
    @property
    def reasons(self) -> list[str]:
        """Why the task scored what it did, one line each: the error that scored it 0, the
        evaluator's reason, each metric's score and reason, setup and postconfig steps that failed.
        Stored in outcome.json for report.html (recomputed, not read back)."""
        out = [self.error] if self.error else []
        ev = self.details.get("evaluation")
        if isinstance(ev, dict):
            metrics = [m for m in ev.get("metrics") or [] if isinstance(m, dict)]
            if ev.get("reason") and all(m.get("reason") != ev["reason"] for m in metrics):
                out.append(f"evaluator: {ev['reason']}")  # not one metric's own (a postconfig, ...)
            for m in metrics:
                value = m.get("score")
                shown = f"{value:g}" if isinstance(value, (int, float)) else str(value)
                out.append(
                    f"metric {m.get('func')}: {shown}" + (f": {m['reason']}" if m.get("reason") else "")
                )
            out += [f"postconfig {x}" for x in ev.get("postconfig") or [] if not _OK_STEP.match(str(x))]
        out += [f"setup {line}" for line in self.details.get("setup") or []]
        return [" ".join(str(r).split()) for r in out]


class TaskRef(BaseModel):
    domain: str
    task_id: str
    path: str
    infeasible: bool = False  # func == "infeasible": what the always-FAIL baseline scores
    # Its directory under the run's root when not <domain>/<task_id>: one rollout of a group
    # (`kimi-agent rollout`: <domain>/<task_id>/rollout-<k>), so one task can run K times.
    run_dir: str | None = None


class RunManifest(BaseModel):
    split: str
    model: str
    policy: str
    max_steps: int
    started_at: float
    tasks: list[TaskRef]
    # The kimi-agent that last started (or resumed) the run; None in runs from before it was kept.
    kimi_agent: VersionRecord | None = None
    # What the tasks ran on: sandboxes (scores approximate OSWorld's) or OSWorld VMs; None in runs
    # from before it was kept.
    target: Literal["sandbox", "vm"] | None = None


def model_slug(name: str) -> str:
    """A model name as one path component (a checkpoint path becomes its last part)."""
    base = name.rstrip("/").rsplit("/", 1)[-1] if os.sep in name or name.startswith((".", "~")) else name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "model"
    return slug[:120]


def model_dir(out: Path, model: str) -> Path:
    return Path(out) / ACTION_SPACE / OBSERVATION / model_slug(model)


def task_dir(root: Path, domain: str, task_id: str) -> Path:
    return root / domain / task_id


def ref_dir(root: Path, ref: TaskRef) -> Path:
    """Where ``ref`` runs: its own ``run_dir``, else its task's directory."""
    return root / ref.run_dir if ref.run_dir else task_dir(root, ref.domain, ref.task_id)


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
        return read_model(task / OUTCOME_FILE, Outcome, "a task outcome")
    except JSONFileError:
        return None


def finish(task: Path, outcome: Outcome) -> None:
    """outcome.json, report.html again with the score, then result.txt: the one file whose presence
    says the task is done."""
    write_atomic(task / OUTCOME_FILE, outcome.model_dump_json(indent=2))
    if (task / "run.json").is_file():  # the agent played: its report shows the score now
        from agent.report import write_report

        # A report that cannot be rendered stays as the run wrote it: the score must be recorded.
        with contextlib.suppress(OSError, ValueError):
            write_report(task)
    write_atomic(task / RESULT_FILE, f"{outcome.score}\n")


def prepare(task: Path) -> None:
    """An empty directory for a task that has not finished (what a killed attempt left is removed)."""
    if task.exists():
        shutil.rmtree(task)
    task.mkdir(parents=True)


def pending(root: Path, tasks: list[TaskRef]) -> list[TaskRef]:
    """The tasks without a finished result, in order."""
    return [t for t in tasks if read_score(ref_dir(root, t)) is None]


def finished_score(root: Path, tasks: list[TaskRef]) -> float:
    """The sum of the scores of the tasks that have finished (what a resumed run starts from)."""
    return sum(read_score(ref_dir(root, t)) or 0.0 for t in tasks)


def write_manifest(root: Path, manifest: RunManifest) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if manifest.kimi_agent is None:
        manifest = manifest.model_copy(update={"kimi_agent": version_record()})
    write_atomic(root / RUN_FILE, manifest.model_dump_json(indent=2))


def read_manifest(root: Path) -> RunManifest:
    path = root / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (not a kimi-agent OSWorld run?)")
    return read_model(path, RunManifest, "a kimi-agent OSWorld run manifest")


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
