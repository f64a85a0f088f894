"""The files group: file_read, file_write, file_list in a sandbox's home.

Everything a sandbox can write is hostile to the host: a symbolic link in its home may point at a
host file, and the host may be root. So the host never opens a path in the sandbox: the work is
done by a small standard-library program (inside_files.py) that runs inside the sandbox through
its supervisor, as its user, in its namespaces, opening each path component with O_NOFOLLOW
(links are refused, never followed). Content travels on that program's stdin and stdout.

Paths are relative to the home (``notes/a.txt``), or absolute under it (``/home/user/notes/a.txt``
as the sandbox sees it, or ``~/notes/a.txt``); ``..`` and anything outside the home are refused.
Text is UTF-8; other bytes are sent as base64 with ``encoding='base64'`` (a read of a file that is
not UTF-8 says so and asks for that).
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from pathlib import Path
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from tasks.mcp.options import ServerOptions
from tasks.mcp.results import owner
from tasks.mcp.sandboxes import OpenSandbox, Registry

HELPER = "mcp-files.py"  # its name in the sandbox's control directory (read-only inside)
HELPER_SOURCE = Path(__file__).with_name("inside_files.py").read_text(encoding="utf-8")
DEFAULT_READ_BYTES, MAX_FILE_BYTES = 256 * 1024, 8 * 1024 * 1024
MAX_PATH_CHARS, MAX_ENTRIES = 4096, 10_000
TIMEOUT_S = 30.0  # a file operation in a home; more means the sandbox is stuck
Encoding = Literal["utf-8", "base64"]
SandboxId = Annotated[str | None, Field(description="the sandbox (default: the only one open)")]
PathArg = Annotated[str, Field(description="relative to the sandbox's home, or absolute under it")]


def home_relative(path: str, home: str) -> str:
    """``path`` as a path relative to ``home`` ("" for the home itself), or a tool error naming it."""
    if "\0" in path:
        raise ToolError("path: holds a NUL character")
    if len(path) > MAX_PATH_CHARS:
        raise ToolError(f"path: {len(path)} characters, at most {MAX_PATH_CHARS}")
    rel = path.strip()
    if rel == "~" or rel.startswith("~/"):
        rel = rel[1:].lstrip("/")
    elif rel.startswith("/"):
        root = home.rstrip("/")
        if rel != root and not rel.startswith(root + "/"):
            raise ToolError(
                f"path: {path!r} is outside the sandbox's home ({home}); file tools reach only it"
            )
        rel = rel[len(root) :].lstrip("/")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ToolError(f"path: {path!r} holds '..'; give a path inside the sandbox's home without it")
    return "/".join(parts)


def run_helper(entry: OpenSandbox, args: list[str], stdin: bytes = b"") -> dict[str, Any]:
    """Run inside_files.py in the sandbox and return its answer; its refusal is a tool error."""
    from env.sandbox import SandboxError
    from env.supervisor import sandbox_python

    box = entry.box
    try:
        script = helper_path(entry)
        python = sandbox_python(box.isolation is not None)
        # A cap on what comes back: base64 of the largest file, and JSON around it.
        out = box.run_capped(
            [python, "-I", "-S", script, *args],
            input=stdin,
            timeout_s=TIMEOUT_S,
            max_output_bytes=2 * MAX_FILE_BYTES + 1024 * 1024,
        )
    except SandboxError as e:
        raise ToolError(f"the file operation did not run in sandbox {entry.id}: {e}") from None
    try:
        answer = json.loads(out.stdout)
    except ValueError:
        said = out.stderr.decode(errors="replace").strip().splitlines()
        raise ToolError(
            f"the file operation failed in sandbox {entry.id} (exit status {out.returncode})"
            + (f": {said[-1][:300]}" if said else "")
        ) from None
    if "error" in answer:
        raise ToolError(f"path: {answer['error']}")
    return answer


_helpers: dict[str, str] = {}  # sandbox id -> the helper's path inside it, written once
_helpers_lock = threading.Lock()


def helper_path(entry: OpenSandbox) -> str:
    """inside_files.py in the sandbox's control directory, written on first use (rewriting it for
    each call would pull it from under a concurrent call's Python)."""
    with _helpers_lock:
        if entry.id not in _helpers:
            box = entry.box
            _helpers[entry.id] = box.inside(box.control_file(HELPER, HELPER_SOURCE.encode()))
        return _helpers[entry.id]


def check_cap(name: str, value: int, top: int, bottom: int = 0) -> None:
    if not bottom <= value <= top:
        raise ToolError(f"{name}: must lie in [{bottom}, {top}], got {value}")


def described(text: str, data: dict[str, Any]) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=f"{text}\n{json.dumps(data, ensure_ascii=False)}")],
        structured_content=data,
    )


