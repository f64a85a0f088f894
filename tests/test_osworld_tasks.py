"""OSWorld task files: typed loading of the real corpus and its splits, one-line errors for malformed
files, and the coverage check (`kimi-agent bench osworld check`) against the setup registry."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.osworld import official
from tasks.osworld.coverage import (
    APP_PROGRAMS,
    TARGETS,
    UNFAITHFUL_ON_SANDBOX,
    app_key,
    check_split,
    check_task,
    per_domain,
)
from tasks.osworld.setup import REGISTRY, is_supported
from tasks.osworld.task import (
    CommandParams,
    DownloadParams,
    TaskError,
    load_split,
    load_task,
    parse_task,
)

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
# The corpus beside the checkout (../shared/osworld), or OSWorld's evaluation_examples named by the variable.
CORPUS = Path(os.environ.get("KIMI_OSWORLD_DIR") or REPO.parent / "shared" / "osworld")
needs_corpus = pytest.mark.skipif(
    not (CORPUS / "examples").is_dir(), reason="the OSWorld task corpus is not here"
)
SPLITS = {"test_all": 369, "test_small": 39, "test_nogdrive": 361, "test_infeasible": 28}


@pytest.fixture(scope="module")
def corpus() -> list:
    if not (CORPUS / "examples").is_dir():
        pytest.skip("the OSWorld task corpus is not here")
    return [load_task(p) for p in sorted((CORPUS / "examples").glob("*/*.json"))]


def test_all_369_task_files_load_with_every_step_typed(corpus: list) -> None:
    assert len(corpus) == 369
    assert len({t.id for t in corpus}) == 369
    steps = [s for t in corpus for s in t.steps()]
    # Every setup type of the corpus has a registry entry, and its parameters a model of their own.
    assert {s.type for s in steps} <= set(REGISTRY)
    assert all(not isinstance(s.parameters, dict) for s in steps)
    assert sum(len(t.config) for t in corpus) == 1041  # as counted in docs/osworld.md's table
    # List forms: command as list or string; func with aligned lists in 51 tasks.
    commands = [s.parameters.command for s in steps if isinstance(s.parameters, CommandParams)]
    assert any(isinstance(c, str) for c in commands) and any(isinstance(c, list) for c in commands)
    multi = [t for t in corpus if isinstance(t.evaluator.func, list)]
    assert len(multi) == 51
    for t in multi:
        metrics = t.evaluator.metrics()
        assert [m.func for m in metrics] == t.evaluator.func
        if isinstance(t.evaluator.result, list):
            assert [m.result for m in metrics] == t.evaluator.result
    assert {t.evaluator.conj for t in corpus} == {"and", "or"}
    assert len({f for t in corpus for f in t.evaluator.funcs}) == 111
    assert len({g for t in corpus for g in t.evaluator.getter_types()}) == 47
    # Keys we do not model are kept, not dropped.
    noted = [t for t in corpus if "_config_note" in (t.evaluator.model_extra or {})]
    assert len(noted) == 1 and sum(t.hint is not None for t in corpus) == 4
    downloads = [f for s in steps if isinstance(s.parameters, DownloadParams) for f in s.parameters.files]
    assert len(downloads) == 475 and all(f.url.startswith("https://") for f in downloads)


@needs_corpus
@pytest.mark.parametrize(("name", "size"), SPLITS.items())
def test_splits_resolve_by_path_and_by_name(name: str, size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    by_path = load_split(CORPUS / f"{name}.json")
    assert by_path.name == name and len(by_path.entries) == size
    assert all(e.path == CORPUS / "examples" / e.domain / f"{e.task_id}.json" for e in by_path.entries)
    monkeypatch.setenv("KIMI_OSWORLD_DIR", str(CORPUS))
    assert load_split(name).entries == by_path.entries
    tasks = by_path.load()
    assert [t.id for t in tasks] == [e.task_id for e in by_path.entries]


def _task(**changes: object) -> dict[str, object]:
    data = json.loads((DATA / "osworld_task_5c1075ca.json").read_text())
    data.update(changes)
    return data


MALFORMED = [
    ("not json", b'{"id": ', "is not JSON: Expecting value at line 1 column 8"),
    ("not utf-8", b'{"id": "\xff"}', "not UTF-8 text"),
    ("a list", b"[1, 2]", "a task file must hold a JSON object, not list"),
    ("no id", _task(id=None), "id: Input should be a valid string"),
    (
        "command of the wrong type",
        _task(config=[{"type": "launch", "parameters": {"command": 5}}]),
        "config[0].parameters.command: Input should be a valid string",
    ),
    (
        "a misspelt parameter",
        _task(config=[{"type": "execute", "parameters": {"comand": ["ls"]}}]),
        "config[0].parameters.command: Field required",
    ),
    (
        "an empty command",
        _task(config=[{"type": "execute", "parameters": {"command": " "}}]),
        "config[0].parameters: command is empty",
    ),
    (
        "a download without path",
        _task(config=[{"type": "download", "parameters": {"files": [{"url": "https://x"}]}}]),
        "config[0].parameters.files[0].path: Field required",
    ),
    (
        "lists not aligned with func",
        _task(evaluator={"func": ["a", "b"], "result": [{"type": "vm_file"}]}),
        "evaluator: result must be a list of 2 entries, one per metric in func",
    ),
    (
        "a list for a single metric",
        _task(evaluator={"func": "a", "expected": [{"type": "rule"}]}),
        "evaluator: expected is a list but func is a single metric",
    ),
    (
        "a bad conj",
        _task(evaluator={"func": ["a"], "conj": "xor"}),
        "evaluator.conj: Input should be 'and' or 'or'",
    ),
    (
        "a postconfig sleep below zero",
        _task(evaluator={"func": "a", "postconfig": [{"type": "sleep", "parameters": {"seconds": -1}}]}),
        "evaluator.postconfig[0].parameters.seconds: Input should be greater than or equal to 0",
    ),
    (
        "an id not matching the file",
        _task(id="5c1075ca-bb34-46a3-a7a0-000000000000"),
        "does not match the file name",
    ),
]


@pytest.mark.parametrize(("what", "content", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_task_files_give_one_line_naming_file_and_field(
    tmp_path: Path, what: str, content: object, message: str
) -> None:
    path = tmp_path / "5c1075ca-bb34-46a3-a7a0-029bd7463e79.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    with pytest.raises(TaskError) as e:
        load_task(path)
    line = str(e.value)
    assert "\n" not in line and line.startswith(str(path)) and message in line, line


DEEP = "[" * 100_000  # Python's json parser recurses once per level


def test_absurdly_nested_task_and_split_files_are_one_line_naming_them(tmp_path: Path) -> None:
    task, split = tmp_path / "task.json", tmp_path / "split.json"
    task.write_text(DEEP)
    split.write_text('{"os": ' + DEEP)
    for path, load in ((task, load_task), (split, load_split)):
        with pytest.raises(TaskError) as e:
            load(path)
        line = str(e.value)
        assert line == f"{path} is not usable JSON: nested too deeply (arrays or objects)", line


def test_unknown_step_types_load_and_are_not_supported() -> None:
    task = parse_task(_task(config=[{"type": "tidy_desktop", "parameters": {"x": 1}}]))
    assert task.config[0].parameters == {"x": 1} and not is_supported("tidy_desktop")
    assert check_task(task, which=lambda p: "/bin/" + p).reasons("vm") == [
        "setup tidy_desktop: setup step type 'tidy_desktop' is not known to kimi-agent"
    ]


def test_bad_split_files(tmp_path: Path) -> None:
    (tmp_path / "examples" / "os").mkdir(parents=True)
    shutil.copy(DATA / "osworld_task_5c1075ca.json", tmp_path / "examples" / "os" / "5c1075ca.json")
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"os": ["5c1075ca"]}))
    assert [t.id for t in load_split(good).load()] == ["5c1075ca-bb34-46a3-a7a0-029bd7463e79"]
    for content, message in (
        ({"os": ["nope"]}, f"os: task nope has no file {tmp_path}/examples/os/nope.json"),
        ({"os": "5c1075ca"}, "os: must be a list of task ids"),
        (["os"], "a split file must hold an object"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(content))
        with pytest.raises(TaskError, match="^" + str(bad) + ": ") as e:
            load_split(bad)
        assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(TaskError, match="no such split"):
        load_split(tmp_path / "test_none.json")


# -- coverage ------------------------------------------------------------------------------------------
def test_coverage_follows_the_setup_registry(corpus: list) -> None:
    for task in corpus:
        cov = check_task(task)
        unsupported = [s.type for s in task.steps() if REGISTRY[s.type].run is None]
        for target in TARGETS:
            assert cov.parts[target]["setup"].ok == (not unsupported), task.id
        if unsupported:
            assert set(unsupported) <= {"googledrive", "login"}
            assert "Google account" in cov.parts["vm"]["setup"].why


@needs_corpus
def test_coverage_of_the_splits_on_a_bare_and_a_full_machine() -> None:
    split = load_split(CORPUS / "test_all.json")
    nothing = check_split(split, which=lambda p: None)
    everything = check_split(split, which=lambda p: "/usr/bin/" + p)
    # A VM does not depend on what this machine has installed.
    assert [r.supported("vm") for r in nothing] == [r.supported("vm") for r in everything]
    on_vm = sum(r.supported("vm") for r in everything)
    # All but the gdrive tasks (8 setup, 7 getters, overlapping): kimi-agent writes what desktop-env lacks.
    assert on_vm == 369 - 8
    # With every program installed a sandbox supports what a VM does, but for the tasks that cannot be
    # made faithful there; with none, no app task runs.
    assert [r.supported("sandbox") for r in everything] == [
        r.supported("vm") and r.task_id not in UNFAITHFUL_ON_SANDBOX for r in everything
    ]
    assert {r.task_id for r in everything if not r.supported("sandbox")} >= set(UNFAITHFUL_ON_SANDBOX)
    assert sum(r.supported("sandbox") for r in nothing) == 0
    chrome = [r for r in nothing if r.domain == "chrome"]
    assert all("apps not installed: chrome" in r.reasons("sandbox")[0] for r in chrome)
    domains = per_domain(everything)
    assert sum(d.tasks for d in domains) == 369 and len(domains) == 10


def test_app_names_of_the_corpus_are_all_known(corpus: list) -> None:
    assert {app_key(a) for t in corpus for a in t.related_apps} <= set(APP_PROGRAMS)


def test_official_names_match_the_installed_desktop_env() -> None:
    """tasks/osworld/official.py against desktop_env's own __init__ files, when the test venv has it."""
    roots = list(
        (REPO / ".cache" / "osworld-eval" / "lib").glob("python*/site-packages/desktop_env/evaluators")
    )
    if not roots:
        pytest.skip("the OSWorld evaluator venv is not built (.ci/setup: .cache/osworld-eval)")

    def exported(path: Path) -> set[str]:
        tree = ast.parse(path.read_text())
        names = {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
        return names | {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}

    assert exported(roots[0] / "metrics" / "__init__.py") == official.METRICS
    getters = {
        n.removeprefix("get_") for n in exported(roots[0] / "getters" / "__init__.py") if n.startswith("get_")
    }
    assert getters == official.GETTERS
    # What the package really lacks of issue 11's list.
    assert {
        "check_play_and_exit",
        "check_structure_sim_with_threshold",
    } == official.ISSUE11_METRICS - official.METRICS
    assert {"chrome_appearance_mode_ui"} == official.ISSUE11_GETTERS - official.GETTERS


@needs_corpus
def test_the_check_command(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "tasks.cli", "bench", "osworld", "check"]
    done = subprocess.run(
        [*cmd, "test_small", "--osworld-dir", str(CORPUS), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = check_split(load_split(CORPUS / "test_small.json"))
    assert report["tasks"] == 39 and report["supported"] == {
        x: sum(r.supported(x) for r in rows) for x in TARGETS
    }
    assert len(report["per_task"]) == 39 and set(report["domains"]) == {r.domain for r in rows}
    assert report["offline"] == sum(d["offline"] for d in report["domains"].values())
    assert report["offline"] == sum(r.supported("sandbox") and not r.network for r in rows)
    done = subprocess.run(
        [*cmd, str(CORPUS / "test_small.json"), "--domains-only"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0 and "Coverage of test_small per domain" in done.stdout
    assert "│ all                 │    39 │" in done.stdout
    bad = subprocess.run(
        [*cmd, str(tmp_path / "none.json")], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and bad.stdout.count("\n") == 1 and "none.json: cannot read" in bad.stdout


@needs_corpus
def test_list_prints_a_splits_ids_with_their_domains() -> None:
    cmd = [
        sys.executable,
        "-m",
        "tasks.cli",
        "bench",
        "osworld",
        "list",
        "test_small",
        "--osworld-dir",
        str(CORPUS),
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    split = load_split(CORPUS / "test_small.json")
    assert done.returncode == 0, done.stdout
    assert done.stdout.splitlines() == [f"{e.task_id}\t{e.domain}" for e in split.entries]
    done = subprocess.run(
        [*cmd, "--domain", "chrome", "--limit", "2"], cwd=REPO, capture_output=True, text=True
    )
    assert (
        done.stdout.splitlines()
        == [f"{e.task_id}\tchrome" for e in split.entries if e.domain == "chrome"][:2]
    )
