"""A private desktop: Xvfb + openbox with its own HOME and TMPDIR, driven through XTEST.

Every process it starts runs in a process group of its own (so the terminal's Ctrl-C does not
hit it) and is registered with a reaper process, which kills the groups if this process dies.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from env.actions import Action
from env.desktop import ActionResult, Frame
from env.drivers import XTestDriver
from env.executor import execute_and_settle
from env.geometry import ScreenGeometry
from env.settle import Settle


class SandboxError(RuntimeError):
    pass


class Sandbox:
    def __init__(
        self,
        width: int = 1920,
        height: int = 1080,
        apps: Sequence[Sequence[str]] = (),
        *,
        window_manager: Sequence[str] | None = ("openbox",),
        settle: Settle = Settle(),
        start_timeout_s: float = 10.0,
    ) -> None:
        for tool in ("Xvfb", *(window_manager or ())[:1]):
            if shutil.which(tool) is None:
                raise SandboxError(f"{tool} is not installed (Debian: apt-get install xvfb openbox)")
        self.settle = settle
        self._geometry = ScreenGeometry.plain(width, height)
        self.root = Path(tempfile.mkdtemp(prefix="kimi-sandbox-"))
        self.home = self.root / "home"
        for d in ("home", "tmp", "run"):
            (self.root / d).mkdir(mode=0o700)
        self._procs: list[subprocess.Popen[bytes]] = []
        self._closed = False
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "env.reaper"],
            stdin=subprocess.PIPE,
            start_new_session=True,
            cwd=str(Path(__file__).resolve().parent.parent),
        )
        self._tell_reaper(f"DIR {self.root}")
        try:
            self.display = self._start_xvfb(width, height, start_timeout_s)
            self.env = self._make_env()
            self._driver = XTestDriver(self.display)
            import mss

            self._mss = mss.MSS(display=self.display)
            if window_manager:
                self.launch(window_manager)
                # Apps started before the manager is up can end up unmanaged, without focus.
                self._wait(self._driver.has_window_manager, start_timeout_s, f"{window_manager[0]} to start")
            for argv in apps:
                self.launch(argv)
        except BaseException:
            self.close()
            raise

    # -- processes ---------------------------------------------------------------------------
    def _tell_reaper(self, line: str) -> None:
        assert self._reaper.stdin is not None
        self._reaper.stdin.write((line + "\n").encode())
        self._reaper.stdin.flush()

    def _spawn(self, argv: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(list(argv), start_new_session=True, **kw)  # type: ignore[call-overload]
        self._procs.append(p)
        self._tell_reaper(f"+{p.pid}")
        return p

    def _start_xvfb(self, width: int, height: int, timeout_s: float) -> str:
        r, w = os.pipe()
        try:
            self._spawn(
                ["Xvfb", "-displayfd", str(w), "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
                pass_fds=(w,),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=str(self.root),
            )
            os.close(w)
            w = -1
            # Xvfb writes the display number once it accepts connections: no blind sleeps.
            buf = b""
            deadline = time.monotonic() + timeout_s
            while not buf.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([r], [], [], left)[0]:
                    raise SandboxError(f"Xvfb did not start within {timeout_s:.0f} s")
                chunk = os.read(r, 16)
                if not chunk:
                    raise SandboxError("Xvfb exited before it was ready (is the screen size valid?)")
                buf += chunk
            return f":{int(buf)}"
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)

    def _make_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "DBUS_", "WAYLAND"))}
        env.update(
            DISPLAY=self.display,
            HOME=str(self.home),
            TMPDIR=str(self.root / "tmp"),
            XDG_RUNTIME_DIR=str(self.root / "run"),
            LANG="C.UTF-8",
            LC_ALL="C.UTF-8",
        )
        return env

    def launch(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start a program on this desktop (not waited for); it dies with the sandbox."""
        if shutil.which(argv[0], path=self.env.get("PATH")) is None:
            raise SandboxError(f"cannot start {argv[0]!r}: not found on PATH")
        return self._spawn(
            argv, env=self.env, cwd=str(self.home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def wait_window(self, name: str, timeout_s: float = 10.0) -> None:
        """Block until a viewable window whose WM_CLASS contains ``name`` (any case) exists."""
        self._wait(lambda: self._driver.find_window(name), timeout_s, f"a window of class {name!r}")

    @staticmethod
    def _wait(ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if time.monotonic() > deadline:
                raise SandboxError(f"timed out after {timeout_s:g} s waiting for {what}")
            time.sleep(0.02)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs] + [self._reaper.pid]

    # -- the Desktop protocol ------------------------------------------------------------------
    @property
    def geometry(self) -> ScreenGeometry:
        return self._geometry

    def screenshot(self) -> Frame:
        g = self._geometry
        shot = self._mss.grab({"left": 0, "top": 0, "width": g.width, "height": g.height})
        return Frame(shot.width, shot.height, bytes(shot.raw))

    def execute(self, action: Action) -> ActionResult:
        return execute_and_settle(action, self._driver, self._geometry, self.screenshot, self.settle)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for obj in ("_driver", "_mss"):
            if hasattr(self, obj):
                with contextlib.suppress(Exception):
                    getattr(self, obj).close()
        # Our children turn into zombies until waited for, so reap them here rather than
        # polling their groups (which would count zombies as alive).
        groups = {p.pid for p in self._procs}
        _signal_groups(groups, signal.SIGTERM)
        deadline = time.monotonic() + 1.0
        for p in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
        _signal_groups(groups, signal.SIGKILL)  # stragglers and grandchildren
        for p in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=1.0)
        if self._reaper.stdin:
            self._reaper.stdin.close()  # EOF: the reaper removes the directory and exits
        try:
            self._reaper.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._reaper.send_signal(signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()


def _signal_groups(pgids: set[int], sig: signal.Signals) -> None:
    for g in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(g, sig)
