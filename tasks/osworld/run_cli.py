"""`kimi-agent bench osworld run SPLIT|TASK_IDS|TASK_FILES` and `kimi-agent bench osworld report OUT`:
their arguments, which tasks they mean, and running them.

``run`` returns 0 when every task of the run has a result, 1 when some are left (a resume runs them);
bad usage and an unavailable model raise, for tasks/cli.py to report on one line (status 2).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from rich.console import Console
from rich.text import Text

from agent.jsonfile import JSONFileError, read_json
from agent.policy import ScriptedPolicy
from tasks.cli_common import UsageError, sleep_after_flag
from tasks.monitor_server import Monitor, add_monitor_flag, monitoring
from tasks.osworld import suite
from tasks.osworld.monitor_board import RunBoard
from tasks.osworld.pool import PoolSettings, SandboxPool
from tasks.osworld.progress import Progress
from tasks.osworld.report import SUMMARY_HTML, Summary, print_summary, summarize, write_html
from tasks.osworld.results import (
    Outcome,
    RunManifest,
    TaskRef,
    exclusive,
    find_runs,
    finished_score,
    model_dir,
    pending,
    write_manifest,
)
from tasks.osworld.runner import (
    SCREEN,
    Agent,
    AgentFactory,
    OfficialScorer,
    RunSettings,
    SandboxTarget,
    Target,
    TargetKind,
    VMTarget,
    WorkerState,
    run_tasks,
)
from tasks.osworld.task import DEFAULT_DIR_VAR, Task, TaskError, load_split, load_task, osworld_dir
from tasks.sandbox_args import add_isolation_flags, isolation

if TYPE_CHECKING:
    from tasks.model import LoadedModel

DEFAULT_SPLIT = "test_nogdrive"  # OSWorld-Verified's standard 361 tasks
SUITE = "suite"  # names tasks/osworld/suite: its split, and for --script-dir its solutions


RUN_DESCRIPTION = (
    "Run OSWorld tasks and score them with OSWorld's own evaluators; results in OSWorld's layout "
    "(<out>/pyautogui/screenshot/<model>/<domain>/<task_id>/). Finished tasks are skipped, so the same "
    "command resumes a killed run. Examples: `run test_small --backend openai --model kimi-vl`; "
    "`run suite --script-dir suite` (our suite's reference solutions); "
    "`run os-hello-file calc-sum-formula --script-dir suite`; `run suite --domain os --limit 3 ...`."
)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `bench osworld run`, on ``p`` (its own parser, or the subcommand's)."""
    from tasks.cli import model_flags

    p.add_argument(
        "tasks",
        nargs="*",
        metavar="SPLIT|TASK_ID|TASK_FILE",
        help=f"a split (file, or name in --osworld-dir; default {DEFAULT_SPLIT}; `{SUITE}`: the tasks "
        "that run on our sandboxes), or task ids (looked up in --osworld-dir, then in the suite), or "
        "task files",
    )
    p.add_argument(
        "--osworld-dir",
        type=Path,
        help=f"OSWorld's evaluation_examples directory (default: ${DEFAULT_DIR_VAR}, else ./evaluation_examples)",
    )
    p.add_argument("--out", type=Path, default=Path("results"), help="results directory (default ./results)")
    p.add_argument("--workers", type=int, help="sandboxes run at once (default 1; with --vm: one per VM)")
    add_pool_flag(p)
    add_ray_flag(p)
    p.add_argument(
        "--vm",
        action="append",
        default=[],
        metavar="URL",
        help="run on this OSWorld-protocol server instead of sandboxes (repeatable: one worker per VM)",
    )
    p.add_argument(
        "--vm-token", help="the --vm servers' token (default: $KIMI_VM_TOKEN; OSWorld's VMs: none)"
    )
    p.add_argument(
        "--vm-revert",
        metavar="CMD",
        help="shell command that puts a VM back in its initial state before each task; $KIMI_VM_URL names it",
    )
    p.add_argument(
        "--max-steps", type=int, default=15, help="model calls per task (OSWorld's max_steps; default 15)"
    )
    p.add_argument(
        "--task-timeout",
        type=float,
        default=3600.0,
        help="seconds a task may take before it scores 0 (default 3600)",
    )
    p.add_argument(
        "--script-dir",
        type=Path,
        help="play DIR/<task_id>.json (the --script format) instead of asking a model; "
        "`suite`: the packaged suite's reference solutions",
    )
    add_selection_flags(p)
    add_isolation_flags(p)
    sleep_after_flag(p)
    add_monitor_flag(p)
    add_run_view_flags(p)
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    model_flags(p)


