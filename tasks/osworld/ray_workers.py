"""The sandbox actor of a Ray run (`--ray`; docs/ray.md): one per ``kimi_sandbox`` unit a node
advertises, owning a warm sandbox pool and an evaluator worker on its node, playing one task at a
time with the OSWorld runner's own code (Worker.run_task) into a node-local temporary root, and
handing the task's files back to the driver (tasks/osworld/ray_driver.py), which keeps the queue,
the live view and --out.

On start it checks its node: Xvfb, bubblewrap (unless --no-isolation), the desktop's programs, the
OSWorld evaluator venv, a first sandbox that starts, and the model it is to call; ``hello`` answers
with one line naming what is lacking, and the driver refuses the node.

Nothing outlives the actor: ``close`` (the driver's, or the interpreter's exit) closes the pool,
the sandbox in use and the evaluator worker, and removes its temporary folder; a killed actor's
sandboxes go with it (each has its reaper, env/reaper.py), the evaluator worker ends at the end of
its input, and the next actor on the node removes the folders that dead actors left.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import os
import shutil
import socket
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from rich.console import Console

from tasks.osworld.pool import PoolSettings, SandboxPool
from tasks.osworld.ray_errors import one_line
from tasks.osworld.results import RECORDING_FILE, Outcome, TaskRef, finish, prepare, ref_dir
from tasks.osworld.runner import (
    OfficialScorer,
    RunAborted,
    RunSettings,
    SandboxTarget,
    Worker,
    WorkerState,
)
from tasks.osworld.shipping import ShippingError, TaskBundle, collect, unpack

if TYPE_CHECKING:
    from tasks.osworld.ray_model import ModelReplicas

SANDBOX_RESOURCE = "kimi_sandbox"
TEMP_PREFIX = "kimi-ray-"  # kimi-ray-<pid>-<random>: the actor's node-local folder
READY_TIMEOUT_S = 120.0  # a node's first sandbox, before the node counts as unable to start one


@dataclass(frozen=True)
class ActorSpec:
    """How an actor plays: the run's parsed flags (``vars(args)``: model, steps, timeouts, desktop,
    isolation, pool), and for --script-dir each task's script by task id (the driver's files may
    not exist on the node), for --backend transformers the run's model actors (tasks/osworld/ray_model.py)."""

    args: dict[str, Any]
    scripts: dict[str, bytes] | None
    index: int  # the actor's number in the run, for its name
    models: ModelReplicas | None = None


@dataclass(frozen=True)
class NodeReport:
    worker: str  # the actor's name: what outcomes record (Outcome.worker) and the live view shows
    node_id: str
    ip: str
    hostname: str
    version: str  # the node's kimi-agent
    lacks: str | None  # one line: why the node cannot run tasks; None when it can


@dataclass(frozen=True)
class TaskResult:
    outcome: Outcome | None
    files: dict[str, bytes]  # the task's directory, by relative path
    aborted: str | None = None  # the run stops (model unreachable, interrupted): no outcome
    # The actor's wall clock when ``run`` began and returned: the driver's schedule records
    # (tasks/osworld/ray_schedule.py) measure the time on the way to and from the actor with them.
    started_at: float = 0.0
    ended_at: float = 0.0


def worker_name(ip: str, node_id: str, index: int) -> str:
    return f"{ip}:{node_id[:8]}/sandbox-{index}"


def node_lacks(desktop: str | None, isolated: bool) -> str | None:
    """What this node lacks of the sandbox stack and the evaluator, in one line; None when nothing."""
    from env.desktops import missing, spec
    from tasks.osworld.evalenv import EvalEnvError, ready_python

    problems = []
    if shutil.which("Xvfb") is None:
        problems.append("Xvfb is not installed (Debian: apt-get install xvfb)")
    if isolated and shutil.which("bwrap") is None:
        problems.append("bubblewrap is not installed (Debian: apt-get install bubblewrap)")
    if desktop and (why := missing(spec(desktop, "ready"))):  # type: ignore[arg-type]
        problems.append(why)
    try:
        ready_python()
    except EvalEnvError as e:
        problems.append(str(e))
    return "; ".join(problems) or None