def register(server: MCPServer, registry: Registry, options: ServerOptions) -> None:
    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    def file_read(
        ctx: Context,
        path: PathArg,
        sandbox_id: SandboxId = None,
        encoding: Annotated[
            Encoding,
            Field(description="utf-8: text (a file that is not UTF-8 is refused); base64: any bytes"),
        ] = "utf-8",
        max_bytes: Annotated[int, Field(description=f"bytes read at most (up to {MAX_FILE_BYTES})")] = (
            DEFAULT_READ_BYTES
        ),
    ) -> CallToolResult:
        """Read a file in the sandbox's home. Symbolic links are not followed (refused)."""
        check_cap("max_bytes", max_bytes, MAX_FILE_BYTES)
        entry = registry.get(owner(ctx), sandbox_id)
        rel = home_relative(path, entry.box.env["HOME"])
        answer = run_helper(entry, ["read", entry.box.env["HOME"], rel, str(max_bytes)])
        raw = base64.b64decode(answer["data"])
        content: str
        if encoding == "base64":
            content = answer["data"]
        else:
            try:
                # A cut file may end inside a character: that one is left out, not an error.
                content = raw.decode("utf-8") if not answer["cut"] else _decode_prefix(raw)
            except UnicodeDecodeError as e:
                raise ToolError(
                    f"encoding: {path} is not UTF-8 text (byte {e.start}); read it with encoding='base64'"
                ) from None
        data = {"sandbox_id": entry.id, "path": rel, "size": answer["size"], "bytes_read": len(raw),
                "cut": answer["cut"], "encoding": encoding, "content": content}  # fmt: skip
        more = f", cut at {len(raw)} of {answer['size']} bytes (raise max_bytes)" if answer["cut"] else ""
        return described(f"{rel}: {answer['size']} bytes{more}", data)

    @server.tool(annotations=ToolAnnotations(destructive_hint=True, open_world_hint=False))
    def file_write(
        ctx: Context,
        path: PathArg,
        content: Annotated[str, Field(description="the text, or base64 with encoding='base64'")],
        sandbox_id: SandboxId = None,
        encoding: Annotated[
            Encoding, Field(description="how content is given: utf-8 text or base64")
        ] = "utf-8",
        mode: Annotated[
            Literal["overwrite", "create", "append"],
            Field(description="overwrite (default), create (refused if it exists) or append"),
        ] = "overwrite",
        make_dirs: Annotated[bool, Field(description="create missing parent directories")] = False,
    ) -> CallToolResult:
        """Write a file in the sandbox's home, as the sandbox's user. Symbolic links are not
        followed (refused)."""
        if encoding == "base64":
            try:
                data = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError) as e:
                raise ToolError(f"content: not valid base64 ({e})") from None
        else:
            try:
                data = content.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ToolError(f"content: not encodable as UTF-8 ({e.reason} at {e.start})") from None
        if len(data) > MAX_FILE_BYTES:
            raise ToolError(f"content: {len(data)} bytes, at most {MAX_FILE_BYTES}")
        entry = registry.get(owner(ctx), sandbox_id)
        rel = home_relative(path, entry.box.env["HOME"])
        if not rel:
            raise ToolError("path: names the home directory itself, not a file")
        answer = run_helper(
            entry, ["write", entry.box.env["HOME"], rel, mode, "1" if make_dirs else "0"], stdin=data
        )
        result = {"sandbox_id": entry.id, "path": rel, "bytes_written": answer["bytes"], "mode": mode}
        return described(f"{rel}: {answer['bytes']} bytes written ({mode})", result)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    def file_list(
        ctx: Context,
        path: PathArg = ".",
        sandbox_id: SandboxId = None,
        max_entries: Annotated[
            int, Field(description=f"entries listed at most (up to {MAX_ENTRIES})")
        ] = 1000,
    ) -> CallToolResult:
        """List a directory in the sandbox's home: name, type (file, directory, symlink with its
        target, other) and size of each entry, sorted by name."""
        check_cap("max_entries", max_entries, MAX_ENTRIES, 1)
        entry = registry.get(owner(ctx), sandbox_id)
        rel = home_relative(path, entry.box.env["HOME"])
        answer = run_helper(entry, ["list", entry.box.env["HOME"], rel, str(max_entries)])
        data = {"sandbox_id": entry.id, "path": rel or ".", "entries": answer["entries"],
                "total": answer["total"]}  # fmt: skip
        shown = len(answer["entries"])
        more = f" ({shown} shown; raise max_entries)" if shown < answer["total"] else ""
        return described(f"{rel or '.'}: {answer['total']} entries{more}", data)


def _decode_prefix(raw: bytes) -> str:
    """UTF-8 text cut at a byte cap: a character split at the end is left out; anything else
    invalid is an error."""
    import codecs

    return codecs.getincrementaldecoder("utf-8")("strict").decode(raw, final=False)
