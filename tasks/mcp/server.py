"""The MCPServer with only the granted tool groups."""

from __future__ import annotations

from collections.abc import Callable

from mcp.server.mcpserver import MCPServer

from tasks.mcp import computer_tools, file_tools, kimi_tools, sandbox_tools, shell_tools
from tasks.mcp.options import ServerOptions
from tasks.mcp.sandboxes import Registry, SandboxDefaults

Register = Callable[[MCPServer, Registry, ServerOptions], None]

# A group's tools come from its module's register(); a group listed in permissions.GROUPS but not
# here is refused at start-up (granted, it would silently give nothing).
# host-desktop adds no tools: it lets the computer tools take sandbox_id "host".
REGISTRARS: dict[str, Register] = {
    "sandbox": sandbox_tools.register,
    "computer": computer_tools.register,
    "shell": shell_tools.register,
    "files": file_tools.register,
    "kimi": kimi_tools.register,
}

INSTRUCTIONS = (
    "Private desktops to operate: sandbox_create starts one (returns its id), computer_screenshot "
    "shows it, computer_* act on it. Points are pixels of the last screenshot (coordinates='pixels') "
    "or fractions 0-1 (coordinates='relative'). Where granted: shell_run and file_* work inside a "
    "sandbox as its user; kimi_locate finds a described element on its screen; kimi_run gives a "
    "task to the Kimi-VL agent on it."
)


class UnavailableGroup(ValueError):
    pass


def build_server(options: ServerOptions) -> tuple[MCPServer, Registry]:
    if "host-desktop" in options.allow and "computer" not in options.allow:
        raise UnavailableGroup("--allow host-desktop gives the computer tools this desktop: add computer")
    registry = Registry(
        SandboxDefaults(
            options.max_sandboxes, options.isolated, options.sleep_after_s, "host-desktop" in options.allow
        )
    )
    server: MCPServer = MCPServer(name="kimi-agent", instructions=INSTRUCTIONS, log_level="WARNING")
    for group, register in REGISTRARS.items():
        if group in options.allow:
            register(server, registry, options)
    return server, registry
