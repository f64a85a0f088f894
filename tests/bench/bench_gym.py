"""kimi-agent/OSWorld-v0 on this machine: resets, per-step overhead, episodes per minute.

1. Reset on the critical path, minimal and XFCE desktops: cold (a sandbox started for the reset, as
   `bench osworld run --pool 0` does) against warm (taken from the pool, the replacement ready by the
   next reset, as when an episode lasts longer than a start). ``reset_s``: the desktop and its client;
   ``env.reset``: the whole call for a task without setup (the first observation included); then the
   suite's 26 tasks with their setup steps, warm.
2. Per-step overhead: the same no-op steps (a pointer move to where it is, no settle wait) through
   ``env.step`` and through the agent loop (agent/loop.run with a scripted policy) on the same kind of
   sandbox, in one run; and the no-op policy's steps per second.
3. Episodes per minute for the suite's 26 tasks played with their reference solutions by N
   environments sharing a pool of N (N = 1, 2, 4), the mean reward, and the memory of a sandbox
   (PSS of its processes: ready, and with LibreOffice Calc open).

Run: KIMI_OSWORLD_EVAL_VENV=.cache/osworld-eval .venv/bin/python tests/bench/bench_gym.py
     [--resets 8] [--steps 40] [--pools 1 2 4] [--skip-episodes]
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.loop import run
from agent.policy import ScriptedPolicy
from env.actions import Move, Point
from env.isolation import Isolation
from env.osworld_client import OSWorldClient
from env.sandbox import MARKER_VAR
from env.served_sandbox import ServedSandbox
from env.settle import Settle
from env.vm_desktop import VMDesktop
from tasks.osworld import suite
from tasks.osworld.gym_env import OSWorldEnv
from tasks.osworld.pool import PoolSettings, SandboxPool
from tasks.osworld.runner import OfficialScorer, SandboxTarget, default_cache
from tasks.osworld.task import load_split

NOOP_TASK = {
    "id": "noop",
    "snapshot": "os",
    "instruction": "Do nothing.",
    "config": [],
    "evaluator": {"func": "infeasible"},
}
NOOP_STEP = {"kind": "move", "point": {"x": 0.5, "y": 0.5}}


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.1f} ms (min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f})"


def resets(desktop: str, n: int) -> None:
    cold = []
    for _ in range(n):
        target = SandboxTarget("cold", desktop, Isolation(), pool=None)
        t = time.perf_counter()
        target.reset().close()
        cold.append(time.perf_counter() - t)
        target.close()
    print(f"  {desktop:7} cold reset_s: {ms(cold)}")
    with SandboxPool(PoolSettings(1, desktop)) as pool:
        env = OSWorldEnv(pool=pool, desktop=desktop)
        warm, whole = [], []
        for _ in range(n):
            pool.wait_ready()  # the replacement started during the last episode
            t = time.perf_counter()
            _, info = env.reset(options={"task": NOOP_TASK})
            whole.append(time.perf_counter() - t)
            warm.append(info["timings"]["reset_s"])
        env.close()
    print(f"  {desktop:7} warm reset_s: {ms(warm)}")
    print(f"  {desktop:7} warm env.reset (no setup, first observation included): {ms(whole)}")


def suite_resets() -> None:
    """The suite's 26 tasks with their setup steps: cold (each reset starts its sandbox) and warm."""
    split = load_split(suite.SPLIT)
    for label in ("cold", "warm"):
        pool = SandboxPool(PoolSettings(1, "xfce")) if label == "warm" else None
        env = OSWorldEnv(pool=pool, pool_size=0)
        setup, whole, ok = [], [], 0
        for entry in split.entries:
            if pool is not None:
                pool.wait_ready(timeout_s=120)  # an episode outlasts a start: the next one is ready
            t = time.perf_counter()
            _, info = env.reset(options={"task": entry.path})
            whole.append(time.perf_counter() - t)
            setup.append(info["timings"]["setup_s"])
            ok += info["setup_ok"]
        env.close()
        if pool is not None:
            pool.close()
        print(
            f"  xfce    {label} env.reset with the suite's setup ({len(whole)} tasks, {ok} set up): {ms(whole)}"
        )
        print(f"          of which setup: {ms(setup)}")


