"""`kimi-agent bench osworld fidelity`: an idle agent and FAIL played on real sandboxes through the
runner of `run`, scored by OSWorld's evaluators; a task whose setup failed ends as setup_failed
without being played, and is counted apart in the summary; run summaries say what their numbers are.

The end-to-end test plays two real OSWorld tasks (one feasible, one infeasible) and two task files
written here on the same pattern as tests/data/osworld_run: one whose setup already writes the answer
(an idle agent passes it: an unfaithful start state, made honestly), one whose setup launches a
program that does not exist.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_osworld_tasks import CORPUS  # the corpus every OSWorld test reads

from tasks.osworld import fidelity
from tasks.osworld.coverage import check_task
from tasks.osworld.report import SANDBOX_CAVEAT, summarize, write_html
from tasks.osworld.results import (
    Outcome,
    RunManifest,
    TaskRef,
    finish,
    model_dir,
    prepare,
    task_dir,
    write_manifest,
)
from tasks.osworld.task import load_task

REPO = Path(__file__).resolve().parent.parent
EVAL_VENV = REPO / ".cache" / "osworld-eval"
WRITE_TASK = (
    REPO / "tests" / "data" / "osworld_run" / "examples" / "os" / "a1b2c3d4-0000-4000-8000-000000000001.json"
)
FEASIBLE = "28cc3b7e-b194-4bc9-8353-d04c0f4d56d2"  # os: turn the volume up to the maximum
INFEASIBLE = "a462a795-fdc7-4b23-b689-e8b6df786b78"  # os: switch to a user that does not exist
SANDBOX_FLAGS = ["--desktop-env", "minimal"]


def run_cli(*args: str | Path, tmp: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(tmp / "cache"),
        "KIMI_OSWORLD_EVAL_VENV": str(EVAL_VENV),
        fidelity.LEDGER_VAR: str(tmp / "ledger.json"),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "tasks.cli", "bench", "osworld", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_task(tmp: Path, task_id: str, config: list[dict[str, object]]) -> Path:
    """The WRITE task of tests/data/osworld_run (write hello into ~/answer.txt) with its own setup."""
    data = json.loads(WRITE_TASK.read_text())
    data.update(id=task_id, config=config)
    path = tmp / "tasks" / "os" / f"{task_id}.json"  # a task file's domain is its directory's name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.slow
def test_fidelity_finds_an_idle_pass_and_a_setup_error_and_passes_faithful_tasks(tmp_path: Path) -> None:
    # The answer is already there: an idle agent passes. The setup exits 3, which OSWorld ignores
    # (it checks that the command ran, not its status): not a setup error.
    answered = write_task(
        tmp_path,
        "fidelity-answer-already-there",
        [{"type": "execute", "parameters": {"command": ["sh", "-c", "echo hello > /home/user/answer.txt; exit 3"]}}],
    )  # fmt: skip
    broken = write_task(
        tmp_path,
        "fidelity-launch-missing-program",
        [
            {"type": "launch", "parameters": {"command": ["./no-such-program", "--flag"]}},
            {"type": "execute", "parameters": {"command": ["rm", "-f", "/home/user/answer.txt"]}},
        ],
    )
    out = tmp_path / "fidelity"
    t0 = time.monotonic()
    r = run_cli("fidelity", FEASIBLE, INFEASIBLE, answered, broken, "--osworld-dir", CORPUS, "--out", out,
                "--workers", "2", *SANDBOX_FLAGS, tmp=tmp_path)  # fmt: skip
    print(f"4 tasks (8 plays) in {time.monotonic() - t0:.0f} s")
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads((out / fidelity.REPORT_FILE).read_text())
    assert report["counts"] == {
        "tasks": 4, "checked": 4, "infeasible": 1, "clean": 2, "idle_passes": 1, "fail_passes": 0,
        "fail_not_scored": 0, "setup_errors": 1, "incomplete": 0, "not_checked": 0, "findings": 2,
    }  # fmt: skip
    by_id = {t["task_id"]: t for t in report["tasks"]}
    assert by_id[FEASIBLE]["findings"] == [] and by_id[FEASIBLE]["idle"]["kind"] == "scored"
    assert (by_id[FEASIBLE]["fail"]["kind"], by_id[FEASIBLE]["fail"]["score"]) == ("scored", 0.0)
    assert (by_id[INFEASIBLE]["idle"]["score"], by_id[INFEASIBLE]["fail"]["score"]) == (0.0, 1.0)
    assert by_id[INFEASIBLE]["findings"] == []
    idle_pass = by_id["fidelity-answer-already-there"]
    assert idle_pass["findings"] == [{"kind": "idle_pass", "detail": "the idle agent scored 1"}]
    assert idle_pass["idle"]["setup"] == []  # exit status 3 is no setup error
    assert idle_pass["fail"]["score"] == 0.0  # the answer is there, but FAIL gave up: OSWorld scores 0
    [error] = by_id["fidelity-launch-missing-program"]["findings"]
    assert error["kind"] == "setup_error"
    assert error["detail"].startswith("step 1 launch: error") and "no-such-program" in error["detail"]
    assert "127.0.0.1" not in error["detail"]  # each play's sandbox has its port: one finding for both
    # The terminal: the findings table with the reasons, and the counts.
    flat = " ".join(r.stdout.split())
    assert "Fidelity findings: 2 of 4 tasks" in flat
    assert "scores without its answer (idle agent): the idle agent scored 1" in flat
    assert "a setup step failed: step 1 launch: error" in flat
    assert "4 of 4 tasks checked (1 infeasible)" in flat and "1 idle passes, 1 with setup errors" in flat

    # The task whose setup failed was not played, and its outcome says which step failed and why;
    # the steps after it still ran (as in OSWorld), so every failure is listed.
    idle_root = model_dir(out, "idle")
    task = task_dir(idle_root, "os", "fidelity-launch-missing-program")
    outcome = json.loads((task / "outcome.json").read_text())
    assert (outcome["kind"], outcome["score"], outcome["steps"]) == ("setup_failed", 0.0, 0)
    assert outcome["error"].startswith("step 1 launch: error") and "no-such-program" in outcome["error"]
    assert not (task / "steps.jsonl").exists()

    # The verdicts went to the machine's ledger; a run's summary reads it for its own tasks.
    ledger = json.loads((tmp_path / "ledger.json").read_text())
    assert set(ledger["tasks"]) == set(by_id)
    r = run_cli("report", idle_root, tmp=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    flat = " ".join(r.stdout.split())
    assert SANDBOX_CAVEAT in flat
    assert "4 of 4 tasks checked" in flat and "1 idle passes, 1 setup errors" in flat
    summary = json.loads((idle_root / "summary.json").read_text())
    assert summary["total"]["setup_failed"] == 1 and summary["target"] == "sandbox"
    assert summary["fidelity"]["idle_passes"] == ["fidelity-answer-already-there"]


def _ref(task_id: str, infeasible: bool = False) -> TaskRef:
    return TaskRef(domain="os", task_id=task_id, path=str(WRITE_TASK), infeasible=infeasible)


def test_setup_failures_are_counted_apart_and_never_as_successes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outcomes as the runner writes them: one scored 1, one whose setup failed (whatever its
    evaluator would have said, it scores 0), one not run; the ledger has checked two of them."""
    monkeypatch.setenv(fidelity.LEDGER_VAR, str(tmp_path / "ledger.json"))
    refs = [_ref("solved"), _ref("broken"), _ref("never")]
    root = tmp_path / "run"
    write_manifest(root, RunManifest(split="s", model="m", policy="p", max_steps=15, started_at=0.0, tasks=refs,
                                     target="sandbox"))  # fmt: skip
    setup = ["step 2 launch: error: POST /setup/launch answered 500: No such file or directory: 'socat'"]
    for ref, score, kind, details in (
        (refs[0], 1.0, "scored", {}),
        (refs[1], 0.0, "setup_failed", {"setup": setup}),
    ):
        d = task_dir(root, ref.domain, ref.task_id)
        prepare(d)
        finish(d, Outcome(task_id=ref.task_id, domain="os", score=score, kind=kind, error=(setup[0] if details else None),
                          details=details, worker="sandbox-1"))  # fmt: skip
    solved = fidelity.judge(
        "solved", "os", False, Outcome(task_id="solved", domain="os", score=0.0, kind="scored"), None
    )
    broken = fidelity.judge("broken", "os", False, Outcome(task_id="broken", domain="os", score=0.0,
                            kind="setup_failed", details={"setup": setup}), None)  # fmt: skip
    fidelity.record(
        fidelity.FidelityReport(split="s", created_at=0.0, desktop_env="xfce", tasks=[solved, broken])
    )

    s = summarize(root)
    assert (s.total.tasks, s.total.ran, s.total.setup_failed, s.total.score) == (3, 2, 1, 1.0)
    assert [(d.name, d.setup_failed) for d in s.domains] == [("os", 1)]
    data_path = write_html(s)
    data = json.loads((root / "summary.json").read_text())
    assert data["total"]["setup_failed"] == 1 and data["domains"]["os"]["setup_failed"] == 1
    assert [(t["id"], t["kind"], t["score"]) for t in data["tasks"]] == [
        ("solved", "scored", 1.0), ("broken", "setup_failed", 0.0), ("never", "not run", 0.0)
    ]  # fmt: skip
    assert data["caveats"][0] == SANDBOX_CAVEAT
    assert data["fidelity"]["checked"] == 2 and data["fidelity"]["setup_errors"] == ["broken"]
    assert data["fidelity"]["not_checked"] == 1
    assert (
        "2 of 3 tasks checked" in data["caveats"][1] and "0 idle passes, 1 setup errors" in data["caveats"][1]
    )
    page = data_path.read_text()
    assert "<th>setup failed</th>" in page and html.escape(SANDBOX_CAVEAT) in page
    assert "socat" in page  # the failed step's reason, in the task table

    # A run on VMs states nothing of the kind; with no ledger, a sandbox run says how to check.
    manifest = json.loads((root / "kimi_run.json").read_text())
    (root / "kimi_run.json").write_text(json.dumps({**manifest, "target": "vm"}))
    write_html(summarize(root))
    assert json.loads((root / "summary.json").read_text())["caveats"] == []
    (root / "kimi_run.json").write_text(json.dumps({**manifest, "target": None}))  # old run: its workers tell
    monkeypatch.setenv(fidelity.LEDGER_VAR, str(tmp_path / "none.json"))
    assert summarize(root).on_sandbox
    line = summarize(root).fidelity.line()
    assert "none of the 3 tasks has been checked" in line and "bench osworld fidelity SPLIT" in line