def add_run_view_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--view",
        action="store_true",
        help="give each worker's sandbox a view-only live view (noVNC on 127.0.0.1, a token in its URL) "
        "while it plays a task: linked from the worker's tile with --monitor, else each URL is printed "
        "as it changes (local workers only; docs/live-view.md)",
    )
    # Declared only to refuse it clearly: a person taking over would change a scored run.
    p.add_argument("--view-control", action="store_true", help=argparse.SUPPRESS)


def check_view(args: argparse.Namespace) -> None:
    """--view's limits on a benchmark run, said before anything starts."""
    if args.view_control:
        raise UsageError(
            "--view-control: benchmark runs are view-only (a person taking over would change a scored run); "
            "use --view"
        )
    if not args.view:
        return
    if args.ray is not None:
        raise UsageError(
            "--view with --ray: Ray workers' sandboxes are on other nodes, whose loopback this machine "
            "cannot reach; run without --ray to watch them"
        )
    if getattr(args, "vm", None):
        raise UsageError("--view shows sandboxes; watch a --vm through its own screen")
    from env.live_view import missing

    if why := missing():
        raise UsageError(f"--view: {why}")


def add_pool_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pool",
        type=int,
        metavar="N",
        help="sandboxes kept started ahead of use, so a task's reset takes a ready one "
        "(default: one per worker; 0: start each task's sandbox when it starts)",
    )


def add_ray_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        metavar="ADDRESS",
        help="run the tasks on a Ray cluster: one sandbox actor per unit of the kimi_sandbox resource its "
        "nodes advertise, results back in --out (docs: ray.md). `--ray` alone (auto): the cluster in "
        "$RAY_ADDRESS, else a local one started now; `--ray HOST:PORT`: that cluster. --workers: actors at "
        "once (default: the cluster's kimi_sandbox total); --pool 0: no sandbox kept ready per actor",
    )
    p.add_argument(
        "--ray-gpus",
        type=float,
        default=1.0,
        metavar="G",
        help="with --ray and --backend transformers: GPUs each model actor asks Ray for (default 1; a "
        "fraction shares a GPU; 0: the model runs on CPU); Ray places the actors on nodes that have them",
    )
    p.add_argument(
        "--ray-models",
        type=int,
        default=1,
        metavar="K",
        help="with --ray and --backend transformers: model actors (replicas of the model, each loaded "
        "once) that the sandbox actors share (default 1)",
    )


def add_selection_flags(p: argparse.ArgumentParser) -> None:
    """Which of the named tasks: shared by `run` and `list`."""
    p.add_argument(
        "--domain",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="only the tasks of this domain (os, chrome, libreoffice_calc, ...; repeatable)",
    )
    p.add_argument("--limit", type=int, metavar="N", help="only the first N tasks (after --domain)")


def resolve(names: Sequence[str], examples: Path | None) -> tuple[str, list[TaskRef]]:
    """The run's name and tasks: one split, or any mix of task files and task ids (looked up as
    examples/<domain>/<id>.json under the OSWorld directory, then in the packaged suite)."""
    base = osworld_dir(examples)
    names = list(names) or [DEFAULT_SPLIT]
    split_file = _split_file(names[0], base) if len(names) == 1 else None
    if split_file is not None:
        split = load_split(split_file)
        return split.name, [_ref(e.domain, e.task_id, e.path, load_task(e.path)) for e in split.entries]
    refs: list[TaskRef] = []
    for name in names:
        path = Path(name)
        if path.suffix == ".json":
            task = load_task(path)
            refs.append(_ref(task.domain, task.id, path, task))
            continue
        found = find_task(name, base)
        if found is None:
            raise TaskError(
                f"task {name}: no file {base / 'examples'}/*/{name}.json nor in the suite (set --osworld-dir)"
            )
        refs.append(_ref(found.parent.name, name, found, load_task(found)))
    ids = [r.task_id for r in refs]
    if len(set(ids)) != len(ids):
        raise TaskError(f"task {next(i for i in ids if ids.count(i) > 1)} is named twice")
    return "tasks", refs


def split_path(name: str, base: Path) -> Path:
    """The file of the split ``name``: a path as given, `suite` (unless the OSWorld directory has a
    split of that name), or ``<base>/<name>.json``."""
    if name == SUITE and not (base / f"{SUITE}.json").is_file():
        return suite.SPLIT  # the packaged suite that runs on our sandboxes
    return Path(name) if Path(name).suffix else base / f"{name}.json"


