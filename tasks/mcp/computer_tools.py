"""The computer group: computer_screenshot and the pointer and keyboard tools on a sandbox.

Each tool builds our typed Action (env/actions.py) and runs it through the sandbox's own execute()
(env/executor.py, the same path the agent loop takes), so the MCP client gets what the loop gets:
the ActionResult, settling included. Coordinates say their space explicitly: ``pixels`` of the
last screenshot sent for that sandbox (mapped back through agent/models/profile.py's shot_pixel,
as a resized model image's pixels are) or ``relative`` fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ContentBlock, ToolAnnotations
from pydantic import Field, ValidationError

from agent.models.profile import shot_pixel
from env.actions import Action, Click, Drag, Hotkey, KeyPress, Move, Point, Scroll, TypeText, Wait, describe
from env.desktop import StopRequested
from tasks.mcp.options import ServerOptions
from tasks.mcp.results import (
    DEFAULT_MAX_SIDE,
    action_result,
    bad_argument,
    check_max_side,
    owner,
    screenshot_blocks,
)
from tasks.mcp.sandboxes import OpenSandbox, Registry

Coordinates = Literal["pixels", "relative"]
SandboxId = Annotated[str | None, Field(description="the sandbox (default: the only one open)")]
Shot = Annotated[bool, Field(description="also return the screenshot taken after the action")]
MaxSide = Annotated[int, Field(description="longest side of a returned screenshot, in pixels")]
CoordinatesArg = Annotated[
    Coordinates,
    Field(description="pixels: of the last screenshot sent for this sandbox; relative: fractions 0-1"),
]


def point_errors(e: ValidationError) -> list[str]:
    return [str(err["msg"]).removeprefix("Value error, ") for err in e.errors()]


def to_point(entry: OpenSandbox, coordinates: Coordinates, x: float, y: float, names: str = "x, y") -> Point:
    """A client's point as our Point on the full screenshot; a bad one is a tool error naming it."""
    try:
        if coordinates == "relative":
            return Point.norm(x, y)
        if entry.last_shot is None:
            raise ToolError(
                f"coordinates: 'pixels' refer to the last screenshot, and none was sent for sandbox "
                f"{entry.id} yet (call computer_screenshot, or use coordinates='relative')"
            )
        w, h = entry.last_shot
        if not (0 <= x < w and 0 <= y < h):  # NaN and infinities fail this too
            raise ValueError(f"pixel point ({x:g}, {y:g}) lies outside the {w}x{h} screenshot last sent")
        # The loop's mapping of a resized image's pixel (the identity's floor when not downscaled).
        return shot_pixel(x, y, (w, h), entry.size)
    except ValidationError as e:
        raise ToolError(f"{names}: {'; '.join(point_errors(e))}") from None
    except ValueError as e:
        raise ToolError(f"{names}: {e}") from None


def run_action(
    registry: Registry,
    ctx: Context,
    sandbox_id: str | None,
    build: Callable[[OpenSandbox], Action],
    screenshot: bool,
    max_side: int,
) -> CallToolResult:
    """Resolve the sandbox, build the action (``build(entry) -> Action``) and execute it."""
    if screenshot:
        check_max_side(max_side)  # before the action: a refused call must not have acted
    entry = registry.get(owner(ctx), sandbox_id)
    with entry.lock:
        try:
            action = build(entry)
        except ValidationError as e:
            raise bad_argument(e) from None
        try:
            result = entry.box.execute(action)
        except StopRequested as e:  # the user at this machine's desktop pushed the pointer into a corner
            raise ToolError(f"stopped by the user at the desktop: {e}") from None
        shot: list[ContentBlock] | None = screenshot_blocks(entry, max_side) if screenshot else None
    return action_result(entry, describe(action), result, shot)


