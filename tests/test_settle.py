"""The wait after an action sees changes that start late: windows mapping, programs starting,
splash screens; a no-op ends soon; --sleep-after is OSWorld's fixed sleep. Real Xvfb sandboxes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agent.trajectory import read_steps
from env.actions import Click, Hotkey, KeyPress, Point, TypeText
from env.activity import ProcessActivity
from env.desktop import Frame
from env.settle import Settle
from env.xauth import authority
from tasks.cli import main

pytestmark = pytest.mark.x11

# Works 1.5 s before its window (with no pixel changing meanwhile), as a program starting does.
LATE = """import os, time
t = time.time()
while time.time() - t < 1.5:
    pass
os.execvp("xterm", ["xterm", "-class", "LateTerm"])
"""


def _differ(a: Frame, b: Frame) -> int:
    """Pixels that differ materially (a blinking text cursor is a few hundred)."""
    x = np.frombuffer(a.bgra, np.uint8).reshape(-1, 4)[:, :3].astype(np.int16)
    y = np.frombuffer(b.bgra, np.uint8).reshape(-1, 4)[:, :3].astype(np.int16)
    return int((np.abs(x - y).max(axis=1) > 8).sum())


@pytest.mark.skipif(shutil.which("xfce4-terminal") is None, reason="XFCE is not installed")
def test_ctrl_alt_t_waits_for_the_terminal_it_opens() -> None:
    """The issue's case: the settle wait ended before the terminal's window had begun to map."""
    from env.sandbox import Sandbox

    with Sandbox(1280, 800, desktop="xfce") as box:
        before = box.screenshot()
        r = box.execute(Hotkey(keys=["ctrl", "alt", "t"]))
        seen = box.screenshot()  # what the model would be shown next
        assert r.ok and r.settle_reason == "settled", r
        assert box._x.find_window("terminal")
        assert _differ(before, seen) > 100_000  # the terminal is on it
        time.sleep(3)
        assert _differ(seen, box.screenshot()) < 1500  # and nothing big came after


def test_a_program_busy_before_its_first_pixel_is_waited_for(sandbox) -> None:  # type: ignore[no-untyped-def]
    """No pixel changes for 1.5 s after Enter while the program works: its CPU use is the sign."""
    sandbox.run(["sh", "-c", "cat > ~/late.py"], input=LATE.encode())
    sandbox.launch(["xterm", "-geometry", "80x24+0+0"])
    sandbox.wait_window("xterm")
    assert sandbox.execute(Click(point=Point.norm(0.1, 0.1))).ok  # focus it, as a user would
    r = sandbox.execute(TypeText(text="python3 ~/late.py &\n"))
    assert r.ok and r.settle_reason == "settled" and r.settle_s > 1.0, r
    assert sandbox._x.find_window("lateterm")


def test_a_no_op_ends_unchanged_and_soon(sandbox) -> None:  # type: ignore[no-untyped-def]
    time.sleep(0.5)  # the desktop's own start is not the action's
    r = sandbox.execute(KeyPress(key="shift"))
    assert r.ok and r.settle_reason in ("unchanged", "settled") and r.settled
    assert r.settle_s < sandbox.settle.timeout_s


def test_a_splash_screen_keeps_the_wait_going_until_it_goes(sandbox) -> None:  # type: ignore[no-untyped-def]
    from Xlib import X, display

    sandbox.settle = Settle(timeout_s=1.5)
    with authority(sandbox.xauthority):
        d = display.Display(sandbox.display)
    try:
        root = d.screen().root
        w = root.create_window(100, 100, 200, 100, 0, X.CopyFromParent)
        w.change_property(
            d.intern_atom("_NET_WM_WINDOW_TYPE"),
            d.intern_atom("ATOM"),
            32,
            [d.intern_atom("_NET_WM_WINDOW_TYPE_SPLASH")],
        )
        w.map()
        d.sync()
        deadline = time.monotonic() + 10
        while not (prop := root.get_full_property(d.intern_atom("_NET_CLIENT_LIST"), X.AnyPropertyType)) or (
            w.id not in prop.value
        ):
            assert time.monotonic() < deadline, "openbox never managed the splash window"
            time.sleep(0.05)
        r = sandbox.execute(KeyPress(key="shift"))
        assert r.settle_reason == "timeout" and not r.settled, r
        w.destroy()
        d.sync()
        time.sleep(0.5)
        r = sandbox.execute(KeyPress(key="shift"))
        assert r.settle_reason in ("unchanged", "settled"), r
    finally:
        d.close()


def test_processes_at_work_are_activity_and_idle_ones_are_not() -> None:
    watch = ProcessActivity(root=os.getpid())  # our children; ourselves never
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        watch.reset()
        time.sleep(0.2)
        assert watch.active()
    finally:
        busy.kill()
        busy.wait()
    watch.reset()
    time.sleep(0.2)
    assert not watch.active()


@pytest.mark.parametrize(
    "field, value",
    [("timeout_s", float("nan")), ("quiet_s", -1.0), ("sleep_after_s", float("inf")), ("react_s", "1")],
)
def test_settle_refuses_what_is_not_a_finite_wait(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"settle {field} must be a finite number"):
        Settle(**{field: value})  # type: ignore[arg-type]


def test_sleep_after_is_a_fixed_sleep_and_recorded(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "s.json"
    script.write_text(json.dumps([{"kind": "move", "point": {"x": 0.5, "y": 0.5}}, {"kind": "done"}]))
    out = tmp_path / "run"
    argv = ["t", "--script", str(script), "--out", str(out), "--size", "640x480", "--desktop-env", "minimal"]
    assert main([*argv, "--sleep-after", "0.4"]) == 0, capsys.readouterr().out
    moved = read_steps(out)[0].actions[0]
    assert moved.settle_reason == "fixed" and moved.settle_s >= 0.4
    for bad in ("nan", "-1", "61", "soon"):
        with pytest.raises(SystemExit) as refused:  # argparse's usage error
            main([*argv, "--sleep-after", bad])
        assert refused.value.code == 2
        assert f"expected seconds between 0 and 30, got '{bad}'" in capsys.readouterr().err


def test_our_server_waits_inside_the_sandbox_and_bounds_what_it_is_asked() -> None:
    """Through `/kimi/act` (what `bench osworld run` uses) the wait runs in the server, inside the
    sandbox, watching its processes: the busy program is waited for there too."""
    from env.osworld_client import OSWorldClient
    from env.served_sandbox import ServedSandbox
    from env.vm_desktop import VMDesktop

    with ServedSandbox(1280, 800, apps=[["xterm", "-geometry", "80x24+0+0"]], desktop="minimal") as served:
        box = served.sandbox
        box.run(["sh", "-c", "cat > ~/late.py"], input=LATE.encode())
        client = OSWorldClient(served.socket_url, token=served.token)
        for settle, why in (
            ({"sleep_after_s": 1000}, "settle.sleep_after_s must be a number in [0, 30]"),
            ({"react_s": -1}, "settle.react_s must be a number in [0, 30]"),
            ({"timeout_s": float("nan")}, "must be a finite number"),
            ({"interval": 1}, "unexpected keyword argument 'interval'"),
        ):
            r = client.request(
                "POST", "/kimi/act", json_body={"action": {"kind": "key", "key": "shift"}, "settle": settle}
            )
            # /kimi/act's own refusals say "error"; the body check before every route says "message".
            assert r.status == 400 and why in (r.json().get("error") or r.json()["message"]), r.text
        with VMDesktop(client) as vm:
            assert vm.fast and vm.execute(Click(point=Point.norm(0.1, 0.1))).ok
            r = vm.execute(TypeText(text="python3 ~/late.py &\n"))
        assert r.ok and r.settle_reason == "settled" and r.settle_s > 1.0, r
        assert box._x.find_window("lateterm")
