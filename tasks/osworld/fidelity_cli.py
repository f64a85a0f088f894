"""`kimi-agent bench osworld fidelity SPLIT|TASK_ID|TASK_FILE...`: play every task the sandbox
supports offline (the coverage check's answer) with an idle agent (a short wait, DONE) and with
FAIL, through the same runner as `run`; report every task that scores without its answer and every
setup step that failed (tasks/osworld/fidelity.py judges).

``main`` returns 0 when nothing was found, 1 when something was (or a play did not finish); bad usage
raises, for tasks/cli.py to report on one line.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agent.policy import ScriptedPolicy
from agent.version import version_record
from env.actions import Action, Done, Wait
from tasks.cli_common import UsageError
from tasks.osworld import fidelity
from tasks.osworld.coverage import check_task
from tasks.osworld.report import summarize, write_html
from tasks.osworld.results import RUN_FILE, Outcome, TaskRef, model_dir, read_outcome, task_dir
from tasks.osworld.run_cli import Player, add_selection_flags, play, resolve, sandbox_targets, select
from tasks.osworld.runner import Agent
from tasks.osworld.task import DEFAULT_DIR_VAR, Task, load_task
from tasks.sandbox_args import add_isolation_flags

DESCRIPTION = (
    "Check that this machine's sandboxes do not score an agent that does nothing: play every task "
    "of the selection that the sandbox supports offline (`check`'s answer) with an idle agent (wait "
    "1 s, DONE) and with FAIL, through the runner of `run`. Reports every task that scores without "
    "its answer (idle above 0; FAIL above 0 on a feasible task, below 1 on an infeasible one) and every "
    "setup step that failed, with the reason; writes OUT/fidelity.json and records the verdicts "
    "where run summaries read them. Exit status 1 when anything was found."
)
# One step (a screen and a trajectory line fewer than two): the wait, then DONE.
IDLE: list[list[Action]] = [[Wait(seconds=1), Done(status="success")]]
FAIL: list[list[Action]] = [[Done(status="failure")]]
IDLE_PLAYER, FAIL_PLAYER = "idle", "fail"  # the model directories of the two plays under --out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "tasks",
        nargs="+",
        metavar="SPLIT|TASK_ID|TASK_FILE",
        help="a split (file, or name in --osworld-dir, or `suite`), or task ids, or task files (as `run`)",
    )
    p.add_argument(
        "--osworld-dir",
        type=Path,
        help=f"OSWorld's evaluation_examples directory (default: ${DEFAULT_DIR_VAR}, else ./evaluation_examples)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results/fidelity"),
        help="where the plays and fidelity.json go (default ./results/fidelity)",
    )
    p.add_argument("--workers", type=int, help="sandboxes run at once (default 1)")
    p.add_argument(
        "--task-timeout", type=float, default=600.0, help="seconds one play may take (default 600)"
    )
    add_selection_flags(p)
    add_isolation_flags(p)
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    p.set_defaults(sleep_after=None)  # the runner's settle wait, as `run` without --sleep-after


def scripted(name: str, steps: list[list[Action]], label: str) -> Player:
    """A built-in player: the same steps on every task (a fresh policy each: policies keep state)."""

    def agent(task: Task) -> Agent:
        return Agent(ScriptedPolicy(steps, thought=label), len(steps), label)

    return Player(name, label, len(steps), agent)


def offline(refs: list[TaskRef]) -> tuple[list[TaskRef], list[fidelity.NotChecked]]:
    """The tasks the sandbox supports and that need no internet, and why each other one is left out."""
    keep, left = [], []
    for ref in refs:
        cov = check_task(load_task(Path(ref.path)), ref.domain)
        why = "; ".join(cov.reasons("sandbox"))
        if not why and cov.network:
            why = "needs the internet"
        if why:
            left.append(fidelity.NotChecked(task_id=ref.task_id, domain=ref.domain, reason=why))
        else:
            keep.append(ref)
    return keep, left


def findings_table(report: fidelity.FidelityReport) -> Table:
    def shown(p: fidelity.Play | None) -> str:
        if p is None:
            return ""
        return f"{p.score:g}" if p.kind == "scored" else p.kind

    bad = [t for t in report.tasks if not t.clean]
    t = Table(title=f"Fidelity findings: {len(bad)} of {len(report.tasks)} tasks")
    for col in ("domain", "task", "idle", "FAIL", "finding"):
        t.add_column(col, overflow="fold")
    for task in bad:
        for i, f in enumerate(task.findings):
            first = i == 0
            t.add_row(
                task.domain if first else "",
                task.task_id if first else "",
                shown(task.idle) if first else "",
                shown(task.fail) if first else "",
                escape(f"{fidelity.FINDING_TEXT[f.kind]}: {' '.join(f.detail.split())[:300]}"),
            )
    return t


def counts_line(c: dict[str, int]) -> str:
    return (
        f"{c['checked']} of {c['tasks']} tasks checked ({c['infeasible']} infeasible), "
        f"{c['not_checked']} not supported offline on a sandbox; {c['clean']} clean; "
        f"{c['idle_passes']} idle passes, {c['setup_errors']} with setup errors, "
        f"{c['fail_passes']} FAIL passes, {c['fail_not_scored']} infeasible not scored for FAIL, "
        f"{c['incomplete']} incomplete"
    )


def main(args: argparse.Namespace, console: Console) -> int:
    if args.task_timeout <= 0:
        raise UsageError("--task-timeout must be above 0")
    split, refs = resolve(args.tasks, args.osworld_dir)
    refs = select(refs, args.domain, args.limit, split)
    from tasks.osworld.evalenv import ready_python

    ready_python()
    checked, left = offline(refs)
    infeasible = [r for r in checked if r.infeasible]
    console.print(
        Text(
            f"fidelity of {split}: {len(checked)} of {len(refs)} tasks supported offline on a sandbox; "
            f"the idle agent and FAIL play them all ({len(infeasible)} infeasible: only FAIL scores them)"
        ),
        soft_wrap=True,
    )
    started = time.time()
    # Every play is fresh: a verdict must come from the code and machine of now, not a resumed run.
    if checked:
        play(
            split,
            checked,
            scripted(IDLE_PLAYER, IDLE, "idle agent: wait 1 s, DONE"),
            sandbox_targets(args, len(checked)),  # a play's targets close (and their pool) as it ends
            args,
            console,
            False,
        )
        play(
            split,
            checked,
            scripted(FAIL_PLAYER, FAIL, "FAIL at once"),
            sandbox_targets(args),
            args,
            console,
            False,
        )

    def outcome(player: str, ref: TaskRef) -> Outcome | None:
        return read_outcome(task_dir(model_dir(args.out, player), ref.domain, ref.task_id))

    report = fidelity.FidelityReport(
        split=split,
        created_at=started,
        kimi_agent=version_record(),
        desktop_env=args.desktop_env,
        tasks=[
            fidelity.judge(
                r.task_id,
                r.domain,
                r.infeasible,
                outcome(IDLE_PLAYER, r),
                outcome(FAIL_PLAYER, r),
            )
            for r in checked
        ],
        not_checked=left,
    )
    path = fidelity.write_report(report, args.out)
    ledger = fidelity.record(report)
    for player in (IDLE_PLAYER, FAIL_PLAYER):  # the plays' summaries, written before these verdicts were
        if (model_dir(args.out, player) / RUN_FILE).is_file():
            write_html(summarize(model_dir(args.out, player)))
    counts = report.counts()
    if counts["findings"]:
        console.print(findings_table(report))
    console.print(Text(counts_line(counts)), soft_wrap=True)
    console.print(Text(f"report: {path}; verdicts recorded in {ledger} ({time.time() - started:.0f} s)"))
    return 1 if counts["findings"] else 0
