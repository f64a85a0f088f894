"""`kimi-agent bench osworld {check,list,run,fidelity,setup,check-vm,report}`: the commands and their
parser; `check` (what of an OSWorld split kimi-agent can run, per task and per domain, on a sandbox and
on an OSWorld VM), `list`, `setup` and `check-vm` (tasks/osworld/vmcheck.py) are here, `run` and `report` in run_cli.py, `fidelity` in
fidelity_cli.py.

``main(argv)`` returns the exit status: 0 (the report was printed); bad usage and unreadable split or
task files raise, for tasks/cli.py to report on one line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tasks.cli_common import HelpFormatter, make_console
from tasks.cli_common import parser as cli_parser
from tasks.osworld import evalenv
from tasks.osworld.coverage import TARGETS, TaskCoverage, check_split, per_domain
from tasks.osworld.task import DEFAULT_DIR_VAR, Split, SplitEntry, load_split, load_task, osworld_dir

DESCRIPTION = (
    "OSWorld tasks (evaluation_examples layout: SPLIT.json beside examples/DOMAIN/ID.json; `suite`: our "
    "tasks that run on this machine's sandboxes). Start with `setup` (once), then `check` or `list` a "
    "split, `run` tasks, `fidelity` to see what a sandbox's scores are worth, and `report` a run "
    "again. --help after each command."
)
DIR_HELP = (
    f"OSWorld's evaluation_examples directory (default: ${DEFAULT_DIR_VAR}, else ./evaluation_examples)"
)


def parser() -> argparse.ArgumentParser:
    from tasks.osworld import fidelity_cli, run_cli

    p = cli_parser("kimi-agent bench osworld", DESCRIPTION)
    sub = p.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=description, formatter_class=HelpFormatter)

    c = command(
        "check",
        "what of a split runs here and on an OSWorld VM",
        "Report what of an OSWorld split kimi-agent can run, per task and per domain, on a sandbox "
        "(this machine's apps) and on an OSWorld VM. A task file checks that one task.",
    )
    c.add_argument(
        "split",
        metavar="SPLIT|suite|TASK_FILE",
        help="a split file, a split name (test_all, test_small, ...) looked up in --osworld-dir, "
        "`suite`, or one task's file",
    )
    c.add_argument("--osworld-dir", type=Path, help=DIR_HELP)
    c.add_argument("--domains-only", action="store_true", help="print the per-domain table only")
    c.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    c.add_argument("--debug", action="store_true", help="on an error, show the full traceback")

    ls = command(
        "list",
        "print a split's task ids",
        "Print the task ids of a split, one per line: the id, a tab, the domain "
        "(`... | cut -f1` gives names `run` takes).",
    )
    ls.add_argument(
        "split", metavar="SPLIT|suite", help="a split file, a split name in --osworld-dir, or `suite`"
    )
    ls.add_argument("--osworld-dir", type=Path, help=DIR_HELP)
    run_cli.add_selection_flags(ls)
    ls.add_argument("--debug", action="store_true", help="on an error, show the full traceback")

    run_cli.add_run_arguments(command("run", "run tasks and score them", run_cli.RUN_DESCRIPTION))
    fidelity_cli.add_arguments(
        command(
            "fidelity",
            "check that an idle agent scores 0 on this machine's sandboxes",
            fidelity_cli.DESCRIPTION,
        )
    )

    st = command(
        "setup",
        "build the environment OSWorld's evaluators run in (once)",
        "Build the venv with OSWorld's official evaluators (desktop-env 1.0.2) that scoring runs in; "
        "a no-op when it is ready.",
    )
    st.add_argument(
        "--venv",
        type=Path,
        help=f"where (default: ${evalenv.VENV_VAR}, else $XDG_CACHE_HOME/kimi-agent/osworld-eval)",
    )
    st.add_argument("--debug", action="store_true", help="on an error, show the full traceback")

    cv = command(
        "check-vm",
        "check that a VM has what kimi-agent's client and OSWorld's tasks need",
        "Check an OSWorld-protocol server (OSWorld's own in its VM, or `kimi-agent serve`): the "
        "screenshot, a `python` with pyautogui and python-xlib, wmctrl, recording. Each failed check says "
        "what to "
        "install. Exit 0 when every required check passes, 1 otherwise.",
    )
    cv.add_argument("url", metavar="URL", help="the server, e.g. http://192.168.56.101:5000")
    cv.add_argument("--vm-token", help="its token (default: $KIMI_VM_TOKEN; OSWorld's VMs: none)")
    cv.add_argument("--debug", action="store_true", help="on an error, show the full traceback")

    run_cli.add_report_arguments(command("report", "print a run's summary again", run_cli.REPORT_DESCRIPTION))
    return p


def check_vm_main(args: argparse.Namespace, console: Console) -> int:
    """`kimi-agent bench osworld check-vm URL`."""
    import os

    from env.osworld_client import OSWorldClient
    from tasks.osworld.vmcheck import check_vm

    token = args.vm_token or os.environ.get("KIMI_VM_TOKEN") or None
    with OSWorldClient(args.url, token=token) as client:
        checks = check_vm(client)
    t = Table(title=f"{args.url}: what kimi-agent's client and OSWorld's tasks need")
    for col in ("check", "ok", "found / to do"):
        t.add_column(col, overflow="fold")
    for c in checks:
        ok = "[green]yes[/]" if c.ok else ("[red]no[/]" if c.required else "[yellow]no[/] (optional)")
        t.add_row(c.name, ok, escape(c.detail))
    console.print(t)
    missing = [c.name for c in checks if c.required and not c.ok]
    console.print(
        escape(f"missing: {', '.join(missing)} (docs: osworld.md, 'What a VM image needs')")
        if missing
        else "the VM has everything the client needs"
    )
    return 1 if missing else 0


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


def setup_main(args: argparse.Namespace, console: Console) -> int:
    """`kimi-agent bench osworld setup [--venv DIR]`: build the evaluator environment (a no-op when
    it is ready)."""
    venv = args.venv or evalenv.default_venv()
    if evalenv.is_ready(venv):
        console.print(f"the OSWorld evaluator environment is ready: {venv}")
        return 0
    t0 = time.monotonic()
    try:
        python = evalenv.build(venv, log=lambda m: console.print(escape(m)))
    except evalenv.EvalEnvError as e:
        console.print(escape(f"kimi-agent: error: {e}"), soft_wrap=True)
        return 1
    console.print(f"built {venv} in {time.monotonic() - t0:.0f} s; its python: {python}")
    return 0


def the_split(name: str, examples: Path | None) -> Split:
    """The split ``name`` means; a task file is a split of that one task."""
    from tasks.osworld.run_cli import is_task_file, split_path

    path = split_path(name, osworld_dir(examples))
    if path.suffix == ".json" and is_task_file(path):
        task = load_task(path)
        entry = SplitEntry(domain=task.domain, task_id=task.id, path=path)
        return Split(name=task.id, path=path, entries=[entry])
    return load_split(path)


def check_main(args: argparse.Namespace, console: Console) -> int:
    split = the_split(args.split, args.osworld_dir)
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


def list_main(args: argparse.Namespace, console: Console) -> int:
    from tasks.osworld.run_cli import select

    split = the_split(args.split, args.osworld_dir)
    entries = select(split.entries, args.domain, args.limit, split.name)
    # Plain lines, not the console: a tab must stay a tab for `cut`, and nothing may wrap.
    sys.stdout.write("".join(f"{e.task_id}\t{e.domain}\n" for e in entries))
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str], console: Console | None = None) -> int:
    console = console or make_console()
    argv = list(argv)
    if argv[:1] == ["--check"]:  # the old spelling, `bench osworld --check SPLIT`
        argv = ["check", *argv[1:]]
    if argv[:1] == ["--check-vm"]:  # as a flag too, like --check
        argv = ["check-vm", *argv[1:]]
    args = parser().parse_args(argv)
    if args.command in ("run", "report"):
        from tasks.osworld.run_cli import main_report, main_run

        return (main_run if args.command == "run" else main_report)(args, console)
    if args.command == "fidelity":
        from tasks.osworld import fidelity_cli

        return fidelity_cli.main(args, console)
    commands = {"setup": setup_main, "check": check_main, "list": list_main, "check-vm": check_vm_main}
    return commands[args.command](args, console)
