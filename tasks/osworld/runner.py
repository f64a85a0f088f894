"""Running OSWorld tasks: N workers, each owning one desktop (a fresh sandbox per task, or a VM reset by
the user's revert hook), pulling tasks from one queue, one model backend shared by all.

Per task, as OSWorld's lib_run_single: reset, setup (``config``), start the recording, the agent loop
(agent/loop.run on the client Desktop over the task's server: the same code for sandboxes and VMs),
end the recording, then scoring by the official evaluators (postconfig first). The step budget counts
model calls (OSWorld's max_steps). A model ``done`` is DONE (success) or FAIL (failure), ``wait`` is
WAIT; a run that hits the step limit ends as FAIL (as OSWorld's agents end at their
max_trajectory_length), and the last action, FAIL included, is what scoring reads
(``env.action_history[-1]``): an infeasible task scores 1 only then, any other 0.

A task that raises, times out, cannot be set up or is unsupported here still finishes: 0.0 with its
reason in outcome.json. Setup runs on past a failed launch, execute or window step as OSWorld's
SetupController does (so outcome.json lists every failed step), but any failed step ends the task as
``setup_failed`` without playing it: a start state that is not the task's makes any score meaningless
(an idle agent may pass, a correct one fail), and playing it would spend model calls on a result
that cannot count. A model that becomes unreachable (BackendError) or a Ctrl-C stops the run
instead, leaving the tasks in flight unfinished so that a resume runs them again.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import logging
import os
import subprocess
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from agent.backends.base import BackendError
from agent.loop import Phase, StopFlag, run
from agent.policy import Policy
from agent.trajectory import ActionRecord, RunInfo, StepRecord, TrajectoryWriter
from env.actions import Action, action_from_dict
from env.desktop import Frame
from env.isolation import Isolation
from env.osworld_client import OSWorldClient, OSWorldError, ServerError, Unauthorized, Unreachable
from env.served_sandbox import ServedSandbox
from env.settle import Settle
from env.vm_desktop import VMDesktop, pyautogui_code
from tasks.osworld.pool import SCREEN, SandboxPool
from tasks.osworld.ports import fixed_ports, hold_ports, try_hold
from tasks.osworld.results import (
    RECORDING_FILE,
    Outcome,
    TaskRef,
    Timings,
    TrajLog,
    finish,
    prepare,
    ref_dir,
    write_atomic,
)
from tasks.osworld.setup import SetupContext, SetupReport, run_config
from tasks.osworld.task import Task, load_task

if TYPE_CHECKING:
    from tasks.view_server import ViewServer  # imported only by --view: no cost without it

log = logging.getLogger(__name__)

TargetKind = Literal["sandbox", "vm"]
VM_READY_S = 300.0
VM_NOTICE_EVERY_S = 15.0  # how often a wait for a VM says how long it has left


class Target(Protocol):
    """A desktop a worker owns: ``reset`` gives a fresh one and the client for its server."""

    kind: TargetKind
    name: str
    view_url: str | None  # the live view of the desktop it has now (--view), or None

    def reset(self) -> OSWorldClient: ...

    def desktop_url(self) -> str | None:
        """A quicker way to the same server for the agent's actions and frames, if there is one."""
        ...

    def close(self) -> None: ...


