"""Ray's cost on `bench osworld run`: the same scripted suite tasks with local workers and with --ray
on a cluster on this machine with as many sandbox units, the scheduling latency per task, throughput
per node and what it implies for N nodes and 1,000 sandboxes, and the memory and CPU of a sandbox.

1. Local against Ray, in one run: `--workers W` and `--ray ADDRESS --workers W` on a cluster the
   bench starts here (ray.cluster_utils.Cluster, --nodes nodes sharing W ``kimi_sandbox`` units; its
   start-up timed apart), alternating which goes first over --rounds rounds; then once with `--ray`
   alone (auto: the run starts its own local cluster, start-up included). Each run is the CLI as users
   run it, in a fresh results folder; wall time from start to exit.
2. Scheduling latency per task, from the driver's ray-schedule.jsonl (tasks/osworld/ray_schedule.py):
   driver sent it -> actor started it, actor finished -> driver stored it, and the driver's own time
   per task (pack and send; fetch, write and record), which bounds what one driver can serve.
3. Throughput of one node with k sandboxes (--per-node), tasks/min from the first task sent to the
   last stored, and the extrapolation to N nodes and 1,000 sandboxes.
4. Sizing (--sizing DESKTOP...): a ready sandbox's memory (PSS of its whole process tree, Xvfb
   included) and CPU while idle and while a task would wait for the model (its recorder on), then a Ray run with one actor sampled every 0.5 s: CPU-seconds per
   task and memory of the sandboxes, the actor (the Ray worker process), its evaluator worker and the
   node's Ray processes.

The tasks play their reference solutions (--script-dir suite), so the figures measure the runner,
Ray, the sandboxes and the official evaluators, not a model.

Run: KIMI_OSWORLD_EVAL_VENV=.cache/osworld-eval .venv/bin/python tests/bench/bench_ray.py
     [--domain os] [--desktop-env minimal] [--workers 2] [--nodes 1] [--rounds 2]
     [--per-node 1 2] [--sizing minimal xfce] [--skip-compare]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
EVAL_VENV = Path(os.environ.get("KIMI_OSWORLD_EVAL_VENV") or REPO / ".cache" / "osworld-eval")
# Before Ray is imported anywhere: 127.0.0.1 for every node, ports on loopback (tests/test_ray_osworld.py).
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
os.environ.update(LOOPBACK_ONLY)
os.environ["KIMI_OSWORLD_EVAL_VENV"] = str(EVAL_VENV)

from env.sandbox import MARKER_VAR  # noqa: E402
from env.served_sandbox import ServedSandbox  # noqa: E402
from tasks.osworld import ray_schedule  # noqa: E402
from tasks.osworld.pool import PoolSettings, SandboxPool  # noqa: E402
from tasks.osworld.ray_schedule import ScheduleRecord  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
SANDBOXES_AT_SCALE = 1000


def stats(values: list[float], unit: str = "ms", scale: float = 1000.0) -> str:
    if not values:
        return "n=0"
    v = sorted(values)
    p90 = v[min(len(v) - 1, round(0.9 * (len(v) - 1)))]
    return (
        f"median {statistics.median(v) * scale:.1f} {unit}, p90 {p90 * scale:.1f} {unit} "
        f"(min {v[0] * scale:.1f}, max {v[-1] * scale:.1f}, n={len(v)})"
    )


# -- the cluster --------------------------------------------------------------------------------
@dataclass
class Cluster:
    address: str
    startup_s: float
    tmp: list[Path]  # each node's TMPDIR: what tells its processes apart
    handle: Any


@contextmanager
def cluster(parent: Path, units: list[int]) -> Iterator[Cluster]:
    """A cluster here: one node per entry of ``units``, each advertising that many kimi_sandbox."""
    from ray.cluster_utils import Cluster as RayCluster

    tmp = []
    parent.mkdir(exist_ok=True)
    parent.chmod(0o711)
    for i in range(len(units)):
        d = parent / f"node{i}"
        d.mkdir(exist_ok=True)
        d.chmod(0o711)  # a sandbox's own user reaches its directory through this one
        tmp.append(d)
    t = time.perf_counter()

    def node(i: int) -> dict[str, Any]:
        return {"num_cpus": 1, "resources": {"kimi_sandbox": units[i]}, "env_vars": {"TMPDIR": str(tmp[i])}}

    c = RayCluster(initialize_head=True, head_node_args=node(0))
    try:
        for i in range(1, len(units)):
            c.add_node(**node(i))
        c.wait_for_nodes()
        yield Cluster(c.address, time.perf_counter() - t, tmp, c)
    finally:
        c.shutdown()


# -- one run of the CLI -------------------------------------------------------------------------
@dataclass
class Run:
    label: str
    wall_s: float
    tasks: int
    score: float
    schedule: list[ScheduleRecord] = field(default_factory=list)
    bytes_per_task: float = 0.0
    began_at: float = 0.0  # wall clock: the command started, ended
    ended_at: float = 0.0
    timings: list[dict[str, float]] = field(default_factory=list)  # each outcome.json's
    steps: list[int] = field(default_factory=list)  # and its steps
    written: list[float] = field(default_factory=list)  # and when it was written
    cpu_s: float = 0.0  # the command's CPU time (user + system), its waited-for children's included
    ticks: list[tuple[float, int]] = field(default_factory=list)  # (wall clock, its own CPU ticks) sampled

    def driver_play_cpu_s(self) -> float:
        """The command's own CPU between the first task sent and the last stored: on Ray, what the
        driver spends per task once started (loop, polls, live view, storing), start-up left out."""
        first = min(r.dispatched_at for r in self.schedule)
        last = max(r.stored_at for r in self.schedule)
        inside = [c for w, c in self.ticks if first <= w <= last]
        return (inside[-1] - inside[0]) / TICK if len(inside) > 1 else 0.0

    def phases(self) -> str:
        """Where the wall time went, alike for both kinds of run: to the first task's start, playing,
        from the last task's end to the exit. A task's end is its outcome.json's time of writing (the
        driver's store, on Ray), its start that less its total_s."""
        first = min(end - t["total_s"] for end, t in zip(self.written, self.timings, strict=True))
        last = max(self.written)
        return (
            f"start -> first task began {first - self.began_at:.1f} s, playing {last - first:.1f} s, "
            f"last task -> exit {self.ended_at - last:.1f} s"
        )

    def play_s(self) -> float:
        return max(self.written) - min(
            end - t["total_s"] for end, t in zip(self.written, self.timings, strict=True)
        )

    def task_s(self, key: str = "total_s") -> float:
        return statistics.median(t[key] for t in self.timings)


