"""The client on a server that speaks only OSWorld's protocol (our server's --osworld-only mode): typing
any text through /execute, and window setup steps, on both kinds of answers to the window endpoints
(ours: 404 for no match; OSWorld's Linux code: 200 whatever happened, reproduced by a real HTTP proxy
in front of ours). Real Xvfb, real apps, real HTTP on loopback."""

from __future__ import annotations

import http.client
import http.server
import os
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_sandbox import _wait_file

from env.actions import Click, Point, TypeText
from env.osworld_client import ExecResult, OSWorldClient
from env.osworld_server import RunningServer, ServerConfig, start_server
from env.sandbox import Sandbox
from env.vm_desktop import VMDesktop
from tasks.osworld.setup import SetupContext, run_steps
from tasks.osworld.task import Step

pytestmark = pytest.mark.x11
TEXT = "héllo wörld ✓ 你好"
WINDOW_ENDPOINTS = {"/setup/activate_window": "Window activated successfully", "/setup/close_window": "Window closed successfully."}  # fmt: skip


@dataclass
class Served:
    box: Sandbox
    server: RunningServer

    def client(self, url: str | None = None) -> OSWorldClient:
        return OSWorldClient(url or self.server.url, token=self.server.token)


@pytest.fixture
def served() -> Iterator[Served]:
    """`kimi-agent serve --osworld-only` on a bare openbox display; the server runs host-side, as in
    a user's VM, so the sandbox is not walled off either."""
    with (
        Sandbox(1280, 800, desktop="minimal", isolation=None) as box,
        start_server(ServerConfig(display=box.display, env=box.env, fast_endpoints=False)) as server,
    ):
        yield Served(box, server)


class OSWorldLikeWindows(http.server.ThreadingHTTPServer):
    """Forwards every request to ``upstream``, but answers the window endpoints the way OSWorld's
    Linux server does: 200 with its text even when no window matched (ours said 404)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        super().__init__(("127.0.0.1", 0), _Forward)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(http.server.BaseHTTPRequestHandler):
    server: OSWorldLikeWindows

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        up = http.client.HTTPConnection(self.server.upstream.hostname, self.server.upstream.port, timeout=150)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        up.request(self.command, self.path, body=body, headers=headers)
        r = up.getresponse()
        status, data, ctype = r.status, r.read(), r.getheader("Content-Type", "text/plain")
        up.close()
        if self.path in WINDOW_ENDPOINTS and status == 404:
            status, data, ctype = 200, WINDOW_ENDPOINTS[self.path].encode(), "text/html; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


def _processes_on(display: str) -> dict[int, str]:
    """pid -> name of every process whose environment has this DISPLAY (what an action could leave)."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"DISPLAY={display}".encode() in env:
                out[int(pid)] = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue  # gone, or not ours to read
    return out


def _quiet_processes(display: str, timeout_s: float = 15.0) -> dict[int, str]:
    """The display's processes once none came or went for a second: the desktop session starts its
    own services (the accessibility bus) on its first clients, on its own time."""
    deadline = time.monotonic() + timeout_s
    last = _processes_on(display)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = _processes_on(display)
        if set(now) == set(last):
            return now
        last = now
    return last


def _settled_processes(display: str, expected: set[int], timeout_s: float = 10.0) -> dict[int, str]:
    deadline = time.monotonic() + timeout_s
    while set(now := _processes_on(display)) - expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return now


@pytest.mark.slow
def test_non_ascii_typing_returns_at_once_leaves_no_process_and_lands(served: Served) -> None:
    box = served.box
    box.launch(["xterm", "-geometry", "80x24+0+0"])
    box.wait_window("xterm")
    with VMDesktop(served.client()) as vm:
        assert not vm.fast  # /execute and generated pyautogui code, as on OSWorld's server
        assert vm.execute(Click(point=Point.px(200, 100))).ok
        before = _quiet_processes(box.display)
        typed = vm.execute(TypeText(text=f"echo '{TEXT}' > ~/out.txt\n"))
        assert typed.ok, typed.error
        # The stall this guards against lasted the server's whole /execute limit (120 s).
        assert typed.execute_s < 30, typed.execute_s
        assert _wait_file(box.home / "out.txt") == TEXT + "\n"
        left = _settled_processes(box.display, set(before))
        assert {pid: name for pid, name in left.items() if pid not in before} == {}
        assert "xclip" not in left.values()


