"""The loop, the trajectory on disk, report.html, replay and the CLI, in real sandboxes."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from agent.loop import run
from agent.policy import ScriptedPolicy
from agent.replay import replay_policy
from agent.trajectory import RunInfo, TrajectoryWriter, read_info, read_steps
from env.actions import Click, Done, KeyPress, Point, TypeText, Wait
from tasks.cli import main


def _writer(tmp: Path, box, task: str = "t") -> TrajectoryWriter:  # type: ignore[no-untyped-def]
    g = box.geometry
    return TrajectoryWriter(
        tmp, RunInfo(task=task, started_at=time.time(), policy="p", desktop="d", screen=(g.width, g.height))
    )


def _wait_file(path: Path, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written")


def _echo_script(target: Path) -> list[list]:
    return [
        [Wait(seconds=0.5)],
        [Click(point=Point.norm(0.1, 0.1))],
        [TypeText(text=f"echo replayed > {target}"), KeyPress(key="enter")],
        [Done(status="success", answer="written")],
    ]


def test_run_records_steps_screenshots_and_report(sandbox, tmp_path: Path) -> None:
    sandbox.launch(["xterm", "-geometry", "80x24+0+0"])
    sandbox.wait_window("xterm")
    target = tmp_path / "out.txt"
    run_dir = tmp_path / "run"
    traj = run("echo", ScriptedPolicy(_echo_script(target)), sandbox, writer=_writer(run_dir, sandbox))
    assert (traj.stop_reason, traj.status, traj.answer) == ("done", "success", "written")
    assert _wait_file(target) == "replayed\n"

    steps = read_steps(run_dir)
    assert [s.step for s in steps] == [1, 2, 3, 4]
    click = steps[1].actions[0]
    assert click.model_points == [(0.1, 0.1)] and click.screen_points == [(128, 80)] and click.ok
    assert steps[2].timing.settle_s > 0 and steps[2].timing.capture_s > 0
    info = read_info(run_dir)
    assert (info.stop_reason, info.steps, info.status) == ("done", 4, "success")
    report = (run_dir / "report.html").read_text()
    for s in steps:
        assert (run_dir / s.screenshot).stat().st_size > 1000
        assert f'src="{s.screenshot}"' in report
    assert "<circle" in report and "http" not in report.replace('xmlns="http://www.w3.org/2000/svg"', "")

    # Replay the recorded run in a fresh sandbox: the same effect, from the recorded actions only.
    target.unlink()
    from env.sandbox import Sandbox

    with Sandbox(1280, 800, apps=[["xterm", "-geometry", "80x24+0+0"]]) as box:
        box.wait_window("xterm")
        again = run("replay", replay_policy(run_dir), box, max_steps=10)
    assert again.stop_reason == "done"
    assert _wait_file(target) == "replayed\n"


def test_loop_detection_stops_a_repeating_model(sandbox) -> None:
    same = [Click(point=Point.norm(0.5, 0.5))]
    traj = run("spin", ScriptedPolicy([same] * 10), sandbox, max_steps=10, repeat_limit=3)
    assert traj.stop_reason == "loop_detected"
    assert len(traj.steps) == 3
    assert traj.steps[-1].actions == [] and "3 times" in (traj.steps[-1].error or "")


def test_max_steps_dry_run_and_action_errors(sandbox) -> None:
    steps = [
        [Click(point=Point.norm(0.2, 0.2)), Click(point=Point.px(9999, 1))],
        [Click(point=Point.px(9999, 1))],
    ]
    traj = run("x", ScriptedPolicy(steps * 3), sandbox, max_steps=2, dry_run=True, repeat_limit=0)
    assert traj.stop_reason == "max_steps" and len(traj.steps) == 2
    first = traj.steps[0].actions
    assert not first[0].executed and first[0].screen_points == [(256, 160)]
    assert not first[1].ok and "outside" in first[1].error
    # Executed for real, a failing action stops the rest of its step, and the run goes on.
    traj = run("x", ScriptedPolicy([[Click(point=Point.px(9999, 1)), Wait(seconds=0)]]), sandbox, max_steps=2)
    assert [a.action["kind"] for a in traj.steps[0].actions] == ["click"]
    assert traj.stop_reason == "done" and len(traj.steps) == 2


def test_declining_under_confirm_stops(sandbox) -> None:
    asked = []
    traj = run("x", ScriptedPolicy([[Wait(seconds=0)]]), sandbox, confirm=lambda a: asked.append(a) or False)
    assert traj.stop_reason == "declined" and len(asked) == 1
    assert traj.steps[0].actions[0].error == "declined by the user"


def test_policy_exception_ends_the_run_and_keeps_the_record(sandbox, tmp_path: Path) -> None:
    class Broken:
        def decide(self, obs, history):  # type: ignore[no-untyped-def]
            raise ConnectionError("model server went away")

    traj = run("x", Broken(), sandbox, writer=_writer(tmp_path, sandbox))
    assert traj.stop_reason == "error" and "model server went away" in (traj.error or "")
    assert read_info(tmp_path).stop_reason == "error" and (tmp_path / "report.html").exists()


def test_cli_runs_a_script_end_to_end_in_a_sandbox(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "cli.txt"
    script = tmp_path / "script.json"
    script.write_text(json.dumps([[a.model_dump() for a in step] for step in _echo_script(target)]))
    out = tmp_path / "run"
    code = main(
        [
            "write a file",
            "--script",
            str(script),
            "--out",
            str(out),
            "--size",
            "1024x768",
            "--app",
            "xterm -geometry 80x24+0+0",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert _wait_file(target) == "replayed\n"
    assert "stopped: done" in printed and str(out) in printed
    assert len(read_steps(out)) == 4 and (out / "report.html").exists()

    # replay through the CLI as well
    target.unlink()
    assert (
        main(["replay", str(out), "--out", str(tmp_path / "again"), "--app", "xterm -geometry 80x24+0+0"])
        == 0
    )
    assert _wait_file(target) == "replayed\n"


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.json"
    bad.write_text('[{"kind": "click", "point": {"x": 3, "y": 0.5}}]')
    assert main(["t", "--script", str(bad)]) == 2
    err = capsys.readouterr().out.strip()
    assert re.match(r"kimi-agent: error: script .*bad.json, step 1: .*", err) and "Traceback" not in err
    assert main(["replay", str(tmp_path / "nowhere")]) == 2
    assert "is not a run directory" in capsys.readouterr().out
