"""The idle-agent fidelity check's verdicts (`kimi-agent bench osworld fidelity`): what an agent that
does nothing, and one that only answers FAIL, scored on each task, and what that says about the
environment the tasks ran in.

On OSWorld's VM every feasible task starts in a state the agent must change, so doing nothing (a
short wait, DONE) scores 0; an infeasible task scores 1 only for FAIL. A task that scores above 0
without its answer, or whose setup step failed, is a *finding*: its scores on this environment do
not mean what OSWorld's mean. FAIL is played on every task: on a feasible one it must score 0 (OSWorld's
rule, before any metric), which checks the whole path from the agent's last action to the score.

The check writes its report to its --out (``REPORT_FILE``) and merges each task's verdict into this
machine's ledger (``ledger_path()``), which every run's summary reads to say how many of its tasks
were checked and what was found.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from agent.jsonfile import JSONFileError, read_model
from agent.version import VersionRecord
from tasks.osworld.results import Outcome, write_atomic

REPORT_FILE = "fidelity.json"
# Where a request went (" on http://127.0.0.1:33835"): each play's sandbox has its own port, so a
# finding says the same of both plays, and of every run, without it.
_SERVER = re.compile(r" on (?:https?://|unix:)\S+?(?= answered|:? |$)")
LEDGER_VAR = "KIMI_OSWORLD_FIDELITY"  # where this machine's ledger is (tests keep theirs apart)
FindingKind = Literal["idle_pass", "fail_pass", "fail_not_scored", "setup_error", "incomplete"]
FINDING_TEXT: dict[FindingKind, str] = {
    "idle_pass": "scores without its answer (idle agent)",
    "fail_pass": "FAIL scores on this feasible task",
    "fail_not_scored": "FAIL does not score 1 on this infeasible task",
    "setup_error": "a setup step failed",
    "incomplete": "a play did not finish (crashed, timed out, unsupported): nothing was checked",
}


class Play(BaseModel):
    """How one play of a task ended (its outcome.json, in short)."""

    kind: str
    score: float
    error: str | None = None
    setup: list[str] = Field(default_factory=list)  # the setup steps that failed, one line each

    @classmethod
    def of(cls, o: Outcome) -> Play:
        setup = [str(x) for x in o.details.get("setup") or []]
        return cls(kind=o.kind, score=o.score, error=o.error, setup=setup)


class Finding(BaseModel):
    kind: FindingKind
    detail: str


class TaskCheck(BaseModel):
    task_id: str
    domain: str
    infeasible: bool
    idle: Play | None  # None: the play left no outcome (the run was stopped)
    fail: Play | None = None  # None: the FAIL play left no result (or a ledger from before it was kept)
    findings: list[Finding] = Field(default_factory=list)
    checked_at: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.findings


def judge(
    task_id: str, domain: str, infeasible: bool, idle: Outcome | None, fail: Outcome | None
) -> TaskCheck:
    """A task's verdict from its plays' outcomes (None: the play left no result)."""
    findings: list[Finding] = []
    plays = [("idle", idle), ("FAIL", fail)]
    for name, o in plays:
        if o is None:
            findings.append(Finding(kind="incomplete", detail=f"the {name} play left no result"))
        elif o.kind == "setup_failed":
            lines = [str(x) for x in o.details.get("setup") or []] or [o.error or "setup failed"]
            findings += [Finding(kind="setup_error", detail=_SERVER.sub("", line)) for line in lines]
        elif o.kind != "scored":
            findings.append(Finding(kind="incomplete", detail=f"the {name} play {o.kind}: {o.error}"))
        elif name == "idle" and o.score > 0:
            findings.append(Finding(kind="idle_pass", detail=f"the idle agent scored {o.score:g}"))
        elif name == "FAIL" and infeasible and o.score != 1:
            findings.append(Finding(kind="fail_not_scored", detail=f"FAIL scored {o.score:g}, not 1"))
        elif name == "FAIL" and not infeasible and o.score > 0:
            findings.append(Finding(kind="fail_pass", detail=f"FAIL scored {o.score:g} on a feasible task"))
    unique = list({(f.kind, f.detail): f for f in findings}.values())  # both plays' same setup error once
    return TaskCheck(
        task_id=task_id,
        domain=domain,
        infeasible=infeasible,
        idle=Play.of(idle) if idle else None,
        fail=Play.of(fail) if fail else None,
        findings=unique,
        checked_at=time.time(),
    )


class NotChecked(BaseModel):
    task_id: str
    domain: str
    reason: str


class FidelityReport(BaseModel):
    split: str
    created_at: float
    kimi_agent: VersionRecord | None = None
    desktop_env: str
    tasks: list[TaskCheck]
    not_checked: list[NotChecked] = Field(default_factory=list)  # what the sandbox does not support offline

    def counts(self) -> dict[str, int]:
        found = [f.kind for t in self.tasks for f in t.findings]
        return {
            "tasks": len(self.tasks) + len(self.not_checked),
            "checked": len(self.tasks),
            "infeasible": sum(t.infeasible for t in self.tasks),
            "clean": sum(t.clean for t in self.tasks),
            "idle_passes": sum(any(f.kind == "idle_pass" for f in t.findings) for t in self.tasks),
            "fail_passes": sum(any(f.kind == "fail_pass" for f in t.findings) for t in self.tasks),
            "fail_not_scored": sum(any(f.kind == "fail_not_scored" for f in t.findings) for t in self.tasks),
            "setup_errors": sum(any(f.kind == "setup_error" for f in t.findings) for t in self.tasks),
            "incomplete": sum(any(f.kind == "incomplete" for f in t.findings) for t in self.tasks),
            "not_checked": len(self.not_checked),
            "findings": len(found),
        }


class Ledger(BaseModel):
    """This machine's latest verdict per task, whatever check gave it."""

    tasks: dict[str, TaskCheck] = Field(default_factory=dict)


