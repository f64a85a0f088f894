"""The idle-agent run (issue 25): every task of a split that `bench osworld check` calls supported and
offline on a sandbox (or the ids given), played by a script that waits 1 s and says DONE, through
`kimi-agent bench osworld run` on isolated sandboxes with OSWorld's evaluators. Prints the wall time,
the machine's load, and per phase (reset, setup, agent, evaluate, the whole task) the median, p90 and
max read from each task's outcome.json.

--compare DIR checks each task's score and reasons against an earlier run's results (e.g. the run
before a change that must not change what a task scores) and lists every task whose differ.

Run: .venv/bin/python tests/bench/bench_osworld_idle.py [SPLIT] [--ids ID ...] [--workers 2]
     [--osworld-dir DIR] [--out DIR] [--compare DIR]
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
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the checkout's code, as the run below uses

from tasks.osworld.coverage import check_split  # noqa: E402
from tasks.osworld.task import load_split, osworld_dir  # noqa: E402

# One step holding both actions, as the fidelity check's idle agent plays it (one screen, not two).
IDLE = [[{"kind": "wait", "seconds": 1}, {"kind": "done", "status": "success"}]]
PHASES = ("reset_s", "setup_s", "agent_s", "evaluate_s", "total_s")


def offline_supported(split: str, examples: Path) -> list[str]:
    """The ids `bench osworld check` calls supported on a sandbox without the internet."""
    rows = check_split(load_split(split if split.endswith(".json") else examples / f"{split}.json"))
    return [r.task_id for r in rows if r.supported("sandbox") and not r.network]


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def outcomes(root: Path) -> dict[str, dict[str, Any]]:
    return {o["task_id"]: o for o in (json.loads(p.read_text()) for p in root.glob("**/outcome.json"))}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def compare(now: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for task_id, o in sorted(now.items()):
        b = before.get(task_id)
        if b is None:
            lines.append(f"{task_id}: not in the earlier run")
        elif (o["kind"], o["score"], o.get("reasons")) != (b["kind"], b["score"], b.get("reasons")):
            lines.append(
                f"{task_id}: {b['kind']} {b['score']} {b.get('reasons')} -> {o['kind']} {o['score']} {o.get('reasons')}"
            )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split", nargs="?", default="test_all", help="a split name or file (default: test_all)")
    ap.add_argument("--ids", nargs="+", help="these task ids instead of the split's offline-supported ones")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--osworld-dir", type=Path, default=None, help="OSWorld's evaluation_examples")
    ap.add_argument("--out", type=Path, default=None, help="results directory (default: a temporary one)")
    ap.add_argument("--compare", type=Path, default=None, help="an earlier run's results directory")
    args = ap.parse_args()
    examples = osworld_dir(args.osworld_dir)
    ids = args.ids or offline_supported(args.split, examples)
    if not ids:
        sys.exit(f"no task of {args.split} is supported offline on a sandbox here")
    with tempfile.TemporaryDirectory(prefix="kimi-idle-") as tmp:
        scripts = Path(tmp) / "idle"
        scripts.mkdir()
        for task_id in ids:
            (scripts / f"{task_id}.json").write_text(json.dumps(IDLE))
        out = args.out or Path(tmp) / "results"
        cmd = [
            sys.executable, "-m", "tasks.cli", "bench", "osworld", "run", *ids, "--osworld-dir", str(examples),
            "--script-dir", str(scripts), "--workers", str(args.workers), "--out", str(out),
        ]  # fmt: skip
        env = {"KIMI_OSWORLD_EVAL_VENV": str(REPO / ".cache" / "osworld-eval"), **os.environ}
        print(f"{len(ids)} tasks, {args.workers} workers, {os.cpu_count()} cores; load before {load()}")
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            sys.exit(f"run failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
        got = outcomes(out)
        print(f"wall {wall:.1f} s for {len(got)} tasks; load after {load()}; results {out}")
        for phase in PHASES:
            values = [o["timings"][phase] or 0.0 for o in got.values()]
            print(
                f"  {phase[:-2]:<9} median {statistics.median(values):6.2f} s  p90 {p90(values):6.2f} s  "
                f"max {max(values):6.2f} s  mean {statistics.mean(values):6.2f} s"
            )
        evaluation = statistics.median(o["timings"]["evaluate_s"] or 0.0 for o in got.values())
        kinds: dict[str, int] = {}
        for o in got.values():
            kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
        passed = sorted(t for t, o in got.items() if o["score"] > 0)
        print(f"evaluation median {evaluation:.2f} s; kinds {kinds}; scored above 0 idle: {passed or 'none'}")
        if args.compare is not None:
            diffs = compare(got, outcomes(args.compare))
            print(f"against {args.compare}: {len(diffs)} tasks differ in kind, score or reasons")
            for line in diffs:
                print(f"  {line}")


if __name__ == "__main__":
    main()
