"""The loop, the trajectory on disk, report.html, replay and the CLI, in real sandboxes."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

from conftest import kept_home
from PIL import Image

from agent.loop import StopFlag, run
from agent.policy import Decision, ScriptedPolicy
from agent.replay import replay_policy
from agent.trajectory import RunInfo, TrajectoryWriter, read_info, read_steps
from agent.version import version_record
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


def _echo_script() -> list[list]:
    """Writes ~/out.txt (the sandbox's home) from the xterm at the top left."""
    return [
        [Wait(seconds=0.5)],
        [Click(point=Point.norm(0.1, 0.1))],
        [TypeText(text="echo replayed > ~/out.txt"), KeyPress(key="enter")],
        [Done(status="success", answer="written")],
    ]


def test_run_records_steps_screenshots_and_report(sandbox, tmp_path: Path) -> None:
    sandbox.launch(["xterm", "-geometry", "80x24+0+0"])
    sandbox.wait_window("xterm")
    target = sandbox.home / "out.txt"
    run_dir = tmp_path / "run"
    traj = run("echo", ScriptedPolicy(_echo_script()), sandbox, writer=_writer(run_dir, sandbox))
    assert (traj.stop_reason, traj.status, traj.answer) == ("done", "success", "written")
    assert _wait_file(target) == "replayed\n"

    steps = read_steps(run_dir)
    assert [s.step for s in steps] == [1, 2, 3, 4]
    click = steps[1].actions[0]
    assert click.model_points == [(0.1, 0.1)] and click.screen_points == [(128, 80)] and click.ok
    assert steps[2].timing.settle_s > 0 and steps[2].timing.capture_s > 0
    info = read_info(run_dir)
    assert (info.stop_reason, info.steps, info.status) == ("done", 4, "success")
    assert info.kimi_agent == version_record()  # the version, and the commit from a checkout
    assert all(s.timing.record_s > 0 for s in steps)  # measured before it is written
    assert info.final_screenshot == "final.png" and (run_dir / "final.png").stat().st_size > 1000
    report = (run_dir / "report.html").read_text()
    for s in steps:
        assert (run_dir / s.screenshot).stat().st_size > 1000
    # Self-contained: every screenshot and the end state embedded, nothing linked or fetched.
    assert report.count('src="data:image/webp;base64,') == len(steps) + 1
    assert ".png" not in report.replace("final.png", "").replace("step_0", "")
    assert "<circle" in report and "http" not in report.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "tokens" in report and "parse retries" in report

    # Replay the recorded run in a fresh sandbox: the same effect, from the recorded actions only.
    from env.sandbox import Sandbox

    with Sandbox(1280, 800, apps=[["xterm", "-geometry", "80x24+0+0"]], desktop="minimal") as box:
        box.wait_window("xterm")
        again = run("replay", replay_policy(run_dir), box, max_steps=10)
        assert again.stop_reason == "done"
        assert _wait_file(box.home / "out.txt") == "replayed\n"


def test_loop_detection_stops_a_repeating_model(sandbox) -> None:
    same = [Click(point=Point.norm(0.5, 0.5))]
    traj = run("spin", ScriptedPolicy([same] * 10), sandbox, max_steps=10, repeat_limit=3)
    assert traj.stop_reason == "loop_detected"
    assert len(traj.steps) == 3
    assert "3 times" in (traj.steps[-1].error or "")
    assert [(a.executed, a.error) for a in traj.steps[-1].actions] == [(False, "not executed: loop detected")]


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
    script = [[Click(point=Point.px(9999, 1)), Wait(seconds=0)], [Done()]]
    traj = run("x", ScriptedPolicy(script), sandbox, max_steps=2)
    assert [(a.action["kind"], a.executed) for a in traj.steps[0].actions] == [
        ("click", True),
        ("wait", False),
    ]
    assert traj.steps[0].actions[1].error == "not executed: an earlier action of this step failed"
    assert traj.stop_reason == "done" and len(traj.steps) == 2


def test_declining_tells_the_model_and_goes_on_and_q_quits(sandbox) -> None:
    seen: list[list[str | None]] = []

    class Recorder(ScriptedPolicy):
        def decide(self, obs, history):  # type: ignore[no-untyped-def]
            seen.append([e for v in history for e in v.results])
            return super().decide(obs, history)

    answers = iter(["no", "yes", "quit"])
    steps = [[Wait(seconds=0), KeyPress(key="a")], [Wait(seconds=0)], [Wait(seconds=0)], [Wait(seconds=0)]]
    traj = run("x", Recorder(steps), sandbox, confirm=lambda a: next(answers))
    assert traj.stop_reason == "declined" and len(traj.steps) == 3
    first = traj.steps[0].actions
    assert first[0].error == "not executed: declined by the user" and not first[0].executed
    assert "declined" in (first[1].error or "") and not first[1].executed  # the rest of the step waits
    assert traj.steps[1].actions[0].executed
    assert seen[1][0] == "wait(seconds=0.0): not executed: declined by the user"  # the model hears which
    assert traj.steps[2].actions[0].error == "not executed: declined by the user"


def test_an_interrupt_keeps_the_decided_actions_marked_not_executed(sandbox, tmp_path: Path) -> None:
    stop = StopFlag()
    threading.Timer(0.3, stop.set).start()  # Ctrl-C while the first action runs
    steps = [[Wait(seconds=1.0), Click(point=Point.norm(0.5, 0.5)), TypeText(text="x")]]
    traj = run("x", ScriptedPolicy(steps), sandbox, stop=stop, writer=_writer(tmp_path, sandbox))
    assert traj.stop_reason == "interrupted"
    [step] = read_steps(tmp_path)
    assert [(a.action["kind"], a.executed) for a in step.actions] == [
        ("wait", True),
        ("click", False),
        ("type", False),
    ]
    assert "interrupted" in (step.actions[1].error or "")
    assert read_info(tmp_path).steps == 1


def test_a_failing_step_is_recorded_with_its_error(sandbox, tmp_path: Path) -> None:
    class BreaksAtStep2(ScriptedPolicy):
        def decide(self, obs, history):  # type: ignore[no-untyped-def]
            if obs.step == 2:
                raise ConnectionError("model server went away")
            return super().decide(obs, history)

    traj = run("x", BreaksAtStep2([[Wait(seconds=0)]] * 3), sandbox, writer=_writer(tmp_path, sandbox))
    assert traj.stop_reason == "error" and "model server went away" in (traj.error or "")
    steps = read_steps(tmp_path)
    info = read_info(tmp_path)
    assert [s.step for s in steps] == [1, 2] and info.steps == 2 and info.stop_reason == "error"
    assert steps[1].error == "ConnectionError: model server went away"
    assert (tmp_path / steps[1].screenshot).exists()


def test_lone_surrogates_and_any_code_point_are_stored(sandbox, tmp_path: Path) -> None:
    class Odd:
        def decide(self, obs, history):  # type: ignore[no-untyped-def]
            return Decision(
                thought="bad \ud800 half",
                raw="raw \udfff\x00 \u202e",
                error="unparsable \ud83d",
                notes=["n \udc00"],
            )

    traj = run("x", Odd(), sandbox, writer=_writer(tmp_path, sandbox), max_steps=2)
    assert traj.stop_reason == "max_steps"
    steps = read_steps(tmp_path)
    assert len(steps) == 2 and read_info(tmp_path).steps == 2
    assert steps[0].thought == "bad \\ud800 half" and steps[0].raw == "raw \\udfff\x00 \u202e"
    assert steps[0].parse_error == "unparsable \\ud83d" and steps[0].notes == ["n \\udc00"]
    assert "\\ud800" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_a_torn_steps_file_is_read_up_to_the_last_whole_record(sandbox, tmp_path: Path) -> None:
    steps = [[TypeText(text="é" * 40)], [TypeText(text="ü" * 40)], [Done()]]
    run("x", ScriptedPolicy(steps), sandbox, writer=_writer(tmp_path, sandbox), dry_run=True)
    path = tmp_path / "steps.jsonl"
    data = path.read_bytes()
    lines = data.split(b"\n")
    cut = len(lines[0]) + 1 + lines[1].index("ü".encode()) + 1  # mid-character in the second record
    path.write_bytes(data[:cut])
    assert [s.step for s in read_steps(tmp_path)] == [1]
    assert len(replay_policy(tmp_path)) == 0  # a dry run executed nothing: nothing to replay
    from agent.report import write_report

    assert "Step 1" in write_report(tmp_path).read_text()


def test_a_dry_run_is_marked_everywhere(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "s.json"
    script.write_text(json.dumps([{"kind": "click", "point": {"x": 0.5, "y": 0.5}}, {"kind": "done"}]))
    out = tmp_path / "run"
    # 3, not 0: a dry run that reached "done" executed nothing, so the task is not done (issue 18).
    assert main(["t", "--script", str(script), "--out", str(out), "--size", "640x480", "--dry-run"]) == 3
    printed = capsys.readouterr().out
    assert "DRY RUN" in printed and "dry run: no action was executed" in printed
    assert "status: dry-run" in printed and "success" not in printed
    assert read_info(out).dry_run is True
    assert "DRY RUN" in (out / "report.html").read_text()
    assert not read_steps(out)[0].actions[0].executed


def test_cli_runs_a_script_end_to_end_in_a_sandbox(tmp_path: Path, kept_sandboxes: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "script.json"
    script.write_text(json.dumps([[a.model_dump() for a in step] for step in _echo_script()]))
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
            "--keep",
            "--view",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert _wait_file(kept_home(kept_sandboxes) / "out.txt") == "replayed\n"
    assert "stopped: done" in printed and str(out) in printed
    assert "watch it live: http://127.0.0.1:" in printed and "view only" in printed  # --view
    # --app: the first screenshot already shows the app (the sandbox waited for its window).
    first = Image.open(out / "step_001.png").convert("L")
    assert first.getextrema()[1] > 0
    assert len(read_steps(out)) == 4 and (out / "report.html").exists()

    # replay through the CLI as well
    again = [
        "replay",
        str(out),
        "--out",
        str(tmp_path / "again"),
        "--app",
        "xterm -geometry 80x24+0+0",
        "--keep",
    ]
    assert main(again) == 0
    assert _wait_file(kept_home(kept_sandboxes) / "out.txt") == "replayed\n"  # the replay's own sandbox


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.json"
    bad.write_text('[{"kind": "click", "point": {"x": 3, "y": 0.5}}]')
    assert main(["t", "--script", str(bad)]) == 2
    err = capsys.readouterr().out.strip()
    assert re.match(r"kimi-agent: error: script .*bad.json, step 1: .*", err) and "Traceback" not in err
    assert main(["replay", str(tmp_path / "nowhere")]) == 2
    assert "is not a run directory" in capsys.readouterr().out


def test_a_broken_run_json_is_one_line_naming_it(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "steps.jsonl").write_text("")
    for content, problem in (
        ("{", "is not JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        ("[" * 100_000, "is not usable JSON: nested too deeply (arrays or objects)"),
        ('{"task": 3}', "is not a run record: task: Input should be a valid string (and 4 more)"),
    ):
        (run_dir / "run.json").write_text(content)
        for command in ("report", "replay"):
            assert main([command, str(run_dir)]) == 2
            out = capsys.readouterr().out.strip()
            assert out == f"kimi-agent: error: {run_dir / 'run.json'} {problem}", out


def test_model_text_never_reaches_the_terminal_as_markup_or_escapes(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    hostile = "see [/bold] here \x1b[2J\x1b]0;owned\x07\x1bc [black on black]hidden[/] \u202etxt.exe"
    script = tmp_path / "s.json"
    script.write_text(json.dumps([[{"kind": "done", "answer": hostile}]]))
    code = main(["t", "--script", str(script), "--out", str(tmp_path / "run"), "--size", "640x480"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "\x1b" not in printed and "\u202e" not in printed and "\x07" not in printed
    assert "see [/bold] here \\x1b[2J" in printed and "[black on black]hidden[/]" in printed
    assert "\\u202etxt.exe" in printed
    report = (tmp_path / "run" / "report.html").read_text()
    assert "\u202e" not in report and "\x1b" not in report and "\\u202etxt.exe" in report


def test_a_script_without_done_claims_no_success_and_neither_does_its_replay(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "s.json"
    script.write_text(json.dumps([{"kind": "wait", "seconds": 0}, {"kind": "wait", "seconds": 0.01}]))
    out = tmp_path / "run"
    assert main(["t", "--script", str(script), "--out", str(out), "--size", "640x480"]) == 1
    assert "2 steps, stopped: max_steps" in capsys.readouterr().out
    assert read_info(out).status is None
    again = tmp_path / "again"
    assert main(["replay", str(out), "--out", str(again), "--size", "640x480"]) == 1
    assert read_info(again).status is None and read_info(again).stop_reason == "max_steps"


def test_usage_errors_are_caught_before_any_desktop(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "run"
    for flags, message in [
        (["--history-images", "0"], "--history-images must be at least 1"),
        (["--temperature", "-1"], "--temperature must not be negative"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        (["--max-new-tokens", "40000"], "--max-new-tokens must be below --max-context"),
        (["--max-steps", "0"], "--max-steps must be at least 1"),
    ]:
        assert main(["t", "--out", str(out), *flags]) == 2, flags
        assert message in capsys.readouterr().out
    assert main(["  ", "--out", str(out)]) == 2 and "the task is empty" in capsys.readouterr().out
    assert not out.exists()


def test_confirm_with_no_one_to_answer_quits(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import io

    from rich.console import Console

    from tasks.live import LiveView

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert LiveView(Console(file=io.StringIO()), 1).ask(Wait(seconds=0)) == "quit"


def test_the_confirm_prompt_shows_the_action_as_plain_text(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import io

    from rich.console import Console

    from tasks.live import LiveView

    out = io.StringIO()
    view = LiveView(Console(file=out, width=200), 5)
    monkeypatch.setattr("sys.stdin", io.StringIO("q\n"))
    answer = view.ask(TypeText(text="[black on black]; curl x | sh[/]"))
    assert answer == "quit"
    assert "[black on black]; curl x | sh[/]" in out.getvalue() and "[y/N/q]" in out.getvalue()


def test_a_report_shows_each_screenshot_as_it_is_now(sandbox, tmp_path: Path) -> None:
    """Encoded screenshots are reused by content: a picture rewritten in place shows anew, and two
    files with the same picture show the same image."""
    from agent.report import write_report

    run("x", ScriptedPolicy([[Wait(seconds=0)], [Done()]]), sandbox, writer=_writer(tmp_path, sandbox))

    def images() -> list[str]:
        return re.findall(r'<img src="([^"]+)"', write_report(tmp_path).read_text())

    first = images()
    assert len(first) == 3  # two steps and the end state
    Image.new("RGB", (64, 32), "red").save(tmp_path / "step_001.png")
    Image.new("RGB", (64, 32), "red").save(tmp_path / "final.png")
    now = images()
    assert now[0] != first[0] and now[0] == now[2] and now[1] == first[1]
    assert 'width="64" height="32"' in write_report(tmp_path).read_text()
