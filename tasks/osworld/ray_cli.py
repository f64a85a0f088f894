"""`--ray [ADDRESS]` of `bench osworld run` and `kimi-agent rollout`: the checks that need no cluster,
joining it, and the player the driver records runs under (docs/ray.md). Ray is imported only here
and below, so the rest of the CLI runs without the extra installed.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from tasks.cli_common import UsageError
from tasks.osworld.report import Summary
from tasks.osworld.results import TaskRef
from tasks.osworld.run_cli import Player, make_agents, play, script_dir

if TYPE_CHECKING:
    from tasks.osworld.ray_driver import RayRunner

INSTALL_HINT = "pip install 'kimi-agent[ray]'"
LOOPBACK_ONLY_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": one node, every port on 127.0.0.1


def check_gpus(gpus: float) -> str | None:
    """Why ``--ray-gpus`` cannot be asked of Ray, or None: 0, a fraction up to 1, or a whole number
    (Ray's rule for resource amounts)."""
    if not math.isfinite(gpus) or gpus < 0:
        return f"--ray-gpus must be 0 or more, not {gpus:g}"
    if gpus > 1 and not gpus.is_integer():
        return f"--ray-gpus above 1 must be a whole number (Ray's rule), not {gpus:g}"
    return None


def check_flags(args: argparse.Namespace) -> None:
    """What --ray cannot go with, said before anything starts."""
    if getattr(args, "vm", None):
        raise UsageError("--ray runs tasks on the cluster's sandboxes; --vm names machines of your own")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.pool is not None and args.pool < 0:
        raise UsageError("--pool must be 0 or more")
    if args.ray_models < 1:
        raise UsageError(f"--ray-models must be at least 1, not {args.ray_models}")
    if (why := check_gpus(args.ray_gpus)) is not None:
        raise UsageError(why)


def model_on_ray(args: argparse.Namespace) -> bool:
    """Whether the run's model is loaded in Ray model actors (--backend transformers)."""
    return args.script_dir is None and args.backend == "transformers"


@contextmanager
def ray_player(
    args: argparse.Namespace, console: Console, refs: list[TaskRef]
) -> Iterator[tuple[RayRunner, Player]]:
    """The cluster's runner and the run's player; the driver leaves the cluster on exit. The model
    is checked here (an openai server is probed; scripts are read, for the nodes), and built again
    in each actor; the transformers backend's model is loaded in model actors on the cluster
    (tasks/osworld/ray_model.py), ended on exit."""
    check_flags(args)
    if args.ray == "auto" and not os.environ.get("RAY_ADDRESS") and "ray" not in sys.modules:
        # The local cluster started now serves this run alone: Ray binds its ports on every
        # interface unless this is set before it is imported (then 127.0.0.1 only). Anyone who
        # reaches a Ray port can run code; a user's own cluster is theirs to expose (docs/ray.md).
        os.environ.setdefault(LOOPBACK_ONLY_VAR, "0")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError(f"--ray needs Ray: {INSTALL_HINT}") from None
    from agent.version import version_record
    from tasks.osworld.ray_driver import RayRunner, connect
    from tasks.osworld.ray_model import ModelReplicas, check_room, start_models, stop_models

    scripts = None
    if args.script_dir is not None:
        folder = script_dir(args)
        files = {r.task_id: folder / f"{r.task_id}.json" for r in refs}
        scripts = {task_id: f.read_bytes() for task_id, f in files.items() if f.is_file()}
    models: ModelReplicas | None = None
    try:
        if model_on_ray(args):
            # The model is loaded on the cluster, not here: join it first.
            where = connect(args.ray, args.workers)
            k, g = args.ray_models, args.ray_gpus
            check_room(g, k)
            loading = f"loading {k} model actor{'s' if k != 1 else ''} of {g:g} GPU{'s' if g != 1 else ''}"
            console.print(Text(f"Ray: {where}; {loading}"), soft_wrap=True)
            models = start_models(dict(vars(args)), g, k)
            agents, model, label = make_agents(args, console, refs, models.loaded())
        else:
            agents, model, label = make_agents(args, console, refs)
            where = connect(args.ray, args.workers)
        runner = RayRunner(dict(vars(args)), scripts, args.workers, console, version_record().version, models)
        on = f"; model actors: {', '.join(models.names)}" if models is not None else ""
        console.print(Text(f"Ray: {where}; {runner.capacity()}{on}"), soft_wrap=True)
        yield runner, Player(model, label, args.max_steps, agents)
    finally:
        with contextlib.suppress(Exception):
            import ray as _ray

            if models is not None:
                stop_models(models.handles)
            _ray.shutdown()


def play_on_ray(
    split: str, refs: list[TaskRef], args: argparse.Namespace, console: Console
) -> tuple[Summary, str]:
    """`bench osworld run --ray`: ``play`` with the cluster's actors as the workers."""
    with ray_player(args, console, refs) as (runner, player):
        return play(split, refs, player, [], args, console, remote=runner), player.model
