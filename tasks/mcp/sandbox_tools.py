"""The sandbox group: sandbox_create, sandbox_list, sandbox_close."""

from __future__ import annotations

import re
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from tasks.mcp.options import ServerOptions
from tasks.mcp.results import owner
from tasks.mcp.sandboxes import DesktopEnv, Registry

MIN_SIDE, MAX_SIDE = 64, 8192


def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or not (MIN_SIDE <= int(m[1]) <= MAX_SIDE and MIN_SIDE <= int(m[2]) <= MAX_SIDE):
        raise ToolError(f"size: expected WIDTHxHEIGHT between {MIN_SIDE} and {MAX_SIDE}, got {text!r}")
    return int(m[1]), int(m[2])


def _described(data: dict[str, object], text: str) -> CallToolResult:
    import json

    return CallToolResult(
        content=[TextContent(type="text", text=f"{text}\n{json.dumps(data)}")], structured_content=data
    )


def register(server: MCPServer, registry: Registry, options: ServerOptions) -> None:
    @server.tool(annotations=ToolAnnotations(destructive_hint=False, open_world_hint=False))
    def sandbox_create(
        ctx: Context,
        desktop_env: Annotated[
            DesktopEnv, Field(description="minimal: bare openbox; xfce: a full light desktop")
        ] = "minimal",
        size: Annotated[str, Field(description="screen size WIDTHxHEIGHT")] = "1280x800",
        network: Annotated[bool, Field(description="whether programs inside reach the network")] = False,
        apps: Annotated[list[str], Field(description="command lines to start, e.g. ['xterm']")] = [],  # noqa: B006
    ) -> CallToolResult:
        """Start a private desktop (its own X server, walled off from this machine) and return its id
        and size. It is closed by sandbox_close, when this client's session ends, or with the server."""
        width, height = parse_size(size)
        entry = registry.create(
            owner(ctx), width=width, height=height, desktop_env=desktop_env, network=network, apps=apps
        )
        return _described(entry.describe(), f"sandbox {entry.id} is open ({width}x{height}, {desktop_env})")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def sandbox_list(ctx: Context) -> CallToolResult:
        """The sandboxes this session has open."""
        mine = [s.describe() for s in registry.visible(owner(ctx))]
        data: dict[str, object] = {"sandboxes": mine}
        if registry.defaults.host_desktop:  # said only where granted: never a default target
            data["host_desktop"] = "sandbox_id 'host' is this machine's desktop"
        return _described(data, f"{len(mine)} sandbox(es) open")

    @server.tool(annotations=ToolAnnotations(destructive_hint=True))
    def sandbox_close(
        ctx: Context,
        sandbox_id: Annotated[str | None, Field(description="default: the only one open")] = None,
    ) -> CallToolResult:
        """Close a sandbox: every program in it ends and its files are removed."""
        entry = registry.close(owner(ctx), sandbox_id)
        return _described({"sandbox_id": entry.id, "closed": True}, f"sandbox {entry.id} is closed")
