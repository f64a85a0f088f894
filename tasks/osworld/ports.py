"""The fixed TCP ports a task's steps listen on, and a host-wide lock on each.

OSWorld's Chrome tasks start Chrome with ``--remote-debugging-port=1337`` and ``socat
tcp-listen:9222``, and the DevTools getters connect to 9222. A sandbox with the network on shares the
host's network namespace, so two such tasks at once collide: socat fails with "Address already in
use" (a setup error) and the evaluator may read the other sandbox's Chrome. Holding a lock per port
for the whole task (reset to score) keeps such tasks one at a time, across a run's workers and across
kimi-agent processes, while tasks without fixed ports run alongside.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tasks.osworld.task import CommandParams, Task

_PORT = re.compile(r"(?:--remote-debugging-port[= ]|tcp-listen:)(\d{1,5})")


def fixed_ports(task: Task) -> list[int]:
    """The ports the task's setup and postconfig commands listen on, sorted (the order locks are taken
    in, so two holders never wait on each other)."""
    found: set[int] = set()
    for step in task.steps():
        p = step.parameters
        if isinstance(p, CommandParams):
            text = p.command if isinstance(p.command, str) else " ".join(p.command)
            found.update(int(m) for m in _PORT.findall(text) if 0 < int(m) < 65536)
    return sorted(found)


def lock_dir() -> Path:
    """This user's directory of port locks: in $XDG_RUNTIME_DIR when there is one, else the temp
    directory; created private, and refused if it is not ours (a link, another owner)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = Path(base) / f"kimi-agent-ports-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise RuntimeError(f"{path} is not a directory of this user's: cannot lock ports there")
    return path


def _lock_file(directory: Path, port: int) -> int:
    return os.open(directory / f"{port}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def try_hold(ports: list[int], directory: Path | None = None) -> contextlib.ExitStack | None:
    """Hold every one of ``ports`` now, or none: None when another holder has one. Closing the
    returned stack releases them (an empty one for no ports)."""
    stack = contextlib.ExitStack()
    if not ports:
        return stack
    where = directory or lock_dir()
    try:
        for port in sorted(ports):
            fd = _lock_file(where, port)
            stack.callback(os.close, fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                stack.close()
                return None
    except BaseException:
        stack.close()
        raise
    return stack


@contextlib.contextmanager
def hold_ports(ports: list[int], directory: Path | None = None) -> Iterator[None]:
    """Hold an exclusive lock on each port (blocking until it is free); released on exit, and by the
    kernel if this process dies."""
    if not ports:
        yield
        return
    where = directory or lock_dir()
    with contextlib.ExitStack() as stack:
        for port in sorted(ports):
            fd = _lock_file(where, port)
            stack.callback(os.close, fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
