"""Fixtures that give tests real X displays (Xvfb) and real apps; nothing here is mocked."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # helper modules next to the tests (tiny_kimi, fake servers)

NO_XVFB = "Xvfb is not installed (Debian: apt-get install xvfb)"


def pytest_configure(config: pytest.Config) -> None:
    # The Ctrl-C tests need SIGINT to raise KeyboardInterrupt, here and in the programs they start. A
    # shell that runs a command in the background without job control (`bash .ci/run &` in a script)
    # starts it with SIGINT ignored, which Python keeps and children inherit across exec.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    config.addinivalue_line("markers", "x11: needs Xvfb; skipped where it is not installed")
    config.addinivalue_line(
        "markers", "may_skip_in_ci: its skip depends on the host (cgroups, mounts), not on an install step"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI (CI=true, as .ci/run runs) a skipped test fails: there a skip for a missing program or
    package means .ci/setup lacks an install step, which a hand-set machine would hide."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") == "true" and report.skipped and not item.get_closest_marker("may_skip_in_ci"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where .ci/setup should have installed what it needs: {reason}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if shutil.which("Xvfb") is None:
        for item in items:
            if item.get_closest_marker("x11"):
                item.add_marker(pytest.mark.skip(reason=NO_XVFB))


@pytest.fixture
def desktop_env() -> str:
    """The sandbox fixture's desktop; a module overrides this fixture to run on others too."""
    return "minimal"


@pytest.fixture
def sandbox(desktop_env: str) -> Iterator[object]:
    if shutil.which("Xvfb") is None:
        pytest.skip(NO_XVFB)
    from env.sandbox import Sandbox

    with Sandbox(1280, 800, desktop=desktop_env) as box:  # type: ignore[arg-type]
        yield box


@pytest.fixture(scope="session")
def local_display() -> Iterator[str]:
    """A bare Xvfb display posing as "the local desktop", so LocalDesktop tests never touch a real
    screen. pyautogui binds $DISPLAY once per process, when imported: it must not be yet."""
    if shutil.which("Xvfb") is None:
        pytest.skip(NO_XVFB)
    if "pyautogui" in sys.modules:
        pytest.fail("pyautogui was imported before the local_display fixture could set DISPLAY")
    from env.sandbox import Sandbox

    with Sandbox(1280, 800, desktop=None) as box:
        os.environ["DISPLAY"] = box.display
        os.environ["XAUTHORITY"] = str(box.xauthority)  # as a logged-in user's session has it
        yield box.display


class ClickPad:
    """The Tk event recorder (tests/clickpad.py) running on a display."""

    def __init__(self, display: str, tmp: Path, xauthority: Path | None = None) -> None:
        self.log = tmp / "events.jsonl"
        self.log.touch()
        env = {**os.environ, "DISPLAY": display}
        if xauthority is not None:
            env["XAUTHORITY"] = str(xauthority)
        self.proc = subprocess.Popen([sys.executable, str(HERE / "clickpad.py"), str(self.log)], env=env)
        self.wait_for(lambda ev: ev["kind"] == "ready", what="the click pad window")
        self.clear()

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def wait_for(self, pred, what: str = "an event", timeout: float = 5.0) -> dict:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in self.events():
                if pred(ev):
                    return ev
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; got {self.events()[-5:]}")

    def clear(self) -> None:
        self.log.write_text("")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def clickpad_on(tmp_path: Path) -> Iterator[object]:
    pads: list[ClickPad] = []

    def start(where: str | Any) -> ClickPad:
        """On a display name (with $XAUTHORITY), or on a sandbox (with its cookie)."""
        if isinstance(where, str):
            pads.append(ClickPad(where, tmp_path))
        else:
            pads.append(ClickPad(where.display, tmp_path, where.xauthority))
        return pads[-1]

    yield start
    for p in pads:
        p.close()


@pytest.fixture
def kept_sandboxes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where sandboxes made during the test go ($TMPDIR): with --keep their /home/user stays for the
    test to read (``kept_home``). Open to others, as a sandbox's own user must reach it."""
    d = Path(tempfile.mkdtemp(prefix="kimi-test-"))
    d.chmod(0o755)
    monkeypatch.setenv("TMPDIR", str(d))
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def kept_home(where: Path) -> Path:
    """The /home/user of the newest sandbox kept under ``where``."""
    boxes = sorted(where.glob("kimi-sandbox-*"), key=lambda p: p.stat().st_mtime)
    assert boxes, f"no sandbox was kept in {where}"
    return boxes[-1] / "home"


@pytest.fixture(scope="session")
def tiny_kimi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Kimi-VL checkpoint in the official layout (see tests/tiny_kimi.py)."""
    from tiny_kimi import write_tiny_kimi

    return write_tiny_kimi(tmp_path_factory.mktemp("tiny-kimi-vl"))


@pytest.fixture(scope="session")
def llamafactory_python() -> Path:
    """The python of the real LLaMA-Factory 0.9.5's venv (.cache/llamafactory, see
    tests/llamafactory/build_env.py), built on first use; .ci/setup builds it, so CI never skips."""
    sys.path.insert(0, str(HERE / "llamafactory"))
    from build_env import BuildError, build

    try:
        return build()
    except BuildError as e:
        pytest.skip(f"LLaMA-Factory's venv cannot be built: {e}")
