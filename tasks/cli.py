"""`kimi-agent "task"`, `kimi-agent replay RUN_DIR`, `kimi-agent sandbox`, `kimi-agent serve`,
`kimi-agent export`, `kimi-agent doctor`."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import os
import re
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

from agent.backends.base import BackendError
from agent.backends.weights import DEFAULT_MODEL
from agent.loop import handling, run
from agent.policy import Policy, ScriptedPolicy
from agent.replay import replay_policy
from agent.text import visible
from agent.trajectory import RunInfo, TrajectoryWriter
from env.desktop import Desktop
from tasks.cli_common import (
    LAYOUTS,
    VARIANTS,
    ArgumentParser,
    HelpFormatter,
    UsageError,
    ask_yes_no,
    check_limits,
    make_console,
    model_profile_flag,
    parser,
    sleep_after_flag,
    version,
)
from tasks.live import LiveView, clip
from tasks.sandbox_args import add_sandbox_flags, add_view_flags, make_sandbox, view_hint, wants_view

if TYPE_CHECKING:
    from agent.loop import HoldFn
    from env.sandbox import Sandbox
    from env.settle import Settle
    from tasks.view_server import ControlChange, ViewServer

DRY_RUN_DONE = 3  # exit status of a dry run that reached the model's "done": not a finished task


def _desktop_flags(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--sandbox",
        dest="desktop",
        action="store_const",
        const="sandbox",
        help="a private Xvfb desktop (default)",
    )
    where.add_argument(
        "--desktop", dest="desktop", action="store_const", const="local", help="this machine's real desktop"
    )
    where.add_argument(
        "--vm",
        metavar="URL",
        help="a desktop behind OSWorld's VM server protocol: an OSWorld VM (http://IP:5000) or "
        "`kimi-agent serve` (docs/osworld.md: The OSWorld protocol server)",
    )
    p.set_defaults(desktop="sandbox")
    p.add_argument(
        "--vm-token", help="the --vm server's token (default: $KIMI_VM_TOKEN, or the URL's user part)"
    )
    p.add_argument(
        "--monitor", type=int, default=1, help="monitor to use with --desktop (mss index, 1 = primary)"
    )
    sleep_after_flag(p)
    add_sandbox_flags(p)
    add_view_flags(p)
    p.add_argument("--out", type=Path, help="run directory (default runs/<time>-<task>)")
    p.add_argument(
        "--max-steps",
        type=int,
        default=15,
        help="the most steps (model calls with their actions); default 15",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="decide and record, but execute nothing (marked in the record)"
    )
    p.add_argument(
        "--confirm",
        action="store_true",
        help="ask before each action: y runs it, n skips it and tells the model, q quits",
    )
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")


DESCRIPTION = """Let Kimi-VL operate a computer: kimi-agent "TASK" [options].

Other commands (each with --help):
  replay RUN_DIR         play a recorded run's actions again, without a model
  report RUN_DIR         write a run's report.html again
  sandbox                start a private desktop and keep it until Ctrl-C
  serve                  serve OSWorld's VM protocol for a desktop
  mcp --allow GROUPS     serve sandboxes as MCP tools (Claude, Cursor, other agents)
  bench osworld ...      OSWorld tasks: check, list, run, fidelity, setup, report
  bench screenspot ...   grounding benchmarks (ScreenSpot v1/v2/Pro, OSWorld-G): run, score
  export RUN_DIR...      write runs as a LLaMA-Factory dataset
  rollout TASKS --group K  run OSWorld tasks K times each, for RL trainers (token ids, rewards)
  help [COMMAND]         this help, or a command's"""

EPILOG = """A one-word task that looks like a mistyped command is refused; kimi-agent -- TASK [options] \
runs it as a task.

Exit status: 0 the task was done; 1 it was not (failure, max steps, interrupted, ...); 2 a usage error, \
or the model (server or weights) is unavailable; 3 a --dry-run that reached the model's "done" (nothing \
was executed, so the task is not done); 130 Ctrl-C before a run began."""


