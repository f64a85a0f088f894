"""Ctrl-C, as a user sends it: SIGINT to a running kimi-agent process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cli(args: list[str]) -> subprocess.Popen[str]:
    code = f"import sys; from tasks.cli import main; sys.exit(main({args!r}))"
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _waiting_run(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """A CLI run of one-second waits, returned once its first step is on disk."""
    script = tmp_path / "s.json"
    script.write_text(json.dumps([{"kind": "wait", "seconds": 1.0}] * 20))
    out = tmp_path / "run"
    proc = _cli(
        ["wait a lot", "--script", str(script), "--out", str(out), "--size", "640x480", "--max-steps", "20"]
    )
    deadline = time.monotonic() + 20
    while not (out / "steps.jsonl").exists() or not (out / "steps.jsonl").read_text().strip():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)
    return proc, out


def test_ctrl_c_stops_after_the_current_action_and_keeps_the_run(tmp_path: Path) -> None:
    proc, out = _waiting_run(tmp_path)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    printed, _ = proc.communicate(timeout=20)
    assert time.monotonic() - t0 < 2.5  # the wait in progress finishes, nothing after it starts
    assert proc.returncode == 1, printed
    assert "stopped: interrupted" in printed and "Traceback" not in printed
    info = json.loads((out / "run.json").read_text())
    assert info["stop_reason"] == "interrupted" and 1 <= info["steps"] < 20
    assert (out / "report.html").exists()


def test_sandbox_command_runs_until_ctrl_c_and_cleans_up(tmp_path: Path) -> None:
    proc = _cli(["sandbox", "--size", "800x600", "--app", "xterm"])
    assert proc.stdout is not None
    lines = []
    while not any("Ctrl-C stops it" in line for line in lines):
        line = proc.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
    text = "".join(lines)
    assert "DISPLAY=:" in text and "add --view" in text and "screen.png" in text
    display = text.split("DISPLAY=")[1].split()[0]
    pids = subprocess.run(["pgrep", "-f", "Xvfb -displayfd"], capture_output=True, text=True).stdout.split()
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, rest
    time.sleep(0.5)
    still = [
        p
        for p in pids
        if _alive(int(p)) and display in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
    ]
    assert still == []


def test_the_first_ctrl_c_stops_a_model_call_in_progress(tmp_path: Path) -> None:
    from fake_openai_server import FakeOpenAI, Reply

    server = FakeOpenAI()
    server.default = Reply("## Action:\nwait\n## Code:\n```python\ncomputer.wait()\n```", delay_s=60)
    out = tmp_path / "run"
    try:
        proc = _cli(
            [
                "slow model",
                "--backend",
                "openai",
                "--base-url",
                server.url,
                "--model",
                "kimi-vl",
                "--out",
                str(out),
                "--size",
                "640x480",
            ]
        )
        deadline = time.monotonic() + 30
        while not server.requests:  # the model call is under way
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
            time.sleep(0.05)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        printed, _ = proc.communicate(timeout=20)
        assert time.monotonic() - t0 < 3, printed  # not the 60 s the server would take
    finally:
        server.close()
    assert proc.returncode == 1 and "Traceback" not in printed, printed
    info = json.loads((out / "run.json").read_text())
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert info["stop_reason"] == "interrupted" and info["steps"] == len(steps) == 1
    assert steps[0]["error"] == "interrupted (Ctrl-C) during the model call"
    assert (out / steps[0]["screenshot"]).exists() and (out / "report.html").exists()


def test_after_sigkill_the_record_is_current_and_readable(tmp_path: Path) -> None:
    script = tmp_path / "s.json"
    # Waits of different lengths, so that loop detection (same action, same screen) stays out of it.
    script.write_text(json.dumps([{"kind": "wait", "seconds": 0.3 + i / 1000} for i in range(50)]))
    out = tmp_path / "run"
    proc = _cli(
        ["wait", "--script", str(script), "--out", str(out), "--size", "640x480", "--max-steps", "50"]
    )
    deadline = time.monotonic() + 30
    while len((out / "steps.jsonl").read_text().splitlines() if (out / "steps.jsonl").exists() else []) < 3:
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.02)
    proc.kill()
    proc.communicate()
    info = json.loads((out / "run.json").read_text())
    from PIL import Image

    from agent.report import write_report
    from agent.trajectory import read_steps

    steps = read_steps(out)
    # run.json is replaced right after each step is appended: it is at most one step behind.
    assert info["stop_reason"] is None and len(steps) >= 3 and info["steps"] in (len(steps), len(steps) - 1)
    for png in out.glob("*.png"):  # a PNG appears under its name only once it is complete
        Image.open(png).load()
    assert "Step 3" in write_report(out).read_text()


def test_sigterm_stops_like_ctrl_c_and_keeps_the_record(tmp_path: Path) -> None:
    proc, out = _waiting_run(tmp_path)
    proc.terminate()
    printed, _ = proc.communicate(timeout=20)
    assert proc.returncode == 1 and "stopped: interrupted" in printed, printed
    info = json.loads((out / "run.json").read_text())
    steps = (out / "steps.jsonl").read_text().splitlines()
    assert info["stop_reason"] == "interrupted" and info["steps"] == len(steps) >= 1
    assert (out / "report.html").exists()