class SandboxTarget:
    """A fresh isolated sandbox per task: taken ready from ``pool`` when there is one (the reset off
    the task's critical path; the target is one of the pool's users), else started on ``reset``.

    ``view``: each sandbox it takes gets a view-only live view (tasks/view_server.py) from the take
    until it is given back, so the view's helpers live and die with the sandbox's use and nothing
    has to be re-pointed at the next sandbox; ``view_url`` is its page. A view that will not start
    leaves ``view_url`` None and the task running: a viewer must never cost a scored task."""

    kind: TargetKind = "sandbox"

    def __init__(
        self,
        name: str,
        desktop: str = "xfce",
        isolation: Isolation | None = Isolation(),
        pool: SandboxPool | None = None,
        parent_dir: Path | None = None,
        view: bool = False,
    ) -> None:
        """``parent_dir``: where the sandboxes it starts itself (no ``pool``) are made (default: the
        temp directory)."""
        self.name = name
        self._desktop, self._isolation, self._parent_dir = desktop, isolation, parent_dir
        self._pool = pool.attach() if pool is not None else None
        self._box: ServedSandbox | None = None
        self._want_view = view
        self._view: ViewServer | None = None
        self._closing: list[threading.Thread] = []  # views being closed between tasks
        self.view_url: str | None = None

    def reset(self) -> OSWorldClient:
        self._drop(wait=False)
        if self._pool is not None:
            self._box, _ = self._pool.take()
        else:
            self._box = ServedSandbox(
                *SCREEN,
                desktop=self._desktop,  # type: ignore[arg-type]
                isolation=self._isolation,
                parent_dir=self._parent_dir,
            )
        if self._want_view:
            self._start_view(self._box)
        return OSWorldClient(self._box.url, token=self._box.token)

    def _start_view(self, box: ServedSandbox) -> None:
        from env.live_view import LiveViewError
        from tasks.view_server import ViewServer

        try:
            self._view = ViewServer(box.sandbox, control=False)
        except (LiveViewError, OSError) as e:
            log.warning("%s: no live view of this sandbox: %s", self.name, e)
            return
        self.view_url = self._view.url

    def desktop_url(self) -> str | None:
        return self._box.socket_url if self._box is not None else None  # one hop fewer than the TCP forward

    def _drop(self, wait: bool = True) -> None:
        """Give the sandbox back (its view first). A view takes ~0.7 s to close (its page server's
        shutdown poll, websockify's exit), so between tasks (``wait`` False) that happens on a
        thread of its own, which ``close`` waits for: nothing of a view outlives the target."""
        view, self._view, self.view_url = self._view, None, None
        box, self._box = self._box, None
        self._closing = [t for t in self._closing if t.is_alive()]
        if view is None:
            self._release(None, box)
        else:
            t = threading.Thread(target=self._release, args=(view, box), name="view-close", daemon=True)
            t.start()
            self._closing.append(t)
        if wait:
            for t in self._closing:
                t.join()
            self._closing.clear()

    def _release(self, view: ViewServer | None, box: ServedSandbox | None) -> None:
        if view is not None:  # before the sandbox goes: its helpers are killed by their PIDs here
            with contextlib.suppress(Exception):
                view.close()
        if box is None:
            return
        if self._pool is not None:
            self._pool.give_back(box)  # closed in the background
        else:
            box.close()

    def close(self) -> None:
        self._drop()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.detach()


class VMTarget:
    """An OSWorld VM (or any server of the protocol). ``revert`` is the user's command that puts the
    machine back in its initial state; it gets the URL in $KIMI_VM_URL. Without one the machine is
    used as it is (fine for one task, not for a benchmark)."""

    kind: TargetKind = "vm"
    view_url: str | None = None  # a VM's screen is watched through the VM's own means

    def __init__(
        self,
        url: str,
        token: str | None,
        revert: str | None,
        revert_timeout_s: float = 900.0,
        notice: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.name = url
        self.url, self.token, self.revert = url, token, revert
        self.revert_timeout_s = revert_timeout_s
        self.notice = notice

    def reset(self) -> OSWorldClient:
        if self.revert:
            env = {**os.environ, "KIMI_VM_URL": self.url}
            try:
                r = subprocess.run(
                    self.revert,
                    shell=True,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=self.revert_timeout_s,
                )
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"--vm-revert took more than {self.revert_timeout_s:.0f} s") from None
            if r.returncode != 0:
                why = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
                raise RuntimeError(f"--vm-revert failed for {self.url}: {why[:300]}")
        return self.wait_up()

    def check_token(self) -> None:
        """Raise Unauthorized at once when the server is up and refuses the token; a server that is
        not up yet is left to ``reset`` (a --vm-revert may be what starts it)."""
        with (
            OSWorldClient(self.url, token=self.token) as client,
            contextlib.suppress(Unreachable, ServerError),
        ):
            client.screen_size()

    def wait_up(self) -> OSWorldClient:
        """A client once the server answers; only "not up yet" (no connection, no answer, a proxy's
        502/503/504) is waited for, VM_READY_S at most, saying so every VM_NOTICE_EVERY_S. A refused
        token (401/403) or any other answer is raised at once."""
        client = OSWorldClient(self.url, token=self.token)
        start = time.monotonic()
        said = -VM_NOTICE_EVERY_S
        while True:  # a reverted VM takes a while to serve again
            try:
                client.screen_size()
                return client
            except (Unreachable, ServerError) as e:
                if isinstance(e, ServerError) and e.status not in (502, 503, 504):
                    client.close()
                    raise
                waited = time.monotonic() - start
                if waited > VM_READY_S:
                    client.close()
                    raise Unreachable(f"{self.url} was not up after {VM_READY_S:.0f} s: {e}") from None
                if waited - said >= VM_NOTICE_EVERY_S:
                    said = waited
                    self.notice(f"{self.url} is not up yet ({e}); waiting, {VM_READY_S - waited:.0f} s left")
                time.sleep(2.0)
            except Unauthorized as e:
                client.close()
                raise RunAborted(str(e)) from e

    def desktop_url(self) -> str | None:
        return None

    def close(self) -> None:
        pass


