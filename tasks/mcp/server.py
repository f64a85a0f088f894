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
    "or fractions 0-1 (coordinates='relative')."
)


class UnavailableGroup(ValueError):
    pass


def build_server(options: ServerOptions) -> tuple[MCPServer, Registry]:
    missing = sorted(options.allow - REGISTRARS.keys())
    if missing:
        raise UnavailableGroup(
            f"--allow: tool group(s) {', '.join(missing)} are not available in this version "
            f"(available: {', '.join(REGISTRARS)})"
        )
    registry = Registry(SandboxDefaults(max_sandboxes=options.max_sandboxes, isolated=options.isolated))
    server: MCPServer = MCPServer(name="kimi-agent", instructions=INSTRUCTIONS, log_level="WARNING")
    for group, register in REGISTRARS.items():
        if group in options.allow:
            register(server, registry, options)
    return server, registry
