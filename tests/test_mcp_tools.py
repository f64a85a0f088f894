"""`kimi-agent mcp`'s shell, files and kimi groups, driven by the official SDK's own client over
stdio (the server spawned as a client spawns it), against real sandboxes and a real model path: a
loopback OpenAI-compatible server with scripted replies, and the tiny Kimi-VL through transformers."""

from __future__ import annotations

import base64
import json
import subprocess
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


def test_groups_give_their_tools_and_model_flags_are_checked_at_start() -> None:
    async def names(s: ClientSession) -> set[str]:
        return {t.name for t in (await s.list_tools()).tools}

    assert _over_stdio(["--allow", "shell"], names) == {"shell_run"}
    assert _over_stdio(["--allow", "files"], names) == {"file_read", "file_write", "file_list"}
    # No model is loaded to list the kimi tools (a checkpoint that is not there is no error yet).
    assert _over_stdio(["--allow", "kimi", "--model", "/nonexistent"], names) == {"kimi_locate", "kimi_run"}
    bad = subprocess.run(
        [sys.executable, "-m", "tasks.cli", "mcp", "--allow", "kimi", "--max-new-tokens", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == "kimi-agent mcp: error: --max-new-tokens must be at least 1\n"


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


# -- the kimi group: a loopback OpenAI-compatible server, then the tiny Kimi-VL -----------------


def _click(x: float, y: float) -> str:
    return f"## Action:\nclick\n## Code:\n```python\npyautogui.click(x={x}, y={y})\n```"


DONE = (
    "## Action:\nfinish\n## Code:\n```python\ncomputer.terminate(status='success', answer='clicked it')\n```"
)


def _run_record(run_dir: Path, timeout: float = 20.0) -> dict[str, Any]:
    """run.json once the run has closed it (stop_reason set)."""
    import json
    import time

    deadline = time.monotonic() + timeout
    while True:
        f = run_dir / "run.json"
        data = json.loads(f.read_text()) if f.exists() else {}
        if data.get("stop_reason") or time.monotonic() > deadline:
            return data
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.x11
def test_kimi_locate_run_and_cancel_against_a_loopback_server(tmp_path: Path) -> None:
    from cli_args import clickpad_app, pad_downs
    from fake_openai_server import FakeOpenAI, Reply

    runs = tmp_path / "runs"
    server = FakeOpenAI()
    flags = ["--allow", "sandbox,computer,shell,kimi", "--backend", "openai", "--base-url", server.url,
             "--model", "kimi-vl", "--runs-dir", str(runs)]  # fmt: skip

    async def body(s: ClientSession) -> None:
        pad = _ok(await s.call_tool("sandbox_create", {"size": "1280x800", "apps": [clickpad_app()]}))
        home = Path(pad["directory"]) / "home"
        _refused(await s.call_tool("kimi_locate", {"description": " "}), "description: empty")
        _refused(await s.call_tool("kimi_run", {"task": "x", "max_steps": 0}), "max_steps: must lie in")

        # kimi_locate: the grounding prompt, its point in both spaces, and either space clicks there.
        server.replies.append(Reply(_click(0.25, 0.75)))
        before = _ok(await s.call_tool("kimi_locate", {"description": "the pad's lower left"}))
        assert (
            before["relative"] == {"x": 0.25, "y": 0.75} and before["pixels"] is None
        )  # no screenshot sent yet
        asked = server.requests[-1]["messages"]
        assert asked[0]["role"] == "system" and "the pad's lower left" in json_text(asked[1])
        await s.call_tool("computer_screenshot", {"max_side": 640})
        server.replies.append(Reply(_click(0.25, 0.75)))
        found = _ok(await s.call_tool("kimi_locate", {"description": "the pad's lower left"}))
        assert found["screen"] == {"x": 320, "y": 600} and found["pixels_of"] == {"width": 640, "height": 400}
        clicks = [
            _ok(await s.call_tool("computer_click", {**found["pixels"], "coordinates": "pixels"})),
            _ok(await s.call_tool("computer_click", {**found["relative"], "coordinates": "relative"})),
        ]
        assert [tuple(c["screen_points"][0]) for c in clicks] == [(320, 600), (320, 600)]
        server.replies.append(
            Reply("## Action:\nnot here\n## Code:\n```python\ncomputer.terminate(status='failure')\n```")
        )
        _refused(
            await s.call_tool("kimi_locate", {"description": "a unicorn"}),
            "the model says 'a unicorn' is not on the screen",
        )
        server.replies.append(Reply("I would rather not say."))
        _refused(
            await s.call_tool("kimi_locate", {"description": "the pad"}), "the model's reply holds no point"
        )

        # kimi_run: a click, then done; progress after each step; the run recorded.
        server.replies.extend([Reply(_click(0.5, 0.5)), Reply(DONE)])
        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append((p, total, message))

        done = _ok(
            await s.call_tool(
                "kimi_run", {"task": "click the middle", "max_steps": 5}, progress_callback=on_progress
            )
        )
        assert (done["outcome"], done["stop_reason"], done["answer"]) == ("success", "done", "clicked it")
        assert done["steps"][0]["actions"][0]["action"].startswith("click")
        assert [p[:2] for p in progress] == [(1, 5), (2, 5)] and "click" in (progress[0][2] or "")
        assert _run_record(Path(done["run_dir"]))["stop_reason"] == "done"
        assert pad_downs(home)[-1] == (640, 400)

        # A cancelled kimi_run: step 1 clicks; the client cancels while step 2's reply is held back;
        # the held reply (a click) is not acted on, no step 3 is asked for, the sandbox goes on.
        asked_before = len(server.requests)
        server.replies.extend([Reply(_click(0.1, 0.1)), Reply(_click(0.9, 0.9), delay_s=3.0)])
        server.default = Reply(DONE)
        step_one = anyio.Event()

        async def first_step(p: float, total: float | None, message: str | None) -> None:
            step_one.set()

        async def cancelled_run() -> None:
            await s.call_tool(
                "kimi_run", {"task": "keep clicking", "max_steps": 10}, progress_callback=first_step
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancelled_run)
            with anyio.fail_after(30):
                await step_one.wait()
            await anyio.sleep(0.5)  # step 2's model call is under way
            tg.cancel_scope.cancel()
        (latest,) = [d for d in runs.iterdir() if "keep-clicking" in d.name]
        record = _run_record(latest)
        assert record["stop_reason"] == "interrupted" and record["steps"] == 2
        steps = [json.loads(line) for line in (latest / "steps.jsonl").read_text().splitlines()]
        assert steps[0]["actions"][0]["executed"] and not steps[1]["actions"][0]["executed"]
        assert len(server.requests) - asked_before == 2  # step 3 was never asked for
        assert pad_downs(home)[-1] == (128, 80)  # step 1's click, and not step 2's (1152, 720)
        assert _ok(await s.call_tool("shell_run", {"command": "echo alive"}))["stdout"] == "alive\n"
        assert _ok(await s.call_tool("computer_screenshot", {}))["width"] == 1280

    try:
        _over_stdio(flags, body)
    finally:
        server.close()


def json_text(message: dict[str, Any]) -> str:
    content = message["content"]
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)


@pytest.mark.slow
@pytest.mark.x11
def test_kimi_tools_with_the_tiny_kimi_through_transformers(tmp_path: Path, tiny_kimi: Path) -> None:
    """Random weights: each call ends in a well-formed result or a clean tool error, and the server
    goes on (the model loads once, on the first call)."""
    flags = ["--allow", "sandbox,kimi", "--backend", "transformers", "--model", str(tiny_kimi), "--offline",
             "--max-new-tokens", "12", "--runs-dir", str(tmp_path / "runs")]  # fmt: skip

    async def body(s: ClientSession) -> None:
        _ok(await s.call_tool("sandbox_create", {"size": "320x240"}))
        located = await s.call_tool("kimi_locate", {"description": "the desktop"})
        if located.is_error:
            assert "the model" in _text(located), _text(located)
        else:
            point = _ok(located)["relative"]
            assert 0 <= point["x"] < 1 and 0 <= point["y"] < 1
        ran = _ok(await s.call_tool("kimi_run", {"task": "do nothing", "max_steps": 2}))
        assert ran["stop_reason"] in {"done", "max_steps", "loop_detected"} and 1 <= len(ran["steps"]) <= 2
        assert _run_record(Path(ran["run_dir"]))["stop_reason"] == ran["stop_reason"]
        assert not (await s.call_tool("sandbox_list", {})).is_error

    _over_stdio(flags, body)
