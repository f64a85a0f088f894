"""`kimi-agent rollout TASKS --group K --workers N`: each OSWorld task K times with one policy, through
the OSWorld runner (its sandboxes, setup, official scoring), written as K ordinary run directories per
task and, beside them, rollouts.jsonl and groups.jsonl for trainers (tasks/osworld/rollout.py).

Returns 0 when every rollout has a result, 1 when some are left (the same command resumes them);
bad usage raises, for tasks/cli.py to report on one line (status 2).
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.text import Text

from agent.models.kimi_vl.chat import KimiChat
from tasks.cli_common import HelpFormatter, UsageError, sleep_after_flag
from tasks.monitor_server import add_monitor_flag
from tasks.osworld import rollout
from tasks.osworld.results import TaskRef, model_dir, pending
from tasks.osworld.run_cli import (
    DEFAULT_SPLIT,
    SUITE,
    Player,
    add_pool_flag,
    add_ray_flag,
    add_run_view_flags,
    add_selection_flags,
    check_view,
    make_agents,
    play,
    resolve,
    sandbox_targets,
    select,
)
from tasks.osworld.runner import unsupported
from tasks.osworld.task import DEFAULT_DIR_VAR, load_task
from tasks.sandbox_args import add_isolation_flags

DESCRIPTION = (
    "Run each OSWorld task K times (--group) with one policy on N sandboxes (--workers), scored by "
    "OSWorld's own evaluators, for GRPO-style training. Each rollout is an ordinary run directory "
    "(<out>/pyautogui/screenshot/<model>/<domain>/<task_id>/rollout-<k>/, which `kimi-agent export` "
    "reads); beside them rollouts.jsonl (per rollout: reward, and per step the exact prompt token ids, "
    "images and sampled reply ids) and groups.jsonl (per task: the group's rewards, mean and std). "
    "Finished rollouts are kept, so the same command resumes. Docs: training.md, 'Grouped rollouts'. "
    "Examples: `rollout os-hello-file --group 8 --workers 2 --backend openai --model kimi-vl`; "
    "`rollout suite --domain os --group 4 --script-dir suite`."
)


def parser() -> argparse.ArgumentParser:
    from tasks.cli import model_flags

    p = argparse.ArgumentParser(
        prog="kimi-agent rollout", description=DESCRIPTION, formatter_class=HelpFormatter
    )
    p.add_argument(
        "tasks",
        nargs="*",
        metavar="SPLIT|TASK_ID|TASK_FILE",
        help=f"as `bench osworld run` takes them: a split (default {DEFAULT_SPLIT}; `{SUITE}`: the tasks that "
        "run on our sandboxes), task ids (looked up in --osworld-dir, then in the suite), or task files",
    )
    p.add_argument(
        "--group", type=int, required=True, metavar="K", help="rollouts per task (GRPO's group size)"
    )
    p.add_argument("--workers", type=int, help="sandboxes run at once (default 1)")
    add_pool_flag(p)
    add_ray_flag(p)
    p.add_argument(
        "--osworld-dir",
        type=Path,
        help=f"OSWorld's evaluation_examples directory (default: ${DEFAULT_DIR_VAR}, else ./evaluation_examples)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("rollouts"), help="results directory (default ./rollouts)"
    )
    p.add_argument(
        "--max-steps", type=int, default=15, help="model calls per rollout (OSWorld's max_steps; default 15)"
    )
    p.add_argument(
        "--task-timeout", type=float, default=3600.0, help="seconds a rollout may take before it scores 0"
    )
    p.add_argument(
        "--script-dir",
        type=Path,
        help="play DIR/<task_id>.json (the --script format) instead of asking a model; `suite`: the "
        "packaged suite's reference solutions (rollouts then carry rewards and actions, no token ids)",
    )
    p.add_argument(
        "--tokenizer",
        metavar="CHECKPOINT_DIR_OR_HUB_ID",
        help="the tokenizer that gives the prompt ids (default: the checkpoint the runs name, as "
        "`kimi-agent export` finds it)",
    )
    p.add_argument(
        "--no-token-ids",
        dest="return_token_ids",
        action="store_false",
        help="(openai) do not ask the server for the sampled ids (vLLM's return_token_ids), for a server "
        "that refuses the parameter; the replies' text is tokenized instead",
    )
    add_selection_flags(p)
    add_isolation_flags(p)
    sleep_after_flag(p)
    add_monitor_flag(p)
    add_run_view_flags(p)
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    model_flags(p)
    p.set_defaults(vm=[])  # rollouts run on sandboxes; run_cli's player reads --vm to say where it plays
    return p


def check_supported(refs: list[TaskRef], network: bool) -> None:
    """A task a sandbox cannot run would give K rewards of 0 that say nothing: refuse it now,
    with the coverage check's reason."""
    for ref in refs:
        why = unsupported(load_task(Path(ref.path)), ref.domain, "sandbox", network)
        if why:
            raise UsageError(f"task {ref.task_id}: not supported on a sandbox: {why}")