def sweep_stale(parent: Path | None = None) -> None:
    """Remove the folders of this node's actors that died without closing (their pid is gone)."""
    for d in Path(parent or tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*-*"):
        try:
            pid = int(d.name[len(TEMP_PREFIX) :].split("-", 1)[0])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


class SandboxWorker:
    """The actor's class (``SandboxActor`` is its Ray form). Two methods may run at once (Ray's
    max_concurrency=2): ``run`` and the driver's ``state`` polls or ``interrupt``."""

    def __init__(self, spec: ActorSpec) -> None:
        self.node_id = ray.get_runtime_context().get_node_id()
        self.ip = ray.util.get_node_ip_address()
        self.name = worker_name(self.ip, self.node_id, spec.index)
        self.state = WorkerState(self.name)
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._tmp: Path | None = None
        self._pool: SandboxPool | None = None
        self._scorer: OfficialScorer | None = None
        self._worker: Worker | None = None
        args = argparse.Namespace(**spec.args)
        self.lacks = node_lacks(args.desktop_env, not args.no_isolation)
        if self.lacks is None:
            try:
                self._start(spec, args)
            except Exception as e:
                self.lacks = one_line(e)
                self.close()
        atexit.register(self.close)  # a graceful exit (the driver's end, ray.shutdown) closes too

    def _start(self, spec: ActorSpec, args: argparse.Namespace) -> None:
        from tasks.osworld.run_cli import make_agents
        from tasks.sandbox_args import isolation

        sweep_stale()
        self._tmp = tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-"))
        # Its sandboxes are made in it too: when the actor is killed, Ray kills its child processes,
        # their reapers among them, so the sweep of its folder is what removes their directories.
        tmp.chmod(0o711)  # a sandbox's own user reaches its directory through this one
        if spec.scripts is not None:
            scripts = self._tmp / "scripts"
            scripts.mkdir()
            for task_id, data in spec.scripts.items():
                if "/" in task_id or task_id.startswith("."):
                    raise ShippingError(f"task id {task_id!r} cannot name a script file")
                (scripts / f"{task_id}.json").write_bytes(data)
            args.script_dir = scripts
        # The driver checked the model against the run's tasks; here it is built (an openai
        # backend probes its server: a node that cannot reach it is refused). The transformers
        # backend forwards to the run's model actors, the actors spread round-robin over them.
        loaded = spec.models.loaded(spec.index - 1) if spec.models is not None else None
        agents, _, _ = make_agents(args, Console(stderr=True), [], loaded)
        iso = isolation(args)
        if args.pool != 0:
            # One ready sandbox per actor: the next task's reset takes it while this one plays.
            self._pool = SandboxPool(PoolSettings(1, args.desktop_env, iso, parent_dir=tmp))
        target = SandboxTarget(self.name, args.desktop_env, iso, self._pool, parent_dir=tmp)
        settings = RunSettings(
            root=self._tmp / "run",
            task_timeout_s=args.task_timeout,
            network=not args.no_network,
            sleep_after_s=args.sleep_after,
        )
        self._scorer = OfficialScorer(settings.cache_dir)
        self._worker = Worker(target, agents, self._scorer, settings, self.stop, self.state)
        if self._pool is not None:
            try:
                self._pool.wait_ready(1, timeout_s=READY_TIMEOUT_S)
            except Exception as e:
                raise RuntimeError(f"cannot start a sandbox: {e}") from None

    def hello(self) -> NodeReport:
        from agent.version import version_record

        return NodeReport(
            self.name, self.node_id, self.ip, socket.gethostname(), version_record().version, self.lacks
        )

    def state(self, known_shot: int = -1) -> WorkerState:
        """A copy of the worker's state; its frame only when newer than the driver's ``known_shot``
        (a screen crosses the network once, not on every poll)."""
        s = dataclasses.replace(self.state)
        if s.shot == known_shot:
            s.frame = None
        return s

    def interrupt(self) -> None:
        self.stop.set()
        if self._worker is not None:
            self._worker.interrupt()

    def run(self, bundle: TaskBundle) -> TaskResult:
        """Play one task; its outcome and files, or ``aborted`` when the run must stop."""
        started = time.time()
        result = self._play(bundle)
        return dataclasses.replace(result, started_at=started, ended_at=time.time())

    def _play(self, bundle: TaskBundle) -> TaskResult:
        worker, tmp = self._worker, self._tmp
        if worker is None or tmp is None:
            raise RuntimeError(self.lacks or "the actor is closed")
        work = tmp / "tasks" / uuid.uuid4().hex
        root = worker.settings.root
        try:
            try:
                ref = unpack(bundle, work)
            except (OSError, ShippingError) as e:
                return self._crashed(bundle.ref, f"cannot unpack the task on {self.name}: {one_line(e)}")
            try:
                outcome = worker.run_task(ref)
            except RunAborted as e:
                cause = e.__cause__ or e
                return TaskResult(
                    None, {}, aborted=str(cause) if isinstance(cause, RunAborted) else one_line(cause)
                )
            return TaskResult(outcome, self._files(ref_dir(root, ref), outcome))
        finally:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)

    def _files(self, out: Path, outcome: Outcome) -> dict[str, bytes]:
        """The task's files; over the transfer limit, without its recording (said in outcome.json),
        and if still over, as a crashed task that says why."""
        try:
            return collect(out)
        except ShippingError as e:
            too_big = str(e)
        recording = out / RECORDING_FILE
        if recording.is_file():
            recording.unlink()
            details = {**outcome.details, "recording": f"left out: {too_big}"}
            finish(out, outcome.model_copy(update={"details": details}))
            with contextlib.suppress(ShippingError):
                return collect(out)
        self._record_crash(out, outcome.task_id, outcome.domain, too_big, {})
        return collect(out)

    def _crashed(self, ref: TaskRef, error: str) -> TaskResult:
        assert self._worker is not None
        out = ref_dir(self._worker.settings.root, ref)
        outcome = self._record_crash(
            out, ref.task_id, ref.domain, error, {"traceback": traceback.format_exc()}
        )
        return TaskResult(outcome, collect(out))

    def _record_crash(
        self, out: Path, task_id: str, domain: str, error: str, details: dict[str, Any]
    ) -> Outcome:
        """``out`` emptied and holding only a crashed outcome that says why."""
        prepare(out)
        outcome = Outcome(
            task_id=task_id,
            domain=domain,
            score=0.0,
            kind="crashed",
            error=error,
            worker=self.name,
            details=details,
        )
        finish(out, outcome)
        return outcome

    def close(self) -> None:
        """Close the sandboxes (in use and ready), the evaluator worker, and the node-local folder."""
        with self._lock:
            worker, self._worker = self._worker, None
            pool, self._pool = self._pool, None
            scorer, self._scorer = self._scorer, None
            tmp, self._tmp = self._tmp, None
        self.stop.set()
        if worker is not None:
            worker.interrupt()
            with contextlib.suppress(Exception):
                worker.target.close()
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.close()
        if scorer is not None:
            with contextlib.suppress(Exception):
                scorer.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# Placed by the custom resource alone (num_cpus=0): ``kimi_sandbox`` is how many sandboxes a node
# hosts, whatever its CPU count says. No restarts: the driver replaces a lost actor itself, on a
# node of its choosing, and puts its task back in the queue.
SandboxActor = ray.remote(num_cpus=0, max_concurrency=2, max_restarts=0)(SandboxWorker)