def register(server: MCPServer, registry: Registry, options: ServerOptions) -> None:
    acts = ToolAnnotations(destructive_hint=True, open_world_hint=False)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def computer_screenshot(
        ctx: Context,
        sandbox_id: SandboxId = None,
        max_side: MaxSide = DEFAULT_MAX_SIDE,
        image_format: Literal["png", "jpeg"] = "png",
    ) -> CallToolResult:
        """The sandbox's screen as an image, downscaled so its long side is at most max_side; the
        text part states the scale. coordinates='pixels' in later calls mean pixels of this image."""
        entry = registry.get(owner(ctx), sandbox_id)
        with entry.lock:
            blocks = screenshot_blocks(entry, max_side, image_format)
            w, h = entry.last_shot or (0, 0)
        sw, sh = entry.size
        data = {"sandbox_id": entry.id, "width": w, "height": h, "screen_width": sw,
                "screen_height": sh, "scale": w / sw}  # fmt: skip
        return CallToolResult(content=blocks, structured_content=data)

    def click(name: str, button: Literal["left", "right", "middle"], clicks: int, doc: str) -> None:
        def tool(
            ctx: Context,
            x: float,
            y: float,
            coordinates: CoordinatesArg,
            sandbox_id: SandboxId = None,
            screenshot: Shot = False,
            max_side: MaxSide = DEFAULT_MAX_SIDE,
        ) -> CallToolResult:
            return run_action(
                registry,
                ctx,
                sandbox_id,
                lambda e: Click(point=to_point(e, coordinates, x, y), button=button, clicks=clicks),
                screenshot,
                max_side,
            )

        server.add_tool(tool, name=name, description=doc, annotations=acts)

    click("computer_click", "left", 1, "Click at (x, y) once with the left button.")
    click("computer_double_click", "left", 2, "Double-click at (x, y) with the left button.")
    click("computer_right_click", "right", 1, "Click at (x, y) with the right button.")

    @server.tool(annotations=acts)
    def computer_move(
        ctx: Context,
        x: float,
        y: float,
        coordinates: CoordinatesArg,
        sandbox_id: SandboxId = None,
        screenshot: Shot = False,
        max_side: MaxSide = DEFAULT_MAX_SIDE,
    ) -> CallToolResult:
        """Move the pointer to (x, y) without clicking."""
        return run_action(
            registry,
            ctx,
            sandbox_id,
            lambda e: Move(point=to_point(e, coordinates, x, y)),
            screenshot,
            max_side,
        )

    @server.tool(annotations=acts)
    def computer_drag(
        ctx: Context,
        start_x: float,
        start_y: float,
        end_x: float,
        end_y: float,
        coordinates: CoordinatesArg,
        button: Literal["left", "right", "middle"] = "left",
        sandbox_id: SandboxId = None,
        screenshot: Shot = False,
        max_side: MaxSide = DEFAULT_MAX_SIDE,
    ) -> CallToolResult:
        """Press at (start_x, start_y), move to (end_x, end_y) and release."""

        def build(e: OpenSandbox) -> Action:
            start = to_point(e, coordinates, start_x, start_y, "start_x, start_y")
            return Drag(
                start=start, end=to_point(e, coordinates, end_x, end_y, "end_x, end_y"), button=button
            )

        return run_action(registry, ctx, sandbox_id, build, screenshot, max_side)

    @server.tool(annotations=acts)
    def computer_scroll(
        ctx: Context,
        direction: Literal["up", "down", "left", "right"],
        amount: int = 5,
        x: float | None = None,
        y: float | None = None,
        coordinates: Coordinates | None = None,
        sandbox_id: SandboxId = None,
        screenshot: Shot = False,
        max_side: MaxSide = DEFAULT_MAX_SIDE,
    ) -> CallToolResult:
        """Scroll `amount` wheel clicks (1-100) revealing content in `direction`, at (x, y) if given
        (with `coordinates`), else wherever the pointer is."""

        def build(e: OpenSandbox) -> Action:
            if (x is None) != (y is None):
                raise ToolError("x, y: give both or neither")
            if x is not None and y is not None:
                if coordinates is None:
                    raise ToolError("coordinates: required with x and y ('pixels' or 'relative')")
                return Scroll(point=to_point(e, coordinates, x, y), direction=direction, amount=amount)
            return Scroll(direction=direction, amount=amount)

        return run_action(registry, ctx, sandbox_id, build, screenshot, max_side)

    @server.tool(annotations=acts)
    def computer_type(
        ctx: Context,
        text: str,
        sandbox_id: SandboxId = None,
        screenshot: Shot = False,
        max_side: MaxSide = DEFAULT_MAX_SIDE,
    ) -> CallToolResult:
        """Type text (any Unicode; newline and tab are typed as Enter and Tab) where the focus is."""
        return run_action(registry, ctx, sandbox_id, lambda e: TypeText(text=text), screenshot, max_side)

    @server.tool(annotations=acts)
    def computer_key(
        ctx: Context,
        key: str,
        presses: int = 1,
        sandbox_id: SandboxId = None,
        screenshot: Shot = False,
        max_side: MaxSide = DEFAULT_MAX_SIDE,
    ) -> CallToolResult:
        """Press and release one key, named as pyautogui names it (enter, esc, f5, a, ...)."""
        return run_action(
            registry, ctx, sandbox_id, lambda e: KeyPress(key=key, presses=presses), screenshot, max_side
        )

    @server.tool(annotations=acts)
    def computer_hotkey(
        ctx: Context,
        keys: Annotated[str | list[str], Field(description='"ctrl+shift+s" or ["ctrl", "shift", "s"]')],
        sandbox_id: SandboxId = None,
        screenshot: Shot = False,
        max_side: MaxSide = DEFAULT_MAX_SIDE,
    ) -> CallToolResult:
        """Press keys together and release them in reverse order."""
        names = [k.strip() for k in keys.split("+")] if isinstance(keys, str) else keys
        return run_action(registry, ctx, sandbox_id, lambda e: Hotkey(keys=names), screenshot, max_side)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def computer_wait(
        ctx: Context,
        seconds: float = 1.0,
        sandbox_id: SandboxId = None,
        screenshot: Shot = False,
        max_side: MaxSide = DEFAULT_MAX_SIDE,
    ) -> CallToolResult:
        """Wait (0-60 s), e.g. for a program to start, and optionally look at the screen after."""
        return run_action(registry, ctx, sandbox_id, lambda e: Wait(seconds=seconds), screenshot, max_side)