def main(console: Console, argv: list[str]) -> int:
    args = parser().parse_args(argv)
    for bad, why in (
        (args.group < 1, f"--group must be at least 1, not {args.group}"),
        (args.max_steps < 1, "--max-steps must be at least 1"),
        (args.task_timeout <= 0, "--task-timeout must be above 0"),
    ):
        if bad:
            raise UsageError(why)
    check_view(args)
    split, refs = resolve(args.tasks, args.osworld_dir)
    refs = select(refs, args.domain, args.limit, split)
    check_supported(refs, network=not args.no_network)
    runs = rollout.rollout_refs(refs, args.group)
    name = f"{split} x{args.group}"
    if args.ray is not None:
        from tasks.osworld.ray_cli import ray_player

        with ray_player(args, console, refs) as (runner, player):
            play(name, runs, player, [], args, console, remote=runner)
    else:
        from tasks.osworld.evalenv import ready_python

        ready_python()  # scoring needs the evaluator environment: say so now, not as K zeros per task
        targets = sandbox_targets(args, len(runs))  # a pool's sandboxes start now, while a model loads
        try:
            agents, model, label = make_agents(args, console, refs)
        except BaseException:
            for t in targets:
                t.close()
            raise
        player = Player(model, label, args.max_steps, agents)
        play(name, runs, player, targets, args, console)
    model = player.model
    root = model_dir(args.out, model)
    chat_for = None if args.script_dir is not None else _chats(args, console, root, runs)
    w = rollout.write(root, refs, args.group, chat_for)
    console.print(
        Text(
            f"{w.rollouts} rollouts in {w.groups} groups ({w.complete_groups} complete), {w.steps} steps "
            f"({w.sampled_steps} with sampled reply ids, {w.skipped_steps} left without ids): "
            f"{root / rollout.ROLLOUTS_FILE}, {root / rollout.GROUPS_FILE}"
        ),
        soft_wrap=True,
    )
    left = len(pending(root, runs))
    if left:
        console.print(Text(f"{left} rollouts have no result yet: run the same command again to resume"))
    return 0 if not left else 1


def _chats(args: argparse.Namespace, console: Console, root: Path, runs: list[TaskRef]) -> rollout.ChatFor:
    """The chat template through the tokenizer the runs name (or --tokenizer), one per image budget."""
    from agent.backends.weights import resolve_tokenizer
    from agent.export.dataset import CountingChat, default_tokenizer
    from agent.export.trajectories import AgentRun
    from agent.models.kimi_vl.tokenizer import load_tokenizer
    from tasks.osworld.results import ref_dir

    def notice(line: str) -> None:
        console.print(Text(line, style="yellow"), soft_wrap=True)

    resolve = partial(
        resolve_tokenizer,
        offline=args.offline,
        notice=notice,
        other_ways="pass --tokenizer CHECKPOINT_DIR_OR_HUB_ID (a local checkpoint directory)",
    )
    if args.tokenizer:
        path = resolve(args.tokenizer)
    else:
        played = [ref_dir(root, r) for r in runs if (ref_dir(root, r) / "run.json").is_file()]
        if not played:
            return lambda limit: _no_tokenizer()
        path = default_tokenizer([AgentRun(d) for d in played], resolve)
    tok = load_tokenizer(path)
    chats: dict[int, KimiChat] = {}

    def chat_for(in_token_limit: int) -> KimiChat:
        if in_token_limit not in chats:
            chats[in_token_limit] = CountingChat(tok, in_token_limit)
        return chats[in_token_limit]

    return chat_for


def _no_tokenizer() -> KimiChat:
    raise ValueError("no rollout played a step, so none names its tokenizer")
