"""The agent loop: screenshot -> policy -> typed actions -> desktop, until a stop reason."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from agent.policy import Decision, Observation, Policy, StepView
from agent.trajectory import (
    ActionRecord,
    StepRecord,
    StopReason,
    TrajectoryWriter,
    action_points,
    action_record,
)
from env.actions import Action, Done
from env.desktop import ActionResult, Desktop, Frame
from env.geometry import OutOfScreen, ScreenGeometry

# Ask before an action; False declines it and stops the run.
ConfirmFn = Callable[[Action], bool]
# Called when a step starts (before the model) and when it is finished.
StepFn = Callable[[StepRecord], None]


@dataclass
class Trajectory:
    task: str
    steps: list[StepRecord] = field(default_factory=list)
    stop_reason: StopReason = "max_steps"
    status: str | None = None
    answer: str | None = None
    run_dir: Path | None = None
    error: str | None = None


class StopFlag:
    """Set by the first Ctrl-C; the loop stops after the action in progress. A second Ctrl-C
    raises KeyboardInterrupt at once."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()

    @contextmanager
    def on_sigint(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: object) -> None:
            if self._event.is_set():
                raise KeyboardInterrupt
            self._event.set()

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


class _RepeatDetector:
    """Counts how often the same actions were asked for while the screen did not change."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._last: tuple[str, Frame] | None = None
        self._count = 0

    def is_looping(self, actions: Sequence[Action], frame: Frame) -> bool:
        sig = "|".join(a.model_dump_json() for a in actions)
        if self._last is not None and self._last[0] == sig and frame.same_pixels(self._last[1]):
            self._count += 1
        else:
            self._count = 1
        self._last = (sig, frame)
        return self.limit > 0 and self._count >= self.limit


def _view(rec: StepRecord, decision: Decision) -> StepView:
    return StepView(step=rec.step, decision=decision, results=[a.error for a in rec.actions])


@dataclass
class _Run:
    task: str
    policy: Policy
    desktop: Desktop
    writer: TrajectoryWriter | None
    dry_run: bool
    confirm: ConfirmFn | None
    on_step: StepFn | None
    stop: StopFlag
    repeats: _RepeatDetector
    traj: Trajectory
    history: list[StepView] = field(default_factory=list)

    def step(self, n: int) -> StopReason | None:
        t0 = time.perf_counter()
        started_at = time.time()
        frame = self.desktop.screenshot()
        geometry = self.desktop.geometry
        rec = StepRecord.start(n, frame, started_at)
        rec.timing.capture_s = time.perf_counter() - t0
        self.traj.steps.append(rec)
        if self.on_step:
            self.on_step(rec)

        t1 = time.perf_counter()
        decision = self.policy.decide(Observation(self.task, n, frame, geometry), self.history)
        rec.timing.model_s = decision.model_s or (time.perf_counter() - t1)
        rec.take_decision(decision)

        t2 = time.perf_counter()
        if self.writer is not None:
            self.writer.screenshot(rec.screenshot, frame)
        reason: StopReason | None
        if decision.actions and self.repeats.is_looping(decision.actions, frame):
            rec.error = f"the same action was asked for {self.repeats.limit} times with no change on screen"
            reason = "loop_detected"
        else:
            reason = self.execute(decision.actions, rec, geometry)
        rec.finished_at = time.time()
        self.history.append(_view(rec, decision))
        if self.writer is not None:
            self.writer.step(rec)
        rec.timing.record_s = time.perf_counter() - t2 - rec.timing.execute_s - rec.timing.settle_s
        if self.on_step:
            self.on_step(rec)
        return reason

    def execute(
        self, actions: Sequence[Action], rec: StepRecord, geometry: ScreenGeometry
    ) -> StopReason | None:
        for action in actions:
            if isinstance(action, Done):
                rec.actions.append(action_record(action, geometry, ActionResult(ok=True)))
                self.traj.status, self.traj.answer = action.status, action.answer
                return "done"
            if self.stop:
                return "interrupted"
            if self.confirm is not None and not self.confirm(action):
                rec.actions.append(action_record(action, geometry, None))
                rec.actions[-1].error = "declined by the user"
                return "declined"
            if self.dry_run:
                rec.actions.append(action_record(action, geometry, None))
                _plan_points(rec.actions[-1], action, geometry)
                continue
            result = self.desktop.execute(action)
            rec.actions.append(action_record(action, geometry, result))
            rec.timing.execute_s += result.execute_s
            rec.timing.settle_s += result.settle_s
            if not result.ok:
                break  # the rest of this step was planned on a screen that did not happen
        return None


def run(
    task: str,
    policy: Policy,
    desktop: Desktop,
    *,
    max_steps: int = 15,
    writer: TrajectoryWriter | None = None,
    dry_run: bool = False,
    confirm: ConfirmFn | None = None,
    on_step: StepFn | None = None,
    stop: StopFlag | None = None,
    repeat_limit: int = 3,
) -> Trajectory:
    """Run ``task`` until the policy says done, ``max_steps``, Ctrl-C, or a repetition loop.

    Errors in one action (out of screen, a bad key) are recorded and shown to the policy; the
    loop goes on. An exception from the policy or desktop ends the run with stop reason "error";
    everything recorded so far stays on disk.
    """
    stop = stop or StopFlag()
    traj = Trajectory(task=task, run_dir=writer.run_dir if writer else None)
    state = _Run(
        task, policy, desktop, writer, dry_run, confirm, on_step, stop, _RepeatDetector(repeat_limit), traj
    )
    with stop.on_sigint():
        try:
            for n in range(1, max_steps + 1):
                if stop:
                    traj.stop_reason = "interrupted"
                    break
                reason = state.step(n)
                if reason is not None:
                    traj.stop_reason = reason
                    break
            else:
                traj.stop_reason = "max_steps"
        except KeyboardInterrupt:
            traj.stop_reason = "interrupted"
        except Exception as e:  # the run ends, but the trajectory is kept and says why
            traj.stop_reason = "error"
            traj.error = f"{type(e).__name__}: {e}"
    if writer is not None:
        writer.close(
            stop_reason=traj.stop_reason,
            status=traj.status,
            answer=traj.answer,
            steps=len(traj.steps),
            error=traj.error,
        )
    return traj


def _plan_points(rec: ActionRecord, action: Action, geometry: ScreenGeometry) -> None:
    """In a dry run, record where the pointer would have gone (or why it could not)."""
    try:
        rec.screen_points = [geometry.to_screen(p) for p in action_points(action)]
    except OutOfScreen as e:
        rec.ok, rec.error = False, str(e)
