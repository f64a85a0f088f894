"""The run monitor (--monitor): its snapshot and server over real loopback HTTP, and, in a real
headless Chromium, the page of a real 2-worker scripted `bench osworld run`."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from env.desktop import Frame
from tasks.monitor_server import Monitor
from tasks.osworld.monitor_board import RunBoard
from tasks.osworld.progress import Progress
from tasks.osworld.results import Outcome, TaskRef, finish, prepare, ref_dir
from tasks.osworld.runner import WorkerState


def get(url: str, method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, method=method, data=b"x" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def refs(n: int, domain: str = "os") -> list[TaskRef]:
    return [TaskRef(domain=domain, task_id=f"t{i}", path=f"/nowhere/t{i}.json") for i in range(n)]


def frame(color: tuple[int, int, int]) -> Frame:
    return Frame.from_image(Image.new("RGB", (64, 48), color))


def test_the_snapshot_reads_the_runs_own_progress_and_workers(tmp_path: Path) -> None:
    root = tmp_path / "root"
    tasks = refs(3) + refs(1, "chrome")
    # One task finished before (a resumed run): it counts in the table and keeps its report link.
    prepare(ref_dir(root, tasks[0]))
    (ref_dir(root, tasks[0]) / "report.html").write_text("<p>report</p>")
    finish(ref_dir(root, tasks[0]), Outcome(task_id="t0", domain="os", score=1.0, kind="scored"))
    progress = Progress(Console(file=io.StringIO()), total=4, already=1, already_score=1.0)
    board = RunBoard("suite", progress, root, tasks)
    w1 = WorkerState("sandbox-1", task="t1", domain="os", phase="agent", step=2, max_steps=15)
    w1.started, w1.thought, w1.action = time.time() - 3, "open a terminal " * 100, "pyautogui.click(1, 2)"
    w1.frame, w1.shot = frame((255, 0, 0)), 1
    progress.watch([w1, WorkerState("sandbox-2")])

    s = board.snapshot()
    assert (s.total, s.done, s.score, s.mean, s.eta_s, s.ended) == (4, 1, 1.0, 1.0, None, False)
    assert [t.name for t in s.workers] == ["sandbox-1", "sandbox-2"]
    t = s.workers[0]
    assert (t.task, t.phase, t.step, t.max_steps, t.shot, t.action) == ("t1", "agent", 2, 15, 1, w1.action)
    assert (
        len(t.thought) <= 600
        and t.thought.startswith("open a terminal")
        and t.started == round(w1.started, 1)
    )
    assert s.workers[1].shot == 0 and s.workers[1].started is None
    assert [(d.domain, d.tasks, d.done, d.score) for d in s.domains] == [
        ("os", 3, 1, 1.0),
        ("chrome", 1, 0, 0.0),
    ]
    assert [(f.task_id, f.report) for f in s.finished] == [("t0", "results/os/t0/report.html")]

    # A task ends: Progress counts it (score, ETA), the board lists it; no report: no link.
    prepare(ref_dir(root, tasks[3]))
    o = Outcome(task_id="t0", domain="chrome", score=0.0, kind="crashed", error="boom")
    finish(ref_dir(root, tasks[3]), o)
    progress.finished(o)
    board.finished(o)
    board.end()
    s = board.snapshot()
    assert (s.done, s.score, s.ended) == (2, 1.0, True) and s.eta_s is not None
    assert s.domains[1].done == 1 and s.finished[-1].report is None and s.finished[-1].kind == "crashed"
    assert len(s.model_dump_json()) < 4000  # the page polls it every second: it stays small


def test_a_rollouts_outcome_links_the_report_of_its_own_run(tmp_path: Path) -> None:
    from tasks.osworld.results import Timings

    root = tmp_path / "root"
    runs = [TaskRef(domain="os", task_id="t", path="-", run_dir=f"os/t/rollout-{k}") for k in (0, 1)]
    progress = Progress(Console(file=io.StringIO()), total=2)
    board = RunBoard("suite x2", progress, root, runs)
    outcomes = []
    for k, r in enumerate(runs):  # both finish before the runner hands the first outcome on
        prepare(ref_dir(root, r))
        (ref_dir(root, r) / "report.html").write_text(f"rollout {k}")
        o = Outcome(task_id="t", domain="os", score=float(k), kind="scored", timings=Timings(total_s=1.5 + k))
        finish(ref_dir(root, r), o)
        outcomes.append(o)
    board.finished(outcomes[1])
    board.finished(outcomes[0])
    got = [(f.score, f.report) for f in board.snapshot().finished]
    assert got == [(1.0, "results/os/t/rollout-1/report.html"), (0.0, "results/os/t/rollout-0/report.html")]


def test_the_server_is_read_only_and_refuses_a_wrong_token(tmp_path: Path) -> None:
    root = tmp_path / "root"
    tasks = refs(1)
    prepare(ref_dir(root, tasks[0]))
    (ref_dir(root, tasks[0]) / "report.html").write_text("<p>the report</p>")
    (tmp_path / "secret.txt").write_text("not the run's")
    (root / "os" / "link.txt").symlink_to(tmp_path / "secret.txt")  # as a hostile file could be
    progress = Progress(Console(file=io.StringIO()), total=1)
    board = RunBoard("suite", progress, root, tasks)
    w = WorkerState("sandbox-1", task="t0", domain="os", phase="agent")
    progress.watch([w])
    with Monitor(board, results=root) as m:
        base = m.url
        code, body, headers = get(base + "state.json")
        assert code == 200 and headers["Content-Type"] == "application/json"
        assert json.loads(body)["workers"][0]["name"] == "sandbox-1"
        assert get(base + "shot?w=0")[0] == 404  # nothing recorded yet
        w.frame, w.shot = frame((0, 0, 255)), 1
        code, png, headers = get(base + "shot?w=0&n=1")
        assert code == 200 and headers["Content-Type"] == "image/png"
        assert Image.open(io.BytesIO(png)).convert("RGB").getpixel((5, 5)) == (0, 0, 255)
        w.frame, w.shot = frame((0, 255, 0)), 2  # a new screen: the next fetch gets it
        assert Image.open(io.BytesIO(get(base + "shot?w=0&n=2")[1])).convert("RGB").getpixel((5, 5)) == (
            0,
            255,
            0,
        )
        assert get(base + "shot?w=7")[0] == 404 and get(base + "shot?w=x")[0] == 400
        assert get(base + "results/os/t0/report.html")[1] == b"<p>the report</p>"
        assert get(base + "results/os/link.txt")[0] == 404  # a link out of the run is not followed
        page = get(base)[1].decode()
        assert 'src="static/monitor.js"' in page and "aria-live" in page
        assert get(base + "static/monitor.js")[0] == 200
        wrong = re.sub(r"/[^/]+/$", "/not-the-token/", base)
        for path in ("", "state.json", "shot?w=0", "results/os/t0/report.html"):
            assert get(wrong + path)[0] == 403, path
        for path in ("", "state.json", "shot"):  # no route takes a POST
            assert get(base + path, "POST")[0] in (404, 405), path


def test_a_workers_live_view_is_on_its_tile_and_printed_once_per_sandbox(tmp_path: Path) -> None:
    out = io.StringIO()
    progress = Progress(Console(file=out, width=200), total=2, views=True)
    board = RunBoard("suite", progress, tmp_path, refs(2))
    w1, w2 = WorkerState("sandbox-1", view="http://127.0.0.1:1/a/"), WorkerState("sandbox-2")
    for _ in range(3):  # the runner hands the states on every 0.25 s: a URL is said once
        progress.watch([w1, w2])
    w1.view, w2.view = "http://127.0.0.1:2/b/", "http://127.0.0.1:3/c/"  # the next sandboxes
    progress.watch([w1, w2])
    assert [t.view for t in board.snapshot().workers] == ["http://127.0.0.1:2/b/", "http://127.0.0.1:3/c/"]
    assert out.getvalue().splitlines() == [
        "sandbox-1: live view http://127.0.0.1:1/a/",
        "sandbox-1: live view http://127.0.0.1:2/b/",
        "sandbox-2: live view http://127.0.0.1:3/c/",
    ]
    quiet = io.StringIO()  # with --monitor the tile links to it: nothing printed
    Progress(Console(file=quiet), total=2).watch([w1, w2])
    assert quiet.getvalue() == ""


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["bench", "osworld", "run", "os-hello-file", "--script-dir", "suite", "--view-control"],
         "--view-control: benchmark runs are view-only (a person taking over would change a scored run)"),
        (["rollout", "os-hello-file", "--group", "2", "--script-dir", "suite", "--view-control"],
         "--view-control: benchmark runs are view-only"),
        (["bench", "osworld", "run", "os-hello-file", "--script-dir", "suite", "--view", "--ray"],
         "--view with --ray: Ray workers' sandboxes are on other nodes"),
        (["rollout", "os-hello-file", "--group", "2", "--script-dir", "suite", "--view", "--ray", "h:1"],
         "--view with --ray"),
        (["bench", "osworld", "run", "os-hello-file", "--script-dir", "suite", "--view", "--vm", "http://127.0.0.1:9"],
         "--view shows sandboxes"),
    ],
)  # fmt: skip
def test_view_flags_a_benchmark_run_cannot_take_are_one_line_errors(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.cli import main

    assert main(args) == 2
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("kimi-agent: error: ") and says in line, line


# -- a real run, watched in a real browser ----------------------------------------------------


def monitor_url(proc: subprocess.Popen[str], lines: list[str], timeout_s: float = 60) -> str:
    """The URL the run prints at start (its stdout is read by a thread into ``lines``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in list(lines):
            if line.startswith("monitor: "):
                return line.split(" ", 1)[1].strip()
        assert proc.poll() is None, "".join(lines)
        time.sleep(0.05)
    raise AssertionError("no monitor URL printed: " + "".join(lines))


def helpers_of(pid: int) -> set[int]:
    """The live views' x11vnc and websockify processes that process ``pid`` started (its children)."""
    found = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            status = (d / "status").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("Name") in ("x11vnc", "websockify") and fields.get("PPid", "").strip() == str(pid):
            found.add(int(d.name))
    return found


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status


class ViewChecker(threading.Thread):
    """Asks each live view the run's monitor lists, as soon as it appears (a view lasts as long as
    its worker has that sandbox: a few seconds here), for its page with the token and with another.
    It stops once it has one view of each of ``workers``: a poll of its own that saw the run's end
    would let the run end before the browser's page saw it (the monitor waits for one reader)."""

    def __init__(self, proc: subprocess.Popen[str], workers: int) -> None:
        super().__init__(daemon=True)
        self.proc, self.workers, self.url = proc, workers, ""
        self.codes: dict[str, tuple[int, int]] = {}
        self._named: set[str] = set()

    def run(self) -> None:
        while self.proc.poll() is None and len(self._named) < self.workers:
            if self.url:
                with contextlib.suppress(OSError, ValueError):
                    for tile in json.loads(get(self.url + "state.json")[1])["workers"]:
                        view = tile["view"]
                        if view and view not in self.codes:
                            wrong = re.sub(r"/[^/]+/$", "/not-the-token/", view)
                            with contextlib.suppress(OSError):  # given back meanwhile: the next one
                                self.codes[view] = (get(view)[0], get(wrong)[0])
                                self._named.add(tile["name"])
            time.sleep(0.1)


def same_screen(a: Image.Image, b: Image.Image) -> float:
    """The share of pixels that agree (within a little, for the VNC stream's encoding)."""
    if a.size != b.size:
        return 0.0
    import numpy as np

    diff = np.abs(np.asarray(a.convert("RGB"), dtype=np.int16) - np.asarray(b.convert("RGB"), dtype=np.int16))
    return float((diff.max(axis=2) <= 8).mean())


@pytest.mark.slow
def test_the_monitor_of_a_two_worker_scripted_run_shows_it_to_the_end(tmp_path: Path) -> None:
    """With --view: each worker's tile links to the live view of the sandbox it has (token-guarded,
    its canvas that sandbox's screen), and the views' helpers are gone when the run is."""
    import shutil
    import threading
    import urllib.parse
    from typing import Any

    from browser import canvas_image, chromium, missing
    from test_osworld_run import SANDBOX_FLAGS, SCRIPTS, SPLIT, WRITE, cli, env_for, scripted_root

    from env.live_view import missing as no_view

    if shutil.which("Xvfb") is None or missing() or no_view():
        pytest.skip(missing() or no_view() or "Xvfb is not installed")
    out = tmp_path / "results"
    args = ("run", SPLIT, "--script-dir", SCRIPTS, "--out", out, "--workers", "2", *SANDBOX_FLAGS)
    proc = subprocess.Popen(
        [*cli(*args, "--monitor", "--view", tmp=tmp_path)],
        cwd=Path(__file__).resolve().parent.parent,
        env=env_for(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    checker = ViewChecker(proc, workers=2)
    checker.start()
    helpers: set[int] = set()
    tile_views: dict[str, set[str]] = {}  # worker -> the live views its tile linked
    watching: tuple[int, Any] | None = None  # a worker's number and the page showing its live view
    canvas_match = 0.0
    try:
        url = monitor_url(proc, lines)
        checker.url = url
        assert url.startswith("http://127.0.0.1:")
        assert get(re.sub(r"/[^/]+/$", "/wrong/", url) + "state.json")[0] == 403
        first = json.loads(get(url + "state.json")[1])
        assert first["kind"] == "osworld" and first["total"] == 3
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url)
            seen_names: set[str] = set()
            seen_done: list[int] = []
            shown_screens = 0
            report: tuple[int, bytes] | None = None
            deadline = time.monotonic() + 300
            while page.get_attribute("body", "data-ended") != "1":
                assert time.monotonic() < deadline, "".join(lines)
                helpers |= helpers_of(proc.pid)
                seen_names |= set(page.locator("#workers h3").all_inner_texts())
                text = page.locator("#standing").inner_text()
                if m := re.match(r"(\d+)/3 done", text):
                    seen_done.append(int(m.group(1)))
                shown_screens = max(
                    shown_screens,
                    page.evaluate(
                        "Array.from(document.querySelectorAll('#workers img'))"
                        ".filter(i => i.complete && i.naturalWidth > 0).length"
                    ),
                )
                links = page.locator("#finished a").evaluate_all("as => as.map(a => a.href)")
                if links and report is None:  # a finished task's report opens from the page
                    report = get(links[0])[:2]
                tiles = page.locator("#workers li").evaluate_all(
                    "ls => ls.map(l => [l.querySelector('h3').textContent, l.textContent,"
                    " (l.querySelector('a') || {}).href || ''])"
                )
                for i, (name, tile_text, view) in enumerate(tiles):
                    if view:
                        tile_views.setdefault(name, set()).add(view)
                    if view and WRITE in tile_text and watching is None:  # the 20 s task: watch it live
                        watching = (i, browser.new_page(viewport={"width": 900, "height": 700}))
                        watching[1].goto(view)
                if watching is not None and canvas_match <= 0.99:  # a look per turn: no tile is missed
                    i, viewer = watching
                    shot = get(url + f"shot?w={i}")
                    if viewer.get_attribute("body", "data-connected") == "1" and shot[0] == 200:
                        canvas_match = same_screen(canvas_image(viewer), Image.open(io.BytesIO(shot[1])))
                    if canvas_match > 0.99:
                        viewer.close()
                time.sleep(0.2)
            final_standing = page.locator("#standing").inner_text()
            page_score = float(page.get_attribute("body", "data-score") or "nan")
            finished_rows = page.locator("#finished tbody tr").count()
            domain_cells = page.locator("#domains tbody tr").first.locator("td").all_inner_texts()
            report_links = page.locator("#finished a").evaluate_all("as => as.map(a => a.href)")
            alts = page.locator("#workers img").evaluate_all("is => is.map(i => i.alt)")
        assert proc.wait(timeout=60) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)

    summary = json.loads((scripted_root(out) / "summary.json").read_text())
    assert seen_names == {"sandbox-1", "sandbox-2"}  # both workers, each its own tile
    assert seen_done == sorted(seen_done) and len(set(seen_done)) >= 2, seen_done  # it advanced
    assert page_score == summary["total"]["score"] == 2.0
    assert final_standing.startswith("3/3 done, score 2 (mean 0.67), finished"), final_standing
    assert domain_cells == ["os", "3", "3", "2", "66.7%"]
    assert report is not None and report[0] == 200 and b"score" in report[1]
    assert finished_rows == 3 and len(report_links) == 2  # the crashed task has no report
    assert shown_screens >= 1 and all(a.startswith("sandbox-") and "screen" in a for a in alts)
    # --view: both tiles linked a live view on loopback, whose page needs the token.
    checker.join(timeout=10)
    assert set(tile_views) == {"sandbox-1", "sandbox-2"}, tile_views
    for name, got in tile_views.items():
        assert all(urllib.parse.urlsplit(v).hostname == "127.0.0.1" for v in got)
        assert all(checker.codes.get(v) == (200, 403) for v in got), (name, got, checker.codes)
    assert canvas_match > 0.99, canvas_match  # the live canvas is that worker's sandbox's screen
    assert len(helpers) >= 2 and not [p for p in helpers if alive(p)]  # x11vnc, websockify: gone


def test_a_screenspot_runs_monitor_follows_its_tally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fake_openai_server import FakeOpenAI, Reply
    from test_screenspot_runner import REPLIES, answer_by_instruction, run_args, write_pro

    from tasks.screenspot.cli import main

    data = write_pro(tmp_path / "pro", [{}, {}, {}, {}, {}, {"group": None, "ui_type": "icon"}])
    printed: list[str] = []
    seen: list[dict[str, object]] = []

    def answer(instruction: str) -> Reply:
        # Asked mid-run (on the model server's thread): what the monitor shows right now.
        printed.append(capsys.readouterr().out)
        url = re.search(r"monitor: (http://\S+/)", "".join(printed))
        assert url is not None, printed
        seen.append(json.loads(get(url.group(1) + "state.json")[1]))
        return Reply(text=REPLIES[instruction])

    fake = FakeOpenAI(models=("kimi-vl",), roots={"kimi-vl": "moonshotai/Kimi-VL-A3B-Instruct"})
    try:
        answer_by_instruction(fake, answer)
        out = tmp_path / "out"
        assert main([*run_args(data, out, fake.url), "--monitor", "--concurrency", "2"]) == 0
    finally:
        fake.close()
    assert len(seen) == 6 and all(s["kind"] == "screenspot" and s["total"] == 6 for s in seen)
    dones = [int(s["done"]) for s in seen]  # type: ignore[call-overload]
    assert dones == sorted(dones) and dones[-1] > dones[0]  # it advanced as the answers came
    asking = [t for s in seen for t in s["workers"] if t["task"]]  # type: ignore[attr-defined]
    assert asking and all(t["phase"] == "asking" and t["thought"].startswith("target") for t in asking)
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["overall"]["num_correct_action"] == 3
