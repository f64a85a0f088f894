"""The client Desktop over our server passes the sandbox's click and typing tests, both ways it acts:
typed actions through /kimi/act, and OSWorld's way (generated pyautogui code through /execute).
Real Xvfb, a real server on loopback, real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_clicks import _down, _near
from test_sandbox import _wait_file

from env.actions import Click, Drag, Hotkey, KeyDown, KeyPress, KeyUp, Point, Scroll, TypeText, Wait
from env.osworld_client import OSWorldClient
from env.sandbox import Sandbox
from env.served_sandbox import ServedSandbox
from env.vm_desktop import VMDesktop, pyautogui_code

pytestmark = pytest.mark.x11
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def served() -> Iterator[ServedSandbox]:
    """The server runs inside the isolated sandbox, as for a benchmark task."""
    with ServedSandbox(1280, 800, desktop="minimal") as served:
        yield served


@pytest.fixture
def sandbox(served: ServedSandbox) -> Sandbox:
    return served.sandbox


@pytest.fixture(params=["kimi", "osworld"])
def vm(request, served: ServedSandbox) -> Iterator[VMDesktop]:  # type: ignore[no-untyped-def]
    desktop = VMDesktop(OSWorldClient(served.url, token=served.token), fast=request.param == "kimi")
    yield desktop
    desktop.close()


def test_the_probe_tells_our_server_from_others(served: ServedSandbox) -> None:
    with VMDesktop(OSWorldClient(served.url, token=served.token)) as d:
        assert d.fast and "kimi-agent server" in d.name
        assert (d.geometry.width, d.geometry.height) == (1280, 800)
        frame = d.screenshot()
        assert (frame.width, frame.height) == (1280, 800)


@pytest.mark.parametrize(
    ("point", "expected"),
    [
        (Point.norm(0.25, 0.5), (320, 400)),
        (Point.px(100, 700), (100, 700)),
        (Point.px(1279, 799), (1279, 799)),
    ],
)
def test_click_lands_within_1px(vm, sandbox, clickpad_on, point: Point, expected: tuple[int, int]) -> None:
    pad = clickpad_on(sandbox)
    result = vm.execute(Click(point=point))
    assert result.ok, result.error
    [ev] = _down(pad)
    assert _near(ev, *expected), (ev, expected)
    assert result.screen_points == [expected]


def test_double_and_right_click(vm, sandbox, clickpad_on) -> None:
    pad = clickpad_on(sandbox)
    assert vm.execute(Click(point=Point.norm(0.5, 0.5), clicks=2)).ok
    assert vm.execute(Click(point=Point.norm(0.5, 0.5), button="right")).ok
    assert [e["button"] for e in _down(pad, 3)] == [1, 1, 3]


def test_drag_presses_at_start_and_releases_at_end(vm, sandbox, clickpad_on) -> None:
    pad = clickpad_on(sandbox)
    assert vm.execute(Drag(start=Point.px(200, 150), end=Point.norm(0.75, 0.75))).ok
    [down] = _down(pad)
    up = next(e for e in pad.events() if e["kind"] == "up")
    assert _near(down, 200, 150) and _near(up, 960, 600), (down, up)


@pytest.mark.parametrize(("direction", "button", "shift"), [("down", 5, False), ("left", 4, True)])
def test_scroll_direction_and_amount(
    vm, sandbox, clickpad_on, direction: str, button: int, shift: bool
) -> None:
    pad = clickpad_on(sandbox)
    assert vm.execute(Scroll(point=Point.norm(0.5, 0.25), direction=direction, amount=3)).ok
    pad.wait_for(lambda e: len([x for x in pad.events() if x["kind"] == "up"]) >= 3, what="3 wheel clicks")
    wheel = [e for e in pad.events() if e["kind"] == "down"]
    assert [(e["button"], e["shift"]) for e in wheel] == [(button, shift)] * 3
    assert all(_near(e, 640, 200) for e in wheel)


def test_keys_hotkeys_and_held_keys(vm, sandbox, clickpad_on) -> None:
    pad = clickpad_on(sandbox)
    assert vm.execute(Hotkey(keys=["ctrl", "shift", "a"])).ok
    assert vm.execute(KeyPress(key="Return", presses=2)).ok
    assert vm.execute(KeyDown(key="alt")).ok
    assert vm.execute(KeyUp(key="alt")).ok
    pad.wait_for(lambda e: e.get("keysym") == "Alt_L" and e["kind"] == "keyup", what="alt released")
    downs = [e["keysym"] for e in pad.events() if e["kind"] == "key"]
    assert downs[:3] == ["Control_L", "Shift_L", "A"]
    assert downs.count("Return") == 2 and downs[-1] == "Alt_L"
    ups = [e["keysym"] for e in pad.events() if e["kind"] == "keyup"]
    assert ups[:3] == ["A", "Shift_L", "Control_L"]


def test_a_key_left_down_is_released_at_close(vm, sandbox, clickpad_on) -> None:
    pad = clickpad_on(sandbox)
    assert vm.execute(KeyDown(key="shift")).ok
    vm.release_held()
    pad.wait_for(lambda e: e.get("keysym") == "Shift_L" and e["kind"] == "keyup", what="shift released")


def test_out_of_screen_points_are_rejected_not_executed(vm, sandbox, clickpad_on) -> None:
    pad = clickpad_on(sandbox)
    result = vm.execute(Click(point=Point.px(1280, 10)))
    assert not result.ok and "outside" in (result.error or "")
    assert vm.execute(Click(point=Point.norm(0.5, 0.5))).ok
    assert len(_down(pad)) == 1


def test_xterm_types_unicode_and_quotes_exactly(vm, sandbox) -> None:
    """Text that would be code if pasted into code is typed as text: the generated pyautogui code
    holds it as a literal."""
    sandbox.launch(["xterm", "-geometry", "80x24+0+0"])
    sandbox.wait_window("xterm")
    assert vm.execute(Click(point=Point.norm(0.1, 0.1))).ok
    text = """echo 'héllo ✓ 你好' "x'); import os #" > ~/out.txt"""
    assert vm.execute(TypeText(text=text + "\n")).ok
    assert _wait_file(sandbox.home / "out.txt") == "héllo ✓ 你好 x'); import os #\n"


def test_wait_and_results_carry_timings(vm) -> None:
    t0 = time.perf_counter()
    result = vm.execute(Wait(seconds=0.3))
    assert result.ok and time.perf_counter() - t0 >= 0.3
    moved = vm.execute(Click(point=Point.norm(0.5, 0.5)))
    assert moved.ok and moved.execute_s > 0 and moved.settled


def test_generated_code_quotes_every_string() -> None:
    code = pyautogui_code(TypeText(text="a'); __import__('os').system('x') #"), [])
    assert code == """pyautogui.write("a'); __import__('os').system('x') #")"""
    assert pyautogui_code(Hotkey(keys=["ctrl", "c"]), []) == "pyautogui.hotkey('ctrl', 'c')"


def test_cli_runs_a_script_through_the_server(served, sandbox, clickpad_on, tmp_path: Path) -> None:
    """`kimi-agent "task" --vm URL --vm-token T --script S`: the run's trajectory is recorded as locally."""
    pad = clickpad_on(sandbox)
    script = tmp_path / "steps.json"
    script.write_text(json.dumps([{"kind": "click", "point": {"x": 0.5, "y": 0.5}}, {"kind": "done"}]))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tasks.cli", "click the middle", "--vm", served.url]
    cmd += ["--vm-token", served.token, "--script", str(script), "--out", str(out)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    [ev] = _down(pad)
    assert _near(ev, 640, 400)
    info = json.loads((out / "run.json").read_text())
    assert "kimi-agent server" in info["desktop"]
    assert list(out.glob("step_*.png")), sorted(p.name for p in out.iterdir())


def test_cli_refuses_a_wrong_token_in_one_line(served, tmp_path: Path) -> None:
    script = tmp_path / "s.json"
    script.write_text(json.dumps([{"kind": "done"}]))
    cmd = [sys.executable, "-m", "tasks.cli", "t", "--vm", served.url, "--vm-token", "x" * 20]
    done = subprocess.run(
        [*cmd, "--script", str(script), "--out", str(tmp_path / "r")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refused the token given: pass the right one with --vm-token" in " ".join(done.stdout.split())
    assert "Traceback" not in done.stdout + done.stderr


def test_cli_vm_refuses_sandbox_only_flags_and_a_dead_server(tmp_path: Path) -> None:
    script = tmp_path / "s.json"
    script.write_text(json.dumps([{"kind": "done"}]))
    base = [sys.executable, "-m", "tasks.cli", "t", "--script", str(script)]
    with_app = subprocess.run(
        [*base, "--vm", "http://127.0.0.1:9", "--app", "xterm", "--out", str(tmp_path / "a")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert with_app.returncode == 2 and "--app starts programs in a sandbox" in with_app.stdout
    dead = subprocess.run(
        [*base, "--vm", "http://127.0.0.1:9", "--out", str(tmp_path / "b")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dead.returncode == 2 and "cannot reach the server at http://127.0.0.1:9" in dead.stdout
