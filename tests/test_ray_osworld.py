"""`--ray`: OSWorld tasks on a Ray cluster's sandbox actors, with a real multi-node cluster on this
machine (ray.cluster_utils.Cluster: a head and two more nodes, each advertising ``kimi_sandbox: 1``),
real sandboxes and OSWorld's official evaluators, through the CLI as users run it.

One cluster serves the module. Each node has a TMPDIR of its own, so the sandboxes and the actors'
folders of a node can be told apart; the third node's evaluator venv is missing, so it must be
refused with one line. The fault test removes the second node, so it runs last, and ends by shutting
the cluster down and checking that nothing is left running.

Every Ray process here (the nodes, the drivers) runs with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: Ray
then uses 127.0.0.1 for every node and binds its ports to loopback, as tests must.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tasks.osworld import ray_schedule, suite
from tasks.osworld.results import RESULT_FILE, model_dir
from tasks.osworld.shipping import STAGING
from tests.sandbox_marks import marked

REPO = Path(__file__).resolve().parent.parent
EVAL_VENV = REPO / ".cache" / "osworld-eval"
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
FLAGS = ["--script-dir", "suite", "--domain", "os", "--desktop-env", "minimal"]
SUITE_ROOT = f"script-{suite.SOLUTIONS.name}"
FINISHED = re.compile(r"^\[\d+/\d+\] (\S+): ", re.MULTILINE)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("Xvfb") is None or not (EVAL_VENV / "bin" / "python").exists(),
        reason="needs Xvfb and the evaluator venv .ci/setup builds",
    ),
]


@dataclass
class Nodes:
    cluster: Any
    address: str
    parent: Path
    head: Any
    second: Any
    broken: Any
    tmp: dict[str, Path]  # each node's TMPDIR, by role

    def node_tag(self, node: Any) -> str:
        return f":{node.node_id[:8]}/"  # as Outcome.worker names a node


@pytest.fixture(scope="module")
def nodes() -> Iterator[Nodes]:
    parent = Path(tempfile.mkdtemp(prefix="kray-", dir="/tmp"))  # short: Ray's socket paths live here
    parent.chmod(0o711)  # a sandbox's own user must reach its directory
    tmp = {role: parent / role for role in ("head", "second", "broken")}
    for d in tmp.values():
        d.mkdir()
        d.chmod(0o711)
    saved = {k: os.environ.get(k) for k in [*LOOPBACK_ONLY, "KIMI_OSWORLD_EVAL_VENV", "RAY_TMPDIR"]}
    # Before Ray is imported in this process: it reads the variable once.
    os.environ.update(LOOPBACK_ONLY)
    os.environ["KIMI_OSWORLD_EVAL_VENV"] = str(EVAL_VENV)
    os.environ["RAY_TMPDIR"] = str(parent)  # the cluster's session files and address, here only
    Cluster = pytest.importorskip("ray.cluster_utils", reason="the ray extra is not installed").Cluster

    common = {"num_cpus": 1, "resources": {"kimi_sandbox": 1}}
    cluster = Cluster(
        initialize_head=True, head_node_args={**common, "env_vars": {"TMPDIR": str(tmp["head"])}}
    )
    try:
        second = cluster.add_node(**common, env_vars={"TMPDIR": str(tmp["second"])})
        broken = cluster.add_node(
            **common,
            env_vars={"TMPDIR": str(tmp["broken"]), "KIMI_OSWORLD_EVAL_VENV": str(parent / "no-venv")},
        )
        yield Nodes(cluster, cluster.address, parent, cluster.head_node, second, broken, tmp)
    finally:
        cluster.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(parent, ignore_errors=True)


def kimi(nodes: Nodes, out: Path, *args: str) -> list[str]:
    """The `bench osworld run` command line for the suite's os tasks on the cluster."""
    return [sys.executable, "-m", "tasks.cli", "bench", "osworld", "run", "suite", *FLAGS, "--ray", nodes.address,
            "--out", str(out), *args]  # fmt: skip


def env_for(nodes: Nodes) -> dict[str, str]:
    return {**os.environ, **LOOPBACK_ONLY, "XDG_CACHE_HOME": str(nodes.parent / "cache"), "COLUMNS": "200"}