def run_cli(
    args: argparse.Namespace, workdir: Path, label: str, extra: list[str], env: dict[str, str]
) -> Run:
    out = Path(tempfile.mkdtemp(prefix="out-", dir=workdir))
    cmd = [
        sys.executable, "-m", "tasks.cli", "bench", "osworld", "run", args.split, "--script-dir", args.script_dir,
        "--desktop-env", args.desktop_env, "--workers", str(args.workers), "--out", str(out),
        *(["--domain", args.domain] if args.domain else []), *extra,
    ]  # fmt: skip
    env = {**os.environ, "XDG_CACHE_HOME": str(workdir / "cache"), **env}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began, t = time.time(), time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        ticks = []  # (wall clock, the command's own CPU ticks), every 0.25 s
        while proc.poll() is None:
            if (st := proc_stat(proc.pid)) is not None:
                ticks.append((time.time(), st[1]))
            time.sleep(0.25)
        wall, ended = time.perf_counter() - t, time.time()
        log.seek(0)
        output = log.read()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The command's own CPU and that of the children it waited for: on --ray ADDRESS, the driver's alone.
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if proc.returncode != 0:
        sys.exit(f"{label} failed ({proc.returncode}):\n{output[-6000:]}")
    outcomes = list(out.glob("*/*/*/*/*/outcome.json"))
    records = [json.loads(p.read_text()) for p in outcomes]
    score = sum(o["score"] for o in records)
    size = sum(f.stat().st_size for p in outcomes for f in p.parent.rglob("*") if f.is_file())
    schedule = [
        r for f in out.glob("*/*/*/" + ray_schedule.SCHEDULE_FILE) for r in ray_schedule.read(f.parent)
    ]
    per_task = size / max(1, len(outcomes))
    return Run(
        label,
        wall,
        len(outcomes),
        score,
        schedule,
        per_task,
        began,
        ended,
        [o["timings"] for o in records],
        [o["steps"] for o in records],
        [p.stat().st_mtime for p in outcomes],
        cpu,
        ticks,
    )


