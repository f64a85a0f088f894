"""The kimi group: the model as a tool. kimi_locate grounds a described element on a sandbox's
screen with the ScreenSpot harness's prompt (tasks/screenspot/prompt.py); kimi_run runs our agent
loop (agent/loop.py ``run``) with the model as a sub-agent in the sandbox.

kimi_run reports each finished step as an MCP progress notification. A client's cancellation sets
the loop's StopFlag, which the loop reads before each action and each step: the action in progress
(or the model call, whose reply is then not acted on) finishes, nothing more runs, and the run's
records are closed as "interrupted" before the request ends.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from tasks.mcp.kimi_model import KimiModel
from tasks.mcp.options import ServerOptions
from tasks.mcp.results import owner
from tasks.mcp.sandboxes import OpenSandbox, Registry

if TYPE_CHECKING:
    from agent.loop import Trajectory
    from agent.trajectory import StepRecord
    from env.actions import Action
    from env.desktop import ActionResult, Frame
    from env.geometry import ScreenGeometry

log = logging.getLogger(__name__)

MAX_DESCRIPTION_CHARS, MAX_TASK_CHARS = 2000, 10_000
MAX_STEPS = 100
# How long a cancelled kimi_run waits for the run to stop before the request ends anyway: an action
# takes a moment, but a model call in progress (its reply is not acted on) may take minutes, and a
# client that went away must not keep the server from closing its sandboxes.
STOP_WAIT_S = 10.0
SandboxId = Annotated[str | None, Field(description="the sandbox (default: the only one open)")]


def check_text(name: str, text: str, top: int) -> None:
    if not text.strip():
        raise ToolError(f"{name}: empty")
    if len(text) > top:
        raise ToolError(f"{name}: {len(text)} characters, at most {top}")


def clip(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def locate_point(x: float, y: float, entry: OpenSandbox) -> dict[str, Any]:
    """A point on the full screen in both client spaces: relative fractions, and pixels of the last
    screenshot sent for this sandbox (the centre of the screen pixel, so computer_tools maps it
    back to that very pixel), or None when none was sent yet."""
    sw, sh = entry.size
    px, py = int(x), int(y)
    point: dict[str, Any] = {
        "relative": {"x": round(x / sw, 6), "y": round(y / sh, 6)},
        "screen": {"x": px, "y": py},
        "pixels": None,
        "pixels_of": None,
    }
    if entry.last_shot is not None:
        w, h = entry.last_shot
        point["pixels"] = {"x": round((px + 0.5) * w / sw, 3), "y": round((py + 0.5) * h / sh, 3)}
        point["pixels_of"] = {"width": w, "height": h}
    return point


class LockedDesktop:
    """The sandbox as the loop's Desktop, one screenshot or action at a time under the sandbox's
    lock: the client's own computer_* calls may come between steps, never inside one."""

    def __init__(self, entry: OpenSandbox) -> None:
        self.entry = entry

    @property
    def geometry(self) -> ScreenGeometry:
        return self.entry.box.geometry

    def screenshot(self) -> Frame:
        with self.entry.lock:
            return self.entry.box.screenshot()

    def execute(self, action: Action) -> ActionResult:
        with self.entry.lock:
            return self.entry.box.execute(action)

    def close(self) -> None:
        pass  # the sandbox is the client's: it outlives the run


