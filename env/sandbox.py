"""A private desktop: Xvfb plus a desktop environment (XFCE, or bare openbox), its programs walled
off from the host by bubblewrap (env/isolation.py) and started by a supervisor inside
(env/sandbox_init.py), driven through XTEST.

Everything the sandbox writes lives in its own directory (``home`` is /home/user inside, ``tmp`` is
/tmp), removed at close unless ``keep``. A reaper process started before anything else kills what
is left and removes the directory if this process dies, SIGKILL included; bubblewrap's
--die-with-parent takes the sandbox's namespaces down with it too.

Paths the host uses in the sandbox's directory (the host may be root; anything the sandbox can
write is hostile). Audit for issue 18: each one, and why nothing inside can redirect it.
- ``root`` itself (``xauth-server``, ``screen.png`` of the CLI) and ``ctl`` (/run/kimi inside): the
  host's own, 0710 to the sandbox's group when it has a uid of its own, and ``ctl`` is bound
  read-only inside, so no name in them can change (the sandbox sees ``root`` itself read-only or
  not at all). Made there: the X cookie, passwd and group, the supervisor's source and its stderr
  (``sandbox.log``), ``control_file()`` (the server's token), launch()'s logs, and the OSWorld
  server's listening socket (env/served_sandbox.py), which the host creates and binds itself and
  hands to the server as an open file: the host only ever connects to that socket. Files are
  created with O_EXCL|O_NOFOLLOW and chowned through their descriptor (isolation.new_file).
- What programs inside read or write for the host (launch()'s stderr, run()'s stdin, stdout and
  stderr) reach them as open files the host made (env/supervisor.py sends them over SCM_RIGHTS);
  run()'s are unnamed (O_TMPFILE), read back through the host's own descriptor.
- ``home``, ``tmp``, ``run`` (the sandbox's to change): the host writes there only before the
  sandbox starts (prepare_home, chown_tree's lchown), asks whether openbox's ready file exists
  without following it (lexists), and removes the directory at close once every process inside
  is dead, with shutil.rmtree, which does not follow links (nor does the reaper's).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from env import image
from env.actions import Action
from env.activity import Activity, ProcessActivity, XActivity
from env.capture import Grabber, open_mss
from env.desktop import ActionResult, Frame
from env.desktops import DesktopName, DesktopSpec, missing, prepare_home, spec
from env.drivers import HeldInputs, XTestDriver
from env.executor import execute_and_settle
from env.geometry import ScreenGeometry
from env.isolation import (
    CONTROL_DIR,
    HOME,
    HOSTNAME,
    RUNTIME_DIR,
    CGroup,
    Isolation,
    IsolationError,
    bwrap_argv,
    chown_tree,
    join_cgroup_argv,
    limits_argv,
    make_cgroup,
    new_file,
    runtime_binds,
    sandbox_env,
    sandbox_uid,
    unreachable_by_others,
    write_new_file,
)
from env.reaper import kill_cgroup, kill_marked
from env.settle import Settle, wait_until_settled
from env.supervisor import SandboxProcess, Supervisor, SupervisorError, init_argv
from env.xauth import authority, new_cookie, write_authority

MARKER_VAR = "KIMI_SANDBOX_ID"
READY_DIR, READY_FILE = "$KIMI_RUN", "wm-ready"  # openbox's ready file, in the runtime directory
BUS_VAR, BUS_NAME = "DBUS_SESSION_BUS_ADDRESS", "bus"  # the session bus's socket, in the runtime directory
log = logging.getLogger(__name__)


class SandboxError(RuntimeError):
    pass


class SandboxTimeout(SandboxError):
    """A program run() ran past its timeout; it was killed with its group."""


@dataclass(frozen=True)
class RunOutput:
    """What run_capped() got back: at most the cap of each stream, and how much each held in all."""

    returncode: int
    stdout: bytes
    stderr: bytes
    stdout_size: int  # bytes the program wrote to stdout; more than len(stdout) when capped
    stderr_size: int


class Sandbox:
    """``apps`` (argv lists) start once the desktop is up, and the constructor returns once each
    has shown a window and the screen has settled, so the first screenshot shows them. An app that
    fails (exits non-zero) before showing a window is a SandboxError; one that exits cleanly
    without a window, or shows none within ``start_timeout_s``, is a line in ``warnings``.
    ``launch`` starts more programs later, without waiting.

    ``desktop``: "xfce" (a full light desktop), "minimal" (bare openbox) or None (no window
    manager). ``isolation``: the walls and limits (None: programs run as this user, with a private
    HOME and TMPDIR only; for machines without user namespaces). ``keep``: leave the sandbox's
    directory behind at close; ``parent_dir`` is where it is made."""

    def __init__(
        self,
        width: int = 1920,
        height: int = 1080,
        apps: Sequence[Sequence[str]] = (),
        *,
        depth: int = 24,
        desktop: DesktopName | None = "xfce",
        isolation: Isolation | None = Isolation(),
        keep: bool = False,
        parent_dir: Path | None = None,
        settle: Settle = Settle(),
        start_timeout_s: float = 10.0,
    ) -> None:
        if shutil.which("Xvfb") is None:
            raise SandboxError("Xvfb is not installed (Debian: apt-get install xvfb)")
        if width < 1 or height < 1:
            raise SandboxError(f"screen size must be positive, got {width}x{height}")
        desk = spec(desktop, f"{READY_DIR}/{READY_FILE}") if desktop else None
        if desk is not None and (why := missing(desk)):
            raise SandboxError(f"{why}; or use a lighter desktop (--desktop-env minimal)")
        if isolation is not None:
            try:
                isolation.check()
            except IsolationError as e:
                raise SandboxError(str(e)) from None
        parent = Path(parent_dir or tempfile.gettempdir()).resolve()
        if isolation is not None and os.geteuid() == 0 and (closed := unreachable_by_others(parent)):
            raise SandboxError(
                f"the sandbox runs as a user of its own, who cannot reach {parent} "
                f"({closed} has no o+x): choose a sandbox directory under /tmp, or chmod o+x {closed}"
            )
        self.settle = settle
        self.isolation = isolation
        self.keep = keep
        self._geometry = ScreenGeometry.plain(width, height)
        self._closed = False
        self._procs: list[subprocess.Popen[bytes]] = []  # host processes: Xvfb, the supervisor
        self._logs: dict[int, Path] = {}  # pid -> stderr of a program started with launch()
        self._launches = itertools.count()  # numbers the log files, failed starts included
        self._cgroup: CGroup | None = None
        self._uid: int | None = None  # the host uid the sandbox runs as, when not ours
        self.warnings: list[str] = []
        self.title_aliases: dict[str, str] = {}  # window titles its server matches in place of others
        # The reaper first, and the directory's name to it before the directory exists: a SIGKILL
        # at any moment after this leaves nothing behind.
        package_parent = str(Path(__file__).resolve().parent.parent)
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "env.reaper"],
            stdin=subprocess.PIPE,
            start_new_session=True,
            cwd=package_parent,
            env={**os.environ, "PYTHONPATH": package_parent},
        )
        self.root = parent / f"kimi-sandbox-{secrets.token_hex(6)}"
        self._marker = f"{MARKER_VAR}={self.root}"
        if not keep:
            self._tell_reaper(f"DIR {self.root}")
        self._tell_reaper(f"MARK {self._marker}")
        try:
            self.root.mkdir(mode=0o700)
            self.home = self.root / "home"
            for d in ("home", "tmp", "run", "ctl"):
                (self.root / d).mkdir(mode=0o700)
            (self.root / "tmp").chmod(0o1777)
            self._ctl = self.root / "ctl"
            self.xauthority = self._ctl / "Xauthority"
            self._start(width, height, depth, desk, apps, start_timeout_s)
        except BaseException:
            self.close()
            raise

    def _start(
        self,
        width: int,
        height: int,
        depth: int,
        desk: DesktopSpec | None,
        apps: Sequence[Sequence[str]],
        timeout_s: float,
    ) -> None:
        cookie = new_cookie()
        server_auth = self.root / "xauth-server"  # outside what the sandbox can see
        write_authority(server_auth, cookie)
        self.display = self._start_xvfb(width, height, depth, server_auth, timeout_s)
        write_authority(self.xauthority, cookie, int(self.display[1:]), also_hosts=(HOSTNAME,))
        iso = self.isolation
        if iso:
            self.env = sandbox_env(self.display, f"{CONTROL_DIR}/Xauthority", (MARKER_VAR, str(self.root)))
        else:
            self.env = sandbox_env(
                self.display,
                str(self.xauthority),
                (MARKER_VAR, str(self.root)),
                home=str(self.home),
                tmp=str(self.root / "tmp"),
                runtime_dir=str(self.root / "run"),
            )
        # OSWorld's image: google-chrome, default applications; and one session bus for everything.
        parts = image.prepare(
            self._ctl, self.inside(self._ctl), isolated=iso is not None, home=self.env["HOME"]
        )
        self.title_aliases = parts.title_aliases
        self.env.update(parts.env)
        self.env["PATH"] = ":".join([*parts.path, self.env["PATH"]])
        self.env[BUS_VAR] = f"unix:path={self.env['XDG_RUNTIME_DIR']}/{BUS_NAME}"
        prepare_home(self.home, desk.name if desk else None)
        self._start_supervisor(int(self.display[1:]), parts.binds)
        self._x = XTestDriver(self.display, self.xauthority)
        self._inputs = HeldInputs(self._x)
        with authority(self.xauthority):
            self._sct = open_mss(self.display)
        self._grabber = Grabber(self._sct, (0, 0, width, height))
        # What the settle wait watches besides pixels: windows, and the processes inside (Xvfb,
        # which our own grabs keep busy, is not one of them).
        self._signals: list[Activity] = [
            XActivity(self.display, self.xauthority),
            ProcessActivity(self._supervisor.proc.pid),
        ]
        self._start_bus(timeout_s)
        if desk is not None:
            argv = [a.replace(READY_DIR, self.inside(self.root / "run")) for a in desk.command]
            self._start_desktop(desk, argv, timeout_s)
        # Once the apps show their windows and the screen settles, the first screenshot shows it.
        self._wait_for_apps([(argv, self.launch(argv)) for argv in apps], timeout_s)

    # -- processes ---------------------------------------------------------------------------
    def _tell_reaper(self, line: str) -> None:
        assert self._reaper.stdin is not None
        self._reaper.stdin.write((line + "\n").encode())
        self._reaper.stdin.flush()

    def _spawn_host(self, argv: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(list(argv), start_new_session=True, **kw)  # type: ignore[call-overload]
        self._procs.append(p)
        self._tell_reaper(f"+{p.pid}")
        return p

    def start_helper(
        self,
        argv: Sequence[str],
        *,
        stdin: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path,
    ) -> subprocess.Popen[bytes]:
        """A program on the host that serves this sandbox (its live view's VNC server and websocket
        proxy): in a process group of its own, carrying the sandbox's marker, watched by the
        reaper, so it ends at close() at the latest, or with us. Its output goes nowhere; ``stdin``
        is an open file of ours (a listening socket, inetd-style)."""
        if self._closed:
            raise SandboxError("the sandbox is closed")
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        return self._spawn_host(
            argv,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**base, **(env or {}), MARKER_VAR: str(self.root)},
            cwd=str(cwd),
        )

    def helper_dir(self, name: str) -> Path:
        """A new directory of the host's for a helper's files (its sockets, a token file): in the
        sandbox's own directory, so it goes with it (the reaper's removal included), and 0700, so
        the sandbox's user cannot enter it. Nothing inside can give it access it lacks: without a
        user of its own the sandbox runs as us anyway, and what a helper serves it (its own screen)
        it can already see."""
        if not name or name in (".", "..", "home", "tmp", "run", "ctl") or "/" in name:
            raise SandboxError(f"a helper directory's name is one new path component, not {name!r}")
        path = self.root / name
        try:
            path.mkdir(mode=0o700)
        except OSError as e:
            raise SandboxError(f"cannot make {path}: {e.strerror or e}") from None
        return path

    def stop_helper(self, p: subprocess.Popen[bytes], grace_s: float = 1.0) -> None:
        """End a program start_helper() started, with its process group, and forget it."""
        if p.returncode is not None:
            return  # reaped already (close() ended it): its group id may belong to a stranger now
        if p.poll() is None:
            _signal_groups({p.pid}, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=grace_s)
        _signal_groups({p.pid}, signal.SIGKILL)  # forked children (websockify's) too
        p.wait()
        if p in self._procs:
            self._procs.remove(p)
            with contextlib.suppress(OSError):
                self._tell_reaper(f"-{p.pid}")  # waited for: its pid may be reused by a stranger

    def _start_xvfb(self, width: int, height: int, depth: int, auth: Path, timeout_s: float) -> str:
        r, w = os.pipe()
        try:
            xvfb = self._spawn_host(
                [
                    *("Xvfb", "-displayfd", str(w), "-screen", "0", f"{width}x{height}x{depth}"),
                    *("-auth", str(auth), "-nolisten", "tcp", "-noreset"),
                    *("-s", "0", "-dpms"),  # no screen saver: an idle desktop must not go blank
                ],
                pass_fds=(w,),
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), MARKER_VAR: str(self.root)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=str(self.root),
            )
            os.close(w)
            w = -1
            # Xvfb picks a free display itself and writes its number once it accepts connections.
            buf = b""
            deadline = time.monotonic() + timeout_s
            while not buf.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([r], [], [], left)[0]:
                    raise SandboxError(f"Xvfb did not start within {timeout_s:g} s")
                chunk = os.read(r, 16)
                if not chunk:
                    code = xvfb.wait(timeout=1)
                    raise SandboxError(
                        f"Xvfb exited with status {code} before it was ready "
                        f"(is {width}x{height}x{depth} a valid screen?)"
                    )
                buf += chunk
            return f":{int(buf)}"
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)

    def _start_bus(self, timeout_s: float) -> None:
        """The session bus every program inside shares (the desktop, what the server starts), at
        $XDG_RUNTIME_DIR/bus as on OSWorld's Ubuntu image; D-Bus activates dconf on it, so what
        gsettings sets persists. It dies with the sandbox like any program inside."""
        if shutil.which("dbus-daemon") is None:
            del self.env[BUS_VAR]
            self._warn("no session bus (Debian: apt-get install dbus-daemon): gsettings does not persist")
            return
        self.launch(["dbus-daemon", "--session", "--nofork", "--nopidfile", f"--address={self.env[BUS_VAR]}"])
        bus = self.root / "run" / BUS_NAME  # the sandbox's to write: looked at, never followed
        self._wait(lambda: os.path.lexists(bus), timeout_s, "the session bus", poll_s=0.005)

    def _start_supervisor(self, display_number: int, binds: Sequence[tuple[Path, Path]] = ()) -> None:
        """The supervisor, inside bubblewrap under the limits when isolated: every program the
        sandbox runs is its child, so all share its namespaces, cgroup and limits."""
        iso = self.isolation
        prefix: list[str] = []
        if iso is not None:
            self._uid = uid = sandbox_uid()
            self._cgroup, why = make_cgroup(self.root.name, iso)
            if self._cgroup is None:
                self._warn(
                    f"no memory or process-count cgroup for this sandbox ({why}); "
                    "only the per-user process limit applies"
                )
            else:
                for d in self._cgroup.dirs:
                    self._tell_reaper(f"CGROUP {d}")
            runtime, stage = runtime_binds(self.root, uid)
            chown_tree(self.root, uid)
            if uid is not None:  # its user reads the cookie; ctl is ours, and nothing runs inside yet
                os.chown(self.xauthority, uid, uid, follow_symlinks=False)
            x_socket = Path(f"/tmp/.X11-unix/X{display_number}")
            bwrap = bwrap_argv(iso, self.root, x_socket, runtime=[*runtime, *binds])
            prefix = [
                *join_cgroup_argv(self._cgroup),
                *limits_argv(iso, uid, before_drop=stage),
                *bwrap,
                *("--chdir", HOME, "--"),
            ]
        errors = self._ctl / "sandbox.log"
        channel, theirs = socket.socketpair()  # requests, with the files they send (SCM_RIGHTS)
        with open(errors, "wb") as err, theirs:
            proc = self._spawn_host(
                [*prefix, *init_argv(self._ctl, self.inside(self._ctl), iso is not None)],
                stdin=theirs.fileno(),
                stdout=subprocess.PIPE,
                stderr=err,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), MARKER_VAR: str(self.root)},
                cwd=str(self.root),
            )
        self._supervisor = Supervisor(proc, channel)
        try:
            self._supervisor.sessions()  # answers once it runs: bubblewrap set up the namespaces
        except SupervisorError:
            proc.wait(timeout=5)
            said = errors.read_text(errors="replace").strip().splitlines()
            raise SandboxError(
                f"the sandbox did not start (exit status {proc.returncode}"
                + (f": {said[-1][:200]}" if said else "")
                + "); does this machine allow user namespaces? else use --no-isolation"
            ) from None

    def inside(self, path: Path) -> str:
        """A host path in the sandbox's directory as programs inside see it."""
        if self.isolation is None:
            return str(path)
        rel = path.relative_to(self.root)
        top = {"home": HOME, "tmp": "/tmp", "run": RUNTIME_DIR, "ctl": CONTROL_DIR}[rel.parts[0]]
        return str(Path(top, *rel.parts[1:]))

    def _start_desktop(self, desk: DesktopSpec, argv: list[str], timeout_s: float) -> None:
        name = desk.name
        self.launch(argv)
        if name == "minimal":
            ready = self.root / "run" / READY_FILE  # the sandbox's to write: looked at, never followed
            self._wait(lambda: os.path.lexists(ready), timeout_s, "openbox to start", poll_s=0.005)
            return
        self._wait(self._x.has_window_manager, timeout_s, f"the {name} window manager", poll_s=0.01)
        for cls in desk.ready_windows:
            self._wait(lambda c=cls: self._x.find_window(c), timeout_s, f"the {name} {cls}", poll_s=0.01)

    def launch(
        self, argv: Sequence[str], extra_env: Mapping[str, str] | None = None, *, stdin: int | None = None
    ) -> SandboxProcess:
        """Start a program on this desktop (not waited for); it dies with the sandbox.
        ``extra_env`` adds to the sandbox's environment for this program only; ``stdin``: an open
        file descriptor of ours it gets as its standard input (a listening socket, inetd-style)."""
        if not argv:
            raise SandboxError("cannot start a program from an empty command line")
        # Its stderr goes to a file of ours, to quote when it fails at start; it gets the file.
        log_path = self._ctl / f"{next(self._launches)}-{Path(argv[0]).name}.log"
        try:
            log = new_file(log_path)
        except OSError as e:
            raise SandboxError(f"cannot make {log_path}: {e.strerror or e}") from None
        try:
            p = self._spawn(argv, stdin=stdin, stderr=log, extra_env=extra_env)
        finally:
            os.close(log)
        self._logs[p.pid] = log_path
        return p

    def _spawn(
        self,
        argv: Sequence[str],
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> SandboxProcess:
        """Streams are open files of ours (None: /dev/null): the program gets copies, never a
        path to open."""
        try:
            p = self._supervisor.spawn(
                argv,
                {**self.env, **(extra_env or {})},
                cwd=self.inside(self.home),
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
            )
        except SupervisorError as e:
            raise SandboxError(str(e)) from None
        if self.isolation is None:
            self._tell_reaper(f"+{p.pid}")  # no pid namespace to take it down: watch its group
        return p

    def _wait_for_apps(self, apps: list[tuple[Sequence[str], SandboxProcess]], timeout_s: float) -> None:
        """Wait until every app shows a window (one owned by it or by a process of its session, as
        a launcher's child would be), then until the screen settles: until then step 1 would see
        a black screen."""
        waiting = list(apps)
        deadline = time.monotonic() + timeout_s
        while waiting:
            sessions = self._supervisor.sessions()
            shown = {sessions.get(_inner_pid(pid), -1) for pid in self._x.window_pids()}
            for argv, p in list(waiting):
                if p.pid in shown:
                    waiting.remove((argv, p))
                elif p.poll() is not None and p.pid not in self._supervisor.sessions().values():
                    # A snapshot taken after the exit was seen: one taken before it can list /proc
                    # before a launcher forks its app and then find the launcher a zombie, so that
                    # neither shows (a busy machine did that; the app came up a moment later).
                    waiting.remove((argv, p))
                    self._app_ended_without_window(argv, p)
            if waiting and time.monotonic() > deadline:
                for argv, _ in waiting:
                    self._warn(f"{shlex.join(argv)} showed no window within {timeout_s:g} s")
                break
            time.sleep(0.02)
        for watch in self._signals:
            watch.reset()
        waited = wait_until_settled(self.screenshot, self.settle, self._signals)
        if not waited.settled and self.settle.timeout_s > 0:  # 0: settling switched off
            self._warn(
                f"the screen was still changing {waited.seconds:.1f} s after the desktop and apps showed"
            )

    def _app_ended_without_window(self, argv: Sequence[str], p: SandboxProcess) -> None:
        what = f"{shlex.join(argv)} exited with status {p.returncode} before showing a window"
        if p.returncode == 0:
            self._warn(what)
            return
        last = self.last_log_line(p)
        raise SandboxError(f"{what}: {last}" if last else what)

    def last_log_line(self, p: SandboxProcess) -> str:
        """The last line a program started with launch() wrote to stderr (at most 200 characters)."""
        try:
            with open(self._logs[p.pid], "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 65536))  # the program chose its size
                logged = f.read().decode(errors="replace")
        except (KeyError, OSError):
            return ""
        return next((line.strip() for line in reversed(logged.splitlines()) if line.strip()), "")[:200]

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("sandbox %s: %s", getattr(self, "display", "?"), message)

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout_s: float = 10.0
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a command on this desktop to completion (xdotool, xclip, a shell line) and return
        its output; killed with its group if it runs past ``timeout_s`` (SandboxTimeout). What it
        leaves running (xclip's selection server) lives until close()."""
        out = self.run_capped(argv, input=input, timeout_s=timeout_s)
        return subprocess.CompletedProcess(list(argv), out.returncode, out.stdout, out.stderr)

    def run_capped(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout_s: float = 10.0,
        max_output_bytes: int | None = None,
    ) -> RunOutput:
        """run(), reading back at most ``max_output_bytes`` of each stream (None: all of it), and
        saying how much there was: a command's output is the sandbox's to size, not ours."""
        if not argv:
            raise SandboxError("cannot run an empty command line")
        # Files, not pipes: a daemon it forks (xclip) would hold a pipe open and stall a read to EOF.
        # Unnamed files of ours (O_TMPFILE): the program gets them open; nothing to follow or swap.
        with contextlib.ExitStack() as files:
            fin, fout, ferr = (files.enter_context(tempfile.TemporaryFile(dir=self.root)) for _ in range(3))
            fin.write(input or b"")
            fin.flush()
            fin.seek(0)
            p = self._spawn(argv, stdin=fin.fileno(), stdout=fout.fileno(), stderr=ferr.fileno())
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
                raise SandboxTimeout(f"{shlex.join(argv)} did not finish within {timeout_s:g} s") from None
            finally:
                self._forget(p)
            return RunOutput(
                p.returncode or 0,
                _read_all(fout, max_output_bytes),
                _read_all(ferr, max_output_bytes),
                os.fstat(fout.fileno()).st_size,
                os.fstat(ferr.fileno()).st_size,
            )

    def control_file(self, name: str, data: bytes = b"") -> Path:
        """A file in the sandbox's control directory (``/run/kimi`` inside, read-only there) that
        only the sandbox's user and we can read: how a secret (a server's token) reaches a program
        inside. A file of that name already there is replaced."""
        if not name or name in (".", "..") or "/" in name:
            raise SandboxError(f"a control file's name is one path component, not {name!r}")
        path = self._ctl / name
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        try:
            write_new_file(path, data, 0o600, self._uid)
        except OSError as e:
            raise SandboxError(f"cannot make {path}: {e.strerror or e}") from None
        return path

    def _forget(self, p: SandboxProcess) -> None:
        if self.isolation is None:
            self._tell_reaper(f"-{p.pid}")  # waited for: its pid may be reused by a stranger

    def wait_window(self, name: str, timeout_s: float = 10.0) -> None:
        """Block until a window whose WM_CLASS contains ``name`` (any case) is managed/viewable."""
        self._wait(lambda: self._x.find_window(name), timeout_s, f"a window of class {name!r}")

    @staticmethod
    def _wait(ready: Callable[[], object], timeout_s: float, what: str, poll_s: float = 0.02) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if time.monotonic() > deadline:
                raise SandboxError(f"timed out after {timeout_s:g} s waiting for {what}")
            time.sleep(poll_s)

    def processes(self) -> int:
        """How many processes run inside (all of the host's, without isolation)."""
        return len(self._supervisor.sessions())

    @property
    def pids(self) -> list[int]:
        """Host pids of what this sandbox runs directly (Xvfb, the supervisor), and its reaper."""
        return [p.pid for p in self._procs] + [self._reaper.pid]

    @property
    def marker(self) -> str:
        """``NAME=VALUE`` in the environment of every process started on this desktop."""
        return self._marker

    # -- the Desktop protocol ------------------------------------------------------------------
    @property
    def geometry(self) -> ScreenGeometry:
        return self._geometry

    def screenshot(self) -> Frame:
        return self._grabber.grab()

    def execute(self, action: Action) -> ActionResult:
        return execute_and_settle(
            action, self._inputs, self._geometry, self.screenshot, self.settle, self._signals
        )

    def release_held(self) -> None:
        """Release every key and button the run pressed and has not released (a key_down)."""
        self._inputs.release_all()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if hasattr(self, "_inputs"):
            self.release_held()  # the display dies next, but a long-lived sandbox may be reused
        for obj in ("_x", "_sct"):
            if hasattr(self, obj):
                with contextlib.suppress(Exception):
                    getattr(self, obj).close()
        for watch in getattr(self, "_signals", ()):
            watch.close()
        if hasattr(self, "_supervisor") and self.isolation is None:
            # No pid namespace: signal the groups of what it started (daemons: the marker below).
            for pid in self._supervisor.started():
                with contextlib.suppress(SupervisorError):
                    self._supervisor.signal(pid, signal.SIGTERM)
        if hasattr(self, "_supervisor"):
            self._supervisor.stop()  # its end ends bubblewrap, and with it the sandbox's pid namespace
        # Our children stay zombies until waited for, so wait on them here rather than polling
        # their groups (which would count zombies as alive).
        groups = {p.pid for p in self._procs}
        _signal_groups(groups, signal.SIGTERM)
        deadline = time.monotonic() + 1.0
        for p in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
        _signal_groups(groups, signal.SIGKILL)  # stragglers and grandchildren
        kill_marked(self._marker.encode())  # daemons that left their group (setsid)
        for p in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=1.0)
        if self._cgroup is not None:
            kill_cgroup(self._cgroup.dirs)
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(OSError):
            self._tell_reaper("CLEAN")  # all done above: the reaper need not wait out a grace time
        if self._reaper.stdin:
            with contextlib.suppress(OSError):
                self._reaper.stdin.close()  # EOF: the reaper exits
        try:
            self._reaper.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._reaper.kill()
            self._reaper.wait()
        if self.keep:
            with contextlib.suppress(OSError):
                (self.root / "xauth-server").unlink()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()


def _read_all(f: IO[bytes], limit: int | None = None) -> bytes:
    """All of a file shared with a program (at most ``limit`` bytes), read without moving the
    offset the program writes at (a daemon it left may still write)."""
    chunks: list[bytes] = []
    done = 0
    while limit is None or done < limit:
        want = 1 << 20 if limit is None else min(1 << 20, limit - done)
        chunk = os.pread(f.fileno(), want, done)
        if not chunk:
            break
        chunks.append(chunk)
        done += len(chunk)
    return b"".join(chunks)


def _inner_pid(pid: int) -> int:
    """A host pid (X-Resource reports those) as the process's own pid namespace numbers it: the
    last field of NSpid. Unchanged where there is no nested namespace or /proc says nothing."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return pid


def _signal_groups(pgids: set[int], sig: signal.Signals) -> None:
    for g in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(g, sig)