def ledger_path() -> Path:
    if path := os.environ.get(LEDGER_VAR):
        return Path(path)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kimi-agent" / "osworld-fidelity.json"


def read_ledger(path: Path | None = None) -> Ledger:
    """The ledger, or an empty one when there is none or it cannot be read (a summary must still print)."""
    path = path or ledger_path()
    if not path.is_file():
        return Ledger()
    try:
        return read_model(path, Ledger, "an OSWorld fidelity ledger")
    except JSONFileError:
        return Ledger()


def record(report: FidelityReport, path: Path | None = None) -> Path:
    """Merge the report's verdicts into the ledger (a task checked again replaces its old verdict)."""
    path = path or ledger_path()
    ledger = read_ledger(path)
    ledger.tasks.update({t.task_id: t for t in report.tasks})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, ledger.model_dump_json(indent=1))
    return path


def write_report(report: FidelityReport, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_FILE
    write_atomic(path, json.dumps({"counts": report.counts(), **report.model_dump(mode="json")}, indent=2))
    return path


class RunFidelity(BaseModel):
    """What the ledger says about a run's tasks (summary.json's ``fidelity``)."""

    tasks: int
    checked: int
    idle_passes: list[str]
    setup_errors: list[str]
    other_findings: list[str]  # FAIL not scoring 1, or a play that did not finish
    not_checked: int
    checked_between: tuple[float, float] | None  # the oldest and newest verdicts among the run's tasks

    def line(self) -> str:
        if not self.checked:
            return (
                f"fidelity: none of the {self.tasks} tasks has been checked on this machine; "
                "`kimi-agent bench osworld fidelity SPLIT` plays them with an idle agent and with FAIL"
            )
        days = sorted({time.strftime("%Y-%m-%d", time.localtime(t)) for t in self.checked_between or ()})
        parts = [
            f"{self.checked} of {self.tasks} tasks checked ({' to '.join(days)})",
            f"{len(self.idle_passes)} idle passes",
            f"{len(self.setup_errors)} setup errors",
        ]
        if self.other_findings:
            parts.append(f"{len(self.other_findings)} other findings")
        parts.append(f"{self.not_checked} not checked")
        return "fidelity (`bench osworld fidelity`, on this machine): " + ", ".join(parts)


def for_run(task_ids: Iterable[str], ledger: Ledger | None = None) -> RunFidelity:
    ledger = ledger if ledger is not None else read_ledger()
    ids = list(task_ids)
    checks = [ledger.tasks[i] for i in ids if i in ledger.tasks]

    def having(kind: FindingKind) -> list[str]:
        return [t.task_id for t in checks if any(f.kind == kind for f in t.findings)]

    return RunFidelity(
        tasks=len(ids),
        checked=len(checks),
        idle_passes=having("idle_pass"),
        setup_errors=having("setup_error"),
        other_findings=sorted(set(having("fail_not_scored") + having("incomplete"))),
        not_checked=len(ids) - len(checks),
        checked_between=(min(t.checked_at for t in checks), max(t.checked_at for t in checks))
        if checks
        else None,
    )
