"""What the client costs a server without /kimi (OSWorld's own) in screenshots, and that they stay fresh.

`kimi-agent serve --osworld-only` (a real process) serves a real Xvfb sandbox with Mousepad, whose text
caret blinks; a counting proxy (real HTTP on loopback) in front of it counts the client's requests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from counting_proxy import CountingProxy
from osworld_only import REPO, TOKEN, serve_osworld_only

from env.actions import Click, Hotkey, KeyPress, Point, TypeText, Wait
from env.osworld_client import OSWorldClient
from env.sandbox import Sandbox
from env.settle import Settle, changed_pixels
from env.vm_desktop import REUSE_S, VMDesktop

pytestmark = [pytest.mark.x11, pytest.mark.slow]


@dataclass
class Rig:
    box: Sandbox
    proxy: CountingProxy

    def shots(self) -> int:
        return self.proxy.counts()["/screenshot"]

    def desktop(self, settle: Settle = Settle()) -> VMDesktop:
        return VMDesktop(OSWorldClient(self.proxy.url, token=TOKEN), settle=settle)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with Sandbox(1280, 800, apps=[["mousepad"]], desktop="minimal", isolation=None) as box:
        box.wait_window("mousepad")
        with (
            serve_osworld_only(box.display, box.xauthority, tmp_path) as url,
            CountingProxy(url) as proxy,
        ):
            yield Rig(box, proxy)


def _caret_blinks(box: Sandbox) -> bool:
    """The screen changes by a few pixels with nothing done: Mousepad's caret (GTK blinks it for
    10 s after the last key)."""
    first = box.screenshot()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if 0 < changed_pixels(first, box.screenshot()) < 300:
            return True
    return False


def test_a_scripted_run_takes_at_most_two_screenshots_a_step(rig: Rig, tmp_path: Path) -> None:
    """Five steps (four actions and done), the CLI's whole run through the proxy: the start, every
    step's screenshot and wait, final.png. OSWorld's harness takes one a step; the client takes at
    most one more (it took 15 here before the settle's last look became the next step's screenshot)."""
    script = tmp_path / "steps.json"
    steps = [
        {"kind": "click", "point": {"x": 0.5, "y": 0.5}},
        {"kind": "type", "text": "hello there"},
        {"kind": "key", "key": "enter"},
        {"kind": "type", "text": "second line"},
        {"kind": "done"},
    ]
    script.write_text(json.dumps(steps))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tasks.cli", "type two lines", "--vm", rig.proxy.url, "--vm-token", TOKEN]
    done = subprocess.run(
        [*cmd, "--script", str(script), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    info = json.loads((out / "run.json").read_text())
    assert "OSWorld protocol" in info["desktop"]
    shots = rig.shots()
    print(f"/screenshot requests for {len(steps)} steps: {shots}; all requests: {dict(rig.proxy.counts())}")
    assert 0 < shots <= 2 * len(steps), rig.proxy.counts()
    assert rig.proxy.counts()["/execute"] == len(steps) - 1
    assert (out / "final.png").exists()


def test_a_blinking_caret_does_not_hold_a_step_to_its_timeout(rig: Rig) -> None:
    """Each action in Mousepad leaves its caret blinking; the wait ignores a change that small, so it
    ends long before a timeout of 20 s, at two looks at most."""
    with rig.desktop(Settle(timeout_s=20)) as vm:
        assert vm.execute(Click(point=Point.norm(0.5, 0.5))).ok
        for action in (TypeText(text="blink"), KeyPress(key="enter"), TypeText(text="and again")):
            assert _caret_blinks(rig.box), "Mousepad's caret should blink here"
            before = rig.shots()
            r = vm.execute(action)
            assert r.ok and r.settle_reason in ("settled", "unchanged"), r
            assert r.settle_s < 10, r
            vm.screenshot()  # the next step's: the wait's last look
            assert rig.shots() - before <= 2, rig.proxy.counts()


def test_the_screen_after_an_action_is_the_changed_one(rig: Rig) -> None:
    """Ctrl+O opens a dialog (a window mapping, drawn in several passes): the screenshot the model is
    shown next has it, and it is what the screen still shows seconds later."""
    with rig.desktop() as vm:
        assert vm.execute(Click(point=Point.norm(0.5, 0.5))).ok
        time.sleep(1.5)
        before = vm.screenshot()
        r = vm.execute(Hotkey(keys=["ctrl", "o"]))
        seen = vm.screenshot()
        assert r.ok and r.settle_reason == "settled", r
        time.sleep(3)
        late = rig.box.screenshot()
        assert changed_pixels(before, late) > 20_000  # the dialog came
        # ... and was seen: the next screenshot shows it, far nearer the screen seconds later than the
        # one before. Not pixel for pixel: GTK's file chooser may fill its file list after a second
        # of stillness (5824 pixels once in CI, 0.6 % of the screen), which pixels alone cannot foresee
        # (docs/osworld.md: what only pixels cannot show stays unseen).
        assert changed_pixels(seen, late) < changed_pixels(before, late) // 4, (r, changed_pixels(seen, late))
        assert vm.execute(KeyPress(key="escape")).ok
        asked = rig.shots()
        assert changed_pixels(vm.screenshot(), before) < 1500  # gone again, and the next screenshot says so
        vm.screenshot()
        assert rig.shots() == asked  # both were the wait's last look
        time.sleep(REUSE_S + 0.5)
        vm.screenshot()
        assert rig.shots() == asked + 1  # a look that old is not handed out again
        assert vm.execute(Wait(seconds=0.1)).ok
        vm.screenshot()
        assert rig.shots() == asked + 2  # nor one from before an action
