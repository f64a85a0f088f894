"""`kimi-agent "task"`, `kimi-agent replay RUN_DIR`, `kimi-agent sandbox`, `kimi-agent serve`,
`kimi-agent export`."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
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

from agent.backend import BackendError
from agent.loop import handling, run
from agent.policy import Policy, ScriptedPolicy
from agent.replay import replay_policy
from agent.text import visible
from agent.trajectory import RunInfo, TrajectoryWriter
from agent.weights import DEFAULT_MODEL
from env.desktop import Desktop
from tasks.live import LiveView, clip
from tasks.sandbox_args import add_sandbox_flags, make_sandbox

if TYPE_CHECKING:
    from env.sandbox import Sandbox
    from env.settle import Settle

# Spelled out here so that `kimi-agent --help` does not import torch; tests check them against
# agent.kimi_policy.VariantName and agent.history.PROFILES.
VARIANTS = ["instruct", "thinking", "thinking-2506"]
PROFILES = ["append", "osworld"]


class UsageError(Exception):
    """Bad flags or inputs: reported as one line, exit status 2."""


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
        "`kimi-agent serve` (README: OSWorld protocol server and VMs)",
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


def _seconds(text: str) -> float:
    try:
        s = float(text)
    except ValueError:
        s = -1.0
    if not 0 <= s <= 60:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 60, got {text!r}")
    return s


def sleep_after_flag(p: argparse.ArgumentParser) -> None:
    """``--sleep-after``: shared by the run commands and `bench osworld run`."""
    p.add_argument(
        "--sleep-after",
        type=_seconds,
        metavar="S",
        help="sleep S seconds after every action, as OSWorld's runners do (--sleep_after_execution; 3 in "
        "Kimi's), instead of waiting until the screen settles (default: wait)",
    )


def settle_of(args: argparse.Namespace) -> Settle:
    from env.settle import Settle

    return Settle(sleep_after_s=args.sleep_after)


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kimi-agent",
        description="Let Kimi-VL operate a computer. Also: `kimi-agent replay RUN_DIR`, `kimi-agent report "
        "RUN_DIR`, `kimi-agent sandbox`, `kimi-agent serve`, `kimi-agent bench screenspot`, `kimi-agent export "
        "RUN_DIR... --out DIR`. Exit status: 0 the task was done, 1 it was not (failure, max steps, "
        "interrupted, ...), 2 a usage error or the model (server or weights) is unavailable.",
    )
    p.add_argument("task", help="what to do, in plain words")
    _desktop_flags(p)
    p.add_argument(
        "--script",
        type=Path,
        help="play a JSON file instead of asking a model: a list of steps, each an action object or a list "
        'of them, e.g. [{"kind": "click", "point": {"x": 0.5, "y": 0.5}}, {"kind": "type", "text": "hi"}] '
        "(README: Scripts)",
    )
    model_flags(p)
    return p


def model_flags(p: argparse.ArgumentParser) -> None:
    """The model options, shared by `kimi-agent "task"` and `kimi-agent bench osworld run`."""
    m = p.add_argument_group("model")
    m.add_argument("--backend", choices=["transformers", "openai"], default="transformers")
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
    m.add_argument(
        "--variant",
        choices=VARIANTS,
        help="which Kimi-VL checkpoint this is; default: from the checkpoint the backend reports",
    )
    m.add_argument(
        "--in-token-limit", type=int, help="MoonViT's patch limit per image; default: the checkpoint's"
    )
    m.add_argument("--temperature", type=float, help="default: the variant's (0.2 Instruct, 0.8 Thinking)")
    m.add_argument("--max-new-tokens", type=int, help="default: 1024 Instruct, 8192 Thinking")
    m.add_argument("--history-images", type=int, default=3, help="screenshots kept in context (default 3)")
    m.add_argument("--max-context", type=int, default=32768, help="context budget in tokens (default 32768)")
    m.add_argument(
        "--prompt-profile",
        choices=list(PROFILES),
        default=PROFILES[0],
        help=f"history layout and wording (default {PROFILES[0]}; README: Prompt profiles)",
    )
    m.add_argument(
        "--prompt-dir",
        type=Path,
        help="a directory of prompt templates that replace the packaged ones of the same name",
    )


def _replay_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kimi-agent replay", description="Re-execute a recorded run's actions.")
    p.add_argument("run_dir", type=Path)
    _desktop_flags(p)
    return p


def _sandbox_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kimi-agent sandbox", description="Start a sandbox and keep it until Ctrl-C."
    )
    add_sandbox_flags(p)
    p.add_argument("--debug", action="store_true")
    return p


@contextlib.contextmanager
def _open_desktop(args: argparse.Namespace, console: Console) -> Iterator[tuple[Desktop, str, str | None]]:
    """The desktop, its name for the record, and how to watch it (sandboxes only)."""
    if args.vm:
        if args.app:
            raise UsageError("--app starts programs in a sandbox; with --vm, start them on the VM")
        from env.osworld_client import OSWorldClient
        from env.vm_desktop import VMDesktop

        token = args.vm_token or os.environ.get("KIMI_VM_TOKEN") or None
        with VMDesktop(OSWorldClient(args.vm, token=token), settle=settle_of(args)) as vm:
            yield vm, vm.name, None
        return
    if args.desktop == "local":
        from env.local import LocalDesktop

        desktop = LocalDesktop(monitor=args.monitor, settle=settle_of(args))
        try:
            yield desktop, f"local monitor {args.monitor}", None
        finally:
            desktop.close()
        return
    with make_sandbox(args) as box:
        box.settle = settle_of(args)  # from the first action on; the start still waits for the apps
        for warning in box.warnings:  # an --app that showed no window, say
            console.print(Text(f"warning: {clip(warning, 300)}", style="yellow"))
        yield box, f"sandbox {box.display}", _watch_hint(box)
    if args.keep:
        console.print(f"the sandbox's files are kept in {box.root}")


def _watch_hint(box: Sandbox) -> str:
    return (
        f"watch it live: x11vnc -display {box.display} -auth {box.xauthority} -localhost -nopw "
        "(Debian: apt-get install x11vnc), then a VNC viewer on localhost:5900"
    )


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
    with _open_desktop(args, console) as (desktop, where, hint):
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
        )
    view.summary(traj)
    if args.debug and traj.exception is not None:
        console.print(Text("".join(traceback.format_exception(traj.exception))), soft_wrap=True)
    if isinstance(traj.exception, BackendError):
        return 2  # the model server or weights went away: the user's to fix, like a bad flag
    return 0 if traj.stop_reason == "done" and traj.status == "success" else 1


def _ask_yes_no(console: Console) -> Callable[[str], bool] | None:
    """A y/N question when a person is at the terminal; None (go ahead) when not."""
    if not sys.stdin.isatty():
        return None

    def ask(question: str) -> bool:
        return console.input(Text(f"{question} [y/N] ")).strip().lower() in ("y", "yes")

    return ask


def _check_limits(args: argparse.Namespace) -> None:
    """Values no run can use are usage errors now, not a failure after the desktop started."""
    problems = [
        (not args.task.strip(), "the task is empty"),
        (args.max_steps is not None and args.max_steps < 1, "--max-steps must be at least 1"),
        (args.retries < 0, "--retries must be at least 0"),
        (args.timeout <= 0, "--timeout must be above 0"),
        (args.in_token_limit is not None and args.in_token_limit < 1, "--in-token-limit must be at least 1"),
        (args.history_images < 1, "--history-images must be at least 1 (the current screen)"),
        (args.temperature is not None and args.temperature < 0, "--temperature must not be negative"),
        (args.max_new_tokens is not None and args.max_new_tokens < 1, "--max-new-tokens must be at least 1"),
        (
            args.max_new_tokens is not None and args.max_new_tokens >= args.max_context,
            "--max-new-tokens must be below --max-context",
        ),
    ]
    for bad, why in problems:
        if bad:
            raise UsageError(why)


def _cmd_run(console: Console, argv: Sequence[str]) -> int:
    args = _run_parser().parse_args(argv)
    _check_limits(args)
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
    setup = build_policy(args, LiveView(console, args.max_steps).say, _ask_yes_no(console))
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
    with make_sandbox(args) as box:
        shot = box.root / "screen.png"
        console.print(f"sandbox running on DISPLAY={box.display} ({w}x{h}), /home/user is {box.home}")
        for warning in box.warnings:
            console.print(Text(f"warning: {clip(warning, 300)}", style="yellow"))
        console.print(f"  screenshot, refreshed every 2 s: {shot}")
        console.print(f"  {_watch_hint(box)}")
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


def _cmd_report(console: Console, argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="kimi-agent report",
        description="Write RUN_DIR/report.html again, e.g. for a run that was killed before it could.",
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    from agent.report import write_report

    console.print(Text(f"wrote {write_report(args.run_dir)}"))
    return 0


def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kimi-agent export",
        description="Write runs as a LLaMA-Factory dataset (ShareGPT multimodal): one sample per step, "
        "the exact prompt the agent sent and the reply it acted on (README: Training data export).",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="RUN_OR_RESULTS_DIR")
    p.add_argument("--out", type=Path, required=True, help="the dataset directory to write (new or empty)")
    p.add_argument("--success-only", action="store_true", help="runs done with success (OSWorld: score 1.0)")
    p.add_argument("--min-score", type=float, help="runs scoring at least this (result.txt, else 1/0)")
    p.add_argument("--task-regex", help="runs whose task matches (grounding: the instruction)")
    p.add_argument("--max-steps", type=int, help="leave out runs that took more steps than this")
    p.add_argument(
        "--keep-failed",
        action="store_true",
        help="also steps whose reply did not parse or was retried, or whose actions were refused or failed",
    )
    p.add_argument("--thinking", choices=["keep", "drop"], default="keep", help="the target's ◁think▷ part")
    p.add_argument("--max-tokens", type=int, help="drop (and report) samples longer than this")
    p.add_argument(
        "--tokenizer", type=Path, help="a checkpoint directory (default: the runs' own checkpoint)"
    )
    p.add_argument("--name", default="kimi_agent", help="the dataset's name in dataset_info.json")
    p.add_argument("--copy", action="store_true", help="copy the images (default: hard links where possible)")
    p.add_argument("--debug", action="store_true")
    return p


def _cmd_export(console: Console, argv: Sequence[str]) -> int:
    args = _export_parser().parse_args(argv)
    for bad, why in (
        (args.max_steps is not None and args.max_steps < 1, "--max-steps must be at least 1"),
        (args.max_tokens is not None and args.max_tokens < 1, "--max-tokens must be at least 1"),
    ):
        if bad:
            raise UsageError(why)
    try:
        regex = re.compile(args.task_regex) if args.task_regex is not None else None
    except re.error as e:
        raise UsageError(f"--task-regex {args.task_regex!r}: {e}") from None
    from agent.export.dataset import export
    from agent.export.records import Options
    from agent.tokenizer import load_tokenizer
    from tasks.screenspot.export import GroundingRun

    opts = Options(
        thinking=args.thinking,
        keep_failed=args.keep_failed,
        success_only=args.success_only,
        min_score=args.min_score,
        task_regex=regex,
        max_steps=args.max_steps,
        max_tokens=args.max_tokens,
    )
    m = export(
        args.inputs,
        args.out,
        opts,
        load_tokenizer,
        args.tokenizer,
        grounding=GroundingRun,
        name=args.name,
        copy_images=args.copy,
        warn=lambda line: console.print(Text(f"warning: {clip(line, 400)}", style="yellow")),
    )
    taken = sum(r.taken for r in m.runs)
    over = sum(1 for r in m.runs for k in r.skipped if "--max-tokens" in k.reason)
    console.print(
        Text(
            f"{len(m.samples)} samples from {taken} of {len(m.runs)} runs; {m.skipped_steps} steps or records "
            f"skipped ({over} over --max-tokens); manifest: {args.out / 'manifest.json'}"
        )
    )
    lf = m.llamafactory
    console.print(
        Text(
            f"LLaMA-Factory: dataset_dir: {args.out}  dataset: {m.dataset}  template: kimi_vl  mask_history: true  "
            f"image_max_pixels: {lf['image_max_pixels']}  cutoff_len: >= {lf['cutoff_len']}"
        )
    )
    return 0 if m.samples else 1


def _cmd_serve(console: Console, argv: Sequence[str]) -> int:
    from tasks.serve import cmd_serve

    return cmd_serve(console, argv)


BENCHMARKS = ("screenspot", "osworld")


def _cmd_bench(console: Console, argv: Sequence[str]) -> int:
    """`kimi-agent bench screenspot|osworld ...`: the benchmark harnesses, each with its own flags."""
    if not argv or argv[0] not in BENCHMARKS:
        if argv and argv[0] in ("-h", "--help"):
            console.print(
                Text(f"usage: kimi-agent bench {{{','.join(BENCHMARKS)}}} ... (--help after the name)")
            )
            return 0
        raise UsageError(f"kimi-agent bench: name a benchmark ({', '.join(BENCHMARKS)})")
    if argv[0] == "osworld":
        from tasks.osworld.cli import main as osworld

        return osworld(list(argv[1:]), console)
    from tasks.screenspot.cli import main as screenspot

    return screenspot(list(argv[1:]))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    console = Console()
    commands = {
        "replay": _cmd_replay,
        "sandbox": _cmd_sandbox,
        "report": _cmd_report,
        "bench": _cmd_bench,
        "export": _cmd_export,
        "serve": _cmd_serve,
    }
    command = commands.get(argv[0], _cmd_run) if argv else _cmd_run
    rest = argv[1:] if argv and argv[0] in commands else argv
    try:
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
