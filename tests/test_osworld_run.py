"""`kimi-agent bench osworld run` / `report` as users run them: real subprocesses, real sandboxes with
our OSWorld-protocol server, real setup steps, the official evaluators, OSWorld's results layout.

The tasks (tests/data/osworld_run) are small OSWorld-format files scored by official metrics: a file
written in a terminal (check_include_exclude over vm_command_line), an infeasible task, and a task
with no reference script, whose play raises (it must score 0.0 with its error kept).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks.osworld import suite
from tasks.osworld.report import summarize
from tasks.osworld.results import RESULT_FILE, model_dir
from tasks.osworld.run_cli import resolve, select
from tasks.osworld.task import TaskError

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "osworld_run"
SPLIT = DATA / "split.json"
SCRIPTS = DATA / "scripts"
EVAL_VENV = REPO / ".cache" / "osworld-eval"
WRITE, INFEASIBLE, NO_SCRIPT = (f"a1b2c3d4-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))
TRAJ_FIELDS = {
    "step_num",
    "action_timestamp",
    "action",
    "response",
    "reward",
    "done",
    "info",
    "screenshot_file",
}
SANDBOX_FLAGS = ["--desktop-env", "minimal"]  # isolated sandboxes, as users get them


def cli(*args: str | Path, tmp: Path) -> list[str]:
    return [sys.executable, "-m", "tasks.cli", "bench", "osworld", *map(str, args)]


def env_for(tmp: Path) -> dict[str, str]:
    """The evaluator venv .ci/setup built; downloads cached per test."""
    return {
        **os.environ,
        "XDG_CACHE_HOME": str(tmp / "cache"),
        "KIMI_OSWORLD_EVAL_VENV": str(EVAL_VENV),
        "COLUMNS": "200",
    }


def run_cli(
    *args: str | Path, tmp: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli(*args, tmp=tmp),
        cwd=REPO,
        env={**env_for(tmp), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def scripted_root(out: Path) -> Path:
    return model_dir(out, f"script-{SCRIPTS.name}")


def results_like_show_result(root: Path) -> dict[str, dict[str, float]]:
    """What OSWorld's show_result.py reads: <root>/<domain>/<task_id>/result.txt."""
    found: dict[str, dict[str, float]] = {}
    for domain in sorted(p for p in root.iterdir() if p.is_dir()):
        for task in sorted(p for p in domain.iterdir() if p.is_dir()):
            if (task / RESULT_FILE).is_file():
                found.setdefault(domain.name, {})[task.name] = float((task / RESULT_FILE).read_text())
    return found


needs_x = pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed")


