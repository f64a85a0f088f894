"""Setup steps of OSWorld task files run against our server on loopback, serving a real Xvfb sandbox.
Configs come from real task files (tests/data holds copies); their Hugging Face URLs are replaced by
file:// or loopback URLs, as tests only talk to loopback."""

from __future__ import annotations

import http.server
import json
import shutil
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from env.osworld_client import OSWorldClient
from env.sandbox import Sandbox
from env.served_sandbox import ServedSandbox
from tasks.osworld.setup import (
    REGISTRY,
    SetupContext,
    cache_path,
    run_config,
    run_steps,
)
from tasks.osworld.task import Step, load_task, parse_task

pytestmark = pytest.mark.x11
DATA = Path(__file__).resolve().parent / "data"


@dataclass
class Served:
    served: ServedSandbox
    client: OSWorldClient

    @property
    def box(self) -> Sandbox:
        return self.served.sandbox

    @property
    def home(self) -> Path:
        """The sandbox's /home/user, as the host sees it."""
        return self.box.home

    @property
    def inner_home(self) -> str:
        """The same directory as the server and programs inside see it."""
        return self.box.inside(self.box.home)

    def active_title(self) -> str:
        return self.box.run(["xdotool", "getactivewindow", "getwindowname"]).stdout.decode().strip()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    apps = [["xterm", "-title", "Terminal", "-geometry", "60x10+0+0"]]
    # The server runs inside the isolated sandbox, as for a benchmark task.
    with ServedSandbox(1280, 800, apps=apps, desktop="minimal", execute_timeout_s=20) as served:
        client = OSWorldClient(served.url, token=served.token)
        yield Served(served, client)
        client.close()


@pytest.fixture
def ctx(served: Served, tmp_path: Path) -> SetupContext:
    return SetupContext(served.client, cache_dir=tmp_path / "cache")


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on loopback serving a directory: (base URL, directory)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def _steps(raw: list[dict[str, object]]) -> list[Step]:
    return [Step.model_validate(s) for s in raw]