def describe(r: Run) -> str:
    return (
        f"wall {r.wall_s:5.1f} s for {r.tasks} tasks (score {r.score:g}); a task's total_s median "
        f"{r.task_s():.1f} s; {r.phases()}"
    )


def with_workers(args: argparse.Namespace, workers: int) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "workers": workers})


# -- 1 and 2: local against Ray, scheduling latency ---------------------------------------------
def compare(args: argparse.Namespace, workdir: Path) -> list[Run]:
    units = split_units(args.workers, args.nodes)
    runs: dict[str, list[Run]] = {"local": [], "ray": []}
    with cluster(workdir / "c", units) as c:
        print(
            f"cluster: {len(units)} node{'s' if len(units) > 1 else ''} ({'+'.join(map(str, units))} kimi_sandbox) "
            f"started in {c.startup_s:.1f} s"
        )
        for k in range(args.rounds):
            order = ["local", "ray"] if k % 2 == 0 else ["ray", "local"]
            for label in order:
                extra = ["--ray", c.address] if label == "ray" else []
                r = run_cli(args, workdir, label, extra, {})
                runs[label].append(r)
                print(f"  round {k + 1} {label:5}: {describe(r)}")
    auto = run_cli(args, workdir, "ray auto", ["--ray"], {"RAY_ADDRESS": ""})
    print(f"  --ray auto (starts its own local cluster of {args.workers} units): {describe(auto)}")
    local = statistics.median(r.wall_s for r in runs["local"])
    ray_ = statistics.median(r.wall_s for r in runs["ray"])
    paired = [r.wall_s / lo.wall_s for r, lo in zip(runs["ray"], runs["local"], strict=True)]
    playing = [r.play_s() / lo.play_s() for r, lo in zip(runs["ray"], runs["local"], strict=True)]
    n = runs["local"][0].tasks
    print(
        f"median wall, {args.workers} worker{'s' if args.workers > 1 else ''}: local {local:.1f} s, "
        f"--ray ADDRESS {ray_:.1f} s: ratio {ray_ / local:.3f}x (target <= 1.1x; per round "
        f"{', '.join(f'{x:.3f}x' for x in paired)}); --ray auto {auto.wall_s:.1f} s ({auto.wall_s / local:.3f}x, "
        "its cluster's start-up included)"
    )
    print(
        f"per-task overhead of --ray ADDRESS: {(ray_ - local) / n:+.2f} s of wall time per task, "
        f"{(ray_ - local) * args.workers / n:+.2f} worker-seconds per task ({n} tasks); playing phase "
        f"(first task began -> last ended) ratio per round {', '.join(f'{x:.3f}x' for x in playing)}"
    )
    fixed = [
        (r.wall_s - r.play_s()) - (lo.wall_s - lo.play_s())
        for r, lo in zip(runs["ray"], runs["local"], strict=True)
    ]
    print(
        f"fixed cost of --ray ADDRESS outside the playing phase, per round: {', '.join(f'{x:+.1f} s' for x in fixed)}"
    )
    cpu = statistics.median(r.cpu_s for r in runs["ray"])
    play = statistics.median(r.driver_play_cpu_s() / r.tasks for r in runs["ray"])
    print(
        f"the driver's CPU on --ray ADDRESS: {cpu:.1f} s per run in all (start-up included); "
        f"{play * 1000:.0f} ms per task between the first task sent and the last stored"
    )
    return runs["ray"] + [auto]