def test_a_verdict_names_each_finding_once_and_a_play_that_did_not_finish() -> None:
    def o(kind: str, score: float = 0.0, **kw: object) -> Outcome:
        return Outcome(task_id="t", domain="os", score=score, kind=kind, **kw)  # type: ignore[arg-type]

    setup = {"setup": ["step 1 launch: error: no such program"]}
    both = fidelity.judge("t", "os", True, o("setup_failed", details=setup), o("setup_failed", details=setup))
    assert [(f.kind, f.detail) for f in both.findings] == [
        ("setup_error", "step 1 launch: error: no such program")
    ]
    miss = fidelity.judge("t", "os", True, o("scored", 1.0), o("scored", 0.0))
    assert [f.kind for f in miss.findings] == ["idle_pass", "fail_not_scored"]
    lost = fidelity.judge("t", "os", True, o("crashed", error="boom"), None)
    assert [(f.kind, f.detail) for f in lost.findings] == [
        ("incomplete", "the idle play crashed: boom"),
        ("incomplete", "the FAIL play left no result"),
    ]
    assert fidelity.judge("t", "os", False, o("scored", 0.0), o("scored", 0.0)).clean
    given_up = fidelity.judge("t", "os", False, o("scored", 0.0), o("scored", 1.0))
    assert [(f.kind, f.detail) for f in given_up.findings] == [
        ("fail_pass", "FAIL scored 1 on a feasible task")
    ]


