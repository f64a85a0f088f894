"""What a Ray run ships between its driver and its actors (tasks/osworld/shipping.py), and the flags
`--ray` refuses before it joins a cluster. Fast: no cluster, no sandbox (tests/test_ray_osworld.py
runs the real thing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.osworld import suite
from tasks.osworld.results import RESULT_FILE, TaskRef, ref_dir
from tasks.osworld.setup import local_source
from tasks.osworld.shipping import (
    STAGING,
    ShippingError,
    clear_staging,
    collect,
    pack,
    store,
    unpack,
)
from tasks.osworld.task import DownloadParams, load_task

REPO = Path(__file__).resolve().parent.parent


def suite_ref(task_id: str) -> TaskRef:
    (path,) = suite.EXAMPLES.glob(f"*/{task_id}.json")
    return TaskRef(domain=path.parent.name, task_id=task_id, path=str(path))


def downloads(path: Path) -> list[tuple[str, Path | None]]:
    task = load_task(path)
    assert task.path is not None
    return [
        (f.url, local_source(f.url, task.path.parent))
        for step in task.steps()
        if isinstance(step.parameters, DownloadParams)
        for f in step.parameters.files
    ]


def test_a_task_travels_with_the_local_files_its_setup_reads(tmp_path: Path) -> None:
    """A suite task whose setup downloads two files beside it (one for the task, one the evaluator
    compares with): on the node, the same task reads the same bytes from the copies shipped with it."""
    ref = suite_ref("writer-append-paragraph")
    before = downloads(Path(ref.path))
    assert len(before) == 2 and all(p is not None and p.is_file() for _, p in before)
    bundle = pack(ref)
    assert sorted(bundle.files) == [f"shipped/0-{before[0][1].name}", f"shipped/1-{before[1][1].name}"]  # type: ignore[union-attr]
    node_ref = unpack(bundle, tmp_path / "node")
    assert (node_ref.task_id, node_ref.domain, node_ref.run_dir) == (ref.task_id, ref.domain, ref.run_dir)
    node_task = load_task(node_ref.path)
    assert node_task.domain == load_task(ref.path).domain == ref.domain
    after = downloads(Path(node_ref.path))
    assert [p.read_bytes() for _, p in after] == [p.read_bytes() for _, p in before]  # type: ignore[union-attr]
    assert all(str(tmp_path / "node") in str(p) for _, p in after)
    # Everything else in the task is as it was.
    original = json.loads(Path(ref.path).read_text())
    shipped = json.loads(bundle.task_json)
    assert shipped["evaluator"] == original["evaluator"] and shipped["instruction"] == original["instruction"]


def test_a_task_without_local_files_ships_alone_and_a_file_read_twice_ships_once() -> None:
    bundle = pack(suite_ref("os-make-folders"))
    assert bundle.files == {} and json.loads(bundle.task_json)["id"] == "os-make-folders"
    assert list(pack(suite_ref("os-rename-extension")).files) == ["shipped/0-blue.jpeg"]


def test_a_finished_task_is_stored_whole_in_its_directory_over_an_unfinished_attempt(tmp_path: Path) -> None:
    node = tmp_path / "node" / "os" / "t1"
    (node / "shots").mkdir(parents=True)
    (node / "traj.jsonl").write_text("{}\n")
    (node / "shots" / "a.png").write_bytes(b"\x89PNG")
    (node / RESULT_FILE).write_text("1.0\n")
    (node / "link").symlink_to("/etc/passwd")  # a link is never followed nor shipped
    files = collect(node)
    assert sorted(files) == [RESULT_FILE, "shots/a.png", "traj.jsonl"]

    root = tmp_path / "out"
    ref = TaskRef(domain="os", task_id="t1", path="unused", run_dir="os/t1/rollout-0")
    left = ref_dir(root, ref)
    left.mkdir(parents=True)
    (left / "stale.png").write_bytes(b"old")  # what a killed local attempt left
    dest = store(root, ref, files)
    assert dest == left
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == sorted(files)
    assert (dest / "shots" / "a.png").read_bytes() == b"\x89PNG"
    assert not any((root / STAGING).iterdir())


def test_what_a_node_sends_back_is_checked(tmp_path: Path) -> None:
    root = tmp_path / "out"
    ref = TaskRef(domain="os", task_id="t1", path="unused")
    for bad in ("../escape", "/abs", "a/../../b", ""):
        with pytest.raises(ShippingError):
            store(root, ref, {RESULT_FILE: b"1.0\n", bad: b"x"})
    with pytest.raises(ShippingError, match=r"no result\.txt"):
        store(root, ref, {"traj.jsonl": b""})
    with pytest.raises(ShippingError, match="more than"):
        store(root, ref, {RESULT_FILE: b"1.0\n", "big": b"x" * 100}, limit=50)
    assert not ref_dir(root, ref).exists()  # nothing half-written where the task is looked for
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "recording.mp4").write_bytes(b"x" * 100)
    with pytest.raises(ShippingError, match=r"largest: recording\.mp4"):
        collect(tmp_path / "big", limit=50)
    (root / STAGING / "killed").mkdir(parents=True)
    clear_staging(root)
    assert not (root / STAGING).exists()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tasks.cli", *args],
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["bench", "osworld", "run", "os-hello-file", "--ray", "--ray-models", "0"], "--ray-models must be at least 1"),
        (["bench", "osworld", "run", "os-hello-file", "--ray", "--script-dir", "suite", "--vm", "http://127.0.0.1:9"], "--vm"),
        (["rollout", "os-hello-file", "--group", "2", "--ray", "--script-dir", "suite", "--workers", "0"], "--workers must be at least 1"),
    ],
)  # fmt: skip
def test_flags_that_cannot_go_with_ray_are_refused_in_one_line(args: list[str], says: str) -> None:
    r = cli(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = r.stdout.strip().splitlines()
    assert line.startswith("kimi-agent: error: ") and says in line
