"""The OSWorld evaluator: venv build time and size, worker start (importing desktop_env's metrics
and getters), and the time to score one metric through the official getters on a served sandbox.

Run: .venv/bin/python tests/bench/bench_osworld_eval.py [--fresh]
(--fresh builds a new venv in a temporary directory: pip's cache makes a rebuild faster than a first
install on a new machine; without it, the repo-local .cache/osworld-eval is used, built if absent.)

     .venv/bin/python tests/bench/bench_osworld_eval.py --corpus SPLIT.json
scores every distinct evaluator of a split (one task per func + getter combination) on an untouched
sandbox, internet cut off by a dead proxy: what each costs, and that none crashes the scoring (every
score is 0 with a reason, unless the untouched machine already satisfies the task). Evaluators with
a DevTools getter are left out: when no browser answers, desktop-env's Chrome getters start one
listening on port 1337 of this machine (the sandbox shares its network), where other runs' Chrome
tests would find it.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from env.osworld_client import OSWorldClient
from env.served_sandbox import ServedSandbox
from tasks.osworld import evalenv
from tasks.osworld.evaluation import DEVTOOLS_GETTERS, EvaluatorWorker, Server, evaluate
from tasks.osworld.task import parse_task

REPO = Path(__file__).resolve().parents[2]


def size_of(path: Path) -> str:
    out = subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True).stdout
    return out.split()[0] if out else "?"


def corpus(split_path: str) -> None:
    import collections
    import os

    from tasks.osworld.task import load_split

    dead = "http://127.0.0.1:9"  # the discard port: cloud files and web pages fail at once
    os.environ.update({k: dead for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")})
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    seen, tasks, browser = set(), [], 0
    for t in load_split(split_path).load():
        key = (tuple(t.evaluator.funcs), tuple(t.evaluator.getter_types()))
        if DEVTOOLS_GETTERS & set(key[1]):
            browser += key not in seen
            seen.add(key)
        if key not in seen:
            seen.add(key)
            tasks.append(t)
    reasons: collections.Counter[str] = collections.Counter()
    times, passed, cpu, peak = [], [], [], 0
    venv = REPO / ".cache" / "osworld-eval"
    with (
        tempfile.TemporaryDirectory() as tmp,
        ServedSandbox(800, 600, desktop="minimal", isolation=None) as box,
        EvaluatorWorker(venv=venv, timeout_s=60) as w,
    ):
        server = Server(box.host, box.port, box.token)
        for t in tasks:
            ev = evaluate(t, server, last_action="DONE", cache_dir=Path(tmp) / t.id, worker=w)
            times.append(ev.seconds)
            cpu.append(w.last_cpu_s)
            peak = max(peak, w.last_usage.peak_rss if w.last_usage else 0)
            print(f"{t.domain}/{t.id} {ev.score} {ev.seconds:.1f} s {ev.reason or ''}", flush=True)
            if ev.score > 0:
                passed.append(f"{t.domain}/{t.id} {ev.score}")
            reasons[(ev.reason or "").split(":")[0][:60]] += 1
        starts = w.starts
    print(f"left out: {browser} distinct evaluators with a DevTools getter")
    print(
        f"{len(tasks)} distinct evaluators: {sum(times):.0f} s, median {statistics.median(times):.2f} s, max {max(times):.0f} s"
    )
    print(f"worker starts: {starts} (1 + one per timeout)")
    hits = sum(n for reason, n in reasons.items() if "limit of" in reason or " cap" in reason)
    print(
        f"limits {w.limits}: {hits} hit; worker peak RSS {peak / 2**30:.2f} GiB, "
        f"most CPU for one metric {max(cpu):.1f} s"
    )
    print(f"scored > 0 untouched: {passed or 'none'}")
    for reason, n in reasons.most_common(12):
        print(f"  {n:4d}  {reason}")


def main() -> None:
    if "--corpus" in sys.argv:
        corpus(sys.argv[sys.argv.index("--corpus") + 1])
        return
    fresh = "--fresh" in sys.argv
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "osworld-eval" if fresh else REPO / ".cache" / "osworld-eval"
        t0 = time.monotonic()
        evalenv.build(venv)
        print(
            f"venv {venv}: ready in {time.monotonic() - t0:.1f} s ({'fresh' if fresh else 'cached'}), {size_of(venv)}"
        )
        t0 = time.monotonic()
        again = evalenv.build(venv)
        print(f"second build (ready marker): {1000 * (time.monotonic() - t0):.1f} ms -> {again}")

        starts = []
        for _ in range(3):
            with EvaluatorWorker(venv=venv) as w:
                t0 = time.monotonic()
                ping = w.ping()
                starts.append((time.monotonic() - t0, ping["import_s"]))
        print(
            "worker start to first answer: " + ", ".join(f"{s:.2f} s (imports {i:.2f} s)" for s, i in starts)
        )

        with (
            ServedSandbox(640, 480, desktop="minimal", isolation=None) as box,
            EvaluatorWorker(venv=venv) as w,
        ):
            with OSWorldClient(box.url, box.token) as c:
                home = c.execute(["sh", "-c", 'printf %s "$HOME"']).output.strip()
                c.upload(f"{home}/a.txt", b"hello\n" * 1000)
            task = parse_task(
                {
                    "id": "bench",
                    "snapshot": "os",
                    "instruction": "bench",
                    "evaluator": {
                        "func": "compare_text_file",
                        "result": {"type": "vm_file", "path": f"{home}/a.txt", "dest": "a.txt"},
                        "expected": {"type": "vm_file", "path": f"{home}/a.txt", "dest": "b.txt"},
                    },
                }
            )
            w.ping()
            times = []
            for _ in range(10):
                t0 = time.monotonic()
                ev = evaluate(
                    task,
                    Server(box.host, box.port, box.token),
                    last_action="DONE",
                    cache_dir=Path(tmp) / "cache",
                    worker=w,
                )
                times.append(time.monotonic() - t0)
                assert ev.score == 1.0, ev
            print(
                f"evaluate (2 x vm_file + compare_text_file, warm worker): median "
                f"{1000 * statistics.median(times):.0f} ms, max {1000 * max(times):.0f} ms"
            )


if __name__ == "__main__":
    main()