def _wait(ready: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_real_os_task_setup_runs_with_placeholders(
    served: Served, ctx: SetupContext, tmp_path: Path
) -> None:
    # os/5c1075ca: download setup.sh (relative path), chmod, run it, click at the screen's centre
    # ({SCREEN_WIDTH_HALF}, {SCREEN_HEIGHT_HALF}), Ctrl+Alt+T, activate "Terminal", type a command.
    data = json.loads((DATA / "osworld_task_5c1075ca.json").read_text())
    script = tmp_path / "setup.sh"
    script.write_text("#!/bin/sh\nmkdir -p test_environment && pwd > test_environment/ran-in\n")
    data["config"][0]["parameters"]["files"][0]["url"] = script.as_uri()
    task = parse_task(data, "osworld_task_5c1075ca.json")
    (served.home / "Desktop").mkdir(exist_ok=True)
    served.client.activate_window("Terminal")
    report = run_config(task, ctx)
    assert report.ok, [o.line() for o in report.outcomes]
    assert [o.type for o in report.outcomes] == [s.type for s in task.config]
    # setup.sh landed in the machine's HOME and ran there (the server's cwd is elsewhere).
    assert (served.home / "test_environment" / "ran-in").read_text().strip() == served.inner_home
    assert served.client.cursor_position() == (640, 400)
    _wait(lambda: served.active_title() == "Terminal")


def test_download_over_http_caches_and_places_under_home(
    served: Served, ctx: SetupContext, web: tuple[str, Path]
) -> None:
    base, root = web
    (root / "data.csv").write_text("a,b\n1,2\n")
    url = f"{base}/data.csv"
    steps = _steps(
        [{"type": "download", "parameters": {"files": [{"url": url, "path": "/home/user/Desktop/d.csv"}]}}]
    )
    first = run_steps(steps, ctx)
    assert first.ok, first.outcomes
    assert (served.home / "Desktop" / "d.csv").read_text() == "a,b\n1,2\n"
    cached = cache_path(ctx.cache_dir, url, "/home/user/Desktop/d.csv")
    assert cached.read_text() == "a,b\n1,2\n"
    (root / "data.csv").unlink()  # the second run is served from the cache
    (served.home / "Desktop" / "d.csv").unlink()
    assert run_steps(steps, ctx).ok
    assert (served.home / "Desktop" / "d.csv").read_text() == "a,b\n1,2\n"


def test_unreachable_or_missing_downloads_stop_setup_with_a_clear_reason(
    served: Served, ctx: SetupContext, web: tuple[str, Path], tmp_path: Path
) -> None:
    base, _ = web
    closed = f"http://127.0.0.1:{_free_port()}/file.docx"
    for url, reason in (
        (closed, "cannot download " + closed),
        (f"{base}/missing.docx", "HTTP 404 File not found"),
        ((tmp_path / "nope.docx").as_uri(), "no such local file"),
        ("ftp://example.invalid/x", "only http(s), file:// URLs and local paths"),
    ):
        steps = _steps(
            [
                {"type": "download", "parameters": {"files": [{"url": url, "path": "~/x.docx"}]}},
                {"type": "open", "parameters": {"path": "~/x.docx"}},
            ]
        )
        report = run_steps(steps, ctx)
        assert not report.ok and report.not_run == 1
        (outcome,) = report.outcomes
        assert outcome.status == "error" and reason in outcome.detail, outcome.detail
        assert "\n" not in outcome.detail
    assert not list(ctx.cache_dir.glob("*.part"))


def test_relative_download_paths_are_read_beside_the_task_file(
    served: Served, ctx: SetupContext, tmp_path: Path
) -> None:
    # A suite ships its inputs beside its task files: `files/a.txt` and `file:../files/a.txt`.
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.txt").write_text("beside the task\n")
    (tmp_path / "examples").mkdir()
    files = [
        {"url": "../files/a.txt", "path": "~/rel1.txt"},
        {"url": "file:../files/a.txt", "path": "~/rel2.txt"},
    ]
    task_file = tmp_path / "examples" / "t.json"
    task_file.write_text(
        json.dumps(
            {"id": "t", "snapshot": "os", "instruction": "x", "evaluator": {"func": "infeasible"},
             "config": [{"type": "download", "parameters": {"files": files}}]}
        )
    )  # fmt: skip
    report = run_config(load_task(task_file), ctx)
    assert report.ok, report.outcomes
    assert ctx.task_dir == task_file.parent
    for name in ("rel1.txt", "rel2.txt"):
        assert (served.home / name).read_text() == "beside the task\n"
    elsewhere = run_steps(_steps([{"type": "download", "parameters": {"files": [files[0]]}}]), SetupContext(
        served.client, cache_dir=tmp_path / "cache2"))  # fmt: skip
    assert not elsewhere.ok and "no such local file ../files/a.txt" in elsewhere.outcomes[0].detail


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("mousepad") is None, reason="mousepad is not installed")
def test_launch_open_activate_close_and_sleep(served: Served, ctx: SetupContext) -> None:
    (served.home / "Desktop").mkdir(exist_ok=True)
    (served.home / "Desktop" / "kimi-opened.txt").write_text("opened")
    steps = _steps(
        [
            {"type": "launch", "parameters": {"command": "xterm -title kimi-notes", "shell": False}},
            {"type": "sleep", "parameters": {"seconds": 0.5}},
            {"type": "open", "parameters": {"path": "/home/user/Desktop/kimi-opened.txt"}},
            {"type": "activate_window", "parameters": {"window_name": "kimi-notes"}},
        ]
    )
    t0 = time.monotonic()
    report = run_steps(steps, ctx)
    assert report.ok, [o.line() for o in report.outcomes]
    assert report.outcomes[1].seconds >= 0.5 and time.monotonic() - t0 < 40
    _wait(lambda: "kimi-notes" in served.active_title())  # the window manager acts on its own time
    closing = _steps(
        [
            {"type": "close_window", "parameters": {"window_name": "kimi-notes", "strict": False}},
            {"type": "close_window", "parameters": {"window_name": "kimi-opened"}},
        ]
    )
    assert run_steps(closing, ctx).ok
    _wait(lambda: "kimi-" not in served.active_title())


