"""Tasks that listen on fixed ports (Chrome's DevTools) hold a host-wide lock per port while they run
on sandboxes that share the host's network."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_osworld_tasks import CORPUS  # the corpus every OSWorld test reads

from tasks.osworld.ports import fixed_ports, hold_ports, lock_dir, try_hold
from tasks.osworld.results import TaskRef
from tasks.osworld.runner import TaskQueue
from tasks.osworld.task import load_task

CHROME_TASK = "chrome/93eabf48-6a27-4cb6-b963-7d5fe1e0d3a9.json"  # google-chrome on 1337, socat on 9222
OS_TASK = "os/a4d98375-215b-4a4d-aee9-3d4370fccc41.json"  # gsettings and a click: no port


def _task(rel: str):  # type: ignore[no-untyped-def]
    path = CORPUS / "examples" / rel
    if not path.is_file():
        pytest.skip("the OSWorld task corpus is not here")
    return load_task(path)


def test_chrome_task_ports_and_a_task_without_any() -> None:
    assert fixed_ports(_task(CHROME_TASK)) == [1337, 9222]
    assert fixed_ports(_task(OS_TASK)) == []


def test_a_held_port_is_refused_to_another_process_until_released(tmp_path: Path) -> None:
    probe = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(7)\n"
    )

    def other_process_can_take(port: int) -> bool:
        r = subprocess.run([sys.executable, "-c", probe, str(tmp_path / f"{port}.lock")], timeout=30)
        return r.returncode == 0

    with hold_ports([9222, 1337], tmp_path):
        assert not other_process_can_take(1337)
        assert not other_process_can_take(9222)
        assert other_process_can_take(8080)
    assert other_process_can_take(1337) and other_process_can_take(9222)


def test_a_second_holder_waits_for_the_first(tmp_path: Path) -> None:
    order: list[str] = []
    first_in = threading.Event()

    def second() -> None:
        first_in.wait(10)
        with hold_ports([1337], tmp_path):
            order.append("second")

    t = threading.Thread(target=second)
    t.start()
    with hold_ports([1337], tmp_path):
        first_in.set()
        time.sleep(0.3)  # the second is blocked on the lock meanwhile
        order.append("first")
    t.join(10)
    assert order == ["first", "second"]


def test_lock_dir_is_private_and_a_link_in_its_place_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    d = lock_dir()
    assert d.parent == tmp_path and (d.stat().st_mode & 0o777) == 0o700
    d.rmdir()
    (tmp_path / "elsewhere").mkdir()
    d.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RuntimeError, match="not a directory of this user's"):
        lock_dir()
    # A lock file replaced by a link is not followed either.
    os.symlink("/etc/passwd", tmp_path / "elsewhere" / "1337.lock")
    with pytest.raises(OSError), hold_ports([1337], tmp_path / "elsewhere"):
        pass


def test_try_hold_takes_all_ports_or_none(tmp_path: Path) -> None:
    with hold_ports([9222], tmp_path):
        assert try_hold([1337, 9222], tmp_path) is None
        held = try_hold([1337], tmp_path)  # 1337 was not left held by the refused try
        assert held is not None
        assert try_hold([1337], tmp_path) is None
        held.close()
    both = try_hold([1337, 9222], tmp_path)
    assert both is not None
    both.close()
    with try_hold([], tmp_path) as nothing:  # no ports: nothing to wait for
        assert nothing is not None


def test_the_queue_sets_a_held_up_task_aside_and_takes_it_first_once_free(tmp_path: Path) -> None:
    ports = {"chrome-1": [1337, 9222], "chrome-2": [1337, 9222], "os-1": [], "os-2": []}
    queue = TaskQueue([TaskRef(domain="d", task_id=t, path=t) for t in ports])

    def claim(ref: TaskRef):  # type: ignore[no-untyped-def]
        return try_hold(ports[ref.task_id], tmp_path)

    first = queue.take(claim)  # worker A
    assert first is not None and first[0].task_id == "chrome-1" and first[1] is not None
    second = queue.take(claim)  # worker B: chrome-2's ports are A's, so it is set aside
    assert second is not None and second[0].task_id == "os-1"
    first[1].close()  # A finished chrome-1
    third = queue.take(claim)
    assert third is not None and third[0].task_id == "chrome-2" and third[1] is not None
    third[1].close()
    with hold_ports([1337], tmp_path):  # someone else's Chrome task (another run on this machine)
        fourth = queue.take(claim)
        assert fourth is not None and fourth[0].task_id == "os-2"
    assert queue.take(claim) is None


def test_when_every_task_left_is_held_up_the_first_comes_unclaimed(tmp_path: Path) -> None:
    queue = TaskQueue([TaskRef(domain="d", task_id=t, path=t) for t in ("a", "b")])
    with hold_ports([1337], tmp_path):
        got = queue.take(lambda ref: try_hold([1337], tmp_path))
        assert got is not None and got[0].task_id == "a" and got[1] is None  # its worker waits
        got = queue.take(lambda ref: try_hold([1337], tmp_path))
        assert got is not None and got[0].task_id == "b" and got[1] is None
    assert queue.take(lambda ref: try_hold([1337], tmp_path)) is None