class _VersionAction(argparse.Action):
    """--version, computed only when asked (it may run git)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(version())
        parser.exit()


def settle_of(args: argparse.Namespace) -> Settle:
    from env.settle import Settle

    return Settle(sleep_after_s=args.sleep_after)


def _run_parser() -> argparse.ArgumentParser:
    p = parser("kimi-agent", DESCRIPTION, epilog=EPILOG)
    p.add_argument(
        "--version", action=_VersionAction, help="print the version (and the git commit in a checkout)"
    )
    p.add_argument("task", help="what to do, in plain words")
    _desktop_flags(p)
    p.add_argument(
        "--script",
        type=Path,
        help="play a JSON file instead of asking a model: a list of steps, each an action object or a list "
        'of them, e.g. [{"kind": "click", "point": {"x": 0.5, "y": 0.5}}, {"kind": "type", "text": "hi"}] '
        "(docs/cli.md: Scripts)",
    )
    model_flags(p)
    return p


def model_flags(p: argparse.ArgumentParser) -> None:
    """The model options, shared by `kimi-agent "task"` and `kimi-agent bench osworld run`."""
    m = p.add_argument_group("model")
    m.add_argument(
        "--backend",
        choices=["transformers", "openai"],
        default="transformers",
        help="transformers: load the checkpoint here (a GPU); openai: ask an OpenAI-compatible server "
        "such as vLLM (--base-url)",
    )
    m.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="checkpoint directory or hub id (transformers), or the served model name (openai)",
    )
    m.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="OpenAI-compatible server (openai)")
    m.add_argument(
        "--api-key", help="the server's API key (openai); default: the OPENAI_API_KEY environment variable"
    )
    m.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="the most seconds one try of a model call may take, end to end (openai; default 300)",
    )
    m.add_argument(
        "--retries", type=int, default=4, help="retries of a failed model call (openai; default 4)"
    )
    m.add_argument(
        "--offline",
        action="store_true",
        help="never download weights (also when HF_HUB_OFFLINE=1); default: fetch a hub id on first use",
    )
    m.add_argument(
        "--no-kv-reuse",
        action="store_true",
        help="prefill every prompt in full and re-encode every screenshot (transformers; default: reuse "
        "the last step's KV cache and image features)",
    )
    model_profile_flag(m)
    m.add_argument(
        "--variant",
        choices=VARIANTS,
        help="which checkpoint of the model family this is (Kimi-VL: instruct, thinking, thinking-2506; "
        "Kimi K2: k2.5, k2.6; OpenCUA: 7b, 32b, 72b, a3b; UI-TARS-1.5: 7b); default: from the checkpoint the backend reports",
    )
    m.add_argument(
        "--in-token-limit", type=int, help="MoonViT's patch limit per image; default: the checkpoint's"
    )
    m.add_argument(
        "--temperature", type=float, help="default: the variant's (0.2 Instruct, 0.8 Thinking; 1.0 Kimi K2)"
    )
    m.add_argument(
        "--max-new-tokens", type=int, help="default: 1024 Instruct, 8192 Thinking; 4096 K2.5, 32768 K2.6"
    )
    m.add_argument(
        "--history-images",
        type=int,
        help="screenshots kept in context; default: the model profile's (3; UI-TARS-1.5: 5)",
    )
    m.add_argument(
        "--max-context",
        type=int,
        help="context budget in tokens (default: the model profile's, 32768 for kimi-vl, 262144 for kimi-k2; "
        "never above what the server takes)",
    )
    m.add_argument(
        "--prompt-profile",
        choices=LAYOUTS,
        help="history layout and wording (default: the model profile's own: append for kimi-vl, osworld "
        "for kimi-k2 and ui-tars-1.5, opencua-l2 for OpenCUA; docs/prompts.md)",
    )
    m.add_argument(
        "--prompt-dir",
        type=Path,
        help="a directory of prompt templates that replace the packaged ones of the same name",
    )


def _replay_parser() -> argparse.ArgumentParser:
    p = parser(
        "kimi-agent replay",
        "Play a recorded run again without a model: the actions RUN_DIR executed successfully, step by "
        "step, on a fresh desktop (a sandbox unless --desktop or --vm), recorded as a new run in --out. "
        "Use it to reproduce a run, or to see whether its actions still work on another desktop; "
        "at most --max-steps steps are played.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (holds run.json and steps)")
    _desktop_flags(p)
    return p


def _sandbox_parser() -> argparse.ArgumentParser:
    p = parser(
        "kimi-agent sandbox",
        "Start a sandbox (a private desktop), print how to watch it, and keep it until Ctrl-C.",
    )
    add_sandbox_flags(p)
    add_view_flags(p)
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    return p


@contextlib.contextmanager
def _open_desktop(
    args: argparse.Namespace, console: Console
) -> Iterator[tuple[Desktop, str, str | None, HoldFn | None]]:
    """The desktop, its name for the record, how to watch it (sandboxes only), and whether a person
    holds it now (the live view's --view-control)."""
    if wants_view(args) and (args.vm or args.desktop == "local"):
        raise UsageError("--view shows a sandbox; with --desktop or --vm, watch that screen itself")
    if args.vm:
        if args.app:
            raise UsageError("--app starts programs in a sandbox; with --vm, start them on the VM")
        from env.osworld_client import OSWorldClient
        from env.vm_desktop import VMDesktop

        token = args.vm_token or os.environ.get("KIMI_VM_TOKEN") or None
        with VMDesktop(OSWorldClient(args.vm, token=token), settle=settle_of(args)) as vm:
            yield vm, vm.name, None, None
        return
    if args.desktop == "local":
        from env.local import LocalDesktop

        desktop = LocalDesktop(monitor=args.monitor, settle=settle_of(args))
        try:
            yield desktop, f"local monitor {args.monitor}", None, None
        finally:
            desktop.close()
        return
    with make_sandbox(args) as box:
        box.settle = settle_of(args)  # from the first action on; the start still waits for the apps
        for warning in box.warnings:  # an --app that showed no window, say
            console.print(Text(f"warning: {clip(warning, 300)}", style="yellow"))
        with _live_view(args, console, box) as view:
            hint = _view_line(view) if view else view_hint()
            yield box, f"sandbox {box.display}", hint, view.control.held if view else None
    if args.keep:
        console.print(f"the sandbox's files are kept in {box.root}")


@contextlib.contextmanager
def _live_view(args: argparse.Namespace, console: Console, box: Sandbox) -> Iterator[ViewServer | None]:
    """The sandbox's live view when --view or --view-control asks for one; closed before the sandbox."""
    if not wants_view(args):
        yield None
        return
    from env.live_view import LiveViewError
    from tasks.view_server import ViewServer

    def said(change: ControlChange) -> None:
        if change.held:
            console.print(
                Text("live view: you have the desktop; the agent waits after this step", style="yellow")
            )
        else:
            console.print(Text("live view: control given back; the agent goes on", style="yellow"))

    try:
        view = ViewServer(box, control=args.view_control, port=args.view_port, on_change=said)
    except (LiveViewError, OSError) as e:
        raise UsageError(f"--view: {e}") from None
    try:
        yield view
    finally:
        view.close()


def _view_line(view: ViewServer) -> str:
    mode = "you can take the mouse and keyboard" if view.desktop.endpoint.control else "view only"
    return f"watch it live: {view.url}  ({mode}; the URL holds its token: share it with no one)"


def _default_out(task: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-")[:40] or "run"
    return Path("runs") / f"{datetime.now():%Y%m%d-%H%M%S}-{slug}"


def _check_out(args: argparse.Namespace, task: str) -> Path:
    out = args.out or _default_out(task)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"run directory {out} exists and is not empty; pass another --out")
    return out


def _execute(
    console: Console,
    args: argparse.Namespace,
    task: str,
    policy: Policy,
    label: str,
    model: dict[str, Any] | None = None,
) -> int:
    out = _check_out(args, task)
    view = LiveView(console, args.max_steps)
    with _open_desktop(args, console) as (desktop, where, hint, hold):
        g = desktop.geometry
        writer = TrajectoryWriter(
            out,
            RunInfo(
                task=task,
                started_at=time.time(),
                policy=label,
                desktop=where,
                screen=(g.width, g.height),
                dry_run=args.dry_run,
                model=model or {},
            ),
        )
        head = Text(clip(task, 300), style="bold")
        steps = f"{args.max_steps} step{'' if args.max_steps == 1 else 's'}"
        head.append(f"  ({clip(label, 200)} on {where}, up to {steps})")
        if args.dry_run:
            head.append("  DRY RUN: nothing will be executed", style="bold yellow")
        console.print(head, soft_wrap=True)
        if hint:
            view.say(f"{where}: {hint}")
        traj = run(
            task,
            policy,
            desktop,
            max_steps=args.max_steps,
            writer=writer,
            dry_run=args.dry_run,
            confirm=view.ask if args.confirm else None,
            on_step=view.on_step,
            hold=hold,
        )
    if args.dry_run and traj.status is not None:
        # Nothing was executed: the model's "success" describes a screen that never changed. The
        # summary says dry-run instead, and the exit status is 3, never 0 ("the task was done").
        traj = dataclasses.replace(traj, status="dry-run")
    view.summary(traj)
    if args.debug and traj.exception is not None:
        console.print(Text("".join(traceback.format_exception(traj.exception))), soft_wrap=True)
    if isinstance(traj.exception, BackendError):
        return 2  # the model server or weights went away: the user's to fix, like a bad flag
    if args.dry_run:
        return DRY_RUN_DONE if traj.stop_reason == "done" else 1
    return 0 if traj.stop_reason == "done" and traj.status == "success" else 1


def _cmd_run(console: Console, argv: Sequence[str]) -> int:
    args = _run_parser().parse_args(argv)
    check_limits(args)
    _check_out(args, args.task)
    if args.script:
        policy = ScriptedPolicy.from_file(args.script)
        if not len(policy):
            raise UsageError(f"script {args.script} has no steps")
        args.max_steps = min(args.max_steps or len(policy), len(policy))
        return _execute(console, args, args.task, policy, f"script {args.script.name}")
    args.max_steps = args.max_steps or 15
    from tasks.model import build_policy

    # Before any desktop starts: a missing model or an unreachable server is reported at once.
    setup = build_policy(args, LiveView(console, args.max_steps).say, ask_yes_no(console))
    return _execute(console, args, args.task, setup.policy, setup.label, setup.settings)


def _cmd_replay(console: Console, argv: Sequence[str]) -> int:
    args = _replay_parser().parse_args(argv)
    policy = replay_policy(args.run_dir)
    from agent.trajectory import read_info

    task = read_info(args.run_dir).task
    if not len(policy):
        raise UsageError(f"{args.run_dir} has no executed action to replay")
    args.max_steps = min(args.max_steps or len(policy), len(policy))
    return _execute(console, args, task, policy, f"replay of {args.run_dir}")


def _cmd_sandbox(console: Console, argv: Sequence[str]) -> int:
    args = _sandbox_parser().parse_args(argv)
    w, h = args.size
    with make_sandbox(args) as box, _live_view(args, console, box) as view:
        shot = box.root / "screen.png"
        console.print(f"sandbox running on DISPLAY={box.display} ({w}x{h}), /home/user is {box.home}")
        for warning in box.warnings:
            console.print(Text(f"warning: {clip(warning, 300)}", style="yellow"))
        console.print(f"  screenshot, refreshed every 2 s: {shot}")
        console.print(f"  {_view_line(view) if view else view_hint()}")
        console.print(
            "Ctrl-C stops it and removes every process it started"
            + (f"; its files stay in {box.root}." if args.keep else " and its files.")
        )
        try:
            while True:
                box.screenshot().to_image().save(shot)
                time.sleep(2)
        except KeyboardInterrupt:
            console.print("stopping the sandbox")
    return 0


def _report_parser() -> argparse.ArgumentParser:
    p = parser(
        "kimi-agent report",
        "Write RUN_DIR/report.html again, e.g. for a run that was killed before it could.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (holds run.json)")
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    return p


def _cmd_report(console: Console, argv: Sequence[str]) -> int:
    args = _report_parser().parse_args(argv)
    from agent.report import write_report

    d = args.run_dir
    if not (d / "run.json").is_file() and ((d / "pyautogui").is_dir() or (d / "kimi_run.json").is_file()):
        raise UsageError(
            f"{d} is an OSWorld results folder, not a run directory: kimi-agent bench osworld report {d}"
        )
    console.print(Text(f"wrote {write_report(d)}"))
    return 0


def _export_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        formatter_class=HelpFormatter,
        prog="kimi-agent export",
        description="Write runs as a LLaMA-Factory dataset (ShareGPT multimodal): one sample per step, "
        "the exact prompt the agent sent and the reply it acted on (docs: export). By default only what "
        "teaches the right thing goes in: tasks that succeeded, grounding answers that hit their target, "
        "steps that ran cleanly. Dry runs and replays never go in. What was left out is counted at the end.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="RUN_OR_RESULTS_DIR",
        help="run directories (agent or `bench screenspot` runs), or folders holding them (an OSWorld results tree)",
    )
    p.add_argument("--out", type=Path, required=True, help="the dataset directory to write (new or empty)")
    p.add_argument(
        "--include-failed-tasks",
        action="store_true",
        help="also runs that did not succeed: an OSWorld score below 1 (result.txt), a run that ended "
        "in failure or at --max-steps, or one that did not finish (default: left out)",
    )
    p.add_argument(
        "--include-missed",
        action="store_true",
        help="also grounding answers that missed: a point outside the target, or no point at all "
        "(default: left out)",
    )
    p.add_argument(
        "--include-failed-steps",
        "--keep-failed",
        dest="keep_failed",
        action="store_true",
        help="also steps whose reply did not parse or was retried, or whose actions were refused or failed "
        "(default: left out)",
    )
    p.add_argument(
        "--success-only",
        action="store_true",
        help="only runs that succeeded: the default now, kept so older commands run; "
        "not with --include-failed-tasks",
    )
    p.add_argument(
        "--min-score",
        type=float,
        help="runs scoring at least this (result.txt, else 1 done with success / 0), instead of successes only",
    )
    p.add_argument("--task-regex", help="runs whose task matches (grounding: the instruction)")
    p.add_argument("--max-steps", type=int, help="leave out runs that took more steps than this")
    p.add_argument(
        "--thinking",
        choices=["keep", "drop"],
        default="keep",
        help="the target's ◁think▷ part (default: keep)",
    )
    p.add_argument("--max-tokens", type=int, help="drop (and report) samples longer than this")
    p.add_argument(
        "--tokenizer",
        help="a checkpoint directory, or a hub id whose tokenizer files alone are fetched (a few MB); "
        "default: the checkpoint or model the runs name, the same way",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="never fetch a tokenizer from the hub (HF_HUB_OFFLINE=1 does the same); the error says what to run",
    )
    p.add_argument(
        "--name", default="kimi_agent", help="the dataset's name in dataset_info.json (default: kimi_agent)"
    )
    p.add_argument("--copy", action="store_true", help="copy the images (default: hard links where possible)")
    p.add_argument(
        "--image-root",
        type=Path,
        metavar="DIR",
        help="the absolute path the --out directory will have where training reads it (default: its path "
        "here): the tokenized dataset names each image by its path there",
    )
    p.add_argument("--debug", action="store_true", help="a traceback instead of a one-line error")
    return p