def test_activate_window_waits_for_a_window_that_comes_up_after_the_tasks_sleep(
    served: Served, ctx: SetupContext
) -> None:
    # An app that starts later than the task file's sleep allowed (a loaded machine): activation
    # waits for its window instead of failing and leaving the agent's first keys to nobody.
    steps = _steps(
        [
            {"type": "launch", "parameters": {"command": "sh -c 'sleep 2; exec xterm -title kimi-late'",
                                              "shell": True}},
            {"type": "activate_window", "parameters": {"window_name": "kimi-late", "strict": True}},
        ]
    )  # fmt: skip
    report = run_steps(steps, ctx)
    assert report.ok, [o.line() for o in report.outcomes]
    assert report.outcomes[1].seconds >= 1.0 and "(after " in report.outcomes[1].detail
    _wait(lambda: "kimi-late" in served.active_title())
    assert run_steps(_steps([{"type": "close_window", "parameters": {"window_name": "kimi-late"}}]), ctx).ok


def test_execute_until_stdout_files_and_failures(served: Served, ctx: SetupContext) -> None:
    steps = _steps(
        [
            {
                "type": "command",
                "parameters": {
                    "command": "echo {SCREEN_WIDTH}x{SCREEN_HEIGHT} {SCREEN_WIDTH_HALF} {SCREEN_HEIGHT_HALF} "
                    "{CLIENT_PASSWORD}; echo n >> ~/count",
                    "shell": "true",
                    "stdout": "out.txt",
                    "until": {"stdout": "password"},
                },
            },
            # Repeats until the third run: `until` waits on the command's result.
            {
                "type": "execute",
                "parameters": {
                    "command": ["sh", "-c", "echo n >> ~/count; test $(wc -l < ~/count) -ge 3"],
                    "until": {"returncode": 0},
                },
            },
            {"type": "execute", "parameters": {"command": ["no-such-program-kimi"]}},
            {"type": "activate_window", "parameters": {"window_name": "no such window kimi"}},
            {"type": "launch", "parameters": {"command": ["no-such-program-kimi"]}},
            {"type": "sleep", "parameters": {"seconds": 0}},
        ]
    )
    ctx.window_wait_s = 1.0
    report = run_steps(steps, ctx)
    statuses = [o.status for o in report.outcomes]
    # Failed execute / window / launch steps do not stop setup (as in OSWorld), but are reported.
    assert statuses == ["ok", "ok", "error", "error", "error", "ok"] and report.not_run == 0 and not report.ok
    assert (ctx.cache_dir / "out.txt").read_text() == "1280x800 640 400 password\n"
    assert (served.home / "count").read_text().count("n") == 3
    assert "no-such-program-kimi" in report.outcomes[2].detail
    assert (
        report.outcomes[3].detail
        == "no window matching 'no such window kimi' (title contains it, any case) within 1 s"
    )
    assert "no-such-program-kimi" in report.outcomes[4].detail


