"""The host's side of the sandbox supervisor (env/sandbox_init.py): start programs inside the
sandbox and follow them with Popen-like handles. Requests go over a unix socket (the supervisor's
stdin), so they can carry open files: the host opens what a program inside reads or writes, and
the program gets the file, never a name the sandbox could have changed."""

from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

INIT_SOURCE = (Path(__file__).with_name("sandbox_init.py")).read_text(encoding="utf-8")


class SupervisorError(RuntimeError):
    pass


def init_argv(ctl: Path, inside_ctl: str, isolated: bool) -> list[str]:
    """How to run the supervisor: a copy of its source in the sandbox's control directory
    (standard library only). Isolated, it prefers the system's python3: ours may live in a home
    the sandbox hides."""
    init = ctl / "init.py"
    init.write_text(INIT_SOURCE, encoding="utf-8")
    init.chmod(0o644)  # whatever the umask: the sandbox's own user runs it
    return [sandbox_python(isolated), "-I", "-S", f"{inside_ctl}/init.py"]


def sandbox_python(isolated: bool) -> str:
    """The Python that runs standard-library scripts inside a sandbox (the supervisor, helpers that
    must resolve paths in its namespaces): isolated, the system's python3, as ours may live in a
    home the sandbox hides."""
    if isolated and os.access("/usr/bin/python3", os.X_OK):
        return "/usr/bin/python3"
    return os.path.realpath(sys.executable)


class SandboxProcess:
    """A program started inside the sandbox: Popen's poll / wait / returncode / pid (the pid as
    the sandbox sees it), and kill, which signals the program's whole process group."""

    def __init__(self, supervisor: Supervisor, pid: int, argv: Sequence[str]) -> None:
        self.supervisor = supervisor
        self.pid = pid
        self.args = list(argv)
        self.returncode: int | None = None
        self._done = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def signal(self, sig: int) -> None:
        self.supervisor.signal(self.pid, sig)

    def kill(self) -> None:
        self.signal(9)

    def _ended(self, code: int) -> None:
        self.returncode = code
        self._done.set()


class Supervisor:
    """Talks to env/sandbox_init.py running as ``proc``: requests on ``channel``, the other end of
    a socket pair that is its stdin; answers on its stdout, a pipe."""

    def __init__(
        self, proc: subprocess.Popen[bytes], channel: socket.socket, timeout_s: float = 10.0
    ) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self._channel = channel
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._next = 0
        self._replies: dict[int, dict] = {}
        self._cond = threading.Condition()
        self._running: dict[int, SandboxProcess] = {}
        self._early_exits: dict[int, int] = {}  # exits read before the spawn's reply was handled
        self._gone = False
        self._reader = threading.Thread(target=self._read, name="sandbox-supervisor", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self._cond:
                if "exit" in msg:
                    p = self._running.pop(msg["exit"], None)
                    if p is None:
                        self._early_exits[msg["exit"]] = msg["code"]
                    else:
                        p._ended(msg["code"])
                else:
                    self._replies[msg["id"]] = msg
                self._cond.notify_all()
        with self._cond:
            self._gone = True
            for p in self._running.values():
                p._ended(-9)  # the sandbox ended: everything in it was killed with it
            self._running.clear()
            self._cond.notify_all()

    def _call(self, op: str, fds: Sequence[int] = (), **args: object) -> dict:
        """One request and its answer; ``fds``: open files sent with it (the supervisor numbers
        them 0, 1, ... in this order)."""
        with self._lock:
            self._next += 1
            rid = self._next
            line = (json.dumps({"id": rid, "op": op, "fds": len(fds), **args}) + "\n").encode()
            try:
                if fds:  # the files ride on the request's first bytes
                    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    line = line[self._channel.sendmsg([line], rights) :]
                self._channel.sendall(line)
            except OSError:
                raise SupervisorError("the sandbox has ended") from None
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while rid not in self._replies:
                left = deadline - time.monotonic()
                if self._gone or left <= 0:
                    raise SupervisorError("the sandbox has ended" if self._gone else f"no answer to {op}")
                self._cond.wait(left)
            return self._replies.pop(rid)

    def spawn(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str,
        stdin: str | int | None = None,
        stdout: str | int | None = None,
        stderr: str | int | None = None,
    ) -> SandboxProcess:
        """Start ``argv``; each standard stream is /dev/null (None), a path inside the sandbox, or
        an open file descriptor of ours (an int), which the program gets a copy of."""
        fds: list[int] = []
        streams: dict[str, str | dict[str, int] | None] = {}
        for name, f in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr)):
            if isinstance(f, int):
                streams[name] = {"fd": len(fds)}
                fds.append(f)
            else:
                streams[name] = f
        reply = self._call("spawn", fds, argv=list(argv), env=dict(env), cwd=cwd, **streams)
        if "error" in reply:
            raise SupervisorError(reply["error"])
        p = SandboxProcess(self, reply["pid"], argv)
        with self._cond:
            if p.pid in self._early_exits:
                p._ended(self._early_exits.pop(p.pid))
            else:
                self._running[p.pid] = p
        return p

    def started(self) -> list[int]:
        """Programs it started that are still running."""
        with self._cond:
            return list(self._running)

    def stop(self, timeout_s: float = 2.0) -> None:
        """End the supervisor (EOF on its stdin); killed if it does not go within ``timeout_s``."""
        with self._lock:
            self._channel.close()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=timeout_s)

    def signal(self, pid: int, sig: int) -> None:
        self._call("signal", pid=pid, sig=sig)

    def sessions(self) -> dict[int, int]:
        """pid -> session id of every live (not zombie) process the sandbox can see."""
        return {int(pid): sid for pid, sid in self._call("sessions")["sessions"].items()}

    @property
    def alive(self) -> bool:
        return not self._gone
