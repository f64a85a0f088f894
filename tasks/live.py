"""The terminal view of a run: a spinner while a step is in progress, one row per finished step."""

from __future__ import annotations

from rich.console import Console
from rich.status import Status
from rich.text import Text

from agent.loop import Trajectory
from agent.trajectory import StepRecord
from env.actions import Action, describe


class LiveView:
    def __init__(self, console: Console, max_steps: int) -> None:
        self.console = console
        self.max_steps = max_steps
        self._status: Status | None = None

    def on_step(self, rec: StepRecord) -> None:
        if rec.finished_at == 0.0:  # the step has just started: the model is deciding
            self._status = self.console.status(f"step {rec.step}/{self.max_steps}: deciding…")
            self._status.start()
            return
        if self._status is not None:
            self._status.stop()
        t = rec.timing
        head = Text(f"step {rec.step:>3} ", style="bold cyan")
        head.append(
            f"model {t.model_s:5.2f}s  exec {t.execute_s * 1000:4.0f}ms  settle {t.settle_s * 1000:4.0f}ms"
        )
        self.console.print(head)
        if rec.thought:
            self.console.print(Text("  " + _clip(rec.thought, 300), style="dim"))
        for a in rec.actions:
            line = Text(f"  → {a.description}")
            if a.screen_points:
                line.append(f"  @ {a.screen_points}", style="dim")
            if a.error:
                line.append(f"  ✗ {a.error}", style="red")
            elif not a.executed and a.action["kind"] != "done":
                line.append("  (not executed)", style="yellow")
            self.console.print(line)
        for label, msg in (("parse error", rec.parse_error), ("error", rec.error)):
            if msg:
                self.console.print(Text(f"  {label}: {_clip(msg, 300)}", style="red"))

    def ask(self, action: Action) -> bool:
        if self._status is not None:
            self._status.stop()
        answer = self.console.input(f"  execute [bold]{describe(action)}[/bold]? [y/N] ")
        return answer.strip().lower() in {"y", "yes"}

    def summary(self, traj: Trajectory) -> None:
        ok = traj.stop_reason == "done" and traj.status == "success"
        style = "green" if ok else "yellow"
        self.console.print(
            Text(f"{len(traj.steps)} steps, stopped: {traj.stop_reason}", style=f"bold {style}")
            + Text(f", status: {traj.status}" if traj.status else "")
        )
        if traj.answer:
            self.console.print(f"answer: {traj.answer}")
        if traj.error:
            self.console.print(Text(f"error: {traj.error}", style="red"))
        if traj.run_dir:
            self.console.print(f"run directory: {traj.run_dir}  (report: {traj.run_dir / 'report.html'})")


def _clip(s: str, n: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"
