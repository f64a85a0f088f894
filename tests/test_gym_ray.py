"""``OSWorldVectorEnv(n, ray=ADDRESS)``: the vector's environments as actors on a real multi-node
Ray cluster on this machine (ray.cluster_utils.Cluster on loopback), with real sandboxes and OSWorld's
official evaluators: the same checks as the local vector's test (tests/test_gym_env.py), each
environment on a node of its own, a task file from this machine shipped to its node, a lost actor
named, and nothing left running after ``close``.

A small cluster of its own (tests/test_ray_osworld.py's fault test removes one of its nodes): a head
and one more node, one ``kimi_sandbox`` each. Every Ray process runs with
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: 127.0.0.1 for every node, ports bound to loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.osworld.suite import EXAMPLES, SOLUTIONS
from tests.sandbox_marks import marked

REPO = Path(__file__).resolve().parent.parent
EVAL_VENV = REPO / ".cache" / "osworld-eval"
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
TASK = "os-hello-file"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("Xvfb") is None or not (EVAL_VENV / "bin" / "python").exists(),
        reason="needs Xvfb and the evaluator venv .ci/setup builds",
    ),
]


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, dict[str, Path]]]:
    """The cluster and each node's TMPDIR (where its actors' folders and sandboxes go), by node id."""
    parent = Path(tempfile.mkdtemp(prefix="kvec-", dir="/tmp"))  # short: Ray's socket paths live here
    parent.chmod(0o711)  # a sandbox's own user must reach its directory
    tmp = {role: parent / role for role in ("head", "second")}
    for d in tmp.values():
        d.mkdir()
        d.chmod(0o711)
    for k, v in LOOPBACK_ONLY.items():  # before Ray is imported here: it reads the variable once
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("KIMI_OSWORLD_EVAL_VENV", str(EVAL_VENV))
    monkeypatch.setenv("RAY_TMPDIR", str(parent))
    monkeypatch.setenv("XDG_CACHE_HOME", str(parent / "cache"))
    cluster_utils = pytest.importorskip("ray.cluster_utils", reason="the ray extra is not installed")
    one = {"num_cpus": 1, "resources": {"kimi_sandbox": 1}}
    c = cluster_utils.Cluster(
        initialize_head=True, head_node_args={**one, "env_vars": {"TMPDIR": str(tmp["head"])}}
    )
    try:
        second = c.add_node(**one, env_vars={"TMPDIR": str(tmp["second"])})
        yield c, {c.head_node.node_id: tmp["head"], second.node_id: tmp["second"]}
    finally:
        c.shutdown()
        shutil.rmtree(parent, ignore_errors=True)


def test_a_vector_on_two_nodes_scores_autoresets_ships_task_files_and_leaves_nothing(
    cluster: tuple[Any, dict[str, Path]], tmp_path: Path
) -> None:
    import ray

    from tasks.osworld.gym_ray import EnvLost
    from tasks.osworld.gym_vector import OSWorldVectorEnv

    c, tmp = cluster
    # A task file on this machine only: the suite's task under another id, the file its setup
    # downloads (what the evaluator compares against) beside it, as OSWorld's tasks name theirs.
    domain = tmp_path / "mine"
    (domain / "files").mkdir(parents=True)
    shutil.copy(EXAMPLES.parent / "files" / "hello_expected.txt", domain / "files")
    task = json.loads((EXAMPLES / "os" / f"{TASK}.json").read_text())
    task["id"] = "hello-from-here"
    (download,) = [step for step in task["config"] if step["type"] == "download"]
    download["parameters"]["files"][0]["url"] = "files/hello_expected.txt"
    task_file = domain / "hello-from-here.json"
    task_file.write_text(json.dumps(task))
    solution = json.loads((SOLUTIONS / f"{TASK}.json").read_text())

    envs = OSWorldVectorEnv(2, desktop="minimal", max_steps=3, task=str(task_file), ray=c.address)
    try:
        placed = list(envs.envs)
        assert {e.node_id for e in placed} == set(tmp)  # one environment on each node

        _, infos = envs.reset()  # the vector's task=: the file, shipped to both nodes
        assert list(infos["task_id"]) == ["hello-from-here"] * 2 and all(infos["setup_ok"]), infos
        obs, infos = envs.reset(options={"task": [str(task_file), TASK]})
        assert obs["screenshot"].shape == (2, 1080, 1920, 3) and obs["screenshot"].dtype.name == "uint8"
        assert list(infos["task_id"]) == ["hello-from-here", TASK] and list(infos["domain"]) == ["mine", "os"]
        assert all(infos["setup_ok"]), infos["setup_errors"]
        # Sandboxes on both nodes: each node's own, under its TMPDIR.
        assert all(marked(d) for d in tmp.values())
        # The local vector's checks: the solution scores 1 (against the shipped file), DONE without it 0;
        # then next-step autoreset.
        _, rewards, terminated, _, infos = envs.step([solution[0], "WAIT"])
        assert list(rewards) == [0.0, 0.0] and not terminated.any(), infos
        _, rewards, terminated, _, infos = envs.step(["DONE", "DONE"])
        assert list(rewards) == [1.0, 0.0] and list(terminated) == [True, True], infos
        obs, rewards, terminated, truncated, infos = envs.step(["WAIT", "WAIT"])
        assert list(rewards) == [0.0, 0.0] and not terminated.any() and not truncated.any()
        assert list(infos["task_id"]) == ["hello-from-here", TASK] and list(obs["step"]) == [0, 0]
        assert all(infos["setup_ok"]), infos["setup_errors"]  # the shipped file, replayed on its node

        # An actor lost mid-episode: the call that finds it names the environment and its node.
        lost = placed[1]
        ray.kill(lost.actor, no_restart=True)
        with pytest.raises(EnvLost, match=rf"environment 1 on node .*{lost.node_id[:8]}.* was lost"):
            envs.step(["WAIT", "WAIT"])
    finally:
        envs.close()
    # Nothing left running on any node: no sandbox, no evaluator worker; no folder of a closed actor
    # (the killed one's stays until the next actor on its node sweeps it).
    parent = next(iter(tmp.values())).parent
    closed = tmp[placed[0].node_id]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        marked(parent)
        or evaluators(parent)
        or _actor_folders(closed)
        or any(Path(f"/proc/{e.pid}").exists() for e in placed)
    ):
        time.sleep(0.2)
    assert marked(parent) == [] and evaluators(parent) == [] and _actor_folders(closed) == []
    assert not any(Path(f"/proc/{e.pid}").exists() for e in placed)  # the actors' processes ended
    assert not ray.is_initialized()  # the vector left the cluster it joined
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"


def _actor_folders(tmp: Path) -> list[Path]:
    return list(tmp.glob("kimi-ray-*"))


def evaluators(parent: Path) -> list[int]:
    """The evaluator workers of the cluster's nodes (their TMPDIR lies under ``parent``)."""
    from tasks.osworld.evaluation import WORKER_DIR

    script = str(WORKER_DIR / "worker.py").encode()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmdline, environ = (d / "cmdline").read_bytes(), (d / "environ").read_bytes()
        except OSError:
            continue
        if script in cmdline.split(b"\0") and any(
            v.startswith(f"TMPDIR={parent}/".encode()) for v in environ.split(b"\0")
        ):
            found.append(int(d.name))
    return found