@pytest.mark.slow
@needs_x
def test_a_scripted_run_on_two_workers_scores_in_osworlds_layout(tmp_path: Path) -> None:
    out = tmp_path / "results"
    r = run_cli(
        "run", SPLIT, "--script-dir", SCRIPTS, "--out", out, "--workers", "2", *SANDBOX_FLAGS, tmp=tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    root = scripted_root(out)
    assert results_like_show_result(root) == {"os": {WRITE: 1.0, INFEASIBLE: 1.0, NO_SCRIPT: 0.0}}

    task = root / "os" / WRITE
    lines = [json.loads(x) for x in (task / "traj.jsonl").read_text().splitlines()]
    assert lines and all(set(line) == TRAJ_FIELDS for line in lines)
    assert [line["step_num"] for line in lines] == [1, 2, 2, 3, 4]
    assert lines[-1]["action"] == "DONE" and lines[-1]["done"] is True
    assert lines[1]["action"] == "pyautogui.write('echo hello > ~/answer.txt')"
    assert all((task / line["screenshot_file"]).stat().st_size > 0 for line in lines)
    assert (task / "recording.mp4").stat().st_size > 0
    for ours in ("run.json", "steps.jsonl", "report.html", "outcome.json"):
        assert (task / ours).is_file(), ours
    # Records: the version (and commit) that played, the score and reasons on the task's page.
    from agent.version import version_record

    assert json.loads((task / "run.json").read_text())["kimi_agent"] == version_record().model_dump()
    assert json.loads((root / "summary.json").read_text())["kimi_agent"] == version_record().model_dump()
    assert 'class="score">score 1</span>' in (task / "report.html").read_text()

    infeasible = [json.loads(x) for x in (root / "os" / INFEASIBLE / "traj.jsonl").read_text().splitlines()]
    assert [line["action"] for line in infeasible] == ["FAIL"]

    crashed = json.loads((root / "os" / NO_SCRIPT / "outcome.json").read_text())
    assert crashed["kind"] == "crashed" and "no script for this task" in crashed["error"]
    workers = {
        json.loads((root / "os" / t / "outcome.json").read_text())["worker"] for t in (WRITE, INFEASIBLE)
    }
    assert workers == {"sandbox-1", "sandbox-2"}

    s = summarize(root)
    assert (s.total.tasks, s.total.score) == (3, 2.0)
    assert round(s.total.baseline_rate, 2) == 33.33  # the always-FAIL baseline: 1 infeasible of 3
    assert "crashed" in r.stdout and "66.67" in r.stdout
    assert (root / "summary.html").read_text().count('/report.html"') == 2

    # Report re-renders from files; a second run skips every finished task.
    again = run_cli("report", out, tmp=tmp_path)
    assert again.returncode == 0 and "66.67" in again.stdout, again.stdout + again.stderr
    rerun = run_cli("run", SPLIT, "--script-dir", SCRIPTS, "--out", out, *SANDBOX_FLAGS, tmp=tmp_path)
    assert rerun.returncode == 0 and "3 already finished, 0 to run" in rerun.stdout


@pytest.mark.slow
@needs_x
def test_the_step_limit_ends_as_fail(tmp_path: Path) -> None:
    """Out of steps, a task ends as FAIL: the written file does not save the feasible task, and the
    infeasible one counts as recognised (what the always-FAIL baseline shows)."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    shutil.copy(SCRIPTS / f"{WRITE}.json", scripts)
    waits = [{"kind": "wait", "seconds": 0.1}] * 3
    (scripts / f"{INFEASIBLE}.json").write_text(json.dumps(waits))
    out = tmp_path / "results"
    tasks = [DATA / "examples" / "os" / f"{t}.json" for t in (WRITE, INFEASIBLE)]
    r = run_cli(
        "run", *tasks, "--script-dir", scripts, "--max-steps", "2", "--out", out, *SANDBOX_FLAGS, tmp=tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    root = model_dir(out, f"script-{scripts.name}")
    assert results_like_show_result(root) == {"os": {WRITE: 0.0, INFEASIBLE: 1.0}}
    for t in (WRITE, INFEASIBLE):
        outcome = json.loads((root / "os" / t / "outcome.json").read_text())
        assert (outcome["stop_reason"], outcome["last_action"], outcome["steps"]) == ("max_steps", "FAIL", 2)


def _newer(path: Path, t0: float) -> bool:
    try:
        return path.stat().st_mtime >= t0
    except FileNotFoundError:
        return False


def _kill_when(args: list[str], tmp: Path, ready: Callable[[float], bool], limit_s: float = 120.0) -> bool:
    """Start a run, SIGKILL it once ``ready(start time)`` holds; whether it was still running then."""
    t0 = time.time() - 0.01
    proc = subprocess.Popen(
        args, cwd=REPO, env=env_for(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + limit_s
    while not ready(t0) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return running


@pytest.mark.slow
@needs_x
def test_sigkill_at_any_moment_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "results"
    root = scripted_root(out)
    args = cli("run", SPLIT, "--script-dir", SCRIPTS, "--out", out, *SANDBOX_FLAGS, tmp=tmp_path)
    write = root / "os" / WRITE
    infeasible = root / "os" / INFEASIBLE
    moments: list[Callable[[float], bool]] = [
        lambda t0: _newer(write, t0),  # the task directory was just made: setup not even started
        lambda t0: _newer(write / "traj.jsonl", t0),  # mid-play
        lambda t0: _newer(write / RESULT_FILE, t0),  # one task finished, the next one starting
        lambda t0: _newer(infeasible / "run.json", t0),  # the second task mid-play
    ]
    for ready in moments:
        assert _kill_when(args, tmp_path, ready)
        for task in (root / "os").iterdir():  # result.txt comes last: its outcome is there before it
            assert not (task / RESULT_FILE).is_file() or (task / "outcome.json").is_file()
    assert (write / RESULT_FILE).is_file() and not (infeasible / RESULT_FILE).is_file()
    r = subprocess.run(args, cwd=REPO, env=env_for(tmp_path), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert results_like_show_result(root) == {"os": {WRITE: 1.0, INFEASIBLE: 1.0, NO_SCRIPT: 0.0}}
    steps = [json.loads(x)["step_num"] for x in (write / "traj.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 2, 3, 4]  # one play's lines, none left from a killed attempt
    assert summarize(root).total.tasks == 3


@pytest.mark.slow
@needs_x
def test_a_task_over_its_time_scores_zero_with_the_reason(tmp_path: Path) -> None:
    scripts = tmp_path / "slow"
    scripts.mkdir()
    (scripts / f"{WRITE}.json").write_text(json.dumps([{"kind": "wait", "seconds": 2}] * 10))
    out = tmp_path / "results"
    r = run_cli("run", WRITE, "--osworld-dir", DATA, "--script-dir", scripts, "--out", out, "--task-timeout", "3",
                *SANDBOX_FLAGS, tmp=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    outcome = json.loads((model_dir(out, "script-slow") / "os" / WRITE / "outcome.json").read_text())
    assert (outcome["kind"], outcome["score"]) == ("timed_out", 0.0)
    assert outcome["error"] == "timed out after 3 s" and outcome["steps"] < 10


@pytest.mark.slow
@needs_x
def test_a_vm_is_reset_by_the_users_hook_before_each_task(tmp_path: Path) -> None:
    from env.served_sandbox import ServedSandbox

    log = tmp_path / "reverts.log"
    out = tmp_path / "results"
    with ServedSandbox(1920, 1080, desktop="minimal") as vm:
        r = run_cli("run", WRITE, INFEASIBLE, "--osworld-dir", DATA, "--script-dir", SCRIPTS, "--out", out,
                    "--vm", vm.url, "--vm-token", vm.token, "--vm-revert", f'echo "$KIMI_VM_URL" >> {log}',
                    tmp=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert log.read_text().splitlines() == [vm.url, vm.url]
    assert results_like_show_result(scripted_root(out)) == {"os": {WRITE: 1.0, INFEASIBLE: 1.0}}
    assert "without --vm-revert" not in r.stdout


@pytest.mark.slow
@needs_x
def test_a_refused_token_is_one_line_at_once_and_a_shared_vm_is_warned_about(tmp_path: Path) -> None:
    """A wrong or missing token is said before anything runs (it used to be retried as 'not up yet'
    for 300 s in silence); several tasks on one VM without --vm-revert are warned about."""
    from env.served_sandbox import ServedSandbox

    base = ("run", WRITE, INFEASIBLE, "--osworld-dir", DATA, "--script-dir", SCRIPTS)
    with ServedSandbox(1920, 1080, desktop="minimal") as vm:
        for token, said in (
            (["--vm-token", "x" * 24], "the token given"),
            ([], "the request without a token"),
        ):
            t0 = time.monotonic()
            r = run_cli(*base, "--out", tmp_path / "refused", "--vm", vm.url, *token, tmp=tmp_path, timeout=120,
                        env={"KIMI_VM_TOKEN": ""})  # fmt: skip
            took = time.monotonic() - t0
            lines = [line for line in r.stdout.splitlines() if line.strip()]
            assert r.returncode == 2 and len(lines) == 1, r.stdout + r.stderr
            assert "answered 401" in lines[0] and said in lines[0] and "--vm-token" in lines[0], lines
            assert took < 60, took  # the run's first and only line, not a 300 s wait
        r = run_cli(*base, "--out", tmp_path / "shared", "--vm", vm.url, "--vm-token", vm.token, tmp=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    said = " ".join(r.stdout.split())
    assert (
        "warning: 2 tasks on 1 VM without --vm-revert: each task starts from the state the one before left"
        in said
    )


def test_only_a_vm_that_is_not_up_yet_is_waited_for_and_the_wait_is_counted_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Real HTTP on loopback: a server that answers 503 twice and then serves is waited for with a
    notice; one that refuses the token, or answers 500, is not; one that never comes up ends the wait."""
    import http.server
    import socket
    import threading

    from env.osworld_client import ServerError, Unauthorized, Unreachable
    from tasks.osworld import runner

    answers: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            code = answers.pop(0) if answers else 200
            body = b'{"width": 1920, "height": 1080}' if code == 200 else b"no"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(runner.time, "sleep", lambda s: None)
    try:
        said: list[str] = []
        answers[:] = [503, 503]
        runner.VMTarget(url, None, None, notice=said.append).reset().close()
        assert len(said) == 1 and said[0].startswith(f"{url} is not up yet") and "s left" in said[0]
        answers[:] = [401]
        with pytest.raises(runner.RunAborted) as refused:
            runner.VMTarget(url, "t" * 24, None, notice=said.append).reset()
        assert isinstance(refused.value.__cause__, Unauthorized) and "--vm-token" in str(refused.value)
        answers[:] = [403]
        with pytest.raises(Unauthorized):
            runner.VMTarget(url, "t" * 24, None).check_token()
        answers[:] = [500]
        with pytest.raises(ServerError):
            runner.VMTarget(url, None, None).reset()
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(runner, "VM_READY_S", 0.0)
    said = []
    with pytest.raises(Unreachable, match="was not up after 0 s"):
        runner.VMTarget(closed, None, None, notice=said.append).reset()
    runner.VMTarget(closed, None, None).check_token()  # not up: left to the reset, no error now


@pytest.mark.slow
@needs_x
def test_kimi_vl_through_the_tiny_random_model_completes_with_a_score(
    tmp_path: Path, tiny_kimi: Path
) -> None:
    """Two tasks of our suite (one infeasible), set up, played by the model and scored as any run."""
    out = tmp_path / "results"
    tasks = [("os", "os-hello-file"), ("os", "os-infeasible-bitlocker")]
    files = [suite.EXAMPLES / domain / f"{task}.json" for domain, task in tasks]
    r = run_cli("run", *files, "--out", out, "--backend", "transformers",
                "--model", tiny_kimi, "--offline", "--max-steps", "2", "--max-new-tokens", "32", "--in-token-limit", "256", *SANDBOX_FLAGS,
                tmp=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    root = model_dir(out, str(tiny_kimi))
    for domain, task in tasks:
        outcome = json.loads((root / domain / task / "outcome.json").read_text())
        assert outcome["kind"] == "scored", outcome
        assert 0.0 <= outcome["score"] <= 1.0
        assert 1 <= outcome["steps"] <= 2
    assert summarize(root).stats.tokens_in  # per-step tokens made it into the summary


def test_tasks_are_named_by_split_ids_or_files_and_bad_names_are_one_line() -> None:
    name, refs = resolve([str(SPLIT)], None)
    assert (name, [r.task_id for r in refs]) == ("split", [WRITE, INFEASIBLE, NO_SCRIPT])
    assert [r.infeasible for r in refs] == [False, True, False]
    _, by_id = resolve([INFEASIBLE, str(DATA / "examples" / "os" / f"{WRITE}.json")], DATA)
    assert [(r.domain, r.task_id) for r in by_id] == [("os", INFEASIBLE), ("os", WRITE)]
    with pytest.raises(TaskError, match="00000000-0000-4000-8000-000000000009: neither a split"):
        resolve(["00000000-0000-4000-8000-000000000009"], DATA)
    with pytest.raises(TaskError, match="no-such-task: no file"):
        resolve([WRITE, "no-such-task"], DATA)
    with pytest.raises(TaskError, match="named twice"):
        resolve([WRITE, WRITE], DATA)


def test_suite_tasks_are_named_by_id_and_chosen_by_domain_and_limit(tmp_path: Path) -> None:
    """`run os-hello-file calc-sum-formula --script-dir suite` failed: ids were only looked up in
    OSWorld's directory. Here that directory is empty, so both come from the packaged suite."""
    _, refs = resolve(["os-hello-file", "calc-sum-formula"], tmp_path)
    assert [(r.domain, r.task_id) for r in refs] == [
        ("os", "os-hello-file"),
        ("libreoffice_calc", "calc-sum-formula"),
    ]
    name, everything = resolve(["suite"], tmp_path)
    assert name == "suite" and len(everything) == 26
    chosen = select(everything, ["gimp", "os"], 3, name)
    assert [r.task_id for r in chosen] == ["os-count-errors", "os-hello-file", "os-infeasible-bitlocker"]
    assert [r.task_id for r in select(everything, ["gimp"], None, name)] == [
        "gimp-export-png",
        "gimp-flip-horizontal",
    ]
    with pytest.raises(TaskError, match=r"os-\*: neither a split"):
        resolve(["os-*"], tmp_path)  # a pattern is not an id: it must not pick some task


@pytest.mark.slow
@needs_x
def test_two_suite_tasks_by_id_run_with_the_suites_solutions(tmp_path: Path) -> None:
    out = tmp_path / "results"
    r = run_cli("run", "os-hello-file", "os-make-folders", "--script-dir", "suite", "--out", out, *SANDBOX_FLAGS,
                tmp=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tasks: 2 tasks, 0 already finished, 2 to run" in r.stdout
    root = model_dir(out, f"script-{suite.SOLUTIONS.name}")
    assert results_like_show_result(root) == {"os": {"os-hello-file": 1.0, "os-make-folders": 1.0}}


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    r = run_cli("run", SPLIT, "--script-dir", SCRIPTS, "--out", tmp_path, tmp=tmp_path,
                env={"KIMI_OSWORLD_EVAL_VENV": str(tmp_path / "no-venv")})  # fmt: skip
    assert r.returncode == 2 and r.stdout.count("\n") == 1, r.stdout
    assert f"environment {tmp_path / 'no-venv'} ($KIMI_OSWORLD_EVAL_VENV) is not built" in r.stdout
    assert (
        "run kimi-agent bench osworld setup, or set $KIMI_OSWORLD_EVAL_VENV to one that is built" in r.stdout
    )
    r = run_cli("run", "suite", "--domain", "excel", "--script-dir", "suite", tmp=tmp_path)
    assert (
        r.returncode == 2
        and "--domain excel: suite has no such domain; its domains: os, mousepad," in r.stdout
    )
    r = run_cli("run", "suite", "--limit", "0", "--script-dir", "suite", tmp=tmp_path)
    assert r.returncode == 2 and "--limit must be at least 1" in r.stdout
    r = run_cli("run", SPLIT, "--vm-revert", "true", "--script-dir", SCRIPTS, "--out", tmp_path, tmp=tmp_path)
    assert r.returncode == 2 and "--vm-revert resets VMs" in r.stdout
    r = run_cli(
        "run", SPLIT, "--vm", "http://127.0.0.1:9", "--workers", "2", "--script-dir", SCRIPTS, tmp=tmp_path
    )
    assert r.returncode == 2 and "one worker per VM" in r.stdout
    r = run_cli("report", tmp_path / "nothing", tmp=tmp_path)
    assert r.returncode == 2 and "no OSWorld run" in r.stdout


def test_the_summary_divides_by_the_split_and_lists_what_scored_nothing(tmp_path: Path) -> None:
    """Outcomes written as the runner writes them; one task never ran (killed before it started)."""
    from tasks.osworld.report import write_html
    from tasks.osworld.results import Outcome, RunManifest, finish, prepare, task_dir, write_manifest

    _, refs = resolve([str(SPLIT)], None)
    root = tmp_path / "run"
    write_manifest(root, RunManifest(split="split", model="Kimi-VL-A3B-Instruct", policy="p", max_steps=15,
                                     started_at=0.0, tasks=refs))  # fmt: skip
    for ref, score, kind, error in ((refs[0], 1.0, "scored", None), (refs[2], 0.0, "crashed", "boom")):
        d = task_dir(root, ref.domain, ref.task_id)
        prepare(d)
        finish(d, Outcome(task_id=ref.task_id, domain=ref.domain, score=score, kind=kind, error=error))
    s = summarize(root)
    assert (s.total.tasks, s.total.ran, s.total.score) == (3, 2, 1.0)
    assert [(c.name, c.tasks) for c in s.categories] == [("OS", 3)]
    assert [(r.task_id, r.status) for r in s.rows if r.status != "scored"] == [
        (INFEASIBLE, "not run"),
        (NO_SCRIPT, "crashed"),
    ]
    assert [v for _, v in s.references()] == [8.22, 9.7, 10.3]
    page = write_html(s).read_text()
    assert "boom" in page and "33.33" in page
    # The task table's text headers (domain, task) sit left like their cells, not right.
    assert "<table class=tasks><tr><th>domain</th><th>task</th>" in page
    assert ".tasks td:nth-child(-n+2),.tasks th:nth-child(-n+2)," in page


def _played(d: Path, seconds_per_step: list[float]) -> None:
    """A task directory as the agent leaves it: run.json, steps.jsonl, report.html."""
    from agent.trajectory import RunInfo, StepRecord, StepTiming, TrajectoryWriter

    w = TrajectoryWriter(d, RunInfo(task="t", started_at=100.0, policy="p", desktop="d", screen=(64, 48)))
    t = 100.0
    for n, s in enumerate(seconds_per_step, 1):
        w.step(StepRecord(step=n, started_at=t, finished_at=t + s, screenshot=f"step_{n:03d}.png",
                          screenshot_size=(64, 48), timing=StepTiming(model_s=s / 2)))  # fmt: skip
        t += s
    w.close(stop_reason="done", status="success")


def _scored_run(tmp_path: Path) -> Path:
    """The split's three tasks: one scored 1 by the evaluator after 3 steps, one scored 0 with the
    metric's reason after 1 step, one that crashed before playing."""
    from tasks.osworld.results import Outcome, RunManifest, Timings, finish, prepare, task_dir, write_manifest

    _, refs = resolve([str(SPLIT)], None)
    root = tmp_path / "run"
    write_manifest(root, RunManifest(split="split", model="m", policy="p", max_steps=15, started_at=0.0,
                                     tasks=refs))  # fmt: skip
    evaluation = {
        "score": 0.0,
        "reason": "answer.txt does not contain 'hello'",
        "metrics": [
            {"func": "check_include_exclude", "score": 0.0, "reason": "answer.txt does not contain 'hello'"}
        ],
        "postconfig": ["step 1 execute: ok", "step 2 sleep: failed: interrupted"],
    }
    for ref, score, steps, details, error in (
        (refs[0], 1.0, [2.0, 4.0, 6.0], {"evaluation": {"score": 1.0, "metrics": [{"func": "exact_match", "score": 1.0}]}}, None),
        (refs[1], 0.0, [1.0], {"evaluation": evaluation, "setup": ["step 1 launch: failed: no such program"]}, None),
        (refs[2], 0.0, None, {}, "no script for this task"),
    ):  # fmt: skip
        d = task_dir(root, ref.domain, ref.task_id)
        prepare(d)
        if steps is not None:
            _played(d, steps)
        kind = "scored" if error is None else "crashed"
        timings = Timings(total_s=10.0 * len(steps or [1]))
        outcome = Outcome(task_id=ref.task_id, domain=ref.domain, score=score, kind=kind, error=error,
                          steps=len(steps or []), details=details, timings=timings)  # fmt: skip
        finish(d, outcome)
    return root


def test_summary_json_has_a_task_table_step_statistics_and_the_version(tmp_path: Path) -> None:
    from agent.version import version_record
    from tasks.osworld.report import write_html

    root = _scored_run(tmp_path)
    write_html(summarize(root))
    data = json.loads((root / "summary.json").read_text())
    assert data["kimi_agent"] == version_record().model_dump()
    assert data["tasks"] == [
        {"id": WRITE, "domain": "os", "score": 1.0, "kind": "scored", "steps": 3, "seconds": 30.0,
         "error": None, "infeasible": False},
        {"id": INFEASIBLE, "domain": "os", "score": 0.0, "kind": "scored", "steps": 1, "seconds": 10.0,
         "error": None, "infeasible": True},
        {"id": NO_SCRIPT, "domain": "os", "score": 0.0, "kind": "crashed", "steps": 0, "seconds": 10.0,
         "error": "no script for this task", "infeasible": False},
    ]  # fmt: skip
    steps = data["steps"]
    assert steps["total"] == 4
    assert steps["per_task"] == {"n": 2, "mean": 2, "median": 2, "p90": 3, "max": 3}  # the played tasks
    assert steps["seconds_per_task"] == {"n": 3, "mean": 50 / 3, "median": 10.0, "p90": 30.0, "max": 30.0}
    assert steps["seconds_per_step"] == {"n": 4, "mean": 3.25, "median": 3.0, "p90": 6.0, "max": 6.0}
    assert steps["model_seconds_per_step"]["median"] == 1.5
    assert steps["reset_seconds_per_task"] is None  # no task recorded a reset time
    # Unchanged fields users read.
    assert data["total"]["tasks"] == 3 and data["total"]["score"] == 1.0
    assert [t["task_id"] for t in data["not_scored"]] == [NO_SCRIPT]


def test_a_tasks_report_shows_its_score_and_the_evaluators_reasons(tmp_path: Path) -> None:
    root = _scored_run(tmp_path)
    passed = (root / "os" / WRITE / "report.html").read_text()
    assert "score 1</span>" in passed and "metric exact_match: 1" in passed
    failed = (root / "os" / INFEASIBLE / "report.html").read_text()
    assert "score 0</span>" in failed
    for reason in (
        "metric check_include_exclude: 0: answer.txt does not contain &#x27;hello&#x27;",
        "postconfig step 2 sleep: failed: interrupted",
        "setup step 1 launch: failed: no such program",
    ):
        assert reason in failed, reason
    assert "postconfig step 1 execute: ok" not in failed
    outcome = json.loads((root / "os" / INFEASIBLE / "outcome.json").read_text())
    assert outcome["reasons"] == [
        "metric check_include_exclude: 0: answer.txt does not contain 'hello'",
        "postconfig step 2 sleep: failed: interrupted",
        "setup step 1 launch: failed: no such program",
    ]
    # The evaluator's own reason is shown when it is not a metric's (the postconfig failed, ...).
    from tasks.osworld.results import Outcome

    o = Outcome(task_id="t", domain="os", score=0.0, kind="scored",
                details={"evaluation": {"reason": "postconfig step 2 sleep: failed", "metrics": []}})  # fmt: skip
    assert o.reasons == ["evaluator: postconfig step 2 sleep: failed"]


DEEP = "[" * 100_000


def test_results_files_nested_too_deeply_are_one_line_naming_them(tmp_path: Path) -> None:
    root = _scored_run(tmp_path)
    # A deep outcome.json or steps.jsonl line costs that task its details, not the summary.
    (root / "os" / WRITE / "outcome.json").write_text(DEEP)
    with (root / "os" / INFEASIBLE / "steps.jsonl").open("a") as f:
        f.write(DEEP + "\n{}\n")
    s = summarize(root)
    assert [r.score for r in s.rows] == [1.0, 0.0, 0.0] and s.stats.steps == 3 + 1
    assert s.stats.task_steps == [1]  # the first task's outcome.json is lost, not the run
    (root / "kimi_run.json").write_text(DEEP)
    r = run_cli("report", root, tmp=tmp_path)
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stdout + r.stderr
    assert (
        lines[0]
        == f"kimi-agent: error: {root / 'kimi_run.json'} is not usable JSON: nested too deeply (arrays or objects)"
    )
    split = tmp_path / "deep_split.json"
    split.write_text('{"os": ' + DEEP)
    r = run_cli("run", split, "--script-dir", SCRIPTS, "--out", tmp_path / "out", tmp=tmp_path)
    assert (
        r.returncode == 2
        and r.stdout.strip()
        == f"kimi-agent: error: {split} is not usable JSON: nested too deeply (arrays or objects)"
    ), r.stdout + r.stderr


def test_the_live_view_shows_the_running_score_and_an_eta() -> None:
    import io

    from rich.console import Console

    from tasks.osworld.progress import Progress
    from tasks.osworld.results import Outcome, Timings

    def outcome(score: float, steps: int = 2) -> Outcome:
        return Outcome(
            task_id="t", domain="os", score=score, kind="scored", steps=steps, timings=Timings(total_s=5)
        )

    log = io.StringIO()
    with Progress(Console(file=log, width=200), total=4, already=1, already_score=1.0) as p:
        p.started -= 120  # as if the run began two minutes ago
        assert p.eta_s() is None and "2/4" not in p.standing()
        p.finished(outcome(0.0))
        assert p.eta_s() == pytest.approx(240, abs=5)  # 120 s for 1 task here, 2 left
        p.finished(outcome(1.0, steps=1))
    lines = log.getvalue().splitlines()
    assert lines[0].endswith("2/4 done, score 1 (mean 0.50), ETA 4 min"), lines
    assert " 5 s, 2 steps; " in lines[0] and " 5 s, 1 step; " in lines[1], lines
    assert lines[1].endswith("3/4 done, score 2 (mean 0.67), ETA 60 s"), lines

    screen = io.StringIO()  # a terminal: the table redrawn in place carries the same standing
    with Progress(Console(file=screen, width=200, force_terminal=True), total=2) as p:
        p.started -= 30
        p.finished(outcome(1.0))
        p.watch([])
    assert "OSWorld run: 1/2 done, score 1 (mean 1.00), ETA 30 s" in screen.getvalue()


@pytest.mark.slow
@needs_x
def test_unsupported_and_unready_tasks_score_zero_with_their_reasons(tmp_path: Path) -> None:
    base = json.loads((DATA / "examples" / "os" / f"{WRITE}.json").read_text())
    tasks = tmp_path / "examples" / "os"
    tasks.mkdir(parents=True)
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    unknown = {**base, "id": "unknown-metric", "evaluator": {**base["evaluator"], "func": "no_such_metric"}}
    unready = {
        **base,
        "id": "missing-file",
        "config": [{"type": "open", "parameters": {"path": "/home/user/gone.txt"}}],
    }
    for task in (unknown, unready):
        (tasks / f"{task['id']}.json").write_text(json.dumps(task))
        (scripts / f"{task['id']}.json").write_text(json.dumps([{"kind": "done"}]))
    out = tmp_path / "results"
    r = run_cli("run", "unknown-metric", "missing-file", "--osworld-dir", tmp_path, "--script-dir", scripts,
                "--out", out, *SANDBOX_FLAGS, tmp=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    root = model_dir(out, "script-scripts")
    first = json.loads((root / "os" / "unknown-metric" / "outcome.json").read_text())
    assert (first["kind"], first["score"]) == ("unsupported", 0.0) and "no_such_metric" in first["error"]
    second = json.loads((root / "os" / "missing-file" / "outcome.json").read_text())
    assert (second["kind"], second["score"]) == ("setup_failed", 0.0)
    assert second["error"].startswith("step 1 open: error") and "gone.txt" in second["error"]
    assert first["timings"]["reset_s"] == 0.0  # nothing was started for a task that cannot run here


GIVE_UP = "## Action:\ngive up\n## Code:\n```python\ncomputer.terminate(status='failure')\n```"


@pytest.mark.slow
@needs_x
def test_losing_the_model_stops_the_run_and_a_resume_finishes_it(tmp_path: Path) -> None:
    """A model server that fails is the user's to fix: the run stops (status 2) without scoring the
    task in flight as 0; the same command, once the server answers, scores both tasks."""
    from fake_openai_server import FakeOpenAI, Reply

    out = tmp_path / "results"
    server = FakeOpenAI(models=("kimi-vl",))
    try:
        args = ("run", WRITE, INFEASIBLE, "--osworld-dir", DATA, "--out", out, "--backend", "openai",
                "--model", "kimi-vl", "--base-url", server.url, "--retries", "0", *SANDBOX_FLAGS)  # fmt: skip
        server.default = Reply(status=500, body={"error": {"message": "the GPU fell off"}})
        r = run_cli(*args, tmp=tmp_path)
        assert r.returncode == 2, r.stdout + r.stderr
        root = model_dir(out, "kimi-vl")
        assert results_like_show_result(root) == {}
        assert summarize(root).rows[0].status == "not run"
        server.default = Reply(text=GIVE_UP)
        r = run_cli(*args, tmp=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        server.close()
    # FAIL is right on the infeasible task and scores 0 on the feasible one, as OSWorld scores it.
    assert results_like_show_result(root) == {"os": {WRITE: 0.0, INFEASIBLE: 1.0}}
    line = json.loads((root / "os" / INFEASIBLE / "traj.jsonl").read_text())
    assert (line["action"], line["response"]) == ("FAIL", GIVE_UP)
