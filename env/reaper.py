"""A watchdog that outlives its parent: it kills the sandbox's process groups and removes its
directory once its stdin closes, which happens when the parent exits for any reason, SIGKILL
included (the kernel closes the pipe's write end with the process).

Protocol on stdin, one line each: ``+PGID`` (watch a group), ``-PGID`` (forget it), ``DIR PATH``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time


def kill_groups(pgids: set[int], grace_s: float = 1.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = set()
        for g in pgids:
            try:
                os.killpg(g, sig)
                alive.add(g)
            except ProcessLookupError:
                pass
        if not alive or sig == signal.SIGKILL:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_group_alive(g) for g in alive):
            time.sleep(0.02)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is for the parent
    pgids: set[int] = set()
    root: str | None = None
    for line in sys.stdin:
        line = line.strip()
        if line.startswith("+"):
            pgids.add(int(line[1:]))
        elif line.startswith("-"):
            pgids.discard(int(line[1:]))
        elif line.startswith("DIR "):
            root = line[4:]
    kill_groups(pgids, grace_s=0.5)
    if root:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