@dataclass
class Agent:
    """What plays one task: a policy (fresh per task: policies keep per-run context), its step
    budget, its label, and run.json's model record."""

    policy: Policy
    max_steps: int
    label: str
    model: dict[str, Any] = field(default_factory=dict)


AgentFactory = Callable[[Task], Agent]


@dataclass(frozen=True)
class Score:
    score: float
    details: dict[str, Any]


# (task, client, setup context, last action) -> the official score; postconfig is its business.
Scorer = Callable[[Task, OSWorldClient, SetupContext, "str | None"], Score]


class OfficialScorer:
    """OSWorld's own evaluators (tasks/osworld/evaluation.py): one evaluator worker process serves
    every task of the run (importing the metrics takes seconds; it serialises requests)."""

    def __init__(self, cache_dir: Path) -> None:
        from tasks.osworld.evaluation import EvaluatorWorker

        self.cache_dir = cache_dir
        self.worker = EvaluatorWorker()

    def __call__(
        self, task: Task, client: OSWorldClient, ctx: SetupContext, last_action: str | None
    ) -> Score:
        from tasks.osworld.evaluation import Server, evaluate

        url = urllib.parse.urlsplit(client.base_url)
        if url.scheme != "http" or url.hostname is None:
            raise ValueError(
                f"{client.base_url}: OSWorld's getters reach a machine over http://HOST:PORT only"
            )
        server = Server(url.hostname, url.port or 80, client.token)
        ev = evaluate(
            task, server, last_action=last_action, cache_dir=self.cache_dir, worker=self.worker, setup=ctx
        )
        return Score(ev.score, ev.to_json())

    def close(self) -> None:
        self.worker.close()


@dataclass
class WorkerState:
    """What the live view shows of a worker; written by its thread, read by the view."""

    name: str
    task: str = ""
    domain: str = ""
    phase: str = "idle"
    step: int = 0
    max_steps: int = 0
    started: float = 0.0
    finished: int = 0
    # For the run monitor: the model's last thought and action, and the screen the worker last
    # recorded (kept as the raw frame: encoded only if a monitor page asks; ``shot`` counts them).
    thought: str = ""
    action: str = ""
    shot: int = 0
    frame: Frame | None = field(default=None, repr=False, compare=False)
    view: str | None = None  # the live view of the sandbox it has now (--view)


@dataclass
class RunSettings:
    root: Path  # <out>/<action_space>/<observation>/<model>
    task_timeout_s: float = 3600.0
    cache_dir: Path = field(default_factory=lambda: default_cache())
    network: bool = True
    sleep_after_s: float | None = None  # a fixed sleep after every action instead of the settle wait


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kimi-agent" / "osworld-downloads"


class RunAborted(Exception):
    """The run stops (model unreachable, Ctrl-C); the task in flight stays unfinished."""


def osworld_action(rec: ActionRecord) -> str:
    """An executed action as OSWorld's trajectories write it: DONE / FAIL / WAIT, or the pyautogui
    code that does the same thing (with the points where the pointer really went)."""
    action: Action = action_from_dict(rec.action)
    if action.kind == "done":
        return "DONE" if action.status == "success" else "FAIL"
    if action.kind == "wait":
        return "WAIT"
    points = [tuple(p) for p in rec.screen_points]
    try:
        return pyautogui_code(action, points)  # type: ignore[arg-type]
    except (IndexError, ValueError):
        return rec.description


def last_action(steps: list[StepRecord]) -> str | None:
    for rec in reversed(steps):
        for a in reversed(rec.actions):
            if a.executed:
                return osworld_action(a)
    return None


