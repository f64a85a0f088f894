"""`kimi-agent mcp`'s shell, files and kimi groups, driven by the official SDK's own client over
stdio (the server spawned as a client spawns it), against real sandboxes and a real model path: a
loopback OpenAI-compatible server with scripted replies, and the tiny Kimi-VL through transformers."""

from __future__ import annotations

import base64
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_types import CallToolResult, TextContent

ROOT = Path(__file__).resolve().parent.parent

Session = Callable[[ClientSession], Awaitable[Any]]


def _over_stdio(flags: list[str], body: Session) -> Any:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "tasks.cli", "mcp", *flags], cwd=str(ROOT)
    )

    async def run() -> Any:
        async with stdio_client(params) as (r, w), ClientSession(r, w) as s:
            await s.initialize()
            return await body(s)

    return anyio.run(run)


def _text(res: CallToolResult) -> str:
    return "\n".join(c.text for c in res.content if isinstance(c, TextContent))


def _ok(res: CallToolResult) -> dict[str, Any]:
    assert not res.is_error, _text(res)
    assert res.structured_content is not None
    return res.structured_content


def _refused(res: CallToolResult, said: str) -> None:
    assert res.is_error and said in _text(res), _text(res)


@pytest.mark.slow
@pytest.mark.x11
@pytest.mark.parametrize("isolation", [[], ["--no-isolation"]], ids=["isolated", "no-isolation"])
def test_shell_and_files_in_one_sandbox(tmp_path: Path, isolation: list[str]) -> None:
    """shell_run's exit status, output caps and timeout; file_write / file_read / file_list round
    trip of non-ASCII text and of bytes; paths outside the home refused; a symlink in the home to a
    file of the host's is not read (nor written) through: unisolated, the link resolves to the real
    file, so only the tools' refusal keeps it out."""
    secret = tmp_path / "host-secret.txt"
    secret.write_text("the host's own\n", encoding="utf-8")
    secret.chmod(0o644)  # readable by anyone: only the tools' refusal keeps it from the client

    async def body(s: ClientSession) -> dict[str, Any]:
        box = _ok(await s.call_tool("sandbox_create", {"size": "640x480"}))
        run = _ok(await s.call_tool("shell_run", {"command": "echo héllo; echo oops >&2; id -un; exit 3"}))
        assert run["exit_status"] == 3 and run["stdout"].startswith("héllo\n") and run["stderr"] == "oops\n"
        assert run["stdout_cut_bytes"] == 0
        cut = _ok(
            await s.call_tool(
                "shell_run", {"command": "head -c 5000 /dev/zero | tr '\\0' x", "max_output_bytes": 100}
            )
        )
        assert (cut["stdout"], cut["stdout_bytes"], cut["stdout_cut_bytes"]) == ("x" * 100, 5000, 4900)
        assert "4900 bytes of stdout cut" in _text(
            await s.call_tool("shell_run", {"command": "head -c 5000 /dev/zero", "max_output_bytes": 100})
        )
        _refused(
            await s.call_tool("shell_run", {"command": "sleep 30", "timeout_s": 0.5}),
            "timeout_s: the command did not finish within 0.5 s",
        )
        _refused(
            await s.call_tool("shell_run", {"command": "true", "timeout_s": 10_000}), "timeout_s: must lie in"
        )
        _refused(await s.call_tool("shell_run", {"command": "  "}), "command: empty")
        # The sandbox goes on after a timeout.
        assert _ok(await s.call_tool("shell_run", {"command": "echo still here"}))["stdout"] == "still here\n"

        text = "Grüße, 世界 ✓\nzweite Zeile\n"
        wrote = _ok(
            await s.call_tool("file_write", {"path": "notes/übung.txt", "content": text, "make_dirs": True})
        )
        assert wrote["bytes_written"] == len(text.encode())
        back = _ok(await s.call_tool("file_read", {"path": "~/notes/übung.txt"}))
        assert (back["content"], back["cut"]) == (text, False)
        # What shell_run sees is what file_write wrote, and the other way round.
        assert _ok(await s.call_tool("shell_run", {"command": "cat notes/übung.txt"}))["stdout"] == text
        part = _ok(await s.call_tool("file_read", {"path": "notes/übung.txt", "max_bytes": 3}))  # in the ü
        assert (part["content"], part["cut"], part["size"]) == ("Gr", True, len(text.encode()))
        blob = bytes(range(256))
        _ok(
            await s.call_tool(
                "file_write",
                {"path": "blob.bin", "content": base64.b64encode(blob).decode(), "encoding": "base64"},
            )
        )
        _refused(await s.call_tool("file_read", {"path": "blob.bin"}), "encoding: blob.bin is not UTF-8")
        got = _ok(await s.call_tool("file_read", {"path": "blob.bin", "encoding": "base64"}))
        assert base64.b64decode(got["content"]) == blob
        _refused(
            await s.call_tool("file_write", {"path": "blob.bin", "content": "x", "mode": "create"}), "exists"
        )
        listed = _ok(await s.call_tool("file_list", {}))
        names = {e["name"]: e for e in listed["entries"]}
        assert names["notes"]["type"] == "directory" and names["blob.bin"]["size"] == 256
        assert _ok(await s.call_tool("file_list", {"path": "notes"}))["entries"][0]["name"] == "übung.txt"

        for bad, said in [
            ("../x", "holds '..'"),
            ("notes/../../etc/passwd", "holds '..'"),
            ("/etc/passwd", "outside the sandbox's home"),
            (str(secret), "outside the sandbox's home"),
        ]:
            _refused(await s.call_tool("file_read", {"path": bad}), said)
        _refused(
            await s.call_tool("file_write", {"path": "/tmp/x", "content": "x"}), "outside the sandbox's home"
        )

        # A link the sandbox made to the host's file, and one to a directory above it.
        link = await s.call_tool("shell_run", {"command": f"ln -s {secret} leak.txt && ln -s {tmp_path} up"})
        assert _ok(link)["exit_status"] == 0
        _refused(await s.call_tool("file_read", {"path": "leak.txt"}), "leak.txt: a symbolic link")
        _refused(await s.call_tool("file_read", {"path": f"up/{secret.name}"}), "up: a symbolic link")
        _refused(await s.call_tool("file_write", {"path": "leak.txt", "content": "pwned"}), "a symbolic link")
        _refused(await s.call_tool("file_list", {"path": "up"}), "a symbolic link")
        entries = {e["name"]: e for e in _ok(await s.call_tool("file_list", {}))["entries"]}
        assert entries["leak.txt"] == {
            "name": "leak.txt",
            "type": "symlink",
            "size": len(str(secret)),
            "target": str(secret),
        }
        return box

    _over_stdio(["--allow", "sandbox,shell,files", *isolation], body)
    assert secret.read_text(encoding="utf-8") == "the host's own\n"