def find_task(task_id: str, base: Path) -> Path | None:
    """The file of a task id: ``<base>/examples/<domain>/<id>.json``, else the suite's."""
    if not task_id or any(c in task_id for c in "*?[]/\\") or task_id.startswith("."):
        return None  # not an id; a glob pattern must not pick an arbitrary task
    for examples in (base / "examples", suite.EXAMPLES):
        found = sorted(examples.glob(f"*/{task_id}.json"))
        if found:
            return found[0]
    return None


def is_task_file(path: Path) -> bool:
    """Whether ``path`` holds one task (an object with an id and an evaluator), not a split."""
    try:
        data = read_json(path)
    except JSONFileError:
        return False  # load_split / load_task say what is wrong with it
    return isinstance(data, dict) and "evaluator" in data and "id" in data


def _split_file(name: str, base: Path) -> Path | None:
    """The split ``name`` means, or None when it names a task (its file, or its id)."""
    path = split_path(name, base)
    if path.suffix == ".json" and Path(name).suffix:
        return None if is_task_file(path) else path
    if path.is_file():
        return path
    if find_task(name, base) is None:
        raise TaskError(
            f"{name}: neither a split ({base / name}.json) nor a task ({base / 'examples'}/*/{name}.json, "
            f"or one of the suite's); set --osworld-dir or ${DEFAULT_DIR_VAR}"
        )
    return None


class _InDomain(Protocol):
    @property
    def domain(self) -> str: ...


T = TypeVar("T", bound=_InDomain)


def select(refs: list[T], domains: Sequence[str], limit: int | None, name: str) -> list[T]:
    """``refs`` of the given domains (all when none), at most ``limit`` of them, in order."""
    if limit is not None and limit < 1:
        raise UsageError("--limit must be at least 1")
    known = list(dict.fromkeys(r.domain for r in refs))
    unknown = [d for d in domains if d not in known]
    if unknown:
        raise UsageError(f"--domain {unknown[0]}: {name} has no such domain; its domains: {', '.join(known)}")
    chosen = [r for r in refs if not domains or r.domain in domains]
    return chosen[:limit] if limit is not None else chosen


def _ref(domain: str, task_id: str, path: Path, task: Task) -> TaskRef:
    return TaskRef(
        domain=domain,
        task_id=task_id,
        path=str(Path(path).resolve()),
        infeasible="infeasible" in task.evaluator.funcs,
    )


def _targets(args: argparse.Namespace, console: Console, tasks: int) -> list[Target]:
    if args.vm:
        if args.workers not in (None, len(args.vm)):
            raise UsageError(f"--workers {args.workers} with {len(args.vm)} --vm: there is one worker per VM")
        token = args.vm_token or os.environ.get("KIMI_VM_TOKEN") or None

        def notice(line: str) -> None:
            console.print(Text(line, style="yellow"), soft_wrap=True)

        vms = [VMTarget(url, token, args.vm_revert, notice=notice) for url in args.vm]
        for vm in vms:  # a refused token is said now, before a model loads or a task starts
            vm.check_token()
        if not args.vm_revert and tasks > len(vms):
            notice(
                f"warning: {tasks} tasks on {len(vms)} VM{'s' if len(vms) > 1 else ''} without --vm-revert: "
                "each task starts from the state the one before left (its windows, files and settings), "
                "which changes scores; pass --vm-revert CMD to reset a VM before each task (docs: osworld.md, "
                "'Reverting a VM')"
            )
        return list(vms)
    if args.vm_revert:
        raise UsageError("--vm-revert resets VMs; sandboxes are made fresh for every task")
    return sandbox_targets(args, tasks)


def sandbox_targets(args: argparse.Namespace, tasks: int | None = None) -> list[Target]:
    """--workers fresh-per-task sandboxes, with the isolation flags' settings, taken from a warm pool
    of --pool sandboxes (closed with the last of the targets) that starts no more than ``tasks``."""
    n = 1 if args.workers is None else args.workers  # --workers 0 is a mistake, not the default
    if n < 1:
        raise UsageError("--workers must be at least 1")
    size = n if getattr(args, "pool", None) is None else args.pool
    if size < 0:
        raise UsageError("--pool must be 0 or more")
    iso = isolation(args)
    settings = PoolSettings(size, args.desktop_env, iso, max_starts=tasks)
    pool = SandboxPool(settings, close_with_last_user=True) if size and tasks != 0 else None
    view = bool(getattr(args, "view", False))
    return [SandboxTarget(f"sandbox-{i + 1}", args.desktop_env, iso, pool, view=view) for i in range(n)]


