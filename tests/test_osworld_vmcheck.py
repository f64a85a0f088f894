"""`kimi-agent bench osworld check-vm URL` against a real server: ours in OSWorld-only mode on a real
Xvfb display, its commands given a PATH without wmctrl and ffmpeg, so the checks that need
them fail with what to install (our server always provides a `python` with pyautogui, as OSWorld's
image must)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from env.osworld_client import OSWorldClient

REPO = Path(__file__).resolve().parent.parent
TOKEN = "a-token-of-twenty-chars"
pytestmark = pytest.mark.x11


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_vm_names_what_a_vm_lacks_and_what_to_install(tmp_path: Path) -> None:
    from env.sandbox import Sandbox

    bare = tmp_path / "bin"  # what the served commands find: a shell, nothing of what the client needs
    bare.mkdir()
    (bare / "sh").symlink_to(shutil.which("sh") or "/bin/sh")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with Sandbox(1280, 800, desktop=None) as box:
        env = {**os.environ, "XAUTHORITY": str(box.xauthority), "PATH": str(bare)}
        serve = [sys.executable, "-m", "tasks.cli", "serve", "--display", box.display, "--port", str(port)]
        proc = subprocess.Popen([*serve, "--osworld-only", "--token", TOKEN], cwd=REPO, env=env)
        try:
            with OSWorldClient(url, token=TOKEN) as c:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        c.screen_size()
                        break
                    except Exception:
                        assert time.monotonic() < deadline and proc.poll() is None, "serve did not start"
                        time.sleep(0.1)
            check = [sys.executable, "-m", "tasks.cli", "bench", "osworld", "check-vm", url]
            env = {**os.environ, "COLUMNS": "250", "KIMI_VM_TOKEN": TOKEN}
            r = subprocess.run(check, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
            refused = subprocess.run(
                [*check, "--vm-token", "x" * 24],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=20)
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.count("│") >= 3}
    assert r.returncode == 1, r.stdout + r.stderr
    assert "yes" in rows["screenshot"] and "a 1280x800 PNG" in rows["screenshot"]
    assert "yes" in rows["python with pyautogui"] and "pyautogui 0.9.54 Xlib" in rows["python with pyautogui"]
    assert "no" in rows["wmctrl"] and "install wmctrl" in rows["wmctrl"]
    assert "(optional)" in rows["recording"] and "install ffmpeg" in rows["recording"]
    assert "OSWorld's protocol only" in rows["kimi endpoints"]
    assert "missing: wmctrl (docs: osworld.md, 'What a VM image needs')" in r.stdout
    assert refused.returncode == 2 and "the token given: pass the right one with --vm-token" in refused.stdout
