"""The driver's side of a Ray run (`bench osworld run --ray`, `rollout --ray`; docs/ray.md): it joins
(or starts) the cluster, places one sandbox actor (tasks/osworld/ray_workers.py) per ``kimi_sandbox``
unit on the nodes that advertise it, and keeps the queue, the live view and --out.

Each finished task comes back as its files and is written under its directory in one rename
(tasks/osworld/shipping.py), so a task is recorded exactly once: a result is stored only when it
arrives, and a task is in flight on one actor at a time. An actor or node lost mid-task (Ray's
actor errors, a node gone from the cluster) puts its task back at the head of the queue and a
replacement actor starts where there is room; a node whose actor reports that it lacks the sandbox
stack is refused with that one line. A driver killed and started again resumes as a local run does:
finished tasks have their result.txt, the others run again.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
import ray.exceptions as rex
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from rich.console import Console
from rich.text import Text

from tasks.osworld import ray_schedule
from tasks.osworld.ray_errors import LOST, one_line
from tasks.osworld.ray_schedule import ScheduleRecord
from tasks.osworld.ray_workers import (
    SANDBOX_RESOURCE,
    ActorSpec,
    NodeReport,
    SandboxActor,
    TaskResult,
    worker_name,
)
from tasks.osworld.results import Outcome, TaskRef, finish, prepare, ref_dir
from tasks.osworld.runner import RunSettings, WorkerState
from tasks.osworld.shipping import ShippingError, clear_staging, pack, store

if TYPE_CHECKING:
    from tasks.osworld.ray_model import ModelReplicas

MAX_DEATHS_PER_NODE = 3  # actors lost on one live node before it is given up
POLL_S = 1.0  # how often the live view asks busy actors where they are
NODES_EVERY_S = 2.0  # how often the cluster's nodes are listed (lost ones, new ones)
CLOSE_TIMEOUT_S = 60.0


class RayRunError(RuntimeError):
    """The run cannot go on (no node can host sandboxes, the model became unreachable); one line."""


@dataclass(frozen=True)
class SandboxNode:
    node_id: str
    ip: str
    capacity: int  # its kimi_sandbox


def connect(address: str, workers: int | None) -> str:
    """Join the cluster at ``address``; ``auto``: the one in $RAY_ADDRESS, else a local one started
    now with ``workers`` (default 1) sandbox units. Returns a line saying which."""
    if ray.is_initialized():
        return "the Ray cluster this process is connected to"
    # Quiet: the actors' logs stay on their nodes (/tmp/ray/session_latest/logs); what matters comes
    # back as results and one-line notices.
    kw: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    target = os.environ.get("RAY_ADDRESS") if address == "auto" else address
    try:
        if target:
            ray.init(address=target, **kw)
            return f"the Ray cluster at {target}"
        ray.init(resources={SANDBOX_RESOURCE: workers or 1}, include_dashboard=False, **kw)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = target or "a local Ray cluster"
        raise RayRunError(f"cannot join {where}: {one_line(e)}") from None
    return f"a local Ray cluster ({workers or 1} sandbox{'es' if (workers or 1) != 1 else ''})"


def sandbox_nodes() -> dict[str, SandboxNode]:
    """The live nodes that advertise the ``kimi_sandbox`` resource, by node id."""
    out = {}
    for n in ray.nodes():
        units = int(n.get("Resources", {}).get(SANDBOX_RESOURCE, 0))
        if n.get("Alive") and units >= 1:
            out[n["NodeID"]] = SandboxNode(n["NodeID"], n.get("NodeManagerAddress", "?"), units)
    return out


@dataclass
class _Slot:
    """One actor of the run and what it is doing."""

    index: int
    node: str
    actor: Any
    state: WorkerState
    hello: Any = None  # the actor's NodeReport, until it arrives
    task: TaskRef | None = None
    running: Any = None  # the task's TaskResult
    sent_at: float = 0.0  # the task's dispatch: when it was sent (wall clock), what sending took
    send_s: float = 0.0
    polling: Any = None  # a state() poll for the live view
    ready: bool = False  # its node is fit: it takes tasks


@dataclass
class _Plan:
    nodes: dict[str, SandboxNode] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)
    deaths: collections.Counter[str] = field(default_factory=collections.Counter)
    warned_versions: set[str] = field(default_factory=set)


@dataclass
class _Run:
    """One call of ``RayRunner.run``: its queue, its actors, where results go."""

    root: Path
    queue: collections.deque[TaskRef]
    on_done: Callable[[Outcome], None]
    slots: list[_Slot] = field(default_factory=list)
    stopping: str | None = None  # why the run takes no more tasks
    ever_ready: bool = False  # an actor got as far as saying its node is fit

    def busy(self) -> int:
        return sum(s.task is not None for s in self.slots)


class RayRunner:
    """Runs a run's pending tasks on the cluster's sandbox actors (what ``run_tasks`` does with
    local workers). ``workers``: actors at once (None: the cluster's total ``kimi_sandbox``)."""

    kind = "sandbox"

    def __init__(
        self,
        args: dict[str, Any],
        scripts: dict[str, bytes] | None,
        workers: int | None,
        console: Console,
        version: str,
        models: ModelReplicas | None = None,
    ) -> None:
        self.args, self.scripts, self.want, self.models = args, scripts, workers, models
        self.console, self.version = console, version
        self._plan = _Plan(nodes=sandbox_nodes())
        self._next_index = 0
        if not self._plan.nodes:
            raise RayRunError(
                f"no node of the Ray cluster advertises the {SANDBOX_RESOURCE} resource: start each "
                f"node that can host sandboxes with ray start ... --resources "
                f"'{{\"{SANDBOX_RESOURCE}\": N}}' (docs/ray.md)"
            )

    @property
    def workers(self) -> int:
        """The actors the run aims at."""
        total = sum(n.capacity for n in self._usable().values())
        return min(self.want, total) if self.want is not None else total

    def capacity(self) -> str:
        """``3 kimi_sandbox on 2 nodes``."""
        nodes = self._plan.nodes.values()
        units = sum(n.capacity for n in nodes)
        return f"{units} {SANDBOX_RESOURCE} on {len(nodes)} node{'s' if len(nodes) != 1 else ''}"

    def say(self, line: str) -> None:
        self.console.print(Text(line, style="yellow"), soft_wrap=True, highlight=False)

    # -- nodes and actors ---------------------------------------------------------------------
    def _usable(self) -> dict[str, SandboxNode]:
        p = self._plan
        return {k: n for k, n in p.nodes.items() if k not in p.refused and p.deaths[k] < MAX_DEATHS_PER_NODE}

    def _start_actor(self, run: _Run) -> bool:
        """One more actor, on the usable node with the most room; False when none has any."""
        room = {k: n.capacity - sum(s.node == k for s in run.slots) for k, n in self._usable().items()}
        room = {k: r for k, r in room.items() if r > 0}
        if not room:
            return False
        node = max(room, key=lambda k: room[k])
        self._next_index += 1
        spec = ActorSpec(args=self.args, scripts=self.scripts, index=self._next_index, models=self.models)
        actor = SandboxActor.options(
            resources={SANDBOX_RESOURCE: 1},
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        ).remote(spec)
        name = worker_name(self._plan.nodes[node].ip, node, self._next_index)
        state = WorkerState(name, phase="starting")
        run.slots.append(_Slot(self._next_index, node, actor, state, hello=actor.hello.remote()))
        return True

    def _fill(self, run: _Run) -> None:
        """Start actors up to the run's aim, and no more than the tasks left need."""
        want = min(self.workers, len(run.queue) + run.busy())
        while len(run.slots) < want and self._start_actor(run):
            pass

    def _drop(self, run: _Run, slot: _Slot) -> None:
        """End ``slot``'s actor; a task it had goes back first in line (its turn had come)."""
        task, slot.task = slot.task, None
        if task is not None:
            run.queue.appendleft(task)
        if slot in run.slots:
            run.slots.remove(slot)
        with contextlib.suppress(Exception):  # already gone
            ray.kill(slot.actor, no_restart=True)

    def _refresh_nodes(self, run: _Run) -> None:
        """Nodes that left the cluster take their actors with them: their tasks go back now (Ray
        may take longer to call the actors dead); nodes that joined add room."""
        self._plan.nodes = sandbox_nodes()
        for slot in [s for s in run.slots if s.node not in self._plan.nodes]:
            self._lost(run, slot, "its node left the cluster")

    def _lost(self, run: _Run, slot: _Slot, why: str) -> None:
        self._plan.deaths[slot.node] += 1
        task = slot.task
        line = f"worker {slot.state.name} lost ({why})"
        if task is not None:
            where = f" ({task.run_dir})" if task.run_dir else ""
            line += f": {task.domain}/{task.task_id}{where} goes back in the queue"
        self.say(line)
        self._drop(run, slot)

    def _refuse(self, run: _Run, report: NodeReport) -> None:
        node = report.node_id
        if node not in self._plan.refused:
            self._plan.refused.add(node)
            self.say(f"node {report.ip} ({report.hostname}, {node[:8]}) refused: {report.lacks}")
        for s in [s for s in run.slots if s.node == node]:
            self._drop(run, s)

    # -- the run ------------------------------------------------------------------------------
    def run(
        self,
        tasks: list[TaskRef],
        settings: RunSettings,
        on_done: Callable[[Outcome], None],
        watch: Callable[[list[WorkerState]], None] | None = None,
    ) -> None:
        """Run ``tasks`` into ``settings.root``. Returns when all are recorded, or when no node is
        left to run the rest (they stay unfinished: the same command resumes them); raises
        RayRunError when the model became unreachable, KeyboardInterrupt on Ctrl-C."""
        clear_staging(settings.root)
        run = _Run(settings.root, collections.deque(tasks), on_done)
        last_poll = last_nodes = 0.0
        try:
            self._fill(run)
            while (run.queue and run.stopping is None) or run.busy():
                if run.stopping is None:
                    self._fill(run)  # a refused or lost worker's place goes to a node that can take it
                if not run.slots:
                    if not run.ever_ready:
                        raise RayRunError(
                            "no node of the Ray cluster can run sandboxes (see the lines above)"
                        )
                    self.say(
                        f"no node with {SANDBOX_RESOURCE} is left to run on: {len(run.queue)} tasks "
                        "unfinished (run the same command again to resume them)"
                    )
                    return
                now = time.monotonic()
                if now - last_nodes >= NODES_EVERY_S:
                    last_nodes = now
                    self._refresh_nodes(run)
                    if run.stopping is None:
                        self._fill(run)
                if now - last_poll >= POLL_S:
                    last_poll = now
                    for s in run.slots:
                        if s.task is not None and s.polling is None:
                            s.polling = s.actor.state.remote(s.state.shot)
                self._step(run)
                for s in run.slots:  # idle actors (a requeued task finds one that ran out of work)
                    if s.ready and s.task is None:
                        self._dispatch(run, s)
                if watch is not None:
                    watch([s.state for s in run.slots])
            if run.stopping is not None and run.stopping != "interrupted":
                raise RayRunError(run.stopping)
        except KeyboardInterrupt:
            for s in run.slots:
                if s.task is not None:
                    with contextlib.suppress(Exception):
                        s.actor.interrupt.remote()
            raise
        finally:
            self._close(run)

    def _step(self, run: _Run) -> None:
        """Wait a moment for any answer (a hello, a result, a poll) and act on those that came."""
        waiting: dict[Any, _Slot] = {}
        for s in run.slots:
            for ref in (s.hello, s.running, s.polling):
                if ref is not None:
                    waiting[ref] = s
        if not waiting:
            time.sleep(0.25)
            return
        done, _ = ray.wait(list(waiting), num_returns=1, timeout=0.25)
        for ref in done:
            slot = waiting[ref]
            if slot not in run.slots:
                continue  # dropped meanwhile
            if ref is slot.hello:
                self._on_hello(run, slot)
            elif ref is slot.running:
                self._on_result(run, slot)
            elif ref is slot.polling:
                self._on_poll(slot)

    def _dispatch(self, run: _Run, slot: _Slot) -> None:
        """The next task to ``slot``'s actor, unless the run is stopping or has none left."""
        while run.queue and run.stopping is None:
            t0 = time.perf_counter()
            ref = run.queue.popleft()
            try:
                bundle = pack(ref)
            except ShippingError as e:  # the driver cannot read it: a crashed task, as a local run says
                run.on_done(_record_crash(run.root, ref, str(e), "driver"))
                continue
            s = slot.state
            s.task, s.domain, s.step, s.max_steps = ref.task_id, ref.domain, 0, 0
            s.phase, s.started = "sent", time.time()
            slot.task = ref
            slot.sent_at = time.time()
            slot.running = slot.actor.run.remote(bundle)
            slot.send_s = time.perf_counter() - t0
            return

    def _on_hello(self, run: _Run, slot: _Slot) -> None:
        ref, slot.hello = slot.hello, None
        try:
            report: NodeReport = ray.get(ref)
        except LOST as e:
            self._lost(run, slot, one_line(e))
            return
        if report.lacks:
            self._refuse(run, report)
            return
        run.ever_ready = True
        if report.version != self.version and report.node_id not in self._plan.warned_versions:
            self._plan.warned_versions.add(report.node_id)
            self.say(f"node {report.ip} runs kimi-agent {report.version}, this driver {self.version}")
        slot.state.name, slot.state.phase = report.worker, "idle"
        slot.ready = True

    def _on_result(self, run: _Run, slot: _Slot) -> None:
        received_at, t0 = time.time(), time.perf_counter()
        ref, slot.running = slot.running, None
        task = slot.task
        assert task is not None
        try:
            result: TaskResult = ray.get(ref)
        except LOST as e:
            self._lost(run, slot, one_line(e))
            return
        except rex.RayTaskError as e:  # the actor's own code failed outside the task: a bug, stop
            cause = e.cause if isinstance(e.cause, BaseException) else e
            raise RayRunError(f"worker {slot.state.name}: {one_line(cause)}") from None
        slot.task = None
        slot.state.task, slot.state.phase = "", "idle"
        if result.aborted is not None:
            # The task stays unfinished (a resume runs it); the other actors are told to stop.
            if run.stopping is None:
                run.stopping = result.aborted
                for s in run.slots:
                    if s.task is not None:
                        s.actor.interrupt.remote()
            return
        assert result.outcome is not None
        outcome = result.outcome
        try:
            store(run.root, task, result.files)
        except (OSError, ShippingError) as e:
            outcome = _record_crash(run.root, task, f"cannot store its files: {one_line(e)}", slot.state.name)
        slot.state.finished += 1
        run.on_done(outcome)
        record = ScheduleRecord(
            task_id=task.task_id,
            domain=task.domain,
            run_dir=task.run_dir,
            worker=slot.state.name,
            dispatched_at=slot.sent_at,
            started_at=result.started_at,
            ended_at=result.ended_at,
            received_at=received_at,
            stored_at=time.time(),
            dispatch_s=slot.send_s,
            store_s=time.perf_counter() - t0,
        )
        with contextlib.suppress(OSError):  # a record of timings only: the task is stored
            ray_schedule.append(run.root, record)

    def _on_poll(self, slot: _Slot) -> None:
        ref, slot.polling = slot.polling, None
        try:
            remote: WorkerState = ray.get(ref)
        except Exception:
            return  # the task's own answer says what happened
        if slot.task is None or remote.task != slot.task.task_id:
            return  # about the task before
        s = slot.state
        s.phase, s.step, s.max_steps, s.started = remote.phase, remote.step, remote.max_steps, remote.started
        s.thought, s.action = remote.thought, remote.action
        if remote.frame is not None:  # sent only when newer than ours
            s.frame, s.shot = remote.frame, remote.shot

    def _close(self, run: _Run) -> None:
        """Each actor closes its sandboxes and its folder, then goes."""
        closing = []
        for s in run.slots:
            with contextlib.suppress(Exception):
                closing.append(s.actor.close.remote())
        if closing:
            with contextlib.suppress(Exception):
                ray.wait(closing, num_returns=len(closing), timeout=CLOSE_TIMEOUT_S)
        for s in list(run.slots):
            self._drop(run, s)


def _record_crash(root: Path, ref: TaskRef, error: str, worker: str) -> Outcome:
    outcome = Outcome(
        task_id=ref.task_id, domain=ref.domain, score=0.0, kind="crashed", error=error, worker=worker
    )
    out = ref_dir(root, ref)
    prepare(out)
    finish(out, outcome)
    return outcome