def results(out: Path) -> dict[str, dict[str, Any]]:
    root = model_dir(out, SUITE_ROOT)
    return {
        p.parent.name: json.loads((p.parent / "outcome.json").read_text())
        for p in root.glob(f"os/*/{RESULT_FILE}")
    }


def finished_lines(stdout: str) -> list[str]:
    """The tasks a run says it finished (`[k/N] os/<task>: <score>`), in order."""
    return FINISHED.findall(stdout)


def with_env_under(name: str, parent: Path) -> list[int]:
    """Processes (not this one) whose environment variable ``name`` lies under ``parent``: the nodes'
    Ray processes, actors, evaluator workers (by TMPDIR), a cluster's processes (by RAY_TMPDIR)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                environ = (d / "environ").read_bytes()
            except OSError:
                continue
            values = [v for v in environ.split(b"\0") if v.startswith(f"{name}=".encode())]
            if any(
                v == f"{name}={parent}".encode() or v.startswith(f"{name}={parent}/".encode()) for v in values
            ):
                found.append(int(d.name))
    return found


def listening_addresses(pids: list[int]) -> set[str]:
    """The local addresses ``pids`` listen on (TCP, v4 and v6), read from /proc as ``IP:PORT``."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN
                raw, port = f[1].split(":")
                packed = bytes.fromhex(raw)
                # /proc writes each 32-bit word in host (little-endian) order
                words = b"".join(packed[i : i + 4][::-1] for i in range(0, len(packed), 4))
                ip = ipaddress.ip_address(words)
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                    ip = ip.ipv4_mapped
                found.add(f"{ip}:{int(port, 16)}")
    return found


def watch_monitor(lines: list[str], states: list[dict[str, Any]], screens: list[bytes]) -> None:
    """One look at the run monitor whose URL the run printed: its state, and the worker's screen
    when a new one was recorded."""
    import urllib.request

    url = next((x.split(" ", 1)[1].strip() for x in list(lines) if x.startswith("monitor: ")), None)
    if url is None:
        return
    with contextlib.suppress(OSError), urllib.request.urlopen(url + "state.json", timeout=5) as r:
        states.append(json.loads(r.read()))
        shot = states[-1]["workers"][0]["shot"] if states[-1]["workers"] else 0
        if shot > len(screens):
            with urllib.request.urlopen(url + "shot?w=0", timeout=5) as png:
                screens.append(png.read())


def test_ray_alone_starts_a_local_cluster_on_loopback_that_goes_with_the_run(tmp_path: Path) -> None:
    """`--ray` with no $RAY_ADDRESS: a one-node cluster with --workers sandbox units, started for
    the run on 127.0.0.1 only, and gone with it."""
    pytest.importorskip("ray", reason="the ray extra is not installed")
    parent = Path(tempfile.mkdtemp(prefix="kray-", dir="/tmp"))  # short: Ray's socket paths live here
    parent.chmod(0o711)  # a sandbox's own user must reach its directory
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", *LOOPBACK_ONLY)}
    env.update(RAY_TMPDIR=str(parent), TMPDIR=str(parent), KIMI_OSWORLD_EVAL_VENV=str(EVAL_VENV), COLUMNS="200",
               XDG_CACHE_HOME=str(tmp_path / "cache"))  # fmt: skip
    cmd = [sys.executable, "-m", "tasks.cli", "bench", "osworld", "run", "suite", *FLAGS, "--limit", "1",
           "--ray", "--workers", "1", "--out", str(out), "--monitor"]  # fmt: skip
    try:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
        reader.start()
        heard: set[str] = set()
        states: list[dict[str, Any]] = []  # the run monitor's (--monitor) view of the Ray worker
        screens: list[bytes] = []
        while proc.poll() is None:  # what the cluster's processes listen on while the run goes
            heard |= listening_addresses(with_env_under("RAY_TMPDIR", parent))
            watch_monitor(lines, states, screens)
            time.sleep(0.3)
        reader.join(timeout=10)
        stdout = "".join(lines)
        assert proc.returncode == 0, stdout[-4000:]
        # The monitor showed the actor's task as the driver polled it, and its recorded screen.
        tiles = [t for s in states for t in s["workers"] if t["task"]]
        assert tiles and all(t["name"].startswith("127.0.0.1:") for t in tiles), states[-3:]
        assert {t["phase"] for t in tiles} & {"agent", "evaluate"}, states[-3:]
        assert screens and all(s.startswith(b"\x89PNG") for s in screens), [t["shot"] for t in tiles]
        assert states[-1]["done"] <= 1
        assert "Ray: a local Ray cluster (1 sandbox); 1 kimi_sandbox on 1 node" in stdout, stdout
        assert heard and all(a.startswith("127.0.0.1:") for a in heard), heard
        (outcome,) = results(out).values()
        assert outcome["score"] == 1.0 and outcome["worker"].startswith("127.0.0.1:"), outcome
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and with_env_under("RAY_TMPDIR", parent):
            time.sleep(0.2)
        assert with_env_under("RAY_TMPDIR", parent) == []
        assert marked(parent) == [] and not list(parent.glob("kimi-*"))  # sandboxes, actor folders
    finally:
        for pid in with_env_under("RAY_TMPDIR", parent):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(parent, ignore_errors=True)


