"""`kimi-agent bench osworld --check SPLIT`: what of an OSWorld split kimi-agent can run, per task and
per domain, on a sandbox and on an OSWorld VM. `run` and `report` are in run_cli.py.

``main(argv)`` returns the exit status: 0 (the report was printed); bad usage and unreadable split or
task files raise, for tasks/cli.py to report on one line.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tasks.osworld.coverage import TARGETS, TaskCoverage, check_split, per_domain
from tasks.osworld.task import DEFAULT_DIR_VAR, load_split


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kimi-agent bench osworld",
        description="OSWorld tasks (evaluation_examples layout: SPLIT.json beside examples/DOMAIN/ID.json). "
        "Also: `kimi-agent bench osworld setup` builds the environment of OSWorld's evaluators (once), "
        "`kimi-agent bench osworld run ...` runs and scores tasks (`run suite --script-dir suite`: our "
        "suite's reference solutions), `kimi-agent bench osworld report OUT` prints a run's summary again "
        "(--help after them).",
    )
    p.add_argument(
        "--check",
        metavar="SPLIT",
        required=True,
        help="report what is supported: a split file, or a split name (test_all, test_small, ...) "
        "looked up in --osworld-dir",
    )
    p.add_argument(
        "--osworld-dir",
        type=Path,
        help=f"OSWorld's evaluation_examples directory (default: ${DEFAULT_DIR_VAR}, else ./evaluation_examples)",
    )
    p.add_argument("--domains-only", action="store_true", help="print the per-domain table only")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    return p


def _mark(ok: bool) -> str:
    return "[green]yes[/]" if ok else "[red]no[/]"


def task_table(rows: list[TaskCoverage]) -> Table:
    t = Table(title="OSWorld tasks: supported on a sandbox (this machine) and on an OSWorld VM")
    for col in ("domain", "task", "sandbox", "vm", "net", "why not (sandbox; vm)"):
        t.add_column(col, overflow="fold")
    for r in rows:
        why = "; ".join(r.reasons("sandbox"))
        vm_why = [w for w in r.reasons("vm") if w not in r.reasons("sandbox")]
        t.add_row(
            r.domain,
            r.task_id,
            _mark(r.supported("sandbox")),
            _mark(r.supported("vm")),
            "yes" if r.network else "",
            escape("; ".join([why, *vm_why]) if vm_why else why),
        )
    return t


def domain_table(rows: list[TaskCoverage], split: str) -> Table:
    t = Table(title=f"Coverage of {split} per domain")
    t.add_column("domain")
    t.add_column("tasks", justify="right")
    for target in TARGETS:
        t.add_column(target, justify="right")
    t.add_column("sandbox, offline", justify="right")
    total = {target: 0 for target in TARGETS}
    offline = 0

    def cell(k: int, n: int) -> str:
        return f"{k} ({100 * k / max(n, 1):.0f}%)"

    for d in per_domain(rows):
        t.add_row(
            d.domain,
            str(d.tasks),
            *(cell(d.supported[x], d.tasks) for x in TARGETS),
            cell(d.offline, d.tasks),
        )
        for x in TARGETS:
            total[x] += d.supported[x]
        offline += d.offline
    n = len(rows)
    t.add_row("all", str(n), *(cell(total[x], n) for x in TARGETS), cell(offline, n), style="bold")
    return t


def report_json(rows: list[TaskCoverage], split: str) -> dict[str, object]:
    return {
        "split": split,
        "tasks": len(rows),
        "supported": {x: sum(r.supported(x) for r in rows) for x in TARGETS},
        "offline": sum(r.supported("sandbox") and not r.network for r in rows),
        "domains": {
            d.domain: {"tasks": d.tasks, **d.supported, "offline": d.offline} for d in per_domain(rows)
        },
        "per_task": [
            {
                "domain": r.domain,
                "id": r.task_id,
                "network": r.network,
                **{x: {"supported": r.supported(x), "why_not": r.reasons(x)} for x in TARGETS},
            }
            for r in rows
        ],
    }


def setup_main(argv: Sequence[str], console: Console) -> int:
    """`kimi-agent bench osworld setup [--venv DIR]`: build the evaluator environment (a no-op when
    it is ready)."""
    from tasks.osworld import evalenv

    p = argparse.ArgumentParser(
        prog="kimi-agent bench osworld setup",
        description="Build the venv with OSWorld's official evaluators (desktop-env 1.0.2) that scoring runs in.",
    )
    p.add_argument(
        "--venv",
        type=Path,
        help=f"where (default: ${evalenv.VENV_VAR}, else $XDG_CACHE_HOME/kimi-agent/osworld-eval)",
    )
    args = p.parse_args(list(argv))
    venv = args.venv or evalenv.default_venv()
    if evalenv.is_ready(venv):
        console.print(f"the OSWorld evaluator environment is ready: {venv}")
        return 0
    t0 = time.monotonic()
    python = evalenv.build(venv, log=lambda m: console.print(escape(m)))
    console.print(f"built {venv} in {time.monotonic() - t0:.0f} s; its python: {python}")
    return 0


def main(argv: Sequence[str], console: Console | None = None) -> int:
    console = console or Console()
    if argv and argv[0] in ("run", "report"):
        from tasks.osworld.run_cli import main_report, main_run

        return (main_run if argv[0] == "run" else main_report)(list(argv[1:]), console)
    if argv and argv[0] == "setup":
        return setup_main(argv[1:], console)
    args = parser().parse_args(list(argv))
    name = args.check
    if args.osworld_dir is not None and not Path(name).suffix:
        name = str(args.osworld_dir / f"{name}.json")
    split = load_split(name)
    rows = check_split(split)
    if args.json:
        console.print_json(json.dumps(report_json(rows, split.name)))
        return 0
    if not args.domains_only:
        console.print(task_table(rows))
    console.print(domain_table(rows, split.name))
    console.print(
        "Sandbox: the apps and programs found on this machine; VM: OSWorld's image (every app). "
        "Evaluators: the metrics and getters of desktop-env 1.0.2 plus kimi-agent's own. "
        "net: the task reaches the internet (downloads, web pages, cloud files); offline: supported on a "
        "sandbox and needs no internet."
    )
    return 0
