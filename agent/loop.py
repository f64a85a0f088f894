"""The agent loop: screenshot -> policy -> typed actions -> desktop, until a stop reason."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.backends.base import BackendError
from agent.policy import Observation, Policy, StepView
from agent.trajectory import (
    FINAL_SCREENSHOT,
    ActionRecord,
    StepRecord,
    StopReason,
    Takeover,
    TrajectoryWriter,
    action_points,
    action_record,
    not_executed,
)
from env.actions import Action, Done, describe
from env.desktop import Desktop, Frame, StopRequested
from env.geometry import OutOfScreen, ScreenGeometry

# Asked before each action: "yes" runs it, "no" skips it (the model is told and the run goes on),
# "quit" ends the run as declined.
Answer = Literal["yes", "no", "quit"]
ConfirmFn = Callable[[Action], Answer]
# Called when a step starts (before the model), once the model has decided, and when it is finished.
Phase = Literal["start", "decided", "finished"]
StepFn = Callable[[StepRecord, Phase], None]
# Whether a person holds the desktop now (the live view's --view-control): the loop waits between steps.
HoldFn = Callable[[], bool]
HOLD_POLL_S = 0.05


@dataclass
class Trajectory:
    task: str
    steps: list[StepRecord] = field(default_factory=list)
    stop_reason: StopReason = "max_steps"
    status: str | None = None
    answer: str | None = None
    run_dir: Path | None = None
    error: str | None = None
    exception: Exception | None = None  # what ended a run with stop reason "error" (not recorded)
    dry_run: bool = False


class StopFlag:
    """Ctrl-C handling. The first Ctrl-C asks the loop to stop after the action in progress; while
    the loop waits on something that may take long and has no effect on the desktop (the model, the
    confirm prompt) it also aborts that wait at once. A second Ctrl-C aborts whatever runs."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._abortable = 0

    def set(self) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()

    @contextmanager
    def abortable(self) -> Iterator[None]:
        """A Ctrl-C inside this block raises KeyboardInterrupt (as after a second Ctrl-C)."""
        if self._event.is_set():
            raise KeyboardInterrupt
        self._abortable += 1
        try:
            yield
        finally:
            self._abortable -= 1

    def on_sigint(self) -> contextlib.AbstractContextManager[None]:
        def handler(signum: int, frame: object) -> None:
            first = not self._event.is_set()
            self._event.set()
            if not first or self._abortable:
                raise KeyboardInterrupt

        return handling(signal.SIGINT, handler)


