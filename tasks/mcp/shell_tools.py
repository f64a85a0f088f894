"""The shell group: shell_run, a command line inside a sandbox as its user.

The command runs through the sandbox's supervisor (env/sandbox.py ``run_capped``), so it has the
sandbox's namespaces, limits and environment, never the host's; its output is read back up to a
cap, and the client is told how much was cut.
"""

from __future__ import annotations

import codecs
import json
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from tasks.mcp.options import ServerOptions
from tasks.mcp.results import owner
from tasks.mcp.sandboxes import Registry

MAX_COMMAND_CHARS = 100_000  # one command line, not a file: file_write carries content
MIN_TIMEOUT_S, MAX_TIMEOUT_S = 0.1, 600.0
DEFAULT_OUTPUT_BYTES, MAX_OUTPUT_BYTES = 64 * 1024, 4 * 1024 * 1024
SandboxId = Annotated[str | None, Field(description="the sandbox (default: the only one open)")]


def check_arguments(command: str, timeout_s: float, max_output_bytes: int) -> None:
    if not command.strip():
        raise ToolError("command: empty")
    if len(command) > MAX_COMMAND_CHARS:
        raise ToolError(f"command: {len(command)} characters, at most {MAX_COMMAND_CHARS}")
    if "\0" in command:
        raise ToolError("command: holds a NUL character")
    if not MIN_TIMEOUT_S <= timeout_s <= MAX_TIMEOUT_S:  # NaN fails this too
        raise ToolError(f"timeout_s: must lie in [{MIN_TIMEOUT_S:g}, {MAX_TIMEOUT_S:g}], got {timeout_s:g}")
    if not 0 <= max_output_bytes <= MAX_OUTPUT_BYTES:
        raise ToolError(f"max_output_bytes: must lie in [0, {MAX_OUTPUT_BYTES}], got {max_output_bytes}")


def stream_text(data: bytes, size: int) -> tuple[str, int]:
    """The captured bytes as text (invalid UTF-8 as U+FFFD) and how many bytes were not sent; where
    the cap split a character, its first bytes are dropped rather than shown as U+FFFD."""
    cut = size - len(data)
    return codecs.getincrementaldecoder("utf-8")("replace").decode(data, final=cut <= 0), max(cut, 0)


def register(server: MCPServer, registry: Registry, options: ServerOptions) -> None:
    @server.tool(annotations=ToolAnnotations(destructive_hint=True, open_world_hint=False))
    def shell_run(
        ctx: Context,
        command: Annotated[str, Field(description="a /bin/sh command line, run in the home directory")],
        sandbox_id: SandboxId = None,
        timeout_s: Annotated[
            float, Field(description=f"seconds before it is killed ({MIN_TIMEOUT_S:g}-{MAX_TIMEOUT_S:g})")
        ] = 30.0,
        max_output_bytes: Annotated[
            int,
            Field(description=f"bytes of stdout and of stderr sent back, each (at most {MAX_OUTPUT_BYTES})"),
        ] = DEFAULT_OUTPUT_BYTES,
        stdin: Annotated[str, Field(description="text given to the command on its standard input")] = "",
    ) -> CallToolResult:
        """Run a shell command inside the sandbox as its user (its files, its network setting, its
        limits; never this machine's) and return its exit status, stdout and stderr (UTF-8, each cut
        at max_output_bytes, with how much was cut). Programs it leaves running in the background
        live until the sandbox closes."""
        from env.sandbox import SandboxError, SandboxTimeout

        check_arguments(command, timeout_s, max_output_bytes)
        if len(stdin.encode()) > MAX_OUTPUT_BYTES:
            raise ToolError(f"stdin: more than {MAX_OUTPUT_BYTES} bytes")
        entry = registry.get(owner(ctx), sandbox_id)
        # No sandbox lock: a command runs beside the pointer and keyboard tools, as a terminal would.
        try:
            out = entry.box.run_capped(
                ["/bin/sh", "-c", command],
                input=stdin.encode(),
                timeout_s=timeout_s,
                max_output_bytes=max_output_bytes,
            )
        except SandboxTimeout:
            raise ToolError(
                f"timeout_s: the command did not finish within {timeout_s:g} s and was killed "
                "(with what it started in its process group)"
            ) from None
        except SandboxError as e:
            raise ToolError(f"the command could not run in sandbox {entry.id}: {e}") from None
        stdout, cut_out = stream_text(out.stdout, out.stdout_size)
        stderr, cut_err = stream_text(out.stderr, out.stderr_size)
        data = {
            "sandbox_id": entry.id,
            "exit_status": out.returncode,
            "stdout": stdout,
            "stderr": stderr,
            "stdout_bytes": out.stdout_size,
            "stderr_bytes": out.stderr_size,
            "stdout_cut_bytes": cut_out,
            "stderr_cut_bytes": cut_err,
        }
        notes = [f"{n} bytes of {name} cut" for name, n in (("stdout", cut_out), ("stderr", cut_err)) if n]
        head = f"exit status {out.returncode}" + (f" ({'; '.join(notes)})" if notes else "")
        text = f"{head}\n{json.dumps(data, ensure_ascii=False)}"
        # A command that failed is the client's to read, not a protocol error: is_error stays False.
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)