def test_cloud_steps_are_reported_unsupported_not_skipped(served: Served, ctx: SetupContext) -> None:
    task = load_task(DATA / "osworld_task_0c825995.json")  # multi_apps: googledrive then login
    report = run_config(task, ctx)
    first = report.first_problem()
    assert first is not None and first.status == "unsupported" and first.type == "googledrive"
    assert "Google account" in first.detail
    assert report.not_run == len(task.config) - 1 and report.unsupported == [first]
    odd = run_steps(_steps([{"type": "tidy_desktop", "parameters": {}}]), ctx)
    assert odd.outcomes[0].status == "unsupported" and "'tidy_desktop' is not known" in odd.outcomes[0].detail
    assert REGISTRY["login"].run is None and REGISTRY["download"].run is not None


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_chrome_history_and_tabs_over_devtools(
    served: Served, ctx: SetupContext, web: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = web
    for name in ("one", "two", "three"):
        (root / f"{name}.html").write_text(f"<title>{name}</title><p>{name}</p>")
    # chrome/44ee5668's step: history written before Chrome starts.
    history = _steps(
        [
            {
                "type": "update_browse_history",
                "parameters": {
                    "history": [
                        {
                            "url": "https://www.youtube.com/watch?v=a",
                            "title": "A",
                            "visit_time_from_now_in_seconds": 3600,
                        },
                        {
                            "url": "https://www.bbc.co.uk/",
                            "title": "BBC",
                            "visit_time_from_now_in_seconds": 60,
                        },
                    ]
                },
            }
        ]
    )
    report = run_steps(history, ctx)
    assert report.ok, [o.line() for o in report.outcomes]
    db = served.home / ".config" / "google-chrome" / "Default" / "History"
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT u.url, u.title, v.visit_time FROM urls u JOIN visits v ON v.url = u.id"
        ).fetchall()
    assert [(u, t) for u, t, _ in rows] == [
        ("https://www.youtube.com/watch?v=a", "A"),
        ("https://www.bbc.co.uk/", "BBC"),
    ]
    now_1601_us = (time.time() + 11644473600) * 1e6
    assert abs(rows[0][2] - (now_1601_us - 3600e6)) < 120e6

    # chrome/06fe7178's config: launch Chrome on port 1337, socat 9222 -> 1337, open 3 tabs, close
    # one. The sandbox's google-chrome is Debian's Chromium (env/image.py).
    task = load_task(DATA / "osworld_task_06fe7178.json")
    data = task.model_dump(mode="json")
    urls = [f"{base}/one.html", f"{base}/two.html?x=1&y=2", f"{base}/three.html"]
    data["config"][2]["parameters"]["urls_to_open"] = urls
    data["config"][3]["parameters"]["urls_to_close"] = [urls[2]]
    report = run_config(parse_task(data, "chrome-task.json"), ctx)
    by_type = {o.type: o for o in report.outcomes}
    assert by_type["chrome_open_tabs"].ok and by_type["chrome_close_tabs"].ok, [
        o.line() for o in report.outcomes
    ]
    assert "closed 1 of 1" in by_type["chrome_close_tabs"].detail
    assert all(o.ok for o in report.outcomes), [o.line() for o in report.outcomes]
    with urllib.request.urlopen("http://127.0.0.1:9222/json/list", timeout=10) as r:
        pages = [t["url"] for t in json.load(r) if t["type"] == "page"]
    assert sorted(pages) == sorted(urls[:2])
    # Accessibility is on, as on OSWorld's image: the browser and its page are in the AT-SPI tree.
    deadline = time.monotonic() + 20
    while '<application name="Chromium"' not in (tree := served.client.accessibility()):
        assert time.monotonic() < deadline, tree[-500:]
        time.sleep(0.5)
    assert ">one<" in tree or ">two<" in tree or 'name="two"' in tree or 'name="one"' in tree, tree[-2000:]
    # Chromium kept the history rows written before it started (read from a copy, as OSWorld's
    # history getter does: Chrome holds the database locked).
    copy = tmp_path / "History-copy"
    copy.write_bytes(db.read_bytes())
    with sqlite3.connect(copy) as con:
        kept = {u for (u,) in con.execute("SELECT url FROM urls")}
    assert {"https://www.youtube.com/watch?v=a", "https://www.bbc.co.uk/"} <= kept


def test_a_server_that_is_gone_is_a_clear_error_per_step(tmp_path: Path) -> None:
    with OSWorldClient(f"http://127.0.0.1:{_free_port()}", token="t" * 20) as dead:
        ctx = SetupContext(dead, cache_dir=tmp_path / "cache", home="/home/user")
        local = tmp_path / "f.txt"
        local.write_text("x")
        steps = _steps(
            [
                {"type": "launch", "parameters": {"command": ["xterm"]}},
                {"type": "execute", "parameters": {"command": "echo {SCREEN_WIDTH}", "shell": True}},
                {"type": "activate_window", "parameters": {"window_name": "x"}},
                {"type": "download", "parameters": {"files": [{"url": str(local), "path": "~/f.txt"}]}},
                {"type": "sleep", "parameters": {"seconds": 0}},
            ]
        )
        report = run_steps(steps, ctx)
    # Non-fatal failures go on (as OSWorld's), the failed upload stops setup before the sleep.
    assert [o.status for o in report.outcomes] == ["error"] * 4 and report.not_run == 1
    assert all("cannot reach the server at http://127.0.0.1:" in o.detail for o in report.outcomes)
    assert report.outcomes[3].detail.startswith("upload of ~/f.txt: ")