def _cmd_export(console: Console, argv: Sequence[str]) -> int:
    args = _export_parser().parse_args(argv)
    for bad, why in (
        (args.max_steps is not None and args.max_steps < 1, "--max-steps must be at least 1"),
        (args.max_tokens is not None and args.max_tokens < 1, "--max-tokens must be at least 1"),
        (
            args.success_only and (args.include_failed_tasks or args.min_score is not None),
            "--success-only (the default) contradicts --include-failed-tasks and --min-score",
        ),
        (
            args.image_root is not None and not args.image_root.is_absolute(),
            f"--image-root must be an absolute path, not {args.image_root}",
        ),
    ):
        if bad:
            raise UsageError(why)
    try:
        regex = re.compile(args.task_regex) if args.task_regex is not None else None
    except re.error as e:
        raise UsageError(f"--task-regex {args.task_regex!r}: {e}") from None
    from agent.backends.weights import resolve_tokenizer
    from agent.export.dataset import NothingToExport, export, left_out
    from agent.export.records import Options
    from agent.models.kimi_vl.tokenizer import load_tokenizer
    from tasks.screenspot.export import GroundingRun

    opts = Options(
        thinking=args.thinking,
        keep_failed=args.keep_failed,
        include_failed_tasks=args.include_failed_tasks,
        include_missed=args.include_missed,
        min_score=args.min_score,
        task_regex=regex,
        max_steps=args.max_steps,
        max_tokens=args.max_tokens,
    )

    def notice(line: str) -> None:
        console.print(Text(clip(line, 400), style="yellow"))

    def resolve(name: str) -> Path:
        return resolve_tokenizer(
            name,
            offline=args.offline,
            notice=notice,
            other_ways="pass --tokenizer CHECKPOINT_DIR_OR_HUB_ID (a local checkpoint directory)",
        )

    try:
        m = export(
            args.inputs,
            args.out,
            opts,
            load_tokenizer,
            resolve(args.tokenizer) if args.tokenizer else None,
            resolve_tokenizer=resolve,
            grounding=GroundingRun,
            name=args.name,
            copy_images=args.copy,
            image_root=args.image_root,
            warn=lambda line: console.print(Text(f"warning: {clip(line, 400)}", style="yellow")),
        )
    except NothingToExport as e:  # not a usage error: the runs are fine, none is training data
        console.print(Text(str(e)), soft_wrap=True)
        return 1
    taken = sum(r.taken for r in m.runs)
    console.print(
        Text(
            f"{len(m.samples)} samples from {taken} of {len(m.runs)} runs; manifest: {args.out / 'manifest.json'}"
        )
    )
    settings = "  ".join(f"{k}: {v}" for k, v in m.llamafactory.items())
    console.print(Text(f"LLaMA-Factory (docs: training): {settings}"), soft_wrap=True)
    skipped = left_out(m)
    if skipped:
        console.print(Text("left out: " + "; ".join(skipped) + " (manifest.json lists each with its reason)"))
    return 0 if m.samples else 1


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, by the command line that reaches it."""
    from tasks.doctor import build_parser as doctor
    from tasks.mcp.cli import parser as mcp
    from tasks.osworld.cli import parser as osworld
    from tasks.osworld.rollout_cli import parser as rollout
    from tasks.screenspot.cli import parser as screenspot
    from tasks.serve import parser as serve

    return {
        "kimi-agent": _run_parser(),
        "kimi-agent replay": _replay_parser(),
        "kimi-agent report": _report_parser(),
        "kimi-agent sandbox": _sandbox_parser(),
        "kimi-agent serve": serve(),
        "kimi-agent mcp": mcp(),
        "kimi-agent export": _export_parser(),
        "kimi-agent doctor": doctor(),
        "kimi-agent rollout": rollout(),
        "kimi-agent bench osworld": osworld(),
        "kimi-agent bench screenspot": screenspot(),
    }


def _cmd_rollout(console: Console, argv: Sequence[str]) -> int:
    from tasks.osworld.rollout_cli import main as rollout

    return rollout(console, list(argv))


def _cmd_doctor(console: Console, argv: Sequence[str]) -> int:
    from tasks.doctor import cmd_doctor

    return cmd_doctor(console, argv)


def _cmd_serve(console: Console, argv: Sequence[str]) -> int:
    from tasks.serve import cmd_serve

    return cmd_serve(console, argv)


def _cmd_mcp(console: Console, argv: Sequence[str]) -> int:
    """`kimi-agent mcp`: prints nothing on the console (stdout is the stdio transport's)."""
    from tasks.mcp.cli import main as mcp

    return mcp(argv)


BENCHMARKS = {
    "screenspot": "grounding benchmarks (ScreenSpot v1/v2/Pro, OSWorld-G): run, score",
    "osworld": "OSWorld tasks: check, list, run, fidelity, setup, report",
}


def _cmd_bench(console: Console, argv: Sequence[str]) -> int:
    """`kimi-agent bench screenspot|osworld ...`: the benchmark harnesses, each with its subcommands."""
    if not argv:
        raise UsageError(f"kimi-agent bench: name a benchmark ({', '.join(BENCHMARKS)}); --help lists them")
    if argv[0] in ("-h", "--help", "help"):
        console.print(Text("usage: kimi-agent bench {screenspot,osworld} COMMAND ... (--help after each)"))
        for name, what in BENCHMARKS.items():
            console.print(Text(f"  {name:<12} {what}"))
        return 0
    if argv[0] not in BENCHMARKS:
        close = difflib.get_close_matches(argv[0], list(BENCHMARKS), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(
            f"kimi-agent bench: no benchmark {argv[0]!r} (there are {', '.join(BENCHMARKS)}){hint}"
        )
    if argv[0] == "osworld":
        from tasks.osworld.cli import main as osworld

        return osworld(list(argv[1:]), console)
    from tasks.screenspot.cli import main as screenspot

    return screenspot(list(argv[1:]))


Command = Callable[[Console, Sequence[str]], int]
COMMANDS: dict[str, Command] = {
    "replay": _cmd_replay,
    "sandbox": _cmd_sandbox,
    "report": _cmd_report,
    "bench": _cmd_bench,
    "export": _cmd_export,
    "rollout": _cmd_rollout,
    "serve": _cmd_serve,
    "mcp": _cmd_mcp,
    "doctor": _cmd_doctor,
}


def _command(argv: list[str]) -> tuple[Command, list[str]]:
    """The command argv names and its arguments; anything else is a task for the agent. A first
    word that is almost a command (or `help`) is refused: a typo must not start a run, let alone
    download the model. `kimi-agent -- WORD` runs WORD as a task all the same."""
    if not argv:
        return _cmd_run, argv
    first = argv[0]
    if first in COMMANDS:
        return COMMANDS[first], argv[1:]
    if first == "--":
        return _cmd_run, argv[1:]
    if first == "help":  # `kimi-agent help [COMMAND [SUBCOMMAND ...]]`: that command's --help
        if len(argv) == 1:
            return _cmd_run, ["--help"]
        if argv[1] not in COMMANDS:
            _command(argv[1:2])  # a typo is refused as `kimi-agent WORD` would be
            raise UsageError(f"kimi-agent help: no command {argv[1]!r} (there are {', '.join(COMMANDS)})")
        return COMMANDS[argv[1]], [*argv[2:], "--help"]
    word = first.strip()
    if word and not word.startswith("-") and len(word.split()) == 1:
        close = difflib.get_close_matches(word.lower(), [*COMMANDS, "help"], n=1, cutoff=0.75)
        if close:
            raise UsageError(
                f"{word!r} is not a command; did you mean {close[0]!r}? "
                f"(to give the agent the task {word!r}: kimi-agent -- {shlex.quote(word)} ...)"
            )
    return _cmd_run, argv


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    console = make_console()
    try:
        command, rest = _command(argv)
        with _terminate_like_ctrl_c():
            return command(console, rest)
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    except Exception as e:  # one clear line, not a traceback
        if "--debug" in argv:
            raise
        line = Text("kimi-agent: error: ", style="red")
        line.append(_one_line(e))
        console.print(line, highlight=False, soft_wrap=True)
        return 2


def _terminate_like_ctrl_c() -> contextlib.AbstractContextManager[None]:
    """SIGTERM (kill, a CI timeout) stops a run the way a second Ctrl-C does: the step in progress
    is recorded, desktops close, held keys are released. Python's default would skip all of it."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    return handling(signal.SIGTERM, handler)


def _one_line(e: BaseException) -> str:
    text = visible(str(e)).strip().splitlines()
    first = text[0] if text else type(e).__name__
    return first if len(text) <= 1 else f"{first} (+{len(text) - 1} more lines; --debug shows all)"


if __name__ == "__main__":
    sys.exit(main())
