"""Wall time of `kimi-agent bench osworld run` on a small suite with 1 and 2 workers, and the per-task
reset time (a fresh sandbox with its server, ready for setup), read from the runs' outcome.json;
--pool 0 2 compares a run whose tasks start their own sandboxes with one taking them from a warm pool.

The suite (default: every task of tasks/osworld/suite, else tests/data/osworld_run) plays its reference
solutions (--script-dir), so the figures measure the runner, the sandboxes, setup and the official
evaluators, not a model. Each worker count runs in a fresh results directory.

Run: .venv/bin/python tests/bench/bench_osworld_run.py [--suite DIR] [--workers 1 2] [--desktop-env xfce] [--pool 0 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "tasks" / "osworld" / "suite"
DATA = REPO / "tests" / "data" / "osworld_run"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--suite",
        type=Path,
        default=SUITE if SUITE.is_dir() else DATA,
        help="examples/ and solutions/ (or scripts/)",
    )
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--pool",
        type=int,
        nargs="+",
        default=[-1],
        help="warm pool sizes to compare (0: each task starts its sandbox; default: the run's own, one per worker)",
    )
    ap.add_argument("--desktop-env", default="minimal")
    ap.add_argument("--no-isolation", action="store_true", help="sandboxes without bubblewrap")
    args = ap.parse_args()
    ids = sorted(p.stem for p in (args.suite / "examples").glob("*/*.json"))
    scripts = args.suite / "solutions" if (args.suite / "solutions").is_dir() else args.suite / "scripts"
    print(
        f"suite {args.suite}: {len(ids)} tasks, desktop {args.desktop_env}{', no isolation' if args.no_isolation else ''}, {os.cpu_count()} cores"
    )
    for n, pool in [(n, p) for n in args.workers for p in args.pool]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "results"
            cmd = [
                sys.executable, "-m", "tasks.cli", "bench", "osworld", "run", *ids, "--osworld-dir", str(args.suite),
                "--script-dir", str(scripts), "--out", str(out), "--workers", str(n),
                "--desktop-env", args.desktop_env, *(["--no-isolation"] if args.no_isolation else []),
                *(["--pool", str(pool)] if pool >= 0 else []),
            ]  # fmt: skip
            env = {
                "KIMI_OSWORLD_EVAL_VENV": str(REPO / ".cache" / "osworld-eval"),  # as .ci/setup builds it
                **os.environ,
                "XDG_CACHE_HOME": str(Path(tmp) / "cache"),
            }
            t0 = time.perf_counter()
            r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if r.returncode != 0:
                sys.exit(f"run failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
            outcomes = [json.loads(p.read_text()) for p in out.glob("*/*/*/*/*/outcome.json")]
            resets = [o["timings"]["reset_s"] for o in outcomes if o["timings"]["reset_s"]]
            scores = sum(o["score"] for o in outcomes)
            print(
                f"{n} worker{'s' if n > 1 else ' '}, pool {pool if pool >= 0 else n}: wall {wall:.1f} s for {len(outcomes)} tasks "
                f"(score {scores:g}); reset per task median {statistics.median(resets):.2f} s "
                f"(min {min(resets):.2f}, max {max(resets):.2f}, n={len(resets)})"
            )


if __name__ == "__main__":
    main()
