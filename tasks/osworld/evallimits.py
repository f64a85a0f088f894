"""Bounds on the OSWorld evaluator worker, which parses files a sandbox made (hostile input): its
resident memory, the CPU time of one request, and the size of a file a getter fetches.

Memory and CPU are watched from the host, in /proc, while a request is in flight (no cgroup, and no
cooperation from the worker, which may be deep in C code): over a limit, the worker's process group is
killed, that metric scores 0 with the limit in its reason, and the next request gets a fresh worker.
The worker also caps its own address space (``address_space``) so that an allocation faster than the
watch fails there instead. The file cap is the worker's: it checks a download's size before keeping it.

Each limit is overridable by an environment variable (a number, or ``off``)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

MEMORY_VAR = "KIMI_EVAL_MEMORY_GIB"
CPU_VAR = "KIMI_EVAL_CPU_S"
FILE_VAR = "KIMI_EVAL_FILE_MB"
GIB = 2**30
MB = 10**6


@dataclass(frozen=True)
class EvalLimits:
    """None: no limit. The defaults leave every task of the OSWorld corpus scoring as without limits
    (an idle worker holds about 0.3 GiB; a legitimate task's files are well under a few MB)."""

    memory_gib: float | None = 2.0  # resident memory of the worker process
    cpu_s: float | None = 60.0  # CPU seconds (user + system) one request may use
    file_mb: float | None = 50.0  # bytes of one file a getter fetches, in MB (10^6)

    @classmethod
    def off(cls) -> EvalLimits:
        return cls(None, None, None)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> EvalLimits:
        """The defaults, each replaced by its variable when set; ValueError (one line) on a bad value."""
        env = dict(os.environ) if env is None else env
        base = cls()
        return cls(
            _read(env, MEMORY_VAR, base.memory_gib),
            _read(env, CPU_VAR, base.cpu_s),
            _read(env, FILE_VAR, base.file_mb),
        )

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory_gib is None else int(self.memory_gib * GIB)

    @property
    def file_bytes(self) -> int | None:
        return None if self.file_mb is None else int(self.file_mb * MB)

    @property
    def address_space(self) -> int | None:
        """The worker's own RLIMIT_AS, a backstop for allocations faster than the watch: twice the
        memory limit plus 1 GiB, since an idle worker already maps about 0.9 GiB it never touches."""
        return None if self.memory_gib is None else int((2 * self.memory_gib + 1) * GIB)

    def exceeded(self, usage: Usage, cpu_at_start: float) -> str | None:
        """The reason a request must end now, or None."""
        if self.memory_bytes is not None and usage.rss > self.memory_bytes:
            return (
                f"evaluator exceeded its memory limit of {self.memory_gib:g} GiB "
                f"(resident {usage.rss / GIB:.2f} GiB); worker killed"
            )
        if self.cpu_s is not None and usage.cpu_s - cpu_at_start > self.cpu_s:
            return f"evaluator exceeded its CPU time limit of {self.cpu_s:g} s; worker killed"
        return None


def _read(env: dict[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() == "off":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a number above 0 or 'off', got {raw!r}")
    return value


@dataclass(frozen=True)
class Usage:
    """One process's CPU seconds so far and its resident and peak resident memory, in bytes."""

    cpu_s: float
    rss: int
    peak_rss: int


_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def usage_of(pid: int) -> Usage | None:
    """From /proc/PID/stat and /proc/PID/status; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    utime, stime, rss_pages = int(fields[11]), int(fields[12]), int(fields[21])
    peak = next(
        (int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith(b"VmHWM:")), 0
    )
    rss = rss_pages * _PAGE
    return Usage((utime + stime) / _TICK, rss, max(peak, rss))
