"""A doctor check's verdict: OK / WARN / FAIL, what was found, and the fix in one line."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Status(str, Enum):
    OK = "OK"
    WARN = "WARN"  # a run works, but worse than it could (or the check could not be made)
    FAIL = "FAIL"  # a run would fail or give wrong results: `kimi-agent doctor` exits 1


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    found: str  # what the check saw, for people
    fix: str = ""  # one line; empty when OK

    @classmethod
    def ok(cls, name: str, found: str) -> CheckResult:
        return cls(name, Status.OK, found)

    @classmethod
    def warn(cls, name: str, found: str, fix: str) -> CheckResult:
        return cls(name, Status.WARN, found, fix)

    @classmethod
    def fail(cls, name: str, found: str, fix: str) -> CheckResult:
        return cls(name, Status.FAIL, found, fix)


def any_failed(results: list[CheckResult]) -> bool:
    return any(r.status is Status.FAIL for r in results)