def run_dir(parent: Path, task: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-")[:40] or "run"
    base = parent / f"{datetime.now():%Y%m%d-%H%M%S}-{slug}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def step_summary(rec: StepRecord) -> dict[str, Any]:
    return {
        "step": rec.step,
        "thought": clip(rec.thought, 500),
        "actions": [
            {"action": a.description, "executed": a.executed, "ok": a.ok, "error": a.error}
            for a in rec.actions
        ],
        "error": rec.error,
    }


def outcome_of(traj: Trajectory) -> str:
    """success / failure (the model said so), or why the run ended otherwise."""
    if traj.stop_reason == "done":
        return traj.status or "done"
    return traj.stop_reason


def check_model_flags(args: argparse.Namespace) -> None:
    """The main command's checks of the model flags, at start-up rather than at the first call."""
    from tasks.cli_common import UsageError, check_limits
    from tasks.mcp.cli import McpUsageError

    try:
        check_limits(argparse.Namespace(**{**vars(args), "task": "kimi_run", "max_steps": None}))
    except UsageError as e:
        raise McpUsageError(str(e)) from None


def register(server: MCPServer, registry: Registry, options: ServerOptions) -> None:
    check_model_flags(options.args)
    model = KimiModel(options.args)
    runs = Path(getattr(options.args, "runs_dir", None) or "runs")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    def kimi_locate(
        ctx: Context,
        description: Annotated[str, Field(description="the element to find, e.g. 'the Save button'")],
        sandbox_id: SandboxId = None,
    ) -> CallToolResult:
        """Ask the model where a described element is on the sandbox's current screen. Returns the
        point as relative fractions (0-1) and as pixels of the last screenshot sent for this sandbox
        (null before any): either goes straight into computer_click. A tool error when the model
        says the element is not there or gives no point."""
        from tasks.screenspot import prompt

        check_text("description", description, MAX_DESCRIPTION_CHARS)
        entry = registry.get(owner(ctx), sandbox_id)
        m = model.get()
        with entry.lock:
            image = entry.box.screenshot().to_image()
        msgs = prompt.messages(prompt.system_prompt(refusals=True), image, description)
        other = m.profile if m.profile.name != "kimi-vl" else None  # Kimi-VL's replies read as ScreenSpot's
        t0 = time.perf_counter()
        with model.busy():
            try:
                reply = m.backend.generate(msgs, model.grounding_params()).text
            except Exception as e:  # the model server or weights: a tool error, the server goes on
                raise ToolError(f"the model could not be asked: {clip(str(e))}") from None
        seconds = time.perf_counter() - t0
        point = prompt.read_point(reply, image.size, other, m.resolved.variant.in_token_limit)
        if point is None:
            if prompt.declined(reply):
                raise ToolError(f"description: the model says {description!r} is not on the screen")
            raise ToolError(f"the model's reply holds no point: {clip(reply)!r}")
        x, y = point
        if not (0 <= x < image.width and 0 <= y < image.height):
            raise ToolError(
                f"the model pointed outside the {image.width}x{image.height} screen: ({x:g}, {y:g})"
            )
        data = {"sandbox_id": entry.id, "description": description, **locate_point(x, y, entry),
                "model_reply": reply, "model_s": round(seconds, 3)}  # fmt: skip
        rel = data["relative"]
        text = f"{description!r} is at relative ({rel['x']:.4f}, {rel['y']:.4f})"
        if data["pixels"]:
            text += f", pixels ({data['pixels']['x']:g}, {data['pixels']['y']:g}) of the last screenshot"
        return CallToolResult(
            content=[TextContent(type="text", text=f"{text}\n{json.dumps(data, ensure_ascii=False)}")],
            structured_content=data,
        )

    @server.tool(annotations=ToolAnnotations(destructive_hint=True, open_world_hint=False))
    async def kimi_run(
        ctx: Context,
        task: Annotated[str, Field(description="what to do on the sandbox's desktop, in plain words")],
        max_steps: Annotated[int, Field(description=f"steps at most (1-{MAX_STEPS})")] = 15,
        sandbox_id: SandboxId = None,
    ) -> CallToolResult:
        """Let the model do a task on the sandbox's desktop as an agent (screenshot, think, act,
        repeat) and return its outcome, answer, a summary of each step and the run's directory
        (screenshots and records). Progress is reported after each step; cancelling the request
        stops the run after the action in progress."""
        from agent.loop import StopFlag, run
        from agent.trajectory import RunInfo, TrajectoryWriter

        check_text("task", task, MAX_TASK_CHARS)
        if not 1 <= max_steps <= MAX_STEPS:
            raise ToolError(f"max_steps: must lie in [1, {MAX_STEPS}], got {max_steps}")
        entry = registry.get(owner(ctx), sandbox_id)
        setup = await anyio.to_thread.run_sync(model.policy, task, entry.size)
        out = run_dir(runs, task)
        stop = StopFlag()
        finished = threading.Event()

        def on_step(rec: StepRecord, phase: str) -> None:
            if phase != "finished" or stop:
                return
            said = "; ".join(a.description for a in rec.actions) or (rec.error or "no action")
            try:
                anyio.from_thread.run(
                    ctx.report_progress, rec.step, max_steps, f"step {rec.step}: {clip(said, 200)}"
                )
            except Exception:  # a client that went away: the run itself goes on
                log.debug("progress for step %d not sent", rec.step, exc_info=True)

        def work() -> Trajectory:
            try:
                with model.busy():
                    writer = TrajectoryWriter(
                        out,
                        RunInfo(task=task, started_at=time.time(), policy=setup.label,
                                desktop=f"mcp sandbox {entry.id}", screen=entry.size, model=setup.settings),
                    )  # fmt: skip
                    return run(
                        task, setup.policy, LockedDesktop(entry), max_steps=max_steps, writer=writer,
                        on_step=on_step, stop=stop,
                    )  # fmt: skip
            finally:
                finished.set()

        try:
            traj = await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            # The client cancelled (or went away): stop after the action in progress, and end the
            # request only once the run has, so the sandbox is free and its records are closed.
            stop.set()
            with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_WAIT_S):
                await anyio.to_thread.run_sync(finished.wait, abandon_on_cancel=True)
            log.info("kimi_run on sandbox %s cancelled; its records are in %s", entry.id, out)
            raise
        data = {
            "sandbox_id": entry.id,
            "outcome": outcome_of(traj),
            "stop_reason": traj.stop_reason,
            "status": traj.status,
            "answer": traj.answer,
            "error": traj.error,
            "steps": [step_summary(r) for r in traj.steps],
            "run_dir": str(out.resolve()),
        }
        head = f"kimi_run: {data['outcome']} after {len(traj.steps)} step(s)"
        if traj.answer:
            head += f"; answer: {clip(traj.answer, 500)}"
        return CallToolResult(
            content=[TextContent(type="text", text=f"{head}\n{json.dumps(data, ensure_ascii=False)}")],
            structured_content=data,
            is_error=traj.stop_reason == "error",
        )
