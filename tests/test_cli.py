"""The command line as a new user meets it (issue 18, section 6): typos, help, --version, the help of
every option, output into a pipe, dry runs. Real subprocesses with their output captured (so not a
terminal), real sandboxes where a command needs one."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.cli import parsers

REPO = Path(__file__).resolve().parent.parent
needs_x = pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed")


def kimi(*args: str | Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`kimi-agent ARGS` in ``cwd``, its output a pipe; never a download (HF_HUB_OFFLINE)."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "tasks.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("typo", "command"), [("sandbx", "sandbox"), ("serv", "serve"), ("Replay", "replay")]
)
def test_a_mistyped_command_is_refused_and_starts_nothing(tmp_path: Path, typo: str, command: str) -> None:
    r = kimi(typo, "--size", "640x480", cwd=tmp_path)
    assert r.returncode == 2, r.stdout
    assert r.stdout == (
        f"kimi-agent: error: {typo!r} is not a command; did you mean {command!r}? "
        f"(to give the agent the task {typo!r}: kimi-agent -- {typo} ...)\n"
    )
    assert list(tmp_path.iterdir()) == []  # no runs/ directory: nothing started


def test_help_is_help_not_a_task(tmp_path: Path) -> None:
    for words in (["help"], ["--help"]):
        r = kimi(*words, cwd=tmp_path)
        assert r.returncode == 0 and r.stdout.startswith("usage: kimi-agent"), r.stdout
        assert "bench osworld ...      OSWorld tasks: check, list, run, fidelity, setup, report" in r.stdout
        assert "3 a --dry-run that reached the model's" in " ".join(r.stdout.split())
    r = kimi("help", "serve", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("usage: kimi-agent serve")
    assert list(tmp_path.iterdir()) == []


def test_version_names_the_release_and_the_checkout(tmp_path: Path) -> None:
    from importlib.metadata import version

    r = kimi("--version", cwd=tmp_path)
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert r.returncode == 0
    assert re.fullmatch(
        rf"kimi-agent {re.escape(version('kimi-agent'))} \(git {head}(, modified)?\)\n", r.stdout
    )


def _options(name: str, p: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    """Every option of ``p`` and of its subcommands, with the command line that reaches it.
    (argparse keeps them in ``_actions``; it offers no public way to walk them.)"""
    found: list[tuple[str, argparse.Action]] = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, sp in action.choices.items():
                found += _options(f"{name} {sub}", sp)
        elif action.option_strings and action.dest != "help":
            found.append((name, action))
    return found


def test_every_option_has_help_that_shows_its_default() -> None:
    every = [o for name, p in parsers().items() for o in _options(name, p)]
    assert len(every) > 150
    silent = [f"{name} {a.option_strings[0]}" for name, a in every if not (a.help or "").strip()]
    assert silent == []
    for name, p in parsers().items():
        for cmd, action in _options(name, p):
            if action.default in (None, False, [], argparse.SUPPRESS):
                continue
            shown = p.formatter_class(prog=cmd)._get_help_string(action) or ""  # type: ignore[attr-defined]
            assert "default" in shown.lower(), (cmd, action.option_strings, shown)


HELPS = [
    ["--help"],
    ["replay", "--help"],
    ["report", "--help"],
    ["sandbox", "--help"],
    ["serve", "--help"],
    ["mcp", "--help"],
    ["export", "--help"],
    ["doctor", "--help"],
    ["bench", "--help"],
    *(["bench", "osworld", c, "--help"] for c in ("check", "list", "run", "setup", "report")),
    ["bench", "osworld", "--help"],
    *(["bench", "screenspot", c, "--help"] for c in ("run", "score")),
    ["bench", "screenspot", "--help"],
]


@pytest.mark.parametrize("words", HELPS, ids=" ".join)
def test_every_command_has_help(tmp_path: Path, words: list[str]) -> None:
    r = kimi(*words, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("usage: kimi-agent"), r.stdout + r.stderr
    command = " ".join(w for w in words if w != "--help")
    if command not in ("", "bench"):
        assert r.stdout.startswith(f"usage: kimi-agent {command}")


def test_replay_help_describes_replay(tmp_path: Path) -> None:
    text = " ".join(kimi("replay", "--help", cwd=tmp_path).stdout.split())
    assert "Play a recorded run again without a model: the actions RUN_DIR executed successfully" in text
    assert "RUN_DIR a run directory" in text


def test_the_osworld_commands_list_and_check_the_suite(tmp_path: Path) -> None:
    r = kimi("bench", "osworld", "list", "suite", cwd=tmp_path)
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == 26
    assert "os-hello-file\tos" in lines and "calc-sum-formula\tlibreoffice_calc" in lines
    r = kimi(
        "bench",
        "osworld",
        "list",
        "suite",
        "--domain",
        "gimp",
        "--domain",
        "vlc",
        "--limit",
        "2",
        cwd=tmp_path,
    )
    assert r.stdout == "vlc-snapshot\tvlc\ngimp-export-png\tgimp\n"
    r = kimi("bench", "osworld", "list", "suite", "--domain", "excel", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout.startswith(
        "kimi-agent: error: --domain excel: suite has no such domain;"
    )
    r = kimi("bench", "osworld", "check", "suite", "--json", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["tasks"] == 26
    r = kimi("bench", "osworld", "--check", "suite", "--json", cwd=tmp_path)  # the old spelling still works
    assert r.returncode == 0 and json.loads(r.stdout)["split"] == "suite"


def test_check_of_one_task_file_checks_that_task(tmp_path: Path) -> None:
    """It printed `id: must be a list`: the task was read as a split."""
    from tasks.osworld import suite

    task = suite.EXAMPLES / "os" / "os-hello-file.json"
    r = kimi("bench", "osworld", "check", task, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout
    report = json.loads(r.stdout)
    assert report["tasks"] == 1 and [t["id"] for t in report["per_task"]] == ["os-hello-file"]
    assert report["per_task"][0]["domain"] == "os"


@needs_x
def test_output_into_a_pipe_keeps_long_lines_whole(tmp_path: Path) -> None:
    """`serve --sandbox` printed `vm_ip=...` split over two lines into a pipe (80 columns)."""
    cmd = [sys.executable, "-m", "tasks.cli", "serve", "--sandbox", "--port", "0", "--size", "800x600"]
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env.update(PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [*cmd, "--desktop-env", "minimal"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        said = [proc.stdout.readline() for _ in range(3)]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, [*said, proc.stdout.read()]
    finally:
        proc.kill()
        proc.wait()
    line = said[2]
    assert re.fullmatch(r"OSWorld's controllers: vm_ip='[\w-]+:@127\.0\.0\.1', server_port=\d+\n", line), said
    assert len(line) > 80  # it would have wrapped


@needs_x
def test_a_dry_run_is_not_a_done_task(tmp_path: Path) -> None:
    """A dry run executes nothing: it never says "status: success" nor exits 0. When the model (here
    a script) says done, the exit status is 3 and the status "dry-run"."""
    script = tmp_path / "s.json"
    script.write_text(json.dumps([{"kind": "click", "point": {"x": 0.5, "y": 0.5}}, {"kind": "done"}]))
    # `--` gives a one-word task that looks like a command: `sandbx` runs as a task here.
    r = kimi("--", "sandbx", "--script", script, "--dry-run", "--size", "640x480", "--out", tmp_path / "run",
             "--desktop-env", "minimal", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 3, r.stdout
    assert "sandbx" in r.stdout and "DRY RUN: nothing will be executed" in r.stdout
    assert "stopped: done, status: dry-run  (dry run: no action was executed)" in r.stdout
    assert "success" not in r.stdout
    assert json.loads((tmp_path / "run" / "run.json").read_text())["dry_run"] is True


def test_help_command_names_subcommands_and_refuses_typos(tmp_path: Path) -> None:
    r = kimi("help", "sandbx", cwd=tmp_path)
    assert r.returncode == 2 and "did you mean 'sandbox'?" in r.stdout and len(r.stdout.splitlines()) == 1
    for words, usage in [
        (["bench", "osworld", "run"], "usage: kimi-agent bench osworld run"),
        (["bench", "osworld"], "usage: kimi-agent bench osworld"),
        (["bench", "screenspot", "score"], "usage: kimi-agent bench screenspot score"),
    ]:
        r = kimi("help", *words, cwd=tmp_path)
        assert r.returncode == 0 and r.stdout.startswith(usage), r.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "wanted"),
    [
        (["t", "--size", "100"], "kimi-agent: error: argument --size: "),
        (["t", "--max-steps", "abc"], "kimi-agent: error: argument --max-steps: "),
        (["bench", "osworld", "lst"], "(did you mean 'list'?)"),
        (["t", "--modle", "x"], "unrecognized arguments: --modle x (did you mean --model?)"),
    ],
)
def test_argparse_errors_are_one_line(tmp_path: Path, args: list[str], wanted: str) -> None:
    r = kimi(*args, cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 2 and len(out.splitlines()) == 1, out
    assert wanted in out and out.rstrip().endswith("--help)"), out


def test_tables_into_a_pipe_keep_whole_task_ids(tmp_path: Path) -> None:
    r = kimi("bench", "osworld", "check", "suite", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert any("os-infeasible-bitlocker" in line for line in r.stdout.splitlines()), r.stdout


def test_report_on_an_osworld_results_folder_points_at_bench_report(tmp_path: Path) -> None:
    (tmp_path / "results" / "pyautogui").mkdir(parents=True)
    r = kimi("report", "results", cwd=tmp_path)
    assert r.returncode == 2
    assert "kimi-agent bench osworld report results" in r.stdout and len(r.stdout.splitlines()) == 1
