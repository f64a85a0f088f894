"""The sandbox's supervisor: the one process that starts programs inside the sandbox.

It runs inside the sandbox's namespaces (bubblewrap's pid 1 is its parent), so everything it starts
shares one mount, pid, IPC and network namespace, one cgroup and one set of resource limits, and
dies with the sandbox. The host talks to it over stdin (a unix socket) and stdout, one JSON object
per line:

  {"id": N, "op": "spawn", "argv": [...], "env": {...}, "cwd": P, "stdin": F, "stdout": F,
   "stderr": F, "fds": K}                               -> {"id": N, "pid": PID} | {"id": N, "error": E}
  {"id": N, "op": "signal", "pid": PID, "sig": S}       -> {"id": N}   (to the program's whole group)
  {"id": N, "op": "sessions"}                           -> {"id": N, "sessions": {PID: SID}} (live ones)
and, unasked, {"exit": PID, "code": RC} when a program it started ends.

F is null (/dev/null), a path as seen inside the sandbox, or {"fd": I}: the I-th of the K open files
the host sent with the request (SCM_RIGHTS on stdin). With those the host opens every file itself,
somewhere the sandbox cannot change, and never follows a name the sandbox could have replaced.
Standard library only, and self-contained: the host runs a copy of it with ``python3 -I -S``, so it
needs nothing the sandbox cannot read.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
from typing import IO

MAX_FDS = 16  # per message; a request carries at most three


def _open(spec: str | dict | None, mode: str, fds: list[int]) -> IO[bytes] | int:
    if spec is None:
        return subprocess.DEVNULL
    if isinstance(spec, dict):
        return fds[spec["fd"]]  # a file the host opened: closed with the request's others
    return open(spec, mode)


def _spawn(req: dict, children: dict[int, subprocess.Popen[bytes]], fds: list[int]) -> dict:
    argv, env = req["argv"], req["env"]
    if not argv or shutil.which(argv[0], path=env.get("PATH")) is None:
        return {"error": f"cannot start {argv[0] if argv else ''!r}: not found on PATH"}
    files: list[IO[bytes] | int] = []
    try:
        files = [
            _open(req.get("stdin"), "rb", fds),
            _open(req.get("stdout"), "ab", fds),
            _open(req.get("stderr"), "ab", fds),
        ]
        # A session of its own: the program's pid is its group's and its session's id.
        p = subprocess.Popen(
            argv, env=env, cwd=req.get("cwd"), stdin=files[0], stdout=files[1], stderr=files[2],
            start_new_session=True, close_fds=True,
        )  # fmt: skip
    except OSError as e:
        return {"error": f"cannot start {argv[0]!r}: {e.strerror or e}"}
    finally:
        for f in files:
            if not isinstance(f, int):
                f.close()
    children[p.pid] = p
    return {"pid": p.pid}


def _sessions() -> dict[str, int]:
    found: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            found[entry] = int(fields[3])
    return found


def _receive(chan: socket.socket, fds: list[int]) -> bytes:
    """Bytes from the host, and the files sent with them appended to ``fds`` in order."""
    data, ancillary, flags, _ = chan.recvmsg(65536, socket.CMSG_SPACE(MAX_FDS * 4))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(payload[: len(payload) - len(payload) % got.itemsize])
            fds.extend(got)
    if flags & socket.MSG_CTRUNC:  # files lost: the requests' files would no longer line up
        raise SystemExit("sandbox supervisor: too many files in one message")
    return data


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is for the host
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, subprocess.Popen[bytes]] = {}
    chan = socket.socket(fileno=0)
    received: list[int] = []  # files sent by the host, not yet taken by a request
    buf = b""
    out = sys.stdout

    def send(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    while True:
        ready = select.select([0, wake_r], [], [], 1.0)[0]
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
        for pid, p in list(children.items()):
            if p.poll() is not None:
                del children[pid]
                send({"exit": pid, "code": p.returncode})
        if 0 not in ready:
            continue
        chunk = _receive(chan, received)
        if not chunk:
            return  # the host is gone: returning ends the sandbox (bubblewrap exits with us)
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            req = json.loads(line)
            op = req.get("op")
            # A request's files came with its first byte, so they are here by now.
            fds, received[:] = received[: req.get("fds", 0)], received[req.get("fds", 0) :]
            reply: dict = {}
            try:
                if op == "spawn":
                    reply = _spawn(req, children, fds)
                elif op == "signal":
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(req["pid"], req["sig"])
                elif op == "sessions":
                    reply = {"sessions": _sessions()}
                else:
                    reply = {"error": f"unknown op {op!r}"}
            except Exception as e:  # a bad request must not end the sandbox
                reply = {"error": f"{op}: {e}"}
            finally:
                for fd in fds:
                    os.close(fd)  # the program has its copies
            send({"id": req["id"], **reply})


if __name__ == "__main__":
    main()
