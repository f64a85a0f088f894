"""Sandboxes: real Xvfb, real xterm, and no process left behind however the parent ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from env.actions import Click, KeyPress, Point, TypeText

ROOT = Path(__file__).resolve().parent.parent


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait() is missing


def _wait_gone(pids: list[int], timeout: float = 8.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _wait_file(path: Path, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(encoding="utf-8").endswith("\n"):
            return path.read_text(encoding="utf-8")
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written")


def test_xterm_types_unicode_exactly(sandbox) -> None:
    term = sandbox.launch(["xterm", "-geometry", "80x24+0+0"])
    sandbox.wait_window("xterm")
    assert term.poll() is None
    assert sandbox.execute(Click(point=Point.norm(0.1, 0.1))).ok  # focus it, as a user would
    env = {"DISPLAY": sandbox.display, "PATH": os.environ["PATH"]}
    subprocess.run(
        ["xclip", "-selection", "clipboard", "-i"], input=b"the user's clipboard", env=env, check=True
    )
    assert sandbox.execute(TypeText(text="echo 'héllo wörld ✓ 你好' > ~/out.txt")).ok
    assert sandbox.execute(KeyPress(key="enter")).ok
    assert _wait_file(sandbox.home / "out.txt") == "héllo wörld ✓ 你好\n"
    restored = subprocess.run(
        ["xclip", "-selection", "clipboard", "-o"], env=env, capture_output=True, check=True
    )
    assert restored.stdout == b"the user's clipboard"  # pasting did not clobber it


def test_sandbox_has_its_own_home_and_tmp(sandbox) -> None:
    assert sandbox.env["HOME"] == str(sandbox.home) and sandbox.home.is_dir()
    assert sandbox.env["TMPDIR"] != os.environ.get("TMPDIR") and Path(sandbox.env["TMPDIR"]).is_dir()
    assert sandbox.env["DISPLAY"] != os.environ.get("DISPLAY")


def test_every_process_dies_when_the_parent_is_sigkilled(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json, sys, time
        from env.sandbox import Sandbox
        boxes = [Sandbox(640, 480, apps=[["xterm"]]) for _ in range(3)]
        print(json.dumps({"pids": [p for b in boxes for p in b.pids], "roots": [str(b.root) for b in boxes]}), flush=True)
        time.sleep(600)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=ROOT, text=True)
    info = json.loads(child.stdout.readline())
    assert len(info["pids"]) == 3 * 4  # Xvfb, openbox, xterm, reaper per sandbox
    assert all(_alive(p) for p in info["pids"])
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert _wait_gone(info["pids"]) == []
    assert not any(Path(r).exists() for r in info["roots"])


def test_every_process_dies_after_an_exception() -> None:
    from env.sandbox import Sandbox

    with pytest.raises(RuntimeError, match="boom"), Sandbox(640, 480, apps=[["xterm"]]) as box:
        pids, root = box.pids, box.root
        assert all(_alive(p) for p in pids)
        raise RuntimeError("boom")
    assert _wait_gone(pids) == []
    assert not root.exists()


def test_several_sandboxes_at_once_are_independent() -> None:
    from env.sandbox import Sandbox

    with Sandbox(640, 480) as a, Sandbox(800, 600) as b:
        assert a.display != b.display
        assert (a.screenshot().width, b.screenshot().width) == (640, 800)


def test_missing_app_is_a_clear_error(sandbox) -> None:
    from env.sandbox import SandboxError

    with pytest.raises(SandboxError, match="cannot start 'no-such-app-xyz'"):
        sandbox.launch(["no-such-app-xyz"])