def test_the_os_tasks_spread_over_the_nodes_score_as_locally_and_a_node_without_the_stack_is_refused(
    nodes: Nodes, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    r = subprocess.run(
        kimi(nodes, out), cwd=REPO, env=env_for(nodes), capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    got = results(out)
    os_tasks = sorted(p.stem for p in (suite.EXAMPLES / "os").glob("*.json"))
    assert sorted(got) == os_tasks
    # Each reference solution scores 1.0, as it does with local workers (tests/test_osworld_suite.py).
    assert {t: o["score"] for t, o in got.items()} == dict.fromkeys(os_tasks, 1.0), r.stdout[-3000:]
    # The driver's schedule record of each stored task (one clock here: its times are in order).
    schedule = ray_schedule.read(model_dir(out, SUITE_ROOT))
    assert sorted(x.task_id for x in schedule) == os_tasks
    for x in schedule:
        assert x.dispatched_at <= x.started_at < x.ended_at <= x.received_at <= x.stored_at, x
        assert x.worker == got[x.task_id]["worker"] and x.dispatch_s > 0 and x.store_s > 0
    workers = {o["worker"] for o in got.values()}
    on = {
        role
        for role, node in (("head", nodes.head), ("second", nodes.second))
        if any(nodes.node_tag(node) in w for w in workers)
    }
    assert on == {"head", "second"}, workers
    assert not any(nodes.node_tag(nodes.broken) in w for w in workers)
    # The node without the evaluator venv: refused, in one line naming what it lacks.
    refused = [line for line in r.stdout.splitlines() if "refused:" in line]
    assert len(refused) == 1 and nodes.broken.node_id[:8] in refused[0], r.stdout
    assert "OSWorld evaluator environment" in refused[0] and "no-venv" in refused[0]
    # OSWorld's layout came back through Ray: the trajectory, its screenshots, the recording, our records.
    task = model_dir(out, SUITE_ROOT) / "os" / "os-hello-file"
    names = {p.name for p in task.iterdir()}
    assert {"traj.jsonl", "recording.mp4", "result.txt", "outcome.json", "run.json", "steps.jsonl"} <= names
    shots = [json.loads(x)["screenshot_file"] for x in (task / "traj.jsonl").read_text().splitlines()]
    assert shots and all((task / s).is_file() for s in shots)
    assert not (model_dir(out, SUITE_ROOT) / STAGING).exists() or not any(
        (model_dir(out, SUITE_ROOT) / STAGING).iterdir()
    )


def test_a_rollout_group_runs_on_the_cluster_in_ray_address_with_the_rewards_of_a_local_one(
    nodes: Nodes, tmp_path: Path
) -> None:
    out = tmp_path / "rollouts"
    cmd = [sys.executable, "-m", "tasks.cli", "rollout", "os-hello-file", "--group", "2", "--script-dir", "suite",
           "--desktop-env", "minimal", "--ray", "--out", str(out)]  # fmt: skip
    # `--ray` alone joins the cluster that $RAY_ADDRESS names.
    env = {**env_for(nodes), "RAY_ADDRESS": nodes.address}
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert f"Ray: the Ray cluster at {nodes.address};" in r.stdout, r.stdout
    root = model_dir(out, SUITE_ROOT)
    (group,) = [json.loads(x) for x in (root / "groups.jsonl").read_text().splitlines()]
    assert (group["rewards"], group["rollouts"], group["complete"]) == ([1.0, 1.0], [0, 1], True)
    for k in (0, 1):  # each rollout in its own run directory, as the driver's --out has it
        run = root / "os" / "os-hello-file" / f"rollout-{k}"
        assert (run / RESULT_FILE).read_text().strip() == "1.0" and (run / "run.json").is_file()


TYPE_IT = (  # the replies that solve os-hello-file (tests/test_rollout.py)
    "## Action:\nwrite the file\n## Code:\n```python\n"
    "pyautogui.typewrite(\"echo 'Hello, OSWorld!' > ~/hello.txt\")\npyautogui.press('enter')\n```"
)
DONE = "## Action:\ndone\n## Code:\n```python\ncomputer.terminate(status='success')\n```"


def test_a_model_rollout_calls_the_model_server_from_the_actor_and_keeps_the_sampled_ids(
    nodes: Nodes, tmp_path: Path, tiny_kimi: Path
) -> None:
    """--backend openai: the actor builds the policy from the run's flags and calls the server itself;
    the ids the server sampled come back in the run's records and reach rollouts.jsonl."""
    from fake_openai_server import FakeOpenAI, Reply

    server = FakeOpenAI(models=("kimi-vl",), roots={"kimi-vl": str(tiny_kimi)})
    server.replies.extend([Reply(TYPE_IT, token_ids=[5, 6, 7]), Reply(DONE, token_ids=[8, 9])])
    out = tmp_path / "rollouts"
    cmd = [sys.executable, "-m", "tasks.cli", "rollout", "os-hello-file", "--group", "1", "--backend", "openai",
           "--base-url", server.url, "--model", "kimi-vl", "--max-steps", "2", "--desktop-env", "minimal",
           "--workers", "1", "--ray", nodes.address, "--out", str(out)]  # fmt: skip
    try:
        r = subprocess.run(cmd, cwd=REPO, env=env_for(nodes), capture_output=True, text=True, timeout=300)
    finally:
        server.close()
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    (line,) = [json.loads(x) for x in (model_dir(out, "kimi-vl") / "rollouts.jsonl").read_text().splitlines()]
    assert (line["reward"], line["outcome"], line["policy"]) == (1.0, "scored", "model")
    assert [s["reply_ids"] for s in line["steps"]] == [[5, 6, 7], [8, 9]]
    assert len(server.requests) == 2 and all(r["return_token_ids"] is True for r in server.requests)


def actor_processes(parent: Path, cls: str) -> list[int]:
    """Processes of ``parent``'s nodes that are Ray actors of class ``cls`` (Ray titles an actor's
    process ``ray::Class`` or ``ray::Class.method``)."""
    found = []
    for pid in with_env_under("TMPDIR", parent):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(f"ray::{cls}".encode()):
            found.append(pid)
    return found


def test_the_transformers_backend_runs_in_a_gpu_model_actor_the_sandbox_actors_share(
    nodes: Nodes, tmp_path: Path, tiny_kimi: Path
) -> None:
    """--backend transformers on Ray: one model actor, placed by Ray on the node that declares a GPU
    (the tiny model runs there on CPU), serves both sandbox actors of a group of two; the rollouts
    record the ids it sampled, and bad --ray-gpus are one line each, before any task runs."""
    from agent.backends.base import GenerationParams
    from agent.backends.transformers import TransformersBackend
    from agent.export.records import Options
    from agent.export.trajectories import AgentRun
    from agent.models.kimi_vl.tokenizer import load_tokenizer

    gpu_tmp = nodes.parent / "gpu"
    gpu_tmp.mkdir()
    gpu = nodes.cluster.add_node(num_cpus=1, num_gpus=1, env_vars={"TMPDIR": str(gpu_tmp)})
    out = tmp_path / "rollouts"
    cmd = [sys.executable, "-m", "tasks.cli", "rollout", "os-hello-file", "--group", "2", "--backend", "transformers",
           "--model", str(tiny_kimi), "--offline", "--max-steps", "1", "--max-new-tokens", "12",
           "--in-token-limit", "256", "--temperature", "0", "--no-kv-reuse", "--desktop-env", "minimal",
           "--workers", "2", "--ray", nodes.address, "--out", str(out)]  # fmt: skip
    try:
        for flags, rc, says in [
            (["--ray-gpus", "-1"], 2, "--ray-gpus must be 0 or more, not -1"),
            (["--ray-gpus", "2"], 2, "no room for 1 model replica of 2 GPUs (--ray-models 1, --ray-gpus 2): "
                                     "its nodes' GPUs: 1"),
        ]:  # fmt: skip
            r = subprocess.run([*cmd, *flags], cwd=REPO, env=env_for(nodes), capture_output=True, text=True,
                               timeout=60)  # fmt: skip
            assert r.returncode == rc and r.stdout.count("\n") == 1 and says in r.stdout, (
                r.stdout + r.stderr[-3000:]
            )
            assert not out.exists()  # before any task
        r = subprocess.run(cmd, cwd=REPO, env=env_for(nodes), capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
        # Placed by the GPU it asked for: on the node that has one, which hosts no sandbox.
        (placed,) = re.findall(r"model actors: (\S+)", r.stdout)
        assert placed.endswith("/model-1") and nodes.node_tag(gpu) in placed + "/", r.stdout
        root = model_dir(out, str(tiny_kimi))
        rollouts = [json.loads(x) for x in (root / "rollouts.jsonl").read_text().splitlines()]
        assert [x["rollout"] for x in rollouts] == [0, 1]
        sandboxes = {nodes.node_tag(n) for n in (nodes.head, nodes.second)}
        workers = set()
        model = TransformersBackend.load(tiny_kimi, device="cpu", in_token_limit=256, kv_reuse=False)
        tok = load_tokenizer(tiny_kimi)
        for x in rollouts:
            assert (x["policy"], x["outcome"], x["in_token_limit"]) == ("model", "scored", 256), x
            run = root / x["run_dir"]
            outcome = json.loads((run / "outcome.json").read_text())
            workers.add(outcome["worker"])
            assert any(tag in outcome["worker"] for tag in sandboxes), outcome
            settings = json.loads((run / "run.json").read_text())["model"]
            assert [settings[k] for k in ("backend", "device", "ray_models")] == ["transformers", "cpu", 1]
            # What the model actor sampled is what the model gives, here, for the prompt the run
            # recorded (greedy, no KV reuse: the same arithmetic).
            (step,) = x["steps"]
            items = AgentRun(run).samples(Options(keep_failed=True), model.count_text_tokens)
            # Generated while the sample's images are open (the iterator closes them after).
            (again,) = [model.generate(i.prompt, GenerationParams(max_new_tokens=12)) for i in items]  # type: ignore[union-attr]
            assert step["reply_ids_source"] == "sampled" and step["reply_ids"] == again.token_ids, step
            assert step["prompt_ids"] == again.prompt_ids
            stopped = step["reply_ids"][-1] == tok.convert_tokens_to_ids("<|im_end|>")
            reply = step["reply_ids"][:-1] if stopped else step["reply_ids"]
            assert tok.decode(reply, skip_special_tokens=True) == step["reply"]
        assert len(workers) == 2, workers  # both sandbox actors played, on the one model
        # Nothing left running: the run ended its model actor (its node is still up) and sandboxes.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            actor_processes(gpu_tmp, "ModelServer") or marked(nodes.parent)
        ):
            time.sleep(0.2)
        assert actor_processes(gpu_tmp, "ModelServer") == [] and marked(nodes.parent) == []
    finally:
        nodes.cluster.remove_node(gpu)


def test_a_vector_env_refuses_the_node_without_the_stack_in_one_line(nodes: Nodes) -> None:
    """OSWorldVectorEnv(ray=): one environment per unit, 3 on 3 nodes; the third node lacks the
    evaluator venv, so its environment has nowhere else to go (tests/test_gym_ray.py plays episodes)."""
    from tasks.osworld.gym_ray import RayEnvError
    from tasks.osworld.gym_vector import OSWorldVectorEnv

    before = {p for d in nodes.tmp.values() for p in d.glob("kimi-ray-*")}
    with pytest.raises(RayEnvError) as e:
        OSWorldVectorEnv(3, desktop="minimal", pool_size=0, ray=nodes.address)
    line = str(e.value)
    assert "\n" not in line and line.startswith("the cluster has room for 2 of 3 environments"), line
    assert (
        f"{nodes.broken.node_id[:8]}) refused: the OSWorld evaluator environment" in line
        and "no-venv" in line
    )
    import ray

    assert not ray.is_initialized()  # it left the cluster, having ended the two actors it started
    assert {p for d in nodes.tmp.values() for p in d.glob("kimi-ray-*")} == before


def test_a_lost_node_and_a_killed_driver_lose_and_duplicate_nothing_and_leave_nothing_running(
    nodes: Nodes, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    cmd = kimi(nodes, out, "--limit", "4")
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env_for(nodes), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        # A task in flight on the second node: its directory in that node's actor folder.
        deadline = time.monotonic() + 120
        in_flight: list[Path] = []
        while time.monotonic() < deadline and not in_flight:
            in_flight = list(nodes.tmp["second"].glob("kimi-ray-*/run/os/*"))
            time.sleep(0.1)
        assert in_flight, "".join(lines)
        lost_task = in_flight[0].name
        nodes.cluster.remove_node(nodes.second)
        # The driver puts it back in the queue; once one more task is recorded, it is killed.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(
            lost_task in x and "goes back in the queue" in x for x in lines
        ):
            time.sleep(0.1)
        lost_at = len(lines)
        while time.monotonic() < deadline and not finished_lines("".join(lines[lost_at:])):
            time.sleep(0.1)
        assert finished_lines("".join(lines[lost_at:])), "".join(lines)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
        proc.wait()
    reader.join(timeout=5)
    first = "".join(lines)
    lost = [x for x in first.splitlines() if "goes back in the queue" in x]
    assert len(lost) == 1 and f"os/{lost_task}" in lost[0] and nodes.node_tag(nodes.second) in lost[0], first
    done_first = finished_lines(first)

    r = subprocess.run(cmd, cwd=REPO, env=env_for(nodes), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    done_second = finished_lines(r.stdout)
    assert f"4 tasks, {len(done_first)} already finished, {4 - len(done_first)} to run" in r.stdout, r.stdout
    # Every task recorded exactly once: by the killed run or by the resumed one, never both.
    assert not set(done_first) & set(done_second)
    got = results(out)
    assert len(got) == 4 and sorted(f"os/{t}" for t in got) == sorted(done_first + done_second)
    assert all(o["score"] == 1.0 for o in got.values()), got
    assert nodes.node_tag(nodes.head) in got[lost_task]["worker"]  # rerun on the node that was left
    assert sorted(p.name for p in (model_dir(out, SUITE_ROOT) / "os").iterdir()) == sorted(got)

    # Nothing left running: no sandbox on any node (the removed one's died with their actor, the
    # killed driver's actors were ended by Ray), no actor folder on the head (the next actor there
    # swept the dead ones', their sandboxes' directories in them), and after the cluster's shutdown
    # no process of any node.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (marked(nodes.parent) or list(nodes.tmp["head"].glob("kimi-*"))):
        time.sleep(0.2)
    assert marked(nodes.parent) == []
    assert list(nodes.tmp["head"].glob("kimi-*")) == []
    nodes.cluster.shutdown()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and with_env_under("TMPDIR", nodes.parent):
        time.sleep(0.2)
    assert with_env_under("TMPDIR", nodes.parent) == []