@contextmanager
def handling(signum: int, handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for ``signum`` within the block, the previous one restored after; a no-op off
    the main thread (where Python allows no signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous)


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


def _one_line(e: BaseException) -> str:
    """The exception as one line; a BackendError's own words already say what happened."""
    text = " ".join(str(e).split())
    if text and isinstance(e, BackendError):
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


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

    def notify(self, rec: StepRecord, phase: Phase) -> None:
        if self.on_step:
            self.on_step(rec, phase)

    def step(self, n: int, takeover: Takeover | None = None) -> StopReason | None:
        """One step. Whatever happens in it, its record is written before this returns or raises."""
        t0 = time.perf_counter()
        started_at = time.time()
        frame = self.desktop.screenshot()
        geometry = self.desktop.geometry
        rec = StepRecord.start(n, frame, started_at)
        rec.takeover = takeover
        rec.timing.capture_s = time.perf_counter() - t0
        self.traj.steps.append(rec)
        t1 = time.perf_counter()
        if self.writer is not None:
            self.writer.screenshot(rec.screenshot, frame)
        rec.timing.record_s = time.perf_counter() - t1
        t1 = time.perf_counter()
        try:
            self.notify(rec, "start")
            reason = self._decide_and_act(rec, frame, geometry)
        except KeyboardInterrupt:
            if not rec.decided:
                rec.timing.model_s = time.perf_counter() - t1
            rec.error = rec.error or (
                "interrupted (Ctrl-C) during the model call"
                if not rec.decided
                else "interrupted (Ctrl-C) during an action"
            )
            reason = "interrupted"
        except StopRequested as e:
            rec.error = f"stopped from the desktop: {e}"
            reason = "interrupted"
        except Exception as e:
            rec.error = _one_line(e)
            self._finish(rec)
            raise
        self._finish(rec)
        return reason

    def _decide_and_act(self, rec: StepRecord, frame: Frame, geometry: ScreenGeometry) -> StopReason | None:
        t1 = time.perf_counter()
        with self.stop.abortable():
            decision = self.policy.decide(Observation(self.task, rec.step, frame, geometry), self.history)
        rec.timing.model_s = decision.model_s or (time.perf_counter() - t1)
        rec.take_decision(decision)
        self.history.append(StepView(step=rec.step, decision=decision))
        self.notify(rec, "decided")
        if decision.actions and self.repeats.is_looping(decision.actions, frame):
            rec.error = f"the same action was asked for {self.repeats.limit} times with no change on screen"
            rec.actions = [not_executed(a, geometry, "loop detected") for a in decision.actions]
            return "loop_detected"
        return self.execute(decision.actions, rec, geometry)

    def _finish(self, rec: StepRecord) -> None:
        rec.finished_at = time.time()
        if self.history and self.history[-1].step == rec.step:
            # Each error names its action: "press enter: not executed: declined by the user".
            self.history[-1].results = [a.error and f"{a.description}: {a.error}" for a in rec.actions]
        if self.writer is not None:
            self.writer.step(rec)
        self.notify(rec, "finished")

    def execute(
        self, actions: Sequence[Action], rec: StepRecord, geometry: ScreenGeometry
    ) -> StopReason | None:
        def skip_rest(i: int, why: str) -> None:
            rec.actions.extend(not_executed(a, geometry, why) for a in actions[i:])

        for i, action in enumerate(actions):
            if isinstance(action, Done):
                rec.actions.append(_done(action))
                self.traj.status, self.traj.answer = action.status, action.answer
                return "done"
            if self.stop:
                skip_rest(i, "the run was interrupted (Ctrl-C)")
                return "interrupted"
            if self.confirm is not None:
                try:
                    with self.stop.abortable():
                        answer = self.confirm(action)
                except KeyboardInterrupt:
                    skip_rest(i, "the run was interrupted (Ctrl-C)")
                    return "interrupted"
                if answer != "yes":
                    rec.actions.append(not_executed(action, geometry, "declined by the user"))
                    if answer == "quit":
                        skip_rest(i + 1, "the user quit")
                        return "declined"
                    skip_rest(i + 1, "an earlier action of this step was declined")
                    return None
            if self.dry_run:
                rec.actions.append(action_record(action, geometry, None))
                _plan_points(rec.actions[-1], action, geometry)
                continue
            try:
                result = self.desktop.execute(action)
            except KeyboardInterrupt:
                skip_rest(i, "the run was interrupted (Ctrl-C) before this action finished")
                raise
            except StopRequested:
                skip_rest(i, "the user stopped the run from the desktop")
                raise
            rec.actions.append(action_record(action, geometry, result))
            rec.timing.execute_s += result.execute_s
            rec.timing.settle_s += result.settle_s
            if not result.ok:
                # The rest of this step was planned on a screen that did not happen.
                skip_rest(i + 1, "an earlier action of this step failed")
                break
        return None


def _wait_while_held(hold: HoldFn, stop: StopFlag) -> Takeover | None:
    """Wait while a person holds the desktop (or until Ctrl-C); what the wait was, if any."""
    if not hold():
        return None
    started = time.time()
    while hold() and not stop:
        time.sleep(HOLD_POLL_S)
    return Takeover(started_at=started, ended_at=time.time())


def _done(action: Done) -> ActionRecord:
    return ActionRecord(action=action.model_dump(), description=describe(action), executed=True)


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
    hold: HoldFn | None = None,
) -> Trajectory:
    """Run ``task`` until the policy says done, ``max_steps``, Ctrl-C, or a repetition loop.

    Errors in one action (out of screen, a bad key) are recorded and shown to the policy; the
    loop goes on. An exception from the policy or desktop ends the run with stop reason "error";
    the step it happened in is recorded with the error, and everything recorded so far stays.
    The screen after the last step is saved as final.png. While ``hold()`` is true (a person has
    taken the desktop in the live view) the loop waits before the next step; that step records it.
    """
    stop = StopFlag() if stop is None else stop
    traj = Trajectory(task=task, run_dir=writer.run_dir if writer else None, dry_run=dry_run)
    state = _Run(
        task, policy, desktop, writer, dry_run, confirm, on_step, stop, _RepeatDetector(repeat_limit), traj
    )
    prompt_record = getattr(policy, "prompt_record", None)
    if writer is not None and writer.info.prompt is None and callable(prompt_record):
        # What rebuilds each step's prompt later (kimi-agent export), before the first step.
        writer.update(prompt=prompt_record())
    final: str | None = None
    with stop.on_sigint():
        try:
            for n in range(1, max_steps + 1):
                if stop:
                    traj.stop_reason = "interrupted"
                    break
                takeover = _wait_while_held(hold, stop) if hold is not None else None
                if stop:
                    traj.stop_reason = "interrupted"
                    break
                reason = state.step(n, takeover)
                if reason is not None:
                    traj.stop_reason = reason
                    break
            else:
                traj.stop_reason = "max_steps"
        except (KeyboardInterrupt, StopRequested) as e:
            traj.stop_reason = "interrupted"
            if isinstance(e, StopRequested):
                traj.error = f"stopped from the desktop: {e}"
        except Exception as e:  # the run ends, but the trajectory is kept and says why
            traj.stop_reason = "error"
            traj.error = _one_line(e)
            traj.exception = e
        final = _final_screenshot(desktop, writer)
    if writer is not None:
        writer.close(
            stop_reason=traj.stop_reason,
            status=traj.status,
            answer=traj.answer,
            error=traj.error,
            final_screenshot=final,
        )
    return traj


def _final_screenshot(desktop: Desktop, writer: TrajectoryWriter | None) -> str | None:
    """The end state, for the record; a desktop that cannot show it any more is not an error."""
    if writer is None:
        return None
    try:
        writer.screenshot(FINAL_SCREENSHOT, desktop.screenshot())
    except (Exception, KeyboardInterrupt):
        return None
    return FINAL_SCREENSHOT


def _plan_points(rec: ActionRecord, action: Action, geometry: ScreenGeometry) -> None:
    """In a dry run, record where the pointer would have gone (or why it could not)."""
    try:
        rec.screen_points = [geometry.to_screen(p) for p in action_points(action)]
    except OutOfScreen as e:
        rec.ok, rec.error = False, str(e)