class TaskQueue:
    """The run's tasks, shared by its workers. A task whose fixed ports another holder has (Chrome's
    DevTools ports, on sandboxes sharing the host's) is set aside and taken first once they are free,
    so such tasks (a split's Chrome tasks come in a row) run one at a time alongside the others
    rather than all at the end."""

    def __init__(self, tasks: list[TaskRef]) -> None:
        self._todo = collections.deque(tasks)
        self._aside: collections.deque[TaskRef] = collections.deque()
        self._lock = threading.Lock()

    def take(
        self, claim: Callable[[TaskRef], contextlib.ExitStack | None]
    ) -> tuple[TaskRef, contextlib.ExitStack | None] | None:
        """The next task and its claimed ports (``claim``: None when they are held elsewhere), or
        None when no task is left. When every task left is held up, the first set aside comes
        unclaimed: its worker waits for its ports."""
        with self._lock:
            for ref in list(self._aside):
                if (held := claim(ref)) is not None:
                    self._aside.remove(ref)
                    return ref, held
            while self._todo:
                ref = self._todo.popleft()
                if (held := claim(ref)) is not None:
                    return ref, held
                self._aside.append(ref)
            return (self._aside.popleft(), None) if self._aside else None


class Worker:
    def __init__(
        self,
        target: Target,
        agents: AgentFactory,
        scorer: Scorer,
        settings: RunSettings,
        stop: threading.Event,
        state: WorkerState,
    ) -> None:
        self.target, self.agents, self.scorer, self.settings = target, agents, scorer, settings
        self.stop, self.state = stop, state
        self._flag: StopFlag | None = None
        self.aborted: BaseException | None = None

    def interrupt(self) -> None:
        flag = self._flag
        if flag is not None:
            flag.set()

    def _ports(self, task: Task) -> list[int]:
        """The fixed ports ``task`` must hold while it runs: on sandboxes that share the host's."""
        shared = self.target.kind == "sandbox" and self.settings.network
        return fixed_ports(task) if shared else []

    def _claim(self, ref: TaskRef) -> contextlib.ExitStack | None:
        try:
            ports = self._ports(load_task(ref.path))
        except Exception:
            ports = []  # run_task reports a task that will not load
        return try_hold(ports)

    def work(self, tasks: TaskQueue, on_done: Callable[[Outcome], None]) -> None:
        try:
            while not self.stop.is_set():
                got = tasks.take(self._claim)
                if got is None:
                    return
                ref, held = got
                try:
                    with held if held is not None else contextlib.nullcontext():
                        outcome = self.run_task(ref, wait_ports=held is None)
                except RunAborted as e:
                    self.aborted = e.__cause__ or e
                    self.stop.set()
                    return
                self.state.finished += 1
                on_done(outcome)
        finally:
            self.state.phase, self.state.task = "stopped", ""
            with contextlib.suppress(Exception):  # a desktop that will not close must not hide the result
                self.target.close()
            self.state.view = None

    def run_task(self, ref: TaskRef, wait_ports: bool = True) -> Outcome:
        """Run one task to its outcome; ``wait_ports``: hold its fixed ports first (False: the
        caller holds them)."""
        s = self.state
        s.task, s.domain, s.step, s.started, s.phase = ref.task_id, ref.domain, 0, time.time(), "starting"
        s.thought = s.action = ""
        out = ref_dir(self.settings.root, ref)
        prepare(out)
        t0 = time.perf_counter()
        timings = Timings()
        base = {"task_id": ref.task_id, "domain": ref.domain, "worker": self.target.name}
        try:
            task = load_task(ref.path)
            why = unsupported(task, ref.domain, self.target.kind, self.settings.network)
            if why:
                outcome = Outcome(**base, score=0.0, kind="unsupported", error=why)
            else:
                ports = self._ports(task) if wait_ports else []
                if ports:
                    s.phase = "waiting for ports " + ", ".join(map(str, ports))
                with hold_ports(ports):
                    outcome = self._attempt(task, ref, out, timings)
        except RunAborted:
            raise
        except Exception as e:
            outcome = Outcome(
                **base,
                score=0.0,
                kind="crashed",
                error=_line(e),
                details={"traceback": traceback.format_exc()},
            )
        timings.total_s = time.perf_counter() - t0
        outcome = outcome.model_copy(update={"timings": timings})
        finish(out, outcome)
        s.phase = "idle"
        return outcome

    def _attempt(self, task: Task, ref: TaskRef, out: Path, timings: Timings) -> Outcome:
        s = self.state
        base = {"task_id": ref.task_id, "domain": ref.domain, "worker": self.target.name}
        agent = self.agents(task)  # a missing script fails here, before a desktop starts
        s.phase, s.max_steps = "reset", agent.max_steps
        t = time.perf_counter()
        client = self.target.reset()
        timings.reset_s = time.perf_counter() - t
        s.view = self.target.view_url
        with client:
            ctx = SetupContext(client=client, cache_dir=self.settings.cache_dir)
            s.phase = "setup"
            t = time.perf_counter()
            report = run_config(task, ctx)
            timings.setup_s = time.perf_counter() - t
            setup_notes = [o.line() for o in report.outcomes if not o.ok]
            if not report.ok:  # the start state is not the task's: no score can stand for it
                return Outcome(
                    **base,
                    score=0.0,
                    kind="setup_failed",
                    error=setup_error(report),
                    details={"setup": setup_notes},
                )
            # The server confirms a recording after ffmpeg has run for a second (OSWorld's rule), and
            # ffmpeg records from the request on: the agent starts meanwhile, not a second later.
            recording = _background(lambda: _try(client.start_recording))
            s.phase = "agent"
            t = time.perf_counter()
            traj, timed_out = self._play(task, agent, client, out)
            timings.agent_s = time.perf_counter() - t
            if traj.stop_reason == "interrupted" and self.stop.is_set() and not timed_out:
                raise RunAborted("interrupted")
            if isinstance(traj.exception, BackendError):
                raise RunAborted(str(traj.exception)) from traj.exception
            details: dict[str, Any] = {"setup": setup_notes}
            not_started = recording.result()  # the start answered before the end is asked for
            if not_started is None:
                details["recording"] = _save_recording(client, out)
            else:
                details["recording"] = f"not started: {not_started}"
            last = "FAIL" if traj.stop_reason == "max_steps" else last_action(traj.steps)
            common = dict(base, last_action=last, stop_reason=traj.stop_reason, steps=len(traj.steps))
            if timed_out:
                return Outcome(
                    **common,
                    score=0.0,
                    kind="timed_out",
                    error=f"timed out after {self.settings.task_timeout_s:.0f} s",
                    details=details,
                )
            if traj.stop_reason == "error":  # the desktop or the policy raised: the task crashed
                return Outcome(**common, score=0.0, kind="crashed", error=traj.error, details=details)
            s.phase = "evaluate"
            t = time.perf_counter()
            score = self.scorer(task, client, ctx, last)
            timings.evaluate_s = time.perf_counter() - t
            details["evaluation"] = score.details
            return Outcome(**common, score=score.score, kind="scored", details=details)

    def _play(self, task: Task, agent: Agent, client: OSWorldClient, out: Path) -> tuple[Any, bool]:
        s = self.state
        flag = StopFlag()
        self._flag = flag
        if self.stop.is_set():
            flag.set()
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            flag.set()

        timer = threading.Timer(self.settings.task_timeout_s, expire)
        timer.daemon = True
        log = TrajLog(out)
        # Our own client: VMDesktop closes it, and the one for setup and scoring stays open.
        desktop = VMDesktop(
            OSWorldClient(self.target.desktop_url() or client.base_url, token=client.token),
            settle=Settle(sleep_after_s=self.settings.sleep_after_s),
        )
        try:
            g = desktop.geometry
            writer = TrajectoryWriter(
                out,
                RunInfo(
                    task=task.instruction,
                    started_at=time.time(),
                    policy=agent.label,
                    desktop=f"{self.target.kind} {self.target.name}",
                    screen=(g.width, g.height),
                    model=agent.model,
                ),
            )

            def on_step(rec: StepRecord, phase: Phase) -> None:
                s.step = rec.step
                if phase == "finished":
                    frame = _log_step(rec, desktop, writer, log)
                    done = [a for a in rec.actions if a.executed]
                    s.thought = rec.thought
                    s.action = "; ".join(osworld_action(a) for a in done)
                    if frame is not None:
                        s.frame, s.shot = frame, s.shot + 1

            timer.start()
            traj = run(
                task.instruction,
                agent.policy,
                desktop,
                max_steps=agent.max_steps,
                writer=writer,
                on_step=on_step,
                stop=flag,
                repeat_limit=0,  # OSWorld plays on to max_steps whatever the agent repeats
            )
        finally:
            timer.cancel()
            self._flag = None
            desktop.close()
        return traj, timed_out.is_set()


