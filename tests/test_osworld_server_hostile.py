"""Our OSWorld-protocol server against hostile input (issue 18, 2.2, 2.4, 2.5): non-finite numbers,
slow clients, bodies that break parsers, uploads that fail. A real server on loopback serving a real
Xvfb sandbox; raw sockets where the bytes on the wire are the point."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from slow_client import held

from env.osworld_client import OSWorldClient, Reply, upload_form
from env.osworld_server import RunningServer, ServerConfig, start_server
from env.sandbox import Sandbox

pytestmark = pytest.mark.x11
REPO = Path(__file__).resolve().parent.parent

# Every route that takes a JSON body (the others take a form, or nothing).
JSON_ROUTES = [
    ("POST", "/execute"),
    ("POST", "/setup/execute"),
    ("POST", "/setup/launch"),
    ("POST", "/setup/open_file"),
    ("POST", "/setup/download_file"),
    ("POST", "/setup/activate_window"),
    ("POST", "/setup/close_window"),
    ("POST", "/list_directory"),
    ("POST", "/desktop_path"),
    ("POST", "/run_python"),
    ("POST", "/run_bash_script"),
    ("POST", "/screen_size"),
    ("POST", "/kimi/act"),
    ("POST", "/kimi/release"),
    ("GET", "/platform"),
]


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    with Sandbox(640, 400, desktop="minimal", isolation=None) as b:
        yield b


@pytest.fixture(scope="module")
def server(box: Sandbox) -> Iterator[RunningServer]:
    with start_server(ServerConfig(display=box.display, env=box.env, bash_max_timeout_s=1)) as s:
        yield s


@pytest.fixture
def client(server: RunningServer) -> Iterator[OSWorldClient]:
    with OSWorldClient(server.url, token=server.token) as c:
        yield c


def _raw_json(c: OSWorldClient, method: str, path: str, body: bytes) -> Reply:
    return c.request(method, path, content=body, content_type="application/json", timeout_s=60)


def _error(r: Reply) -> str:
    """The message of a JSON error reply; fails on anything else (an HTML page above all)."""
    assert r.headers.get("content-type", "").startswith("application/json"), (r.status, r.text[:200])
    body = r.json()
    assert isinstance(body, dict) and body.get("status") == "error", r.text[:200]
    return str(body["message"])


# -- 2.2: non-finite numbers -------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_every_json_route_refuses_a_non_finite_number_naming_it(
    server: RunningServer, client: OSWorldClient, box: Sandbox, method: str, path: str
) -> None:
    marker = box.home / "non-finite-ran"
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        body = (
            b'{"command": "touch ~/non-finite-ran", "shell": true, "script": "touch ~/non-finite-ran",'
            b' "code": "open(\'%s\', \'w\')", "path": "~", "window_name": "x",'
            b' "limits": {"steps": [1, 2, %s]}, "timeout": 5}' % (str(marker).encode(), literal)
        )
        r = _raw_json(client, method, path, body)
        assert r.status == 400, (path, literal, r.status, r.text[:200])
        shown = "Infinity" if literal == b"1e999" else literal.decode()
        assert _error(r) == f"limits.steps[2] must be a finite number, not {shown}"
    assert not marker.exists()


def test_run_bash_script_nan_timeout_is_a_400_and_the_cap_always_applies(
    client: OSWorldClient, box: Sandbox
) -> None:
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        r = _raw_json(client, "POST", "/run_bash_script", b'{"script": "sleep 30", "timeout": %s}' % literal)
        assert r.status == 400 and "timeout must be a finite number" in _error(r), r.text
    for bad in (b"0", b"-1", b'"5"', b"true", b"null"):
        r = _raw_json(client, "POST", "/run_bash_script", b'{"script": "true", "timeout": %s}' % bad)
        assert r.status == 400 and "timeout must be a positive number" in r.json()["output"], r.text
    # The server's cap is 1 s here: any finite timeout above it, a float's largest or an integer too
    # large for a float, still stops the script after 1 s.
    for big in (b"1e308", b"1" + b"0" * 400):
        t0 = time.monotonic()
        r = _raw_json(client, "POST", "/run_bash_script", b'{"script": "sleep 30", "timeout": %s}' % big)
        assert (r.status, r.json()["output"]) == (500, "Script execution timed out after 1 seconds")
        assert time.monotonic() - t0 < 20


def test_kimi_act_numbers_are_finite_and_in_range(client: OSWorldClient) -> None:
    move = b'{"kind": "move", "point": {"x": %s, "y": 10, "space": "pixel"}}'
    r = _raw_json(client, "POST", "/kimi/act", b'{"action": %s}' % (move % b"NaN"))
    assert r.status == 400 and _error(r) == "action.point.x must be a finite number, not NaN"
    ok = move % b"10"
    r = _raw_json(client, "POST", "/kimi/act", b'{"action": %s, "settle": {"timeout_s": Infinity}}' % ok)
    assert r.status == 400 and _error(r) == "settle.timeout_s must be a finite number, not Infinity"
    for settle in (
        b'{"timeout_s": 31}',
        b'{"timeout_s": -1}',
        b'{"interval_s": -0.5}',
        b'{"interval_s": 1e9}',
        b'{"quiet_s": "0.1"}',
        b'{"quiet_s": false}',
    ):
        r = _raw_json(client, "POST", "/kimi/act", b'{"action": %s, "settle": %s}' % (ok, settle))
        assert r.status == 400 and "must be a number in" in r.json()["error"], (settle, r.text)
    r = _raw_json(
        client, "POST", "/kimi/act", b'{"action": %s, "settle": {"interval_s": 0, "quiet_s": 0}}' % ok
    )
    assert r.status == 200 and r.json()["ok"], r.text


# -- 2.5: every error is JSON ------------------------------------------------------------------------
def test_every_error_is_json_never_an_html_page(server: RunningServer, client: OSWorldClient) -> None:
    r = _raw_json(client, "POST", "/execute", b"[" * 100_000)
    assert r.status == 400 and _error(r) == "the body is not valid JSON: it is nested too deep"
    r = _raw_json(client, "POST", "/execute", b'{"a":' * 100_000)
    assert r.status == 400 and "nested too deep" in _error(r)
    r = _raw_json(client, "POST", "/execute", b"{")
    assert r.status == 400 and _error(r).startswith("the body is not valid JSON: Expecting property name")
    r = _raw_json(client, "POST", "/execute", b"[1, 2]")
    assert r.status == 400 and _error(r) == "the body must be a JSON object, not list"
    r = _raw_json(client, "POST", "/execute", b"\xff\xfe junk")
    assert r.status == 400 and "not valid JSON" in _error(r)
    r = client.request("GET", "/no/such/route")
    assert r.status == 404 and "not found" in _error(r).lower()
    r = client.request("GET", "/execute")
    assert r.status == 405 and "not allowed" in _error(r).lower() and "POST" in r.headers["allow"]
    r = client.request("POST", "/execute", content=b"x" * (2 * 1024 * 1024), content_type="text/plain")
    assert r.status == 413 and "byte limit" in _error(r)
    with OSWorldClient(server.url) as anon:
        r = anon.request("GET", "/platform")
    assert r.status == 401 and "token" in _error(r) and r.headers["www-authenticate"].startswith("Basic")
    # A request line or head http.server itself refuses, before any route: too long, too many fields.
    for raw in (
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(raw)
            answer = _read_all(s)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] in (b"414", b"431"), answer[:200]
        assert b"content-type: application/json" in head.lower() and body.startswith(b'{"status": "error"')


def test_an_unforeseen_failure_is_a_json_500(box: Sandbox) -> None:
    # A display that is not there: the first screen request fails in the X library, not in our code.
    with (
        start_server(ServerConfig(display=":4077", env=box.env)) as s,
        OSWorldClient(s.url, token=s.token) as c,
    ):
        r = c.request("POST", "/screen_size")
        assert r.status == 500 and _error(r).startswith("internal error in /screen_size: "), r.text


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# -- 2.4: slow clients --------------------------------------------------------------------------------
def _slow_clients(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /platform HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
        socks.append(s)
    return socks


def _trickle(socks: list[socket.socket]) -> None:
    for s in socks:
        if held(s):
            with contextlib.suppress(OSError):
                s.send(b"X")


def test_a_slow_client_is_dropped_at_the_header_deadline(box: Sandbox) -> None:
    config = ServerConfig(display=box.display, env=box.env, header_timeout_s=2)
    with start_server(config) as srv:
        silent = socket.create_connection(("127.0.0.1", srv.port), timeout=10)  # sends nothing at all
        slow = _slow_clients(srv.port, 5)
        t0 = time.monotonic()
        # A byte every half second would keep a per-read timeout from ever firing.
        while any(held(s) for s in [*slow, silent]) and time.monotonic() - t0 < 30:
            _trickle(slow)
            time.sleep(0.5)
        assert not any(held(s) for s in [*slow, silent]), "slow clients still held after 30 s"
        for s in [*slow, silent]:
            s.close()
        # A client with the token that sends its body slowly is not cut off: the deadline ends with
        # the head that shows the token.
        body = b'{"command": "echo slow-body", "shell": true}'
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
            s.sendall(
                b"POST /execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                % (srv.token.encode(), len(body))
            )
            for i in range(0, len(body), len(body) // 4 + 1):  # over about 3 s, past the 2 s deadline
                time.sleep(0.75)
                s.sendall(body[i : i + len(body) // 4 + 1])
            head, _, body = _read_all(s).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["output"] == "slow-body\n", body


def test_many_slow_clients_cannot_starve_a_client_with_the_token(box: Sandbox) -> None:
    # A long deadline, so that only the cap on clients without the token is at work here.
    config = ServerConfig(display=box.display, env=box.env, header_timeout_s=60, max_unauthenticated=32)
    with start_server(config) as srv, OSWorldClient(srv.url, token=srv.token, timeout_s=30) as c:
        threads_before = threading.active_count()
        slow = _slow_clients(srv.port, 100)
        try:
            deadline = time.monotonic() + 20
            while sum(held(s) for s in slow) > 32 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert sum(held(s) for s in slow) == 32  # the newest 32 wait; the oldest were pushed out
            for _ in range(3):
                _trickle(slow)
                t0 = time.monotonic()
                assert c.platform() == "Linux"  # served while the slow clients are held
                assert time.monotonic() - t0 < 20
            with OSWorldClient(srv.url, token="wrong-token-wrong-token") as anon:
                assert anon.request("GET", "/platform").status == 401  # a complete head is answered
            # The server holds a thread per connection: the slow ones cost at most the cap.
            assert threading.active_count() - threads_before <= 32 + 4
        finally:
            for s in slow:
                s.close()


# -- 2.5: uploads that fail -------------------------------------------------------------------------
def _upload(c: OSWorldClient, path: str, data: bytes) -> Reply:
    body, ctype = upload_form(path, data)
    return c.request("POST", "/setup/upload", content=body, content_type=ctype)


def _upload_error(r: Reply) -> str:
    assert r.headers.get("content-type", "").startswith("application/json"), (r.status, r.text[:200])
    return str(r.json()["error"])


def test_an_upload_the_server_cannot_write_is_a_json_error_and_removes_nothing(
    client: OSWorldClient, tmp_path: Path
) -> None:
    r = _upload(client, "", b"data")
    assert r.status == 400 and _upload_error(r) == "Failed to upload file to '': the path is empty"
    # /dev/full takes any open and fails every write; a root server used to unlink it after. As
    # root, a node of our own first (this server is root here, without --sandbox): a server that
    # still unlinked would remove that one, not the machine's.
    if os.geteuid() == 0:
        full = tmp_path / "full"
        os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))
        r = _upload(client, str(full), b"data")
        assert r.status == 400 and stat.S_ISCHR(full.lstat().st_mode), r.text[:200]
    r = _upload(client, "/dev/full", b"data")
    assert r.status == 400 and _upload_error(r) == (
        "Failed to upload file to '/dev/full': /dev/full exists and is not a regular file"
    )
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    r = _upload(client, str(tmp_path), b"data")
    assert r.status == 400 and "is not a regular file" in _upload_error(r) and tmp_path.is_dir()
    # Read-only for root too: an existing file, a new one, a new directory.
    for target in ("/proc/version", "/proc/kimi-upload", "/proc/kimi-upload-dir/x"):
        r = _upload(client, target, b"data")
        assert r.status == 500 and _upload_error(r).startswith(f"Failed to upload file to '{target}': ")
    assert Path("/proc/version").read_text().startswith("Linux")
    if os.geteuid() != 0:  # permissions bind only a user that is not root
        ro = tmp_path / "ro"
        ro.mkdir()
        (ro / "kept.txt").write_text("kept")
        ro.chmod(0o555)
        r = _upload(client, str(ro / "kept.txt"), b"new")
        assert r.status == 500 and "Permission denied" in _upload_error(r)
        assert (ro / "kept.txt").read_text() == "kept"


def test_upload_replaces_a_file_whole_and_writes_through_a_link(
    client: OSWorldClient, tmp_path: Path
) -> None:
    target = tmp_path / "doc.txt"
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    assert _upload(client, str(link), b"new content").text == "File Uploaded: 11 bytes"
    assert link.is_symlink() and target.read_bytes() == b"new content"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.txt", "link.txt"]


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is not installed")
def test_a_failed_write_leaves_an_existing_file_untouched(tmp_path: Path) -> None:
    """`kimi-agent serve` as this user (root in CI), no --sandbox, that cannot write a file past
    128 KiB: a larger upload fails midway, and the file it was to replace is as it was. (A small
    screen: the server's screen grabber sizes a memory file to it. An upload under 500 kB: werkzeug
    keeps it in memory, so the write that fails is the upload's own.)"""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    with Sandbox(200, 120, desktop="minimal", isolation=None) as box:
        work = tmp_path / "work"
        work.mkdir()
        kept = work / "kept.bin"
        kept.write_bytes(b"precious" * 100)
        token = "a-token-of-twenty-chars"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        cmd = ["prlimit", f"--fsize={128 * 1024}", sys.executable, "-m", "tasks.cli", "serve"]
        cmd += ["--display", box.display, "--port", str(port), "--token", token]
        env = {**os.environ, "XAUTHORITY": str(box.xauthority)}
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        try:
            with OSWorldClient(f"http://127.0.0.1:{port}", token=token) as c:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        assert c.platform() == "Linux"
                        break
                    except Exception:
                        assert time.monotonic() < deadline and proc.poll() is None, (
                            f"serve did not start: {proc.stdout.read().decode() if proc.poll() is not None and proc.stdout else ''}"
                        )
                        time.sleep(0.2)
                r = _upload(c, str(kept), b"y" * 300_000)
                assert (
                    r.status == 500
                    and _upload_error(r) == f"Failed to upload file to '{kept}': File too large"
                )
                assert kept.read_bytes() == b"precious" * 100
                r = _upload(c, str(work / "new.bin"), b"y" * 300_000)
                assert r.status == 500 and not (work / "new.bin").exists()
                assert [p.name for p in work.iterdir()] == ["kept.bin"]  # no part file left either
                assert _upload(c, str(kept), b"small").status == 200 and kept.read_bytes() == b"small"
        finally:
            proc.terminate()
            proc.communicate(timeout=20)


def test_a_failed_download_leaves_the_target_and_a_part_file_alone(
    client: OSWorldClient, tmp_path: Path
) -> None:
    target, part = tmp_path / "got.txt", tmp_path / "got.txt.part"  # .part: where it used to write
    target.write_text("kept")
    part.write_text("someone's")
    body = {"url": (tmp_path / "missing").as_uri(), "path": str(target)}
    r = client.request("POST", "/setup/download_file", json_body=body)
    assert r.status == 500 and r.text.startswith("Failed to download")
    assert (target.read_text(), part.read_text()) == ("kept", "someone's")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["got.txt", "got.txt.part"]
    (tmp_path / "src.txt").write_text("fresh")
    body["url"] = (tmp_path / "src.txt").as_uri()
    assert client.download_file(body["url"], str(target)) == "File downloaded successfully: 5 bytes"
    assert (target.read_text(), part.read_text()) == ("fresh", "someone's")
    full = "/dev/full"  # as root, a node of our own: a server that regressed replaces that one
    if os.geteuid() == 0:
        full = str(tmp_path / "full")
        os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    r = client.request("POST", "/setup/download_file", json_body={**body, "path": full})
    assert r.status == 500 and "is not a regular file" in r.text and stat.S_ISCHR(os.lstat(full).st_mode)