def split_units(total: int, nodes: int) -> list[int]:
    if nodes < 1 or total < nodes:
        sys.exit(f"--nodes {nodes} cannot share --workers {total} (each node hosts at least one sandbox)")
    return [total // nodes + (i < total % nodes) for i in range(nodes)]


@dataclass
class DriverCost:
    per_task_s: float  # the driver's own time per task: pack and send, fetch, write and record
    task_s: float  # an actor's time per task (run began to returned)
    cpu_per_task_s: float  # the driver process's CPU per task while playing (polls, live view included)


def latency(runs: list[Run]) -> DriverCost:
    """``runs``: those on --ray ADDRESS (the driver's CPU is its own there)."""
    recs = [r for run in runs for r in run.schedule]
    if not recs:
        sys.exit("the Ray runs wrote no ray-schedule.jsonl")
    print(f"scheduling latency per task ({len(recs)} tasks over {len(runs)} Ray runs):")
    print(f"  driver sent -> actor started:  {stats([r.to_actor_s for r in recs])}")
    print(f"  actor finished -> stored:      {stats([r.to_store_s for r in recs])}")
    print(
        f"    of which actor finished -> driver saw it: {stats([r.received_at - r.ended_at for r in recs])}"
    )
    print(f"  driver's own time, pack+send:  {stats([r.dispatch_s for r in recs])}")
    print(f"  driver's own time, fetch+write+record: {stats([r.store_s for r in recs])}")
    sizes = [run.bytes_per_task for run in runs]
    print(
        f"  task on the actor (run began -> returned): {stats([r.ended_at - r.started_at for r in recs], 's', 1)}"
    )
    print(f"  files shipped back per task: {statistics.mean(sizes) / 1e6:.2f} MB")
    return DriverCost(
        statistics.median(r.dispatch_s + r.store_s for r in recs),
        statistics.median(r.ended_at - r.started_at for r in recs),
        statistics.median(run.driver_play_cpu_s() / run.tasks for run in runs),
    )


# -- 3: throughput per node ---------------------------------------------------------------------
def throughput(args: argparse.Namespace, workdir: Path, ks: list[int], cost: DriverCost | None) -> None:
    per_sandbox: dict[int, float] = {}
    with cluster(workdir / "t", [max(ks)]) as c:
        print(f"one node, {max(ks)} kimi_sandbox (started in {c.startup_s:.1f} s):")
        for k in ks:
            r = run_cli(with_workers(args, k), workdir, f"k={k}", ["--ray", c.address], {})
            span = max(x.stored_at for x in r.schedule) - min(x.dispatched_at for x in r.schedule)
            rate = r.tasks / span * 60
            per_sandbox[k] = rate / k
            print(
                f"  {k} sandbox{'es' if k > 1 else '  '}: {rate:5.1f} tasks/min from first sent to last stored "
                f"({r.tasks} tasks in {span:.1f} s; {r.tasks / r.wall_s * 60:.1f} tasks/min over the whole "
                f"command, {r.wall_s:.1f} s); {rate / k:.1f} tasks/min per sandbox; the driver's CPU "
                f"{r.driver_play_cpu_s() / r.tasks * 1000:.0f} ms per task"
            )
    k_top = max(ks)
    each = per_sandbox[k_top]
    print(
        f"on paper (per sandbox as measured with {k_top} on this node, {each:.1f} tasks/min; linear while "
        "each node has the cores and memory of its sandboxes, see docs/ray.md's Sizing):"
    )
    per = args.paper_node
    for nodes in (1, 8, 32):
        print(
            f"  {nodes} node{'s' if nodes > 1 else ' '} x {per} sandboxes = {nodes * per}: {nodes * per * each:,.0f} tasks/min"
        )
    print(f"  {SANDBOXES_AT_SCALE:,} sandboxes: {SANDBOXES_AT_SCALE * each:,.0f} tasks/min")
    if cost is not None:
        for what, per_task in (
            ("its loop's work per task (pack+send, fetch+write+record)", cost.per_task_s),
            ("its process's CPU per task while playing (polls and live view included)", cost.cpu_per_task_s),
        ):
            ceiling = 60 / per_task
            print(
                f"  one driver, {what}: {per_task * 1000:.0f} ms -> at most {ceiling:,.0f} tasks/min; with these "
                f"{cost.task_s:.1f} s tasks, {ceiling / 60 * cost.task_s:,.0f} sandboxes busy at once "
                f"(with a model's ~3 min task: {ceiling / 60 * 180:,.0f})"
            )


# -- 4: sizing ----------------------------------------------------------------------------------
def proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime in ticks)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def pss_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in kB; zeros when it is gone."""
    pss = rss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


def sandbox_pids(box: ServedSandbox) -> set[int]:
    """Everything a sandbox costs: the processes carrying its marker (what runs inside) and its host
    processes (Xvfb, the supervisor, the reaper), as tests/bench/bench_gym.py counts them."""
    marker = f"{MARKER_VAR}={box.sandbox.root}".encode()
    out = {int(p) for p in box.sandbox.pids}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker in (d / "environ").read_bytes().split(b"\0"):
                    out.add(int(d.name))
            except OSError:
                continue
    return out


def cpu_over(box: ServedSandbox, seconds: float) -> float:
    """The sandbox's share of a core over ``seconds`` (its processes' CPU ticks, Xvfb included)."""
    before = {p: st[1] for p in sandbox_pids(box) if (st := proc_stat(p))}
    t = time.perf_counter()
    time.sleep(seconds)
    wall = time.perf_counter() - t
    used = sum(st[1] - before.get(p, 0) for p in sandbox_pids(box) if (st := proc_stat(p))) / TICK
    return used / wall * 100


def ready_sandbox(desktop: str, idle_s: float) -> None:
    """A ready sandbox: its memory, and its CPU while idle and while a task waits for the model
    (nothing moves on the screen, the task's recorder runs: ffmpeg's x11grab at 30 fps)."""
    from env.isolation import Isolation
    from env.osworld_client import OSWorldClient

    with SandboxPool(PoolSettings(1, desktop, Isolation(), max_starts=1)) as pool:  # bwrap, as the CLI
        box, _ = pool.take()
        time.sleep(2)  # the desktop settles
        pids = sandbox_pids(box)
        pss = sum(pss_kb(p)[0] for p in pids) / 1024
        idle = cpu_over(box, idle_s)
        client = OSWorldClient(box.url, token=box.token)
        client.start_recording()
        time.sleep(1)
        recording = cpu_over(box, idle_s)
        client.end_recording()
        client.close()
        pool.give_back(box)
    print(
        f"  {desktop:7} ready sandbox: PSS {pss:.0f} MB ({len(pids)} processes); CPU over {idle_s:.0f} s: idle "
        f"{idle:.1f}% of a core, waiting with the recorder on {recording:.1f}%"
    )


class Sampler:
    """Every 0.5 s, the processes of one node (its TMPDIR) by kind: the actor (the Ray worker process
    holding a SandboxWorker), its evaluator worker, its sandboxes (every other process under the actor),
    and the node's Ray processes; CPU ticks per process (the last seen: a process living under 0.5 s
    is missed) and, every 2 s, PSS and RSS per kind."""

    def __init__(self, tmp: Path, session: Path) -> None:
        self.session = str(session).encode()  # the Ray processes' command lines name it (RAY_TMPDIR)
        self.tag = f"TMPDIR={tmp}".encode()
        self.marker = f"{MARKER_VAR}={tmp}/".encode()  # a sandbox of this node's actors, wherever its parent
        self.ticks: dict[int, tuple[str, int, int]] = {}  # pid: (kind, first seen, last seen)
        self.memory: dict[str, list[tuple[int, int]]] = {}  # kind: [(PSS, RSS) per sample]
        self.count: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.first = True

    def _kinds(self) -> dict[int, str]:
        stat: dict[int, tuple[int, int]] = {}
        node: set[int] = set()
        marked: set[int] = set()
        drivers: set[int] = set()
        actors: set[int] = set()
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            pid = int(d.name)
            s = proc_stat(pid)
            if s is None:
                continue
            stat[pid] = s
            try:
                environ = (d / "environ").read_bytes().split(b"\0")
                cmdline = (d / "cmdline").read_bytes()
                if any(v.startswith(self.marker) for v in environ):
                    marked.add(pid)
                elif b"tasks.cli" in cmdline and b"--ray" in cmdline:
                    drivers.add(pid)  # its --out lies under the session's folder too
                elif self.tag in environ or self.session in cmdline:
                    node.add(pid)
                    if cmdline.startswith(b"ray::SandboxWorker"):
                        actors.add(pid)
            except OSError:
                continue
        kinds: dict[int, str] = {}
        for pid in stat:
            p, chain = pid, []
            while p > 1 and p not in actors and p in stat and len(chain) < 64:
                chain.append(p)
                p = stat[p][0]
            if p in actors:
                if pid == p:
                    kinds[pid] = "actor"
                else:
                    top = chain[-1]  # the actor's child this process descends from
                    try:
                        evaluator = str(EVAL_VENV) in Path(f"/proc/{top}/cmdline").read_bytes().decode(
                            errors="replace"
                        )
                    except OSError:
                        evaluator = False
                    kinds[pid] = "evaluator" if evaluator else "sandboxes"
            elif pid in marked:
                kinds[pid] = "sandboxes"
            elif pid in node:
                kinds[pid] = "ray"
            elif pid in drivers:
                kinds[pid] = "driver"
        self._stat = stat
        return kinds

    def _loop(self) -> None:
        k = 0
        while not self.stop.wait(0.5):
            kinds = self._kinds()
            for pid, kind in kinds.items():
                t = self._stat[pid][1]
                first = self.ticks[pid][1] if pid in self.ticks else (t if self.first else 0)
                self.ticks[pid] = (kind, first, t)
            self.first = False
            if k % 4 == 0:
                total: dict[str, list[int]] = {}
                for pid, kind in kinds.items():
                    pss, rss = pss_kb(pid)
                    acc = total.setdefault(kind, [0, 0])
                    acc[0] += pss
                    acc[1] += rss
                for kind, (pss, rss) in total.items():
                    self.memory.setdefault(kind, []).append((pss, rss))
                for kind in set(kinds.values()):
                    self.count[kind] = max(self.count.get(kind, 0), sum(v == kind for v in kinds.values()))
            k += 1

    def cpu_s(self, kind: str) -> float:
        return sum(last - first for k, first, last in self.ticks.values() if k == kind) / TICK

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def sizing(args: argparse.Namespace, workdir: Path, desktops: list[str], idle_s: float) -> None:
    for desktop in desktops:
        ready_sandbox(desktop, idle_s)
    for desktop in desktops:
        one = argparse.Namespace(**{**vars(args), "workers": 1, "desktop_env": desktop})
        with cluster(workdir / f"s-{desktop}", [1]) as c:
            with Sampler(c.tmp[0], workdir) as sampler:
                r = run_cli(one, workdir, f"sizing {desktop}", ["--ray", c.address], {})
            span = max(x.ended_at for x in r.schedule) - min(x.started_at for x in r.schedule)
        per_step = [t["agent_s"] / n for t, n in zip(r.timings, r.steps, strict=True) if n]
        print(
            f"  {desktop:7} one actor, {r.tasks} tasks (score {r.score:g}) in {span:.1f} s of play, {r.wall_s:.1f} s in all; "
            f"a task's reset+setup {statistics.median(t['reset_s'] + t['setup_s'] for t in r.timings):.1f} s, "
            f"evaluation {r.task_s('evaluate_s'):.1f} s, play per step {statistics.median(per_step):.2f} s "
            f"(the script's own waits included), {statistics.mean(r.steps):.1f} steps (medians, mean):"
        )
        for kind, what in (
            ("sandboxes", "sandboxes (the one playing, the one ready next; desktop, apps, server, recorder)"),
            ("actor", "actor (Ray worker process: runner, scripted agent, recording the task)"),
            ("evaluator", "evaluator worker (OSWorld's evaluators)"),
            ("ray", "the node's Ray processes (raylet, GCS, its agents, idle workers)"),
            ("driver", "the driver (the CLI: queue, live view, storing)"),
        ):
            mem = sampler.memory.get(kind) or [(0, 0)]
            pss = statistics.median(m[0] for m in mem) / 1024
            peak = max(m[0] for m in mem) / 1024
            rss = statistics.median(m[1] for m in mem) / 1024
            cpu = sampler.cpu_s(kind)
            print(
                f"    {what}: PSS median {pss:.0f} MB (peak {peak:.0f}), RSS {rss:.0f} MB, "
                f"{sampler.count.get(kind, 0)} processes at most; CPU {cpu / max(1, r.tasks):.2f} s per task, "
                f"{cpu / span * 100:.0f}% of a core while playing"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="suite", help="the task set (a split of `bench osworld run`)")
    ap.add_argument("--domain", default="os", help="its domain to run ('' for all)")
    ap.add_argument("--script-dir", default="suite", help="the scripts the tasks play (--script-dir)")
    ap.add_argument("--desktop-env", default="minimal")
    ap.add_argument("--workers", type=int, default=2, help="sandboxes at once, locally and on the cluster")
    ap.add_argument("--nodes", type=int, default=1, help="nodes of the cluster sharing the --workers units")
    ap.add_argument("--rounds", type=int, default=2, help="local and Ray runs, alternating which goes first")
    ap.add_argument("--per-node", type=int, nargs="*", default=[1, 2], help="sandboxes on one node (3.)")
    ap.add_argument("--paper-node", type=int, default=32, help="sandboxes per node in the extrapolation")
    ap.add_argument("--sizing", nargs="*", default=["minimal", "xfce"], help="desktops to size (4.)")
    ap.add_argument(
        "--idle-s", type=float, default=10.0, help="how long a ready sandbox's idle CPU is measured"
    )
    ap.add_argument("--skip-compare", action="store_true", help="no 1. and 2.")
    args = ap.parse_args()
    if not (EVAL_VENV / "bin" / "python").exists():
        sys.exit(f"no evaluator venv at {EVAL_VENV} (set KIMI_OSWORLD_EVAL_VENV, or run .ci/setup)")
    print(
        f"{args.split}{'/' + args.domain if args.domain else ''} with --script-dir {args.script_dir}, desktop "
        f"{args.desktop_env}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start"
    )
    # Short: Ray's socket paths live under it; 0o711: a sandbox's own user reaches its directory.
    workdir = Path(tempfile.mkdtemp(prefix="kbray-", dir="/tmp"))
    workdir.chmod(0o711)
    os.environ["RAY_TMPDIR"] = str(workdir)
    try:
        cost = None
        if not args.skip_compare:
            print(f"1. local workers against --ray, {args.workers} at once")
            ray_runs = compare(args, workdir)
            print("2. scheduling latency")
            cost = latency(ray_runs[:-1])
        if args.per_node:
            print("3. throughput per node")
            throughput(args, workdir, args.per_node, cost)
        if args.sizing:
            print("4. sizing")
            sizing(args, workdir, args.sizing, args.idle_s)
    finally:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


if __name__ == "__main__":
    main()