def test_a_task_marked_unfaithful_is_unsupported_on_sandboxes_only_with_the_reason() -> None:
    task = load_task(WRITE_TASK)
    assert check_task(task, "os").supported("sandbox")
    cov = check_task(task, "os", unfaithful={task.id: "the answer is there before the agent starts"})
    assert not cov.supported("sandbox") and cov.supported("vm")
    assert cov.reasons("sandbox") == [
        "not faithful on a sandbox: the answer is there before the agent starts"
    ]


@pytest.mark.slow
def test_test_all_offline_on_a_sandbox_has_no_idle_pass_and_no_setup_error(tmp_path: Path) -> None:
    """What CI checks: every task of test_all that a sandbox supports offline, played idle and FAIL."""
    out = tmp_path / "fidelity"
    t0 = time.monotonic()
    r = run_cli("fidelity", "test_all", "--osworld-dir", CORPUS, "--out", out, "--workers", "2", tmp=tmp_path,
                timeout=1800)  # fmt: skip
    print(r.stdout[-6000:])
    print(f"fidelity of test_all in {time.monotonic() - t0:.0f} s")
    report = json.loads((out / fidelity.REPORT_FILE).read_text())
    counts = report["counts"]
    assert counts["checked"] > 0
    found = {t["task_id"]: t["findings"] for t in report["tasks"] if t["findings"]}
    assert (counts["idle_passes"], counts["setup_errors"]) == (0, 0), found
    assert (counts["fail_passes"], counts["fail_not_scored"], counts["incomplete"]) == (0, 0, 0), found
    assert r.returncode == 0, r.stdout[-3000:]


