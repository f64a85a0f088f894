"""The evaluator worker's limits on a hostile spreadsheet: OSWorld's real ``compare_table``, through the
real worker and a served sandbox's /file, scores an .xlsx of many numeric cells (a few MB zipped) made
in the sandbox. Prints the score and reason, wall time, the worker's CPU time and peak resident memory
(its VmHWM in /proc, read by the host as the request ends), then one ordinary task on the same
EvaluatorWorker (a fresh process after a kill).

Run: .venv/bin/python tests/bench/bench_osworld_limits.py [--cells N] [--off]
  --cells N  cells in the hostile sheet (default 1,200,000: issue 18's 4 MB file)
  --off      also score it with every limit off, the figure before the limits (may take GBs)
The limits are EvalLimits.from_env(): KIMI_EVAL_MEMORY_GIB, KIMI_EVAL_CPU_S, KIMI_EVAL_FILE_MB.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from env.osworld_client import OSWorldClient
from env.served_sandbox import ServedSandbox
from tasks.osworld.evallimits import GIB, EvalLimits
from tasks.osworld.evaluation import EvaluatorWorker, Server, evaluate
from tasks.osworld.task import Task, parse_task
from tests.hostile_xlsx import write_sheet

REPO = Path(__file__).resolve().parents[2]
COLS = 20


def table_task(home: str, name: str) -> Task:
    return parse_task(
        {
            "id": "bench-limits",
            "snapshot": "libreoffice_calc",
            "instruction": "bench",
            "evaluator": {
                "func": "compare_table",
                "result": {"type": "vm_file", "path": f"{home}/{name}", "dest": name},
                "expected": {"type": "vm_file", "path": f"{home}/gold.xlsx", "dest": "gold.xlsx"},
                "options": {"rules": [{"type": "sheet_data", "sheet_idx0": 0, "sheet_idx1": "EI0"}]},
            },
        }
    )


def run(limits: EvalLimits, server: Server, home: str, cache: Path) -> None:
    with EvaluatorWorker(venv=REPO / ".cache" / "osworld-eval", timeout_s=3600, limits=limits) as w:
        w.ping()
        t0 = time.monotonic()
        ev = evaluate(table_task(home, "hostile.xlsx"), server, last_action="DONE", cache_dir=cache, worker=w)
        wall = time.monotonic() - t0
        u = w.last_usage
        peak = f"{u.peak_rss / GIB:.2f} GiB" if u else "?"
        print(f"  hostile: score {ev.score}, {wall:.1f} s wall, {w.last_cpu_s:.1f} s CPU, peak RSS {peak}")
        print(f"  reason: {ev.reason}")
        t0 = time.monotonic()
        ok = evaluate(table_task(home, "gold.xlsx"), server, last_action="DONE", cache_dir=cache, worker=w)
        print(
            f"  next task: score {ok.score} in {time.monotonic() - t0:.1f} s; worker starts {w.starts}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=1_200_000)
    ap.add_argument("--off", action="store_true", help="also run with every limit off")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hostile = write_sheet(Path(tmp) / "hostile.xlsx", max(1, args.cells // COLS), COLS)
        gold = write_sheet(Path(tmp) / "gold.xlsx", 3, 3)
        size = hostile.stat().st_size
        print(f"hostile sheet: {args.cells:,} cells, {size / 1e6:.2f} MB zipped")
        with ServedSandbox(640, 480, desktop="minimal", isolation=None) as box:
            with OSWorldClient(box.url, box.token) as c:
                home = c.execute(["sh", "-c", 'printf %s "$HOME"']).output.strip()
                c.upload(f"{home}/hostile.xlsx", hostile.read_bytes())
                c.upload(f"{home}/gold.xlsx", gold.read_bytes())
            server = Server(box.host, box.port, box.token)
            limits = EvalLimits.from_env()
            print(f"limits on: {limits}")
            run(limits, server, home, Path(tmp) / "on")
            if args.off:
                print("limits off (before):")
                run(EvalLimits.off(), server, home, Path(tmp) / "off")


if __name__ == "__main__":
    main()
