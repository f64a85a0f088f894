"""The sandbox's walls, tried the way a hostile session would: real bubblewrap, real xterm, real
shell commands typed through the keyboard, and the host checked afterwards."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from env.actions import Action, Click, Done, KeyPress, Point, TypeText, Wait
from env.isolation import Isolation, make_cgroup, python_runtime

pytestmark = [
    pytest.mark.x11,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
]
ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-kimi-test-" + secrets.token_hex(8)


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Sandboxes made here run as a user of their own (as root): pytest's own tmp_path sits in a
    0700 directory that user could not enter."""
    d = Path(tempfile.mkdtemp(prefix="kimi-test-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory the sandbox can see (not under /tmp, which is private anyway): a file to delete
    and a host HOME with a secret in it. Removed afterwards."""
    d = _visible_dir() / f".kimi-canary-{secrets.token_hex(4)}"
    (d / "home").mkdir(parents=True)
    (d / "victim.txt").write_text("still here\n")
    (d / "home" / "secret.txt").write_text(SECRET + "\n")
    for p in (d, d / "home"):
        p.chmod(0o755)
    monkeypatch.setenv("HOME", str(d / "home"))
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _visible_dir() -> Path:
    """A writable place a sandbox sees (read-only): not under /tmp, a home or /run, which it hides
    or replaces. The checkout, unless it sits in one of those (a CI clone under /tmp, say)."""
    hidden = ("/tmp", "/home", "/root", "/run", "/var/tmp", "/dev/shm")
    for d in (ROOT, Path("/srv"), Path("/opt"), Path("/var/lib")):
        if not str(d.resolve()).startswith(hidden) and os.access(d, os.W_OK):
            return d
    pytest.skip("no writable directory a sandbox can see")


def _line(command: str) -> list[Action]:
    return [TypeText(text=command), KeyPress(key="enter")]


def hostile_steps(canary: Path) -> list[list[Action]]:
    """What a hijacked model might type into a terminal, one command a step."""
    secret_file = canary / "home" / "secret.txt"
    commands = [
        f"rm -f {canary}/victim.txt; echo rm=$? > ~/rm.txt",
        "echo pwned > /etc/kimi-pwned; echo etc=$? > ~/etc.txt",
        f"cat {secret_file} > ~/leak.txt; ls -A /root /home > ~/homes.txt",
        "cat /proc/[0-9]*/environ | tr '\\0' '\\n' | grep -c sk-kimi-test > ~/env.txt",
        "head -c 64M /dev/zero > /tmp/fill; ls -l /tmp/fill > ~/fill.txt",
        "echo survived > ~/finished.txt",
        "b(){ b|b& };b",  # a fork bomb, left running: closing the sandbox must end it
    ]
    steps: list[list[Action]] = [[Click(point=Point.norm(0.1, 0.15))]]
    steps += [_line(c) for c in commands]
    return [*steps, [Wait(seconds=1)], [Done(status="success")]]


def _check_host_untouched(canary: Path) -> None:
    assert (canary / "victim.txt").read_text() == "still here\n"
    assert not Path("/etc/kimi-pwned").exists()
    assert not Path("/tmp/fill").exists()


def _check_inside(home: Path, root: Path, *, file_cap_mb: int | None) -> None:
    def read(name: str) -> str:
        deadline = time.monotonic() + 5
        while not (home / name).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return (home / name).read_text()

    assert read("finished.txt") == "survived\n"  # every command ran: the session was live
    assert read("rm.txt") != "rm=0\n"  # read-only
    assert read("etc.txt") != "etc=0\n"
    assert SECRET not in read("leak.txt")
    # No other home; /root holds at most our python, bound back read-only for the programs we run.
    runtime = {p.relative_to("/root").parts[0] for p in python_runtime() if p.is_relative_to("/root")}
    homes = read("homes.txt").split()
    assert homes[:3] == ["/home:", "user", "/root:"] and set(homes[3:]) == runtime, homes
    assert read("env.txt").strip() == "0"  # the key is in no process of the sandbox
    fill = root / "tmp" / "fill"  # /tmp is the sandbox's own, in its directory
    assert fill.exists()
    if file_cap_mb is not None:
        assert fill.stat().st_size == file_cap_mb * 2**20  # stopped by the file-size limit


def _sandbox_leftovers(parent: Path) -> list[str]:
    """Processes of sandboxes made under ``parent``: they carry its path in their environment."""
    marker = f"KIMI_SANDBOX_ID={parent}/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = (entry / "environ").read_bytes()
            except OSError:
                continue
            if any(v.startswith(marker) for v in env.split(b"\0")):
                found.append(entry.name)
    return found


def _wait_no_leftovers(parent: Path, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := _sandbox_leftovers(parent)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_a_hostile_session_through_the_library(canary: Path, tmp_path: Path) -> None:
    from agent.loop import run
    from agent.policy import ScriptedPolicy
    from env.sandbox import Sandbox

    iso = Isolation(max_procs=256, max_file_mb=16)
    steps = hostile_steps(canary)
    box = Sandbox(
        1024, 768, apps=[["xterm", "-geometry", "80x24+0+0"]], desktop="minimal", isolation=iso,
        keep=True, parent_dir=tmp_path,
    )  # fmt: skip
    try:
        traj = run("be hostile", ScriptedPolicy(steps), box, max_steps=len(steps))
        assert traj.status == "success"  # the runner outlived the fork bomb
        assert 128 < box.processes() <= 256  # which ran into the sandbox's process limit
        _check_inside(box.home, box.root, file_cap_mb=16)
        assert box.screenshot().width == 1024
    finally:
        box.close()
    _check_host_untouched(canary)
    assert _wait_no_leftovers(tmp_path) == []


def test_a_hostile_session_through_the_cli(canary: Path, tmp_path: Path) -> None:
    script = tmp_path / "hostile.json"
    script.write_text(json.dumps([[a.model_dump() for a in s] for s in hostile_steps(canary)]))
    out = tmp_path / "run"
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # where the CLI makes its sandbox
    r = subprocess.run(
        [sys.executable, "-m", "tasks.cli", "be hostile", "--script", str(script), "--out", str(out),
         "--size", "1024x768", "--app", "xterm -geometry 80x24+0+0", "--keep"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    [kept] = [p for p in tmp_path.iterdir() if p.name.startswith("kimi-sandbox-")]
    assert f"kept in {kept}" in " ".join(r.stdout.split())
    _check_inside(kept / "home", kept, file_cap_mb=None)
    _check_host_untouched(canary)
    assert _wait_no_leftovers(tmp_path) == []
    assert SECRET not in (out / "run.json").read_text()


def test_secrets_in_the_parent_environment_stay_out(canary: Path, tmp_path: Path) -> None:
    from env.reaper import marked_pids
    from env.sandbox import Sandbox

    with Sandbox(640, 480, apps=[["xterm"]], desktop="minimal", parent_dir=tmp_path) as box:
        inside = box.run(["sh", "-c", "cat /proc/[0-9]*/environ | tr '\\0' '\\n'"]).stdout.decode()
        assert "OPENAI_API_KEY" not in inside and SECRET not in inside and "KIMI_SANDBOX_ID" in inside
        pids = marked_pids(box.marker.encode())
        assert len(pids) >= 3  # the sandbox's processes, seen from the host
        for pid in pids:
            assert SECRET.encode() not in Path(f"/proc/{pid}/environ").read_bytes()


def _xdpyinfo(display: str, xauthority: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["xdpyinfo", "-display", display]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    env = {"PATH": "/usr/bin:/bin", "XAUTHORITY": xauthority}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10)


@pytest.mark.skipif(shutil.which("xdpyinfo") is None, reason="xdpyinfo is not installed (x11-utils)")
def test_the_display_refuses_clients_without_the_cookie(tmp_path: Path) -> None:
    from env.sandbox import Sandbox

    with Sandbox(640, 480, desktop=None, parent_dir=tmp_path) as box:
        assert _xdpyinfo(box.display, str(box.xauthority)).returncode == 0
        refused = _xdpyinfo(box.display, "/nonexistent")
        assert refused.returncode != 0 and "unable to open display" in refused.stderr
        if os.geteuid() == 0:  # another local user, as the red-team pass tried it
            assert _xdpyinfo(box.display, "/nonexistent", user=65534).returncode != 0


def test_no_network_means_no_network(tmp_path: Path) -> None:
    from env.sandbox import Sandbox

    probe = "import socket; s = socket.socket(); s.settimeout(2); s.connect(('{}', {})); print('connected')"
    server = subprocess.Popen(
        [sys.executable, "-c", "import socket,time; s=socket.socket(); s.bind(('0.0.0.0', 0)); s.listen();"
         " print(s.getsockname()[1], flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        port = int(server.stdout.readline())  # type: ignore[union-attr]
        host = _host_address()
        for network, expected in ((True, b"connected\n"), (False, b"")):
            iso = Isolation(network=network)
            with Sandbox(320, 240, desktop=None, isolation=iso, parent_dir=tmp_path) as box:
                r = box.run(["python3", "-c", probe.format(host, port)])
                assert r.stdout == expected, (network, r.stderr[-300:])
    finally:
        server.kill()
        server.wait()


def _host_address() -> str:
    """An address of this host other than loopback (a sandbox has its own loopback without the
    network, and the host's with it): the host's route towards the outside."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
        return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        s.close()


@pytest.mark.may_skip_in_ci
def test_memory_limit_kills_the_hog_not_the_runner(tmp_path: Path) -> None:
    from env.sandbox import Sandbox

    cg, why = make_cgroup(f"kimi-probe-{secrets.token_hex(3)}", Isolation())
    if cg is None:
        pytest.skip(f"no writable cgroup here: {why}")
    cg.remove()
    with Sandbox(320, 240, desktop=None, isolation=Isolation(memory_mb=128), parent_dir=tmp_path) as box:
        assert box.warnings == []
        hog = box.run(["python3", "-c", "b = b'x' * (512 * 2**20); print('ok')"])
        assert hog.returncode != 0 and hog.stdout == b""
        assert box.run(["echo", "alive"]).stdout == b"alive\n"


def test_sigkill_at_any_moment_of_start_leaves_nothing(tmp_path: Path) -> None:
    """The parent is killed at moments spread over the sandbox's start: no directory, cgroup or
    process survives (the reaper knows the directory before it exists)."""
    script = textwrap.dedent(
        f"""
        import sys
import tempfile
        from env.sandbox import Sandbox
        print("go", flush=True)
        Sandbox(320, 240, apps=[["xterm"]], desktop="minimal", parent_dir=__import__("pathlib").Path({str(tmp_path)!r}))
        print("up", flush=True)
        import time; time.sleep(60)
        """
    )
    before = _kimi_cgroups()
    delays = [0.0, 0.001, 0.003, 0.006, 0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7]
    for delay in delays:
        child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE)
        child.stdout.readline()  # type: ignore[union-attr]
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 15
    while any(tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert _wait_no_leftovers(tmp_path) == []
    # Another test run's sandboxes may come and go meanwhile: ours must be gone within the wait.
    deadline = time.monotonic() + 15
    while (left := _kimi_cgroups() - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == set()


def _kimi_cgroups() -> set[Path]:
    return {p for p in Path("/sys/fs/cgroup").rglob("kimi-sandbox-*") if p.is_dir()}