def test_bad_usage_is_one_line(tmp_path: Path) -> None:
    for args, said in (
        (["fidelity"], "the following arguments are required: SPLIT|TASK_ID|TASK_FILE"),
        (["fidelity", str(WRITE_TASK), "--task-timeout", "0"], "--task-timeout must be above 0"),
        (["fidelity", str(WRITE_TASK), "--workers", "0"], "--workers must be at least 1"),
        (["fidelity", "no-such-task", "--osworld-dir", str(tmp_path)], "no-such-task: neither a split"),
    ):
        r = run_cli(*args, tmp=tmp_path, timeout=120)
        assert r.returncode == 2 and said in " ".join(r.stdout.split() + r.stderr.split()), (
            args,
            r.stdout,
            r.stderr,
        )
    assert not (tmp_path / "ledger.json").exists()


def test_a_setup_failure_names_its_first_step_and_counts_the_rest() -> None:
    from tasks.osworld.runner import setup_error
    from tasks.osworld.setup import Outcome as StepOutcome
    from tasks.osworld.setup import SetupReport

    launch = StepOutcome(0, "launch", "error", "no such program: socat")
    window = StepOutcome(2, "activate_window", "error", "no window whose title contains 'Google Chrome'")
    ok = StepOutcome(1, "execute", "ok", "exit status 1")  # a non-zero exit is no failure
    assert setup_error(SetupReport([launch, ok], 0)) == "step 1 launch: error: no such program: socat"
    assert setup_error(SetupReport([launch, ok, window], 0)) == (
        "step 1 launch: error: no such program: socat (1 more step failed)"
    )
    fetch = StepOutcome(0, "download", "error", "cannot download")
    assert setup_error(SetupReport([fetch], 3)) == "step 1 download: error: cannot download (3 not run)"