def step_overhead(n: int, rounds: int = 5) -> None:
    """Both ways on one sandbox (the episode's), nothing starting meanwhile, in alternating rounds."""
    with SandboxPool(PoolSettings(1, "xfce", max_starts=1)) as pool:
        env = OSWorldEnv(pool=pool, sleep_after_s=0.0, max_steps=rounds * n + 1)
        env.reset(options={"task": NOOP_TASK})
        assert env.server is not None
        url, token = env.server
        # The agent loop's own client of the same desktop, driven as the runner drives it.
        desktop = VMDesktop(OSWorldClient(url, token=token), settle=Settle(sleep_after_s=0.0))
        direct, gym = [], []
        for _ in range(rounds):
            policy = ScriptedPolicy([[Move(point=Point.norm(0.5, 0.5))]] * n)
            t = time.perf_counter()
            traj = run("noop", policy, desktop, max_steps=n, repeat_limit=0)
            direct.append((time.perf_counter() - t) / n)
            assert len(traj.steps) == n and traj.error is None, traj.error
            t = time.perf_counter()
            for _ in range(n):
                _, _, _, _, info = env.step(NOOP_STEP)
                assert "error" not in info, info
            gym.append((time.perf_counter() - t) / n)
        desktop.close()
        env.close()
    d, g = statistics.median(direct), statistics.median(gym)
    print(
        f"  {rounds} rounds of {n} steps: direct loop {d * 1000:.1f} ms/step, env.step {g * 1000:.1f} ms/step "
        f"(medians); ratio {g / d:.2f}x"
    )
    print(f"  no-op policy through env.step: {1 / g:.1f} steps/s")


def pss_mb(box: ServedSandbox) -> float:
    """The PSS of everything a sandbox costs, in MB: the processes carrying its marker (what runs
    inside) and its host processes (Xvfb, the supervisor, the reaper)."""
    total = 0
    marker = f"{MARKER_VAR}={box.sandbox.root}".encode()
    host = {str(p) for p in box.sandbox.pids}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if d.name not in host and marker not in (d / "environ").read_bytes().split(b"\0"):
                continue
            for line in (d / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def memory() -> None:
    with SandboxPool(PoolSettings(1, "xfce")) as pool:
        box, _ = pool.take()
        time.sleep(2)
        ready = pss_mb(box)
        client = OSWorldClient(box.url, token=box.token)
        client.launch(["localc", "--norestore"])
        time.sleep(8)
        calc = pss_mb(box)
        client.close()
        pool.give_back(box)
    print(
        f"  memory of a sandbox (PSS of its processes, Xvfb included): ready {ready:.0f} MB, Calc open {calc:.0f} MB"
    )


def episodes(pool_size: int) -> None:
    split = load_split(suite.SPLIT)
    todo: queue.Queue[str] = queue.Queue()
    for entry in split.entries:
        todo.put(entry.path)
    rewards: list[float] = []
    failed: list[str] = []
    lock = threading.Lock()
    with SandboxPool(PoolSettings(pool_size, "xfce", max_starts=len(split.entries))) as pool:
        scorer = OfficialScorer(default_cache())
        pool.wait_ready(timeout_s=120)

        def worker() -> None:
            env = OSWorldEnv(pool=pool, scorer=scorer, max_steps=15)
            try:
                while True:
                    try:
                        path = todo.get_nowait()
                    except queue.Empty:
                        return
                    _, info = env.reset(options={"task": path})
                    steps = json.loads((suite.SOLUTIONS / f"{info['task_id']}.json").read_text())
                    reward = 0.0
                    for step in steps:
                        _, reward, terminated, truncated, _ = env.step(step)
                        if terminated or truncated:
                            break
                    with lock:
                        rewards.append(reward)
                        if reward < 1.0:
                            failed.append(info["task_id"])
            finally:
                env.close()

        t = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(pool_size)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t
        scorer.close()
    print(
        f"  pool {pool_size}: {len(rewards)} episodes in {wall:.0f} s = {len(rewards) / wall * 60:.1f} episodes/min, "
        f"mean reward {statistics.mean(rewards):.2f}" + (f" (below 1: {', '.join(failed)})" if failed else "")
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resets", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--pools", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument("--skip-episodes", action="store_true")
    args = ap.parse_args()
    print("1. reset on the critical path")
    for desktop in ("minimal", "xfce"):
        resets(desktop, args.resets)
    suite_resets()
    print("2. per-step overhead")
    step_overhead(args.steps)
    print("3. episodes per minute (the suite's reference solutions), memory")
    memory()
    if not args.skip_episodes:
        for n in args.pools:
            episodes(n)


if __name__ == "__main__":
    main()