@pytest.mark.slow
def test_a_paste_nobody_takes_fails_with_its_cause_first_and_leaves_nothing(served: Served) -> None:
    # No window at all: nothing can fetch the pasted text.
    with VMDesktop(served.client()) as vm:
        before = _quiet_processes(served.box.display)
        result = vm.execute(TypeText(text="é"))
    assert not result.ok
    assert (result.error or "").startswith("type failed: RuntimeError: no window fetched the pasted text")
    left = _settled_processes(served.box.display, set(before))
    assert {pid: name for pid, name in left.items() if pid not in before} == {}


def test_a_command_past_the_servers_limit_is_worded_cause_first(served: Served) -> None:
    # OSWorld's server answers str(subprocess.TimeoutExpired), which starts with the whole command.
    program = "import time; x = '" + "generated code " * 50 + "'; time.sleep(200)"
    official = ExecResult(
        "error", "", f"Command '['python', '-c', {program!r}]' timed out after 120 seconds", None
    )
    assert official.why() == "the command timed out after 120 seconds on the server"
    # Ours, with a short limit: the same cause, in its own words.
    with Sandbox(320, 200, desktop="minimal", isolation=None) as box, start_server(
        ServerConfig(display=box.display, env=box.env, fast_endpoints=False, execute_timeout_s=1)
    ) as server, OSWorldClient(server.url, token=server.token) as client:  # fmt: skip
        r = client.execute(["python", "-c", program])
    assert r.why() == "the command did not finish within 1 s and was killed"
    failed = ExecResult("success", "", "Traceback (most recent call last):\n ...\nValueError: bad key\n", 1)
    assert failed.why() == "ValueError: bad key"


def _steps(*raw: dict[str, object]) -> list[Step]:
    return [Step.model_validate(s) for s in raw]


def _titles(client: OSWorldClient) -> list[str]:
    from tasks.osworld.windows import list_windows

    return [w.title for w in list_windows(client)]


@pytest.mark.slow
@pytest.mark.parametrize("answers", ["ours", "osworld"])
def test_window_steps_find_the_window_first_whatever_the_server_answers(
    served: Served, tmp_path: Path, answers: str
) -> None:
    proxy = OSWorldLikeWindows(served.server.url) if answers == "osworld" else None
    try:
        with served.client(proxy.url if proxy else None) as client:
            if proxy:  # the proxy answers like OSWorld's server: 200 for a window that is not there
                assert client.activate_window("no such window, kimi") == "Window activated successfully"
            ctx = SetupContext(client, cache_dir=tmp_path / "cache", window_wait_s=15.0)
            late = f"kimi-late-{answers}"
            client.launch(f"sh -c 'sleep 3; exec xterm -title {late}'", shell=True)
            report = run_steps(_steps({"type": "activate_window", "parameters": {"window_name": late}}), ctx)
            assert report.ok, [o.line() for o in report.outcomes]
            assert report.outcomes[0].seconds >= 2 and "(after " in report.outcomes[0].detail
            deadline = time.monotonic() + 10
            while client.execute(["xdotool", "getactivewindow", "getwindowname"]).output.strip() != late:
                assert time.monotonic() < deadline, "the late window was not activated"
                time.sleep(0.1)

            ctx.window_wait_s = 2.0
            for kind in ("activate_window", "close_window"):
                report = run_steps(
                    _steps({"type": kind, "parameters": {"window_name": "kimi never up"}}), ctx
                )
                [outcome] = report.outcomes
                assert outcome.status == "error" and not report.ok
                assert (
                    outcome.detail
                    == "no window matching 'kimi never up' (title contains it, any case) within 2 s"
                )
            assert ctx.server_finds_windows is (answers == "ours")

            close = {"type": "close_window", "parameters": {"window_name": late, "strict": True}}
            assert run_steps(_steps(close), ctx).ok
            deadline = time.monotonic() + 10
            while late in _titles(client):
                assert time.monotonic() < deadline, "the window was not closed"
                time.sleep(0.1)
    finally:
        if proxy:
            proxy.shutdown()
            proxy.server_close()
