"""`kimi-agent mcp` driven by the official SDK's own client, over stdio (the server spawned as a
client spawns it) and over streamable HTTP on loopback, against real sandboxes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from cli_args import clickpad_app, pad_downs
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, ImageContent, TextContent
from PIL import Image

from agent.models.profile import shot_pixel
from env.sandbox import MARKER_VAR

ROOT = Path(__file__).resolve().parent.parent
SANDBOX_TOOLS = {"sandbox_create", "sandbox_list", "sandbox_close"}
COMPUTER_TOOLS = {
    "computer_screenshot", "computer_click", "computer_double_click", "computer_right_click",
    "computer_move", "computer_drag", "computer_scroll", "computer_type", "computer_key",
    "computer_hotkey", "computer_wait",
}  # fmt: skip


def _argv(*flags: str) -> list[str]:
    return [sys.executable, "-m", "tasks.cli", "mcp", *flags]


def _stdio(*flags: str, env: dict[str, str] | None = None) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=_argv(*flags)[1:], cwd=str(ROOT), env=env)


Session = Callable[[ClientSession], Awaitable[Any]]


def _over_stdio(flags: list[str], body: Session, env: dict[str, str] | None = None) -> Any:
    async def run() -> Any:
        async with stdio_client(_stdio(*flags, env=env)) as (r, w), ClientSession(r, w) as s:
            await s.initialize()
            return await body(s)

    return anyio.run(run)


def _text(res: CallToolResult) -> str:
    return "\n".join(c.text for c in res.content if isinstance(c, TextContent))


def _image(res: CallToolResult) -> Image.Image:
    import base64
    import io

    (img,) = [c for c in res.content if isinstance(c, ImageContent)]
    return Image.open(io.BytesIO(base64.b64decode(img.data))).convert("RGB")


def _ok(res: CallToolResult) -> dict[str, Any]:
    assert not res.is_error, _text(res)
    assert res.structured_content is not None
    return res.structured_content


def _left_behind(sandbox: dict[str, Any]) -> list[str]:
    """What of a sandbox the server reported still exists: its host processes, any process with
    its marker, its directory."""
    left = [f"pid {p}" for p in sandbox["host_pids"] if _alive(p)]
    marker = f"{MARKER_VAR}={sandbox['directory']}".encode()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker in (d / "environ").read_bytes().split(b"\0") and _alive(int(d.name)):
                    left.append(f"marked pid {d.name}")
            except OSError:
                pass
    if Path(sandbox["directory"]).exists():
        left.append(sandbox["directory"])
    return left


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _gone(sandboxes: list[dict[str, Any]], timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        left = [x for s in sandboxes for x in _left_behind(s)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


# -- start-up and permissions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        ([], "--allow is required"),
        (["--allow", ""], "--allow is required"),
        (["--allow", "sandbox,computr"], "unknown tool group 'computr' (did you mean 'computer'?)"),
        (["--allow", "sandbox,,computer"], "has an empty item"),
        (["--allow", "sandbox,host-desktop"], "--allow host-desktop gives the computer tools"),
        (["--allow", "sandbox", "--http", "0.0.0.0:8765"], "0.0.0.0 is not a loopback address"),
        (["--allow", "sandbox", "--http", "nonsense"], "--http: expected HOST:PORT"),
        (["--allow", "sandbox", "--max-sandboxes", "0"], "--max-sandboxes: must be at least 1"),
    ],
)
def test_bad_start_is_one_line_on_stderr(
    flags: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.mcp.cli import main

    assert main(flags) == 2
    out, err = capsys.readouterr()
    assert out == ""  # stdout is the protocol's, even for an error
    lines = err.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], err


def test_no_allow_refused_by_the_command_itself() -> None:
    """The same through `python -m tasks.cli mcp`, as a client starts it: nothing granted by default."""
    p = subprocess.run(
        _argv(), cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert (p.returncode, p.stdout) == (2, "")
    assert p.stderr.startswith("kimi-agent mcp: error: --allow is required") and p.stderr.count("\n") == 1


def test_tools_listed_are_those_granted() -> None:
    async def names(s: ClientSession) -> set[str]:
        return {t.name for t in (await s.list_tools()).tools}

    async def names_and_list(s: ClientSession) -> tuple[set[str], str]:
        return await names(s), _text(await s.call_tool("sandbox_list", {}))

    granted, listed = _over_stdio(["--allow", "sandbox"], names_and_list)
    assert granted == SANDBOX_TOOLS
    head, data = listed.split("\n", 1)  # readable JSON for clients that ignore structured content
    assert head == "0 sandbox(es) open" and json.loads(data) == {"sandboxes": []}
    assert _over_stdio(["--allow", "computer"], names) == COMPUTER_TOOLS
    assert _over_stdio(["--allow", " Computer , sandbox"], names) == SANDBOX_TOOLS | COMPUTER_TOOLS


@pytest.mark.x11
def test_host_desktop_only_when_granted_and_named(clickpad_on: Any) -> None:
    """`--allow computer,host-desktop` lets sandbox_id 'host' drive this machine's desktop (here an
    Xvfb posing as it), never by default; without the grant 'host' is refused."""
    from env.sandbox import Sandbox

    with Sandbox(800, 600, desktop=None) as screen:
        pad = clickpad_on(screen)
        env = {**os.environ, "DISPLAY": screen.display, "XAUTHORITY": str(screen.xauthority)}

        async def granted(s: ClientSession) -> None:
            res = await s.call_tool("computer_screenshot", {})
            assert res.is_error and "no sandbox is open" in _text(res)  # the host is never the default
            shot = _ok(await s.call_tool("computer_screenshot", {"sandbox_id": "host", "max_side": 400}))
            assert (shot["width"], shot["height"], shot["screen_width"]) == (400, 300, 800)
            click = {"sandbox_id": "host", "x": 100, "y": 150, "coordinates": "pixels"}
            assert _ok(await s.call_tool("computer_click", click))["screen_points"] == [[200, 300]]
            pad.wait_for(lambda ev: ev["kind"] == "down" and (ev["x"], ev["y"]) == (200, 300), "the click")
            res = await s.call_tool("sandbox_close", {"sandbox_id": "host"})
            assert res.is_error and "not closed by a client" in _text(res)

        _over_stdio(["--allow", "sandbox,computer,host-desktop"], granted, env)

        async def refused(s: ClientSession) -> str:
            return _text(await s.call_tool("computer_screenshot", {"sandbox_id": "host"}))

        assert "needs --allow host-desktop" in _over_stdio(["--allow", "computer"], refused, env)


# -- one server, two sandboxes: typing, clicking in both coordinate spaces, bad arguments ---


@pytest.mark.slow
@pytest.mark.x11
def test_stdio_session_types_clicks_and_cleans_up() -> None:
    """An xterm sandbox gets non-ASCII text typed; a clickpad sandbox gets a click given as pixels of a
    downscaled screenshot and one given as relative fractions, which land on the same screen pixel;
    when the client goes away (stdin EOF) neither sandbox is left."""
    seen: dict[str, Any] = {}

    async def body(s: ClientSession) -> None:
        term = _ok(
            await s.call_tool("sandbox_create", {"size": "800x600", "apps": ["xterm -geometry 80x24+0+0"]})
        )
        pad_app = clickpad_app()
        pad = _ok(await s.call_tool("sandbox_create", {"size": "1280x800", "apps": [pad_app]}))
        seen["boxes"] = [term, pad]
        assert (term["width"], term["height"], pad["width"], pad["height"]) == (800, 600, 1280, 800)
        listed = _ok(await s.call_tool("sandbox_list", {}))["sandboxes"]
        assert {b["sandbox_id"] for b in listed} == {term["sandbox_id"], pad["sandbox_id"]}

        # Limits and bad arguments are tool errors naming what was wrong; the server carries on.
        res = await s.call_tool("sandbox_create", {})
        assert res.is_error and "--max-sandboxes" in _text(res)
        res = await s.call_tool("computer_screenshot", {})
        assert res.is_error and "sandbox_id: 2 sandboxes are open" in _text(res)
        t, p = term["sandbox_id"], pad["sandbox_id"]
        bad = [
            ({"sandbox_id": p, "x": 1, "y": 1, "coordinates": "pixels"}, "coordinates: 'pixels' refer to the last"),
            ({"sandbox_id": p, "x": 1.5, "y": 0.5, "coordinates": "relative"}, "x, y: normalised x must lie in [0, 1]"),
            ({"sandbox_id": p, "x": 0.5, "y": 0.5, "coordinates": "inches"}, "coordinates"),
            ({"sandbox_id": "nope", "x": 0.5, "y": 0.5, "coordinates": "relative"}, "sandbox_id: no open sandbox"),
        ]  # fmt: skip
        for args, said in bad:
            res = await s.call_tool("computer_click", args)
            assert res.is_error and said in _text(res), (args, _text(res))
        res = await s.call_tool("computer_key", {"sandbox_id": t, "key": "nokey"})
        assert res.is_error and "key: unknown key 'nokey'" in _text(res)
        res = await s.call_tool("sandbox_create", {"size": "10x10"})
        assert res.is_error and "size:" in _text(res)

        # Typing any Unicode into the xterm: it ran the command, and the screen shows the change.
        shot = await s.call_tool("computer_screenshot", {"sandbox_id": t, "max_side": 400})
        assert _ok(shot)["scale"] == 0.5 and "scale 0.5" in _text(shot)
        before = _image(shot)
        assert before.size == (400, 300)
        _ok(
            await s.call_tool(
                "computer_click", {"sandbox_id": t, "x": 0.1, "y": 0.1, "coordinates": "relative"}
            )
        )
        typed = _ok(
            await s.call_tool("computer_type", {"sandbox_id": t, "text": "echo 'héllo wörld ✓' > ~/out.txt"})
        )
        assert typed["ok"] and typed["action"].startswith("type(")
        after = await s.call_tool(
            "computer_key", {"sandbox_id": t, "key": "enter", "screenshot": True, "max_side": 400}
        )
        _ok(after)
        assert _image(after).size == (400, 300) and _image(after).tobytes() != before.tobytes()
        out = Path(term["directory"]) / "home" / "out.txt"
        deadline = time.monotonic() + 5
        while (
            not (out.exists() and out.read_text(encoding="utf-8").endswith("\n"))
            and time.monotonic() < deadline
        ):
            await anyio.sleep(0.05)
        assert out.read_text(encoding="utf-8") == "héllo wörld ✓\n"

        # The same point as pixels of a 640x400 screenshot and as fractions: one screen pixel.
        shot = _ok(await s.call_tool("computer_screenshot", {"sandbox_id": p, "max_side": 640}))
        assert (shot["width"], shot["height"]) == (640, 400)
        px = _ok(
            await s.call_tool("computer_click", {"sandbox_id": p, "x": 201, "y": 97, "coordinates": "pixels"})
        )
        expected = shot_pixel(201, 97, (640, 400), (1280, 800))
        screen = (int(expected.x), int(expected.y))
        rel = {"x": (screen[0] + 0.5) / 1280, "y": (screen[1] + 0.5) / 800}
        rx = _ok(await s.call_tool("computer_click", {"sandbox_id": p, **rel, "coordinates": "relative"}))
        assert [tuple(px["screen_points"][0]), tuple(rx["screen_points"][0])] == [screen, screen]
        home = Path(pad["directory"]) / "home"
        deadline = time.monotonic() + 5
        while len(pad_downs(home)) < 2 and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        assert pad_downs(home) == [screen, screen]

        # A refused call has not acted: the pad saw nothing more.
        args = {"sandbox_id": p, "x": 1, "y": 1, "coordinates": "pixels", "screenshot": True, "max_side": 10}
        res = await s.call_tool("computer_click", args)
        assert res.is_error and "max_side: must lie in" in _text(res)
        res = await s.call_tool("computer_scroll", {"sandbox_id": p, "direction": "down", "x": 3})
        assert res.is_error and "x, y: give both or neither" in _text(res)
        double = {"sandbox_id": p, "x": 0.25, "y": 0.75, "coordinates": "relative"}
        _ok(await s.call_tool("computer_double_click", double))
        deadline = time.monotonic() + 5
        while len(pad_downs(home)) < 4 and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        assert pad_downs(home) == [screen, screen, (320, 600), (320, 600)]

    _over_stdio(["--allow", "sandbox,computer", "--max-sandboxes", "2"], body)
    assert _gone(seen["boxes"]) == []


# -- HTTP: the token, a session's end, and a SIGKILL of the server ----------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.x11
def test_http_token_session_end_and_sigkill_leave_nothing() -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    env = {k: v for k, v in os.environ.items() if k != "KIMI_MCP_TOKEN"}
    server = subprocess.Popen(
        _argv("--allow", "sandbox,computer", "--http", f"127.0.0.1:{port}"),
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stderr is not None
        token_line = server.stderr.readline()  # no --token: a new one, on stderr
        assert token_line.startswith("kimi-agent mcp: bearer token: "), token_line
        token = token_line.split(": ")[-1].strip()
        served = server.stderr.readline()
        assert f"serving {url}" in served
        deadline = time.monotonic() + 20
        while True:
            try:
                refused = httpx2.post(url, json={}, timeout=5)
                break
            except httpx2.TransportError:
                assert time.monotonic() < deadline, "the HTTP server did not start"
                time.sleep(0.1)
        assert refused.status_code == 401
        assert httpx2.post(url, json={}, headers={"Authorization": "Bearer wrong"}).status_code == 403

        async def session(box: dict[str, Any], kill: bool) -> None:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
            async with (
                http,
                streamable_http_client(url, http_client=http) as (r, w),
                ClientSession(r, w) as s,
            ):
                await s.initialize()
                names = {t.name for t in (await s.list_tools()).tools}
                assert names == SANDBOX_TOOLS | COMPUTER_TOOLS
                box.update(_ok(await s.call_tool("sandbox_create", {"size": "640x480"})))
                shot = await s.call_tool("computer_screenshot", {"max_side": 320})
                assert _image(shot).size == (320, 240)
                if kill:  # the server dies with the session still open
                    server.send_signal(signal.SIGKILL)
                    server.wait(timeout=10)

        ended: dict[str, Any] = {}
        anyio.run(session, ended, False)
        assert _gone([ended]) == []  # the client's DELETE ended its session, and its sandbox with it

        killed: dict[str, Any] = {}

        async def kill_mid_session() -> None:
            # The client sees its server vanish (its DELETE fails): what matters is what is left.
            with anyio.move_on_after(30), contextlib.suppress(Exception):
                await session(killed, True)

        anyio.run(kill_mid_session)
        assert killed, "the second session did not open a sandbox"
        assert server.returncode == -signal.SIGKILL
        assert _gone([killed]) == []  # the sandbox's reaper took everything down
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