def _log_step(rec: StepRecord, desktop: VMDesktop, writer: TrajectoryWriter, log: TrajLog) -> Frame | None:
    """OSWorld's traj.jsonl lines for a step's executed actions, with the screen after them;
    returns that screen (None when no action ran or the desktop went away)."""
    done = [a for a in rec.actions if a.executed]
    if not done:
        return None
    stamp = datetime.datetime.now().strftime("%Y%m%d@%H%M%S%f")
    shot = f"step_{rec.step}_{stamp}.png"
    frame: Frame | None = None
    try:
        frame = desktop.screenshot()
        writer.screenshot(shot, frame)
    except Exception:
        shot = ""  # the desktop went away; the line still says what was done
    lines = []
    for a in done:
        action = osworld_action(a)
        lines.append(
            {
                "step_num": rec.step,
                "action_timestamp": stamp,
                "action": action,
                "response": rec.raw or rec.thought,
                "reward": 0,
                "done": action in ("DONE", "FAIL"),
                "info": {"ok": a.ok, **({"error": a.error} if a.error else {})},
                "screenshot_file": shot,
            }
        )
    log.append(lines)
    return frame


def setup_error(report: SetupReport) -> str:
    """What a setup that did not reach the task's start state says: its first failed step (step
    number, type and reason), and how many more failed or never ran."""
    problem = report.first_problem()
    first = problem.line() if problem else "setup stopped"
    more = len([o for o in report.outcomes if not o.ok]) - 1 if problem else 0
    extra = [f"{more} more step{'s' if more != 1 else ''} failed"] if more > 0 else []
    extra += [f"{report.not_run} not run"] if report.not_run else []
    return first + (f" ({', '.join(extra)})" if extra else "")


