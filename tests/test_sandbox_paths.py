"""Nothing a sandbox does can point the host, which may be root, at another file or socket: the
attacks a model-driven task could send through the served sandbox's ``/execute``, tried for real
against the host operations that once followed names in the sandbox's control directory."""

from __future__ import annotations

import contextlib
import secrets
import select
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from env.osworld_client import OSWorldClient, OSWorldError
from env.served_sandbox import ServedSandbox
from tests.test_isolation import tmp_path  # noqa: F401 (fixture)

pytestmark = pytest.mark.x11
if shutil.which("bwrap") is None:
    pytest.skip("bubblewrap is not installed", allow_module_level=True)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedSandbox]:  # noqa: F811
    with ServedSandbox(640, 480, desktop=None, parent_dir=tmp_path) as s:
        yield s


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[socket.socket]:  # noqa: F811
    """A host unix socket the sandbox must never make the host reach (a docker or system-bus
    socket, in real life): it only counts the connections it gets."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(tmp_path / "victim.sock"))
    s.listen(16)
    s.setblocking(False)
    yield s
    s.close()


def _connections(victim: socket.socket, wait_s: float = 1.0) -> int:
    n = 0
    while select.select([victim], [], [], wait_s)[0]:
        conn, _ = victim.accept()
        conn.close()
        n += 1
    return n


def test_a_socket_swapped_inside_never_sends_the_host_to_another_socket(
    served: ServedSandbox, victim: socket.socket
) -> None:
    """The attack of issue 18 (2.1): replace the server's socket with a link to a host socket."""
    target = victim.getsockname()
    sock = served.sandbox.inside(served.socket_path)
    with OSWorldClient(served.url, token=served.token) as c:
        swap = c.execute(["sh", "-c", f"ln -s {target} {sock}.evil && mv -f {sock}.evil {sock}"])
    answers: list[object] = []
    for url in (served.url, served.socket_url):  # the TCP forward, and our clients' direct path
        with OSWorldClient(url, token=served.token, timeout_s=10) as fresh:
            try:
                answers.append(fresh.screen_size())
            except OSWorldError as e:
                answers.append(str(e))
    assert _connections(victim) == 0, swap
    assert answers == [(640, 480), (640, 480)], swap  # the sandbox's own server still answers


@dataclass(frozen=True)
class FileState:
    data: bytes
    uid: int
    gid: int
    mode: int
    mtime_ns: int

    @staticmethod
    def of(path: Path) -> FileState:
        st = path.lstat()
        return FileState(path.read_bytes(), st.st_uid, st.st_gid, st.st_mode, st.st_mtime_ns)


def _attempt(results: dict[str, object], name: str, op: Callable[[], object]) -> None:
    """Run a host operation; before the fix some raise once they followed a link, so record that
    and go on: the canary is what is checked first."""
    try:
        results[name] = op()
    except Exception as e:
        results[name] = f"{type(e).__name__}: {e}"


def test_links_planted_in_the_control_directory_never_lead_the_host_elsewhere(
    served: ServedSandbox,
    tmp_path: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """launch()'s log files, control_file() and run()'s I/O files: the sandbox plants a link at
    each name the host would use, pointing at a host file; the host neither writes, chowns, touches
    nor reads that file."""
    canary = tmp_path / "canary.txt"
    canary.write_bytes(b"canary: a host file\n")
    canary.chmod(0o644)
    before = FileState.of(canary)
    box = served.sandbox
    ctl = box.inside(box.xauthority.parent)  # the control directory as the sandbox sees it
    # run()'s names are random; pin them here, as a sandbox watching the directory could race for
    # them. Log names are numbered: plant the next few.
    names = [f"{i}-cat.log" for i in range(8)] + ["planted"]
    names += [f"run-feedc0de.{ext}" for ext in ("in", "out", "err")]
    plant = "; ".join(f"ln -sfn {canary} {ctl}/{n}" for n in names)
    with OSWorldClient(served.url, token=served.token) as c:
        planted = c.execute(["sh", "-c", plant + "; ls -l " + ctl])
    results: dict[str, object] = {}
    _attempt(results, "launch", lambda: box.launch(["cat"]))
    p = results["launch"]
    _attempt(results, "control_file", lambda: box.control_file("planted", b"for the sandbox").read_bytes())
    with monkeypatch.context() as m:
        m.setattr(secrets, "token_hex", lambda nbytes=None: "feedc0de")
        _attempt(results, "run", lambda: box.run(["sh", "-c", "cat; echo err >&2"], input=b"in"))
    if not isinstance(p, str):
        _attempt(results, "last_log_line", lambda: box.last_log_line(p))  # type: ignore[arg-type]
    assert FileState.of(canary) == before, (planted, results)
    run = results["run"]
    assert not isinstance(run, str), results
    assert (run.stdout, run.stderr) == (b"in", b"err\n"), results  # type: ignore[attr-defined]
    assert results["control_file"] == b"for the sandbox", results
    assert results["last_log_line"] == "", results  # its own (empty) log, not the canary


def test_the_control_directory_is_read_only_inside(served: ServedSandbox) -> None:
    """The root of all of the above: no name in the directory the host opens can change."""
    ctl = served.sandbox.inside(served.sandbox.xauthority.parent)
    with OSWorldClient(served.url, token=served.token) as c:
        for cmd in (
            f"touch {ctl}/new",
            f"rm -f {ctl}/Xauthority",
            f"chmod 777 {ctl}",
            f"mv {ctl}/group {ctl}/g",
        ):
            r = c.execute(["sh", "-c", cmd])
            assert r.returncode != 0, (cmd, r)
        # What the sandbox's programs need from it they can still read.
        assert c.execute(["sh", "-c", f"test -r {ctl}/Xauthority && test -r {ctl}/osworld-token"]).ok
    with contextlib.suppress(FileNotFoundError):
        assert not (served.sandbox.xauthority.parent / "new").exists()
