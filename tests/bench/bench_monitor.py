"""What the run monitor costs a run: the same 2-worker scripted `bench osworld run` (tests' split:
a terminal task played in steps, an infeasible task, a crashing one) without --monitor, and with
--monitor and a headless Chromium showing its page (polling state.json every second, fetching each
new screen); rounds alternate the order. The browser starts before each run either way. From each run's outcome.json files it prints the median
seconds per task (the worker's whole task: reset, setup, agent, evaluation) and per agent step, and
the overhead. Target: at most 5 %.

On a small shared machine the browser's own rendering competes with the sandboxes for the same
cores, and the end-to-end figure swings with the machine's load; so it also prints the monitor's own
work, measured apart: building and serving one state.json, and encoding one recorded screen (a real
1280x800 step screenshot of the run) as PNG, against the run's seconds per step (one poll a second,
one new screen per worker per step).

Run: .venv/bin/python tests/bench/bench_monitor.py [--rounds 3]
(needs the evaluator venv .ci/setup builds, as tests/test_osworld_run.py does)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from browser import chromium
from test_osworld_run import REPO, SANDBOX_FLAGS, SCRIPTS, SPLIT, cli, env_for, scripted_root

SCREEN: list[Path] = []  # a step screenshot of a run, for the monitor's own cost


def one_run(tmp: Path, monitor: bool, browser: Any) -> tuple[list[float], list[float]]:
    """Seconds per task and per agent step of one run. ``browser`` is started before either kind
    of run (its start-up is not the monitor's cost); with ``monitor`` it opens the page."""
    out = tmp / "results"
    args = ["run", SPLIT, "--script-dir", SCRIPTS, "--out", out, "--workers", "2", *SANDBOX_FLAGS]
    proc = subprocess.Popen(
        cli(*args, *(["--monitor"] if monitor else []), tmp=tmp),
        cwd=REPO,
        env=env_for(tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    if monitor:
        url = ""
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("monitor: "):
                url = line.split(" ", 1)[1].strip()
                break
        assert url, "".join(lines)
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
        reader.start()
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url)
        while proc.poll() is None and page.get_attribute("body", "data-ended") != "1":
            time.sleep(0.2)
        reader.join()
        page.close()
    else:
        lines.extend(proc.stdout)
    assert proc.wait() == 0, "".join(lines)
    per_task, per_step = [], []
    shots = sorted(scripted_root(out).glob("*/*/step_*.png"))
    if shots and not SCREEN:
        keep = Path(tempfile.mkdtemp()) / "screen.png"
        keep.write_bytes(shots[-1].read_bytes())
        SCREEN.append(keep)
    for f in scripted_root(out).glob("*/*/outcome.json"):
        o = json.loads(f.read_text())
        if o["kind"] == "crashed":
            continue  # no script: it never played
        per_task.append(o["timings"]["total_s"])
        if o["steps"]:
            per_step.append(o["timings"]["agent_s"] / o["steps"])
    return per_task, per_step


def own_work(step_s: float) -> None:
    """The monitor's own work per step: its state.json over real loopback HTTP, a screen's PNG."""
    import io
    import urllib.request

    from PIL import Image
    from rich.console import Console

    from env.desktop import Frame
    from tasks.monitor_server import Monitor
    from tasks.osworld.monitor_board import RunBoard
    from tasks.osworld.progress import Progress
    from tasks.osworld.results import TaskRef
    from tasks.osworld.runner import WorkerState

    frame = Frame.from_image(Image.open(SCREEN[0]))
    refs = [TaskRef(domain="os", task_id=f"t{i}", path="-") for i in range(361)]
    progress = Progress(Console(file=io.StringIO()), total=361)
    with tempfile.TemporaryDirectory() as d:
        board = RunBoard("bench", progress, Path(d), refs)
        workers = [WorkerState(f"sandbox-{i}", task="t", domain="os", phase="agent") for i in (1, 2)]
        for w in workers:
            w.thought, w.action, w.frame, w.shot = "x" * 2000, "pyautogui.click(1, 2)", frame, 1
        progress.watch(workers)
        with Monitor(board) as m:
            n = 200
            t0 = time.perf_counter()
            for _ in range(n):
                with urllib.request.urlopen(m.url + "state.json") as r:
                    size = len(r.read())
            state_s = (time.perf_counter() - t0) / n
            t0 = time.perf_counter()
            for i in range(20):
                workers[0].shot = i + 2
                with urllib.request.urlopen(m.url + "shot?w=0") as r:
                    png = len(r.read())
            shot_s = (time.perf_counter() - t0) / 20
    per_step = state_s * step_s + 2 * shot_s  # a poll a second; both workers' new screens
    print(
        f"monitor's own work: state.json {1000 * state_s:.2f} ms ({size} bytes), a {frame.width}x{frame.height} "
        f"screen's PNG {1000 * shot_s:.1f} ms ({png // 1024} KiB); per {step_s:.2f} s step with 2 workers: "
        f"{1000 * per_step:.1f} ms of one core, {100 * per_step / step_s / 2:.2f} % of the run's 2 workers"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    got: dict[bool, tuple[list[float], list[float]]] = {False: ([], []), True: ([], [])}
    for r in range(a.rounds):
        for monitor in (False, True) if r % 2 == 0 else (True, False):
            with tempfile.TemporaryDirectory() as d, chromium() as browser:
                task, step = one_run(Path(d), monitor, browser)
            got[monitor][0].extend(task)
            got[monitor][1].extend(step)
            print(f"round {r + 1}, monitor {'on ' if monitor else 'off'}: tasks {task}, steps {step}")
    for i, what in enumerate(("task", "agent step")):
        off, on = statistics.median(got[False][i]), statistics.median(got[True][i])
        print(
            f"s per {what}: no monitor {off:.3f}, monitor page open {on:.3f}, overhead {100 * (on - off) / off:+.1f} %"
        )
    own_work(statistics.median(got[False][1]))


if __name__ == "__main__":
    main()