def _save_recording(client: OSWorldClient, out: Path) -> str:
    try:
        write_atomic(out / RECORDING_FILE, client.end_recording())
    except (OSWorldError, OSError) as e:
        return f"not saved: {_line(e)}"
    return "saved"


def _try(fn: Callable[[], object]) -> str | None:
    try:
        fn()
    except OSWorldError as e:
        return _line(e)
    return None


def _background(fn: Callable[[], str | None]) -> Future[str | None]:
    """``fn`` on a thread of its own, started now; its answer (or exception) in the future."""
    future: Future[str | None] = Future()

    def call() -> None:
        try:
            future.set_result(fn())
        except BaseException as e:
            future.set_exception(e)

    threading.Thread(target=call, name="recording", daemon=True).start()
    return future


def _line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def unsupported(task: Task, domain: str, kind: TargetKind, network: bool) -> str | None:
    """Why this task cannot run on this kind of desktop (coverage.py's reasons), or None."""
    from tasks.osworld.coverage import check_task

    cov = check_task(task, domain)
    if not cov.supported(kind):
        return "; ".join(cov.reasons(kind)) or "not supported"
    if kind == "sandbox" and not network and cov.network:
        return "needs the internet, and the sandbox has no network (--no-network)"
    return None


def run_tasks(
    tasks: list[TaskRef],
    targets: list[Target],
    agents: AgentFactory,
    scorer: Scorer,
    settings: RunSettings,
    on_done: Callable[[Outcome], None] = lambda o: None,
    watch: Callable[[list[WorkerState]], None] | None = None,
) -> list[Outcome]:
    """Run ``tasks`` over ``targets`` (one worker thread each). Returns the outcomes of the tasks
    finished now. Raises the cause when the model became unreachable, KeyboardInterrupt on Ctrl-C;
    either way the tasks that were in flight stay unfinished (a resume runs them)."""
    todo = TaskQueue(tasks)
    stop = threading.Event()
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def done(o: Outcome) -> None:
        with lock:
            outcomes.append(o)
        on_done(o)

    workers = [Worker(target, agents, scorer, settings, stop, WorkerState(target.name)) for target in targets]
    threads = [
        threading.Thread(target=w.work, args=(todo, done), name=f"osworld-{i}", daemon=True)
        for i, w in enumerate(workers)
    ]
    for th in threads:
        th.start()
    try:
        while any(th.is_alive() for th in threads):
            if stop.is_set():  # one worker lost the model: the others stop at their next action
                for w in workers:
                    w.interrupt()
            if watch is not None:
                watch([w.state for w in workers])
            for th in threads:
                th.join(timeout=0.25)
    except KeyboardInterrupt:
        stop.set()
        for w in workers:
            w.interrupt()
        for th in threads:
            th.join()
        raise
    if watch is not None:
        watch([w.state for w in workers])
    for w in workers:
        if w.aborted is not None and not isinstance(w.aborted, RunAborted):
            raise w.aborted
    return outcomes
