"""The task suite that runs here (tasks/osworld/suite): OSWorld-format tasks for Debian's apps, each
with a reference solution.

Fast checks: every task loads, is supported on a sandbox by the coverage check (apps, setup steps,
official evaluator), needs no internet, ships its input files and a solution that fits the default
step budget. End to end (slow): `kimi-agent bench osworld run` as users run it, on real sandboxes
with our server, the tasks' own setup steps and OSWorld's official evaluators: each reference
solution scores 1.0, and doing nothing (one WAIT) scores 0.0, infeasible tasks included.

The whole suite end to end takes ~5 minutes a pass with 1 worker and ~3 with 2 on 2 cores
(tests/bench/bench_osworld_run.py); it is marked slow, so CI runs it and a local fast run does not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.policy import ScriptedPolicy
from tasks.osworld import suite
from tasks.osworld.coverage import check_task
from tasks.osworld.results import RESULT_FILE, model_dir
from tasks.osworld.task import DownloadParams, Task, load_split

REPO = Path(__file__).resolve().parent.parent
EVAL_VENV = REPO / ".cache" / "osworld-eval"
DEFAULT_MAX_STEPS = 15  # the runner's default: a solution must finish within it
APPS = {
    "os",
    "mousepad",
    "libreoffice_calc",
    "libreoffice_writer",
    "libreoffice_impress",
    "chrome",
    "vlc",
    "gimp",
}


def suite_tasks() -> list[tuple[str, Task]]:
    split = load_split(suite.SPLIT)
    return [(e.domain, t) for e, t in zip(split.entries, split.load(), strict=True)]


def test_the_suite_loads_and_every_task_is_supported_on_a_sandbox_offline() -> None:
    tasks = suite_tasks()
    assert len(tasks) >= 25
    assert {d for d, _ in tasks} >= APPS
    assert any("infeasible" in t.evaluator.funcs for _, t in tasks)
    for domain, task in tasks:
        assert task.domain == domain
        coverage = check_task(task, domain)
        assert coverage.supported("sandbox"), (task.id, coverage.reasons("sandbox"))
        assert not coverage.network, f"{task.id} reaches the internet"


def test_the_split_lists_every_task_file_once() -> None:
    listed = sorted(f"{d}/{t.id}" for d, t in suite_tasks())
    on_disk = sorted(f"{p.parent.name}/{p.stem}" for p in suite.EXAMPLES.glob("*/*.json"))
    assert listed == on_disk
    assert len({t.id for _, t in suite_tasks()}) == len(listed)


def test_every_task_has_a_reference_solution_within_the_default_step_budget() -> None:
    ids = {t.id for _, t in suite_tasks()}
    assert {p.stem for p in suite.SOLUTIONS.glob("*.json")} == ids
    for task_id in ids:
        policy = ScriptedPolicy.from_file(suite.SOLUTIONS / f"{task_id}.json")
        assert 1 <= len(policy) <= DEFAULT_MAX_STEPS, task_id


def test_input_files_ship_with_the_suite_and_are_all_used() -> None:
    used: set[Path] = set()
    for _, task in suite_tasks():
        assert task.path is not None
        for step in task.steps():
            if isinstance(step.parameters, DownloadParams):
                for f in step.parameters.files:
                    assert "://" not in f.url, f"{task.id}: {f.url} is not a path beside the task"
                    local = (task.path.parent / f.url).resolve()
                    assert local.is_file(), f"{task.id}: {local}"
                    used.add(local)
    assert used == {p.resolve() for p in (suite.SUITE_DIR / "files").iterdir()}


needs_e2e = pytest.mark.skipif(
    shutil.which("Xvfb") is None or not (EVAL_VENV / "bin" / "python").exists(),
    reason="needs Xvfb and the evaluator venv .ci/setup builds",
)


def run_suite(tmp: Path, scripts: Path | str, task_ids: list[str], workers: int = 1) -> dict[str, float]:
    """`kimi-agent bench osworld run` on the suite's task files; the score of each task."""
    files = {t.id: t.path for _, t in suite_tasks()}
    out = tmp / "results"
    r = subprocess.run(
        [sys.executable, "-m", "tasks.cli", "bench", "osworld", "run", *(str(files[i]) for i in task_ids),
         "--script-dir", str(scripts), "--out", str(out), "--workers", str(workers)],
        cwd=REPO,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp / "cache"), "KIMI_OSWORLD_EVAL_VENV": str(EVAL_VENV)},
        capture_output=True,
        text=True,
        timeout=60 * len(task_ids) + 120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    name = "solutions" if scripts == "suite" else Path(scripts).name
    root = model_dir(out, f"script-{name}")
    return {p.parent.name: float(p.read_text()) for p in root.glob(f"*/*/{RESULT_FILE}")}


def why(tmp: Path, scores: dict[str, float], want: float) -> str:
    """What the run recorded of each task that did not score ``want``: a failure on CI says why."""
    lines = []
    for task_id, score in scores.items():
        if score != want:
            for outcome in tmp.glob(f"results/**/{task_id}/outcome.json"):
                d = json.loads(outcome.read_text())
                lines.append(f"{task_id}: {score} {d.get('error')} {json.dumps(d.get('details'))[:1500]}")
    return "\n".join(lines)


def nothing_scripts(tmp: Path, task_ids: list[str]) -> Path:
    """For each task a script that waits, then says it is done: the agent does nothing, and never
    says FAIL (running out of steps would: a step limit ends as FAIL)."""
    scripts = tmp / "nothing"
    scripts.mkdir()
    for task_id in task_ids:
        (scripts / f"{task_id}.json").write_text(
            json.dumps([{"kind": "wait", "seconds": 0.1}, {"kind": "done"}])
        )
    return scripts


def _check(tmp: Path, task_ids: list[str], workers: int) -> None:
    solved = run_suite(tmp / "solved", "suite", task_ids, workers)
    assert solved == dict.fromkeys(task_ids, 1.0), why(tmp / "solved", solved, 1.0)
    nothing = run_suite(tmp / "nothing", nothing_scripts(tmp, task_ids), task_ids, workers)
    assert nothing == dict.fromkeys(task_ids, 0.0), why(tmp / "nothing", nothing, 0.0)


@pytest.mark.slow
@needs_e2e
def test_reference_solutions_score_one_and_doing_nothing_scores_zero(tmp_path: Path) -> None:
    _check(tmp_path, [t.id for _, t in suite_tasks()], workers=2)
