"""What the tools send back: their session, screenshots as MCP images, ActionResults as text and
structured content, bad arguments as tool errors (is_error results naming the argument)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ContentBlock, ImageContent, TextContent
from PIL import Image
from pydantic import ValidationError

from env.actions import brief_error
from env.desktop import ActionResult, StopRequested
from tasks.mcp.sandboxes import OpenSandbox

DEFAULT_MAX_SIDE = 1280  # a 1920x1080 screen goes out at 1280x720: a client's context is not free
MIN_MAX_SIDE, MAX_MAX_SIDE = 64, 8192


def owner(ctx: Context) -> str | None:
    """The MCP session a call belongs to: its streamable HTTP session id (what the client's DELETE
    names when it ends it); None on stdio, which has one session."""
    request = ctx.request_context.request
    headers = getattr(request, "headers", None)
    return headers.get("mcp-session-id") if headers is not None else None


def bad_argument(e: ValidationError | ValueError, prefix: str = "") -> ToolError:
    """A refused action or point as a tool error naming the argument."""
    text = brief_error(e) if isinstance(e, ValidationError) else str(e)
    return ToolError(f"{prefix}{text}")


def check_max_side(max_side: int) -> None:
    if not MIN_MAX_SIDE <= max_side <= MAX_MAX_SIDE:
        raise ToolError(f"max_side: must lie in [{MIN_MAX_SIDE}, {MAX_MAX_SIDE}], got {max_side}")


def screenshot_blocks(entry: OpenSandbox, max_side: int, image_format: str = "png") -> list[ContentBlock]:
    """The sandbox's screen now, downscaled so its long side is at most ``max_side``; remembered as
    the image `pixels` coordinates refer to from now on. Call with ``entry.lock`` held."""
    check_max_side(max_side)
    try:
        frame = entry.box.screenshot()
    except StopRequested as e:
        raise ToolError(f"stopped by the user at the desktop: {e}") from None
    image = frame.to_image()
    long_side = max(frame.width, frame.height)
    if long_side > max_side:
        k = max_side / long_side
        size = (max(1, round(frame.width * k)), max(1, round(frame.height * k)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if image_format == "jpeg":
        image.save(buf, "JPEG", quality=85)
    else:
        image.save(buf, "PNG", compress_level=1)  # speed over size: the screen is mostly flat colour
    entry.last_shot = image.size
    scale = image.width / frame.width
    text = (
        f"screenshot of sandbox {entry.id}: {image.width}x{image.height} pixels of its "
        f"{frame.width}x{frame.height} screen (scale {scale:.4g}); coordinates='pixels' now mean "
        "pixels of this image"
    )
    data = base64.b64encode(buf.getvalue()).decode()
    return [
        TextContent(type="text", text=text),
        ImageContent(type="image", data=data, mime_type=f"image/{image_format}"),
    ]


def action_result(
    entry: OpenSandbox, what: str, result: ActionResult, shot: list[ContentBlock] | None
) -> CallToolResult:
    """The ActionResult as JSON text and structured content; a failed action is an is_error result."""
    data: dict[str, Any] = {"sandbox_id": entry.id, "action": what, **result.model_dump()}
    blocks: list[ContentBlock] = [TextContent(type="text", text=json.dumps(data))]
    return CallToolResult(content=[*blocks, *(shot or [])], structured_content=data, is_error=not result.ok)