def script_dir(args: argparse.Namespace) -> Path:
    """--script-dir's folder (`suite`: the packaged suite's reference solutions)."""
    scripts = Path(args.script_dir)
    if str(scripts) == SUITE and not scripts.is_dir():
        scripts = suite.SOLUTIONS
    if not scripts.is_dir():
        raise FileNotFoundError(f"--script-dir {scripts}: not a directory")
    return scripts


class _Locked:
    """One backend for all workers; a local model generates for one of them at a time."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._lock = threading.Lock()

    def generate(self, *a: Any, **kw: Any) -> Any:
        with self._lock:
            return self._backend.generate(*a, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def make_agents(
    args: argparse.Namespace, console: Console, refs: list[TaskRef], loaded: LoadedModel | None = None
) -> tuple[AgentFactory, str, str]:
    """How each task gets its player; the model's name (for the results path) and a label.
    ``loaded``: the transformers model loaded elsewhere (Ray's model actors), not here."""
    if args.script_dir is not None:
        scripts = script_dir(args)

        def scripted(task: Task) -> Agent:
            path = scripts / f"{task.id}.json"
            if not path.is_file():
                raise FileNotFoundError(f"no script for this task: {path}")
            policy = ScriptedPolicy.from_file(path)
            return Agent(policy, max(1, min(args.max_steps, len(policy))), f"script {path.name}")

        return scripted, f"script-{scripts.resolve().name}", f"scripts in {scripts}"

    from agent.model_policy import ModelPolicy
    from tasks.cli_common import ask_yes_no, check_limits
    from tasks.live import LiveView
    from tasks.model import build_policy

    instructions = [load_task(Path(r.path)).instruction for r in refs]
    args.task = max(instructions, key=len) if instructions else "task"
    args.desktop = "vm" if args.vm else "sandbox"
    args.size = SCREEN
    check_limits(args)
    setup = build_policy(args, LiveView(console, args.max_steps).say, ask_yes_no(console), loaded)
    first = setup.policy
    # A local model generates for one worker at a time; a server (or a Ray model actor, which runs
    # its calls one at a time itself) takes them as they come.
    shared = args.backend == "openai" or loaded is not None
    backend = first.backend if shared else _Locked(first.backend)
    cfg = first.context.cfg

    def model(task: Task) -> Agent:
        policy = ModelPolicy(
            backend,
            first.variant,
            profile=first.profile,
            count_text_tokens=cfg.count_text_tokens,
            history_images=cfg.max_images,
            max_context=cfg.max_context,
            temperature=first.params.temperature,
            max_new_tokens=first.params.max_new_tokens,
            parse_retries=first.parse_retries,
            prompt_profile=cfg.profile,
            prompt_dir=cfg.prompt_dir,
        )
        return Agent(policy, args.max_steps, setup.label, setup.settings)

    return model, args.model, setup.label


class Remote(Protocol):
    """Workers elsewhere (tasks/osworld/ray_driver.RayRunner): they run a run's pending tasks into
    its root, as ``run_tasks`` does with local targets."""

    kind: TargetKind

    @property
    def workers(self) -> int: ...

    def run(
        self,
        tasks: list[TaskRef],
        settings: RunSettings,
        on_done: Callable[[Outcome], None],
        watch: Callable[[list[WorkerState]], None] | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class Player:
    """Who plays a run's tasks: the name its results are kept under, a label, and the factory."""

    model: str
    label: str
    max_steps: int
    agents: AgentFactory


def play(
    split: str,
    refs: list[TaskRef],
    player: Player,
    targets: list[Target],
    args: argparse.Namespace,
    console: Console,
    resume: bool = True,
    remote: Remote | None = None,
) -> Summary:
    """Run ``refs`` into ``args.out`` (OSWorld's layout, with the live view) and return the run's
    summary (summary.html / .json written). ``resume``: skip the tasks that already have a result;
    otherwise play them all again. ``args`` gives --out, --task-timeout, --no-network, --sleep-after.
    ``remote``: run them on those workers instead of ``targets`` (then empty)."""
    root = model_dir(args.out, player.model)
    try:
        return _play(split, refs, player, targets, args, console, resume, root, remote)
    finally:
        for t in targets:  # the workers closed theirs; this closes them when no worker ran (and a pool)
            t.close()


def _play(
    split: str,
    refs: list[TaskRef],
    player: Player,
    targets: list[Target],
    args: argparse.Namespace,
    console: Console,
    resume: bool,
    root: Path,
    remote: Remote | None,
) -> Summary:
    workers = remote.workers if remote is not None else len(targets)
    kind = remote.kind if remote is not None else (targets[0].kind if targets else None)
    with exclusive(root):
        write_manifest(
            root,
            RunManifest(
                split=split,
                model=player.model,
                policy=player.label,
                max_steps=player.max_steps,
                started_at=time.time(),
                tasks=refs,
                target=kind,
            ),
        )
        todo = pending(root, refs) if resume else refs
        done = len(refs) - len(todo)
        console.print(
            Text(
                f"{split}: {len(refs)} tasks, {done} already finished, {len(todo)} to run on "
                f"{workers}{' Ray' if remote is not None else ''} worker{'s' if workers != 1 else ''} "
                f"({player.label}); results in {root}"
            ),
            soft_wrap=True,
        )
        settings = RunSettings(
            root=root,
            task_timeout_s=args.task_timeout,
            network=not args.no_network,
            sleep_after_s=args.sleep_after,
        )
        with (
            Progress(
                console,
                len(refs),
                done,
                finished_score(root, refs) if resume else 0.0,
                views=bool(getattr(args, "view", False)) and getattr(args, "monitor", None) is None,
            ) as progress,
            _monitor(args, split, progress, root, refs, console) as (board, monitor),
        ):

            def on_done(o: Outcome) -> None:
                progress.finished(o)
                if board is not None:
                    board.finished(o)

            try:
                if remote is not None:
                    remote.run(todo, settings, on_done, progress.watch)
                else:
                    _run_here(todo, targets, player, settings, on_done, progress.watch)
            finally:
                summary = summarize(root)
                write_html(summary)
                if board is not None and monitor is not None:
                    board.end()
                    monitor.finish()
    return summary


@contextlib.contextmanager
def _monitor(
    args: argparse.Namespace,
    title: str,
    progress: Progress,
    root: Path,
    refs: list[TaskRef],
    console: Console,
) -> Iterator[tuple[RunBoard | None, Monitor | None]]:
    """The run monitor (--monitor; rollouts and runs both come here), fed by ``progress``."""
    port = getattr(args, "monitor", None)
    if port is None:
        yield None, None
        return
    board = RunBoard(title, progress, root, refs)
    with monitoring(port, board, lambda line: console.print(Text(line), soft_wrap=True), results=root) as m:
        yield board, m


def _run_here(
    todo: list[TaskRef],
    targets: list[Target],
    player: Player,
    settings: RunSettings,
    on_done: Callable[[Outcome], None],
    watch: Callable[[list[WorkerState]], None],
) -> None:
    scorer = OfficialScorer(settings.cache_dir)
    try:
        run_tasks(todo, targets, player.agents, scorer, settings, on_done, watch)
    finally:
        scorer.close()


def main_run(args: argparse.Namespace, console: Console) -> int:
    """`bench osworld run`, its arguments as ``add_run_arguments`` declares them."""
    if args.max_steps < 1:
        raise UsageError("--max-steps must be at least 1")
    if args.task_timeout <= 0:
        raise UsageError("--task-timeout must be above 0")
    check_view(args)
    split, refs = resolve(args.tasks, args.osworld_dir)
    refs = select(refs, args.domain, args.limit, split)
    if args.ray is not None:
        from tasks.osworld.ray_cli import play_on_ray

        summary, model = play_on_ray(split, refs, args, console)
    else:
        summary, model = _play_here(split, refs, args, console)
    root = model_dir(args.out, model)
    print_summary(summary, console)
    console.print(Text(f"summary: {summary.root / SUMMARY_HTML}"))
    left = len(pending(root, refs))
    if left:
        console.print(Text(f"{left} tasks have no result yet: run the same command again to resume"))
    return 0 if not left else 1


def _play_here(
    split: str, refs: list[TaskRef], args: argparse.Namespace, console: Console
) -> tuple[Summary, str]:
    from tasks.osworld.evalenv import ready_python

    ready_python()  # scoring needs the evaluator environment: say so now, not as 361 zeros
    targets = _targets(args, console, len(refs))  # a pool's sandboxes start now, while a model loads
    try:
        agents, model, label = make_agents(args, console, refs)
    except BaseException:
        for t in targets:
            t.close()
        raise
    player = Player(model, label, args.max_steps, agents)
    return play(split, refs, player, targets, args, console), model


REPORT_DESCRIPTION = (
    "Print the summary of OSWorld runs again and rewrite their summary.html, from their files."
)


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="a results directory (--out of run), or one model directory in it")
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")


def main_report(args: argparse.Namespace, console: Console) -> int:
    """`bench osworld report OUT`."""
    runs = find_runs(args.out)
    if not runs:
        raise FileNotFoundError(f"{args.out}: no OSWorld run (kimi_run.json) under it")
    for root in runs:
        summary = summarize(root)
        print_summary(summary, console)
        console.print(Text(f"summary: {write_html(summary)}"))
    return 0
