"""What the run monitor costs a run: the same 2-worker scripted `bench osworld run` (tests' split:
a terminal task played in steps, an infeasible task, a crashing one) without --monitor, and with
--monitor and a headless Chromium showing its page (polling state.json every second, fetching each
new screen); rounds alternate the order, and the browser starts before each run either way. From the
task played in steps (its outcome.json) it prints the median seconds for the task (the worker's
whole task: reset, setup, agent, evaluation) and per agent step, and the overhead of each round's
pair (two runs under about the same load). Target: at most 5 %.

On a small shared machine the browser's own rendering competes with the sandboxes for the same
cores, and the end-to-end figure swings with the machine's load; so it also prints the monitor's own
work, measured apart: building and serving one state.json, and encoding one recorded screen (a step
screenshot of the run, the sandboxes' 1920x1080) as PNG, against the run's seconds per step (a poll
a second, a new screen per worker per step).

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
from test_osworld_run import REPO, SANDBOX_FLAGS, SCRIPTS, SPLIT, WRITE, cli, env_for, scripted_root

SCREEN: list[Path] = []  # a step screenshot of a run, for the monitor's own cost


def one_run(tmp: Path, monitor: bool, browser: Any) -> tuple[float, float]:
    """Seconds of the stepping task, and per agent step of it, in one run. ``browser`` is started before either kind
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
    shots = sorted(scripted_root(out).glob("*/*/step_*.png"))
    if shots and not SCREEN:
        keep = Path(tempfile.mkdtemp()) / "screen.png"
        keep.write_bytes(shots[-1].read_bytes())
        SCREEN.append(keep)
    # The task played in steps (the others: one FAIL step, and one that never plays).
    o = json.loads((scripted_root(out) / "os" / WRITE / "outcome.json").read_text())
    return o["timings"]["total_s"], o["timings"]["agent_s"] / o["steps"]


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
        f"{1000 * per_step:.1f} ms, {100 * per_step / step_s:.2f} % of one core"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    got: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for r in range(a.rounds):
        for monitor in (False, True) if r % 2 == 0 else (True, False):
            with tempfile.TemporaryDirectory() as d, chromium() as browser:
                task, step = one_run(Path(d), monitor, browser)
            got[monitor].append((task, step))
            print(
                f"round {r + 1}, monitor {'on ' if monitor else 'off'}: task {task:.2f} s, {step:.3f} s per step"
            )
    for i, what in enumerate(("task", "agent step")):
        off = [x[i] for x in got[False]]
        on = [x[i] for x in got[True]]
        paired = [100 * (y - x) / x for x, y in zip(off, on, strict=True)]  # round by round: same load
        print(
            f"s per {what}: no monitor {statistics.median(off):.3f}, monitor page open {statistics.median(on):.3f}; "
            f"overhead by round {', '.join(f'{p:+.1f}' for p in paired)} %, median {statistics.median(paired):+.1f} %"
        )
    own_work(statistics.median(x[1] for x in got[False]))


if __name__ == "__main__":
    main()
