"""Our OSWorld-protocol server, endpoint by endpoint: shapes, errors and the token. A real server on
loopback serving a real Xvfb sandbox; requests are real HTTP (our client's raw `request` where the
exact status and body matter)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from env.osworld_client import NotFound, OSWorldClient, ServerError, Unauthorized, Unreachable
from env.osworld_server import RunningServer, ServerConfig, start_server
from env.sandbox import Sandbox

# The server runs on the host, on the sandbox's display, as it would in a VM or container of the
# user's: what it starts is not walled off, so the sandbox is too (bare openbox, no isolation).
HOST_SIDE: dict = {"desktop": "minimal", "isolation": None}

pytestmark = pytest.mark.x11
REPO = Path(__file__).resolve().parent.parent

# Every route, as (method, path): all of them need the token.
ROUTES = [
    ("POST", "/execute"),
    ("POST", "/setup/execute"),
    ("POST", "/setup/launch"),
    ("POST", "/setup/open_file"),
    ("POST", "/setup/upload"),
    ("POST", "/setup/download_file"),
    ("POST", "/setup/activate_window"),
    ("POST", "/setup/close_window"),
    ("POST", "/file"),
    ("POST", "/list_directory"),
    ("POST", "/desktop_path"),
    ("POST", "/run_python"),
    ("POST", "/run_bash_script"),
    ("POST", "/start_recording"),
    ("POST", "/end_recording"),
    ("POST", "/screen_size"),
    ("POST", "/window_size"),
    ("GET", "/screenshot"),
    ("GET", "/cursor_position"),
    ("GET", "/platform"),
    ("GET", "/terminal"),
    ("GET", "/accessibility"),
    ("GET", "/kimi/info"),
    ("GET", "/kimi/frame"),
    ("POST", "/kimi/act"),
    ("POST", "/kimi/release"),
]


@dataclass
class Served:
    box: Sandbox
    server: RunningServer
    client: OSWorldClient

    @property
    def home(self) -> Path:
        return self.box.home


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    with (
        Sandbox(
            1280, 800, apps=[["xterm", "-title", "kimi-term", "-geometry", "60x10+0+0"]], **HOST_SIDE
        ) as box,
        start_server(ServerConfig(display=box.display, env=box.env, execute_timeout_s=3)) as server,
    ):
        client = OSWorldClient(server.url, token=server.token)
        yield Served(box, server, client)
        client.close()


# -- the token -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_refuses_a_missing_or_wrong_token(served: Served, method: str, path: str) -> None:
    for token in (None, "wrong-token-wrong-token"):
        with OSWorldClient(served.server.url, token=token) as anon:
            r = anon.request(method, path, json_body={"command": "touch ~/should-not-exist", "shell": True})
        assert r.status == 401, (path, r.status)
        assert "token" in r.text
    assert not (served.home / "should-not-exist").exists()


def test_bearer_and_basic_auth_with_the_token_as_user_are_accepted(served: Served) -> None:
    import http.client

    token = served.server.token
    for header in (
        f"Bearer {token}",
        "Basic " + base64.b64encode(f"{token}:".encode()).decode(),
        "Basic " + base64.b64encode(f"{token}:any-password".encode()).decode(),
    ):
        conn = http.client.HTTPConnection("127.0.0.1", served.server.port, timeout=10)
        conn.request("GET", "/platform", headers={"Authorization": header})
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"Linux")
        conn.close()
    basic_wrong = "Basic " + base64.b64encode(f"{token[:-1]}x:".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", served.server.port, timeout=10)
    conn.request("GET", "/platform", headers={"Authorization": basic_wrong})
    assert conn.getresponse().status == 401


def test_the_token_in_the_url_works_like_osworlds_vm_ip(served: Served) -> None:
    url = f"http://{served.server.vm_ip}:{served.server.port}"
    with OSWorldClient(url) as c:
        assert c.platform() == "Linux"
    with (
        OSWorldClient(served.server.url) as c,
        pytest.raises(
            Unauthorized, match=r"refused the request without a token: pass --vm-token or set \$KIMI_VM_TOKEN"
        ),
    ):
        c.platform()


# -- commands --------------------------------------------------------------------------------------
def test_execute_shapes(served: Served) -> None:
    c = served.client
    for path in ("/execute", "/setup/execute"):
        r = c.request("POST", path, json_body={"command": "echo out; echo err >&2; exit 3", "shell": True})
        assert r.status == 200
        assert r.json() == {"status": "success", "output": "out\n", "error": "err\n", "returncode": 3}
    # A string without shell is split like a shell would; ~/ is the served HOME.
    r = c.request("POST", "/execute", json_body={"command": "printf '%s|' 'a b' ~/x"})
    assert r.json()["output"] == f"a b|{served.home}/x|"
    r = c.request("POST", "/execute", json_body={"command": ["no-such-program-here"]})
    assert r.status == 500 and r.json()["status"] == "error" and "no-such-program-here" in r.json()["message"]
    assert c.execute(["sh", "-c", "echo $DISPLAY"]).output.strip() == served.box.display


def test_execute_kills_the_whole_group_at_the_timeout(served: Served) -> None:
    pidfile = served.home / "child.pid"
    t0 = time.monotonic()
    r = served.client.request(
        "POST", "/execute", json_body={"command": f"sleep 60 & echo $! > {pidfile}; wait", "shell": True}
    )
    assert r.status == 500 and "did not finish within 3 s" in r.json()["message"]
    assert time.monotonic() - t0 < 10
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    state = Path(f"/proc/{child}/stat").read_text().split()[2] if Path(f"/proc/{child}").exists() else "gone"
    assert state in ("gone", "Z"), state


def test_launch_does_not_wait(served: Served) -> None:
    t0 = time.monotonic()
    text = served.client.launch(["sh", "-c", "sleep 1; echo launched > ~/launched.txt"])
    assert (
        time.monotonic() - t0 < 1
        and text == "sh -c sleep 1; echo launched > ~/launched.txt launched successfully"
    )
    deadline = time.monotonic() + 5
    while not (served.home / "launched.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (served.home / "launched.txt").read_text() == "launched\n"
    r = served.client.request("POST", "/setup/launch", json_body={"command": ["no-such-program-here"]})
    assert r.status == 500 and r.json()["status"] == "error"
    for bad in (5, ["ok", 5], None):
        r = served.client.request("POST", "/setup/launch", json_body={"command": bad})
        assert r.status == 500 and "command must be a string or a list of strings" in r.json()["message"]


def test_run_python_and_run_bash_script_shapes(served: Served) -> None:
    c = served.client
    ok = c.run_python("import sys; print('hi'); print('warn', file=sys.stderr)")
    assert ok == {
        "status": "success",
        "message": "hi\n\nwarn\n",
        "need_more": False,
        "output": "hi\n",
        "error": "warn\n",
        "return_code": 0,
    }
    bad = c.run_python("raise SystemExit(4)")
    assert (
        bad["status"] == "error" and bad["return_code"] == 4 and bad["error"] == "Process exited with code 4"
    )
    assert c.request("POST", "/run_python", json_body={}).status == 400
    (served.home / "wd").mkdir(exist_ok=True)
    out = c.run_bash_script("pwd; echo e >&2; exit 2", timeout=5, working_dir="~/wd")
    assert out == {"status": "error", "output": f"{served.home}/wd\ne\n", "error": "", "returncode": 2}
    slow = c.run_bash_script("sleep 5", timeout=0.5)
    assert slow == {
        "status": "error",
        "output": "Script execution timed out after 0.5 seconds",
        "error": "",
        "returncode": -1,
    }
    r = c.request("POST", "/run_bash_script", json_body={"script": "true", "working_dir": "/no/such/dir"})
    assert r.status == 400 and r.json()["output"] == "Working directory does not exist: /no/such/dir"


# -- files -----------------------------------------------------------------------------------------
def test_upload_file_and_list_directory(served: Served) -> None:
    c = served.client
    data = bytes(range(256)) * 1000
    assert c.upload("~/up/deep/data.bin", data) == f"File Uploaded: {len(data)} bytes"
    assert (served.home / "up/deep/data.bin").read_bytes() == data
    assert c.file("~/up/deep/data.bin") == data
    assert c.file(f"{served.home}/up/deep/data.bin") == data
    assert c.list_directory("~/up") == {
        "type": "directory",
        "name": "up",
        "children": [
            {"type": "directory", "name": "deep", "children": [{"type": "file", "name": "data.bin"}]}
        ],
    }
    r = c.request("POST", "/file", form={"file_path": "~/nope.txt"})
    assert (r.status, r.json()) == (404, {"error": "File not found"})
    assert r.headers["x-kimi-file"] == "absent"  # looked for on the machine: final, not worth a retry
    r = c.request("POST", "/file", form={"file_path": "~/up"})  # a directory is no file either
    assert (r.status, r.headers["x-kimi-file"]) == (404, "absent")
    assert "x-kimi-file" not in c.request("POST", "/file", form={}).headers  # a bad request says nothing
    with pytest.raises(NotFound):
        c.file("~/nope.txt")
    assert c.request("POST", "/file", form={}).status == 400
    assert c.request("POST", "/setup/upload", form={"file_path": "~/x"}).status == 400
    r = c.request("POST", "/list_directory", json_body={"path": "~/up/deep/data.bin"})
    assert (r.status, r.json()) == (400, {"error": "The provided path is not a directory"})
    assert c.request("POST", "/list_directory", json_body={}).status == 400


def test_list_directory_is_bounded(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    from env.osworld_server import protocol

    many = served.home / "many"
    many.mkdir(exist_ok=True)
    for i in range(5):
        (many / f"f{i}").touch()
    monkeypatch.setattr(protocol, "MAX_TREE_ENTRIES", 4)
    r = served.client.request("POST", "/list_directory", json_body={"path": "~/many"})
    assert r.status == 400 and "more than 4 entries" in r.json()["error"]
    monkeypatch.setattr(protocol, "MAX_TREE_ENTRIES", 5)
    assert len(served.client.list_directory("~/many")["children"]) == 5


def test_download_file_and_desktop_path(served: Served, tmp_path: Path) -> None:
    c = served.client
    src = tmp_path / "src.txt"
    src.write_text("payload")
    assert c.download_file(src.as_uri(), "~/dl/got.txt") == "File downloaded successfully: 7 bytes"
    assert (served.home / "dl/got.txt").read_text() == "payload"
    r = c.request(
        "POST", "/setup/download_file", json_body={"url": (tmp_path / "missing").as_uri(), "path": "~/x"}
    )
    assert r.status == 500 and r.text.startswith("Failed to download")
    assert c.request("POST", "/setup/download_file", json_body={"url": "x"}).status == 400
    with start_server(
        ServerConfig(display=served.box.display, env=served.box.env, max_upload_bytes=5)
    ) as small:
        with OSWorldClient(small.url, token=small.token) as tiny:
            r = tiny.request(
                "POST", "/setup/download_file", json_body={"url": src.as_uri(), "path": "~/dl/big.txt"}
            )
        assert r.status == 500 and "larger than the 5 byte limit" in r.text
        assert not (served.home / "dl/big.txt").exists() and not (served.home / "dl/big.txt.part").exists()
    r = c.request("POST", "/desktop_path")
    if not (served.home / "Desktop").exists():
        assert r.status == 404
        (served.home / "Desktop").mkdir()
    assert c.desktop_path() == f"{served.home}/Desktop"


# -- windows and the screen -----------------------------------------------------------------------
def _active_window_title(served: Served) -> str:
    return served.client.execute(["xdotool", "getactivewindow", "getwindowname"]).output.strip()


@pytest.mark.skipif(shutil.which("xdotool") is None, reason="xdotool is not installed")
def test_activate_and_close_window(served: Served) -> None:
    c = served.client
    served.client.launch(["xterm", "-title", "second-term", "-geometry", "40x5+300+300"])
    served.box.wait_window("xterm")
    deadline = time.monotonic() + 5
    while "second-term" not in _active_window_title(served) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.activate_window("KIMI-TERM") == "Window activated successfully"  # any case, a substring
    deadline = time.monotonic() + 5
    while _active_window_title(served) != "kimi-term" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _active_window_title(served) == "kimi-term"
    assert c.activate_window("xterm.XTerm", strict=True, by_class=True)
    r = c.request("POST", "/setup/activate_window", json_body={"window_name": "KIMI-TERM", "strict": True})
    assert (r.status, r.text) == (404, "Window KIMI-TERM not found (strict mode).")
    r = c.request("POST", "/setup/activate_window", json_body={"window_name": "no such window"})
    assert (r.status, r.text) == (404, "Window no such window not found (empty results).")
    assert c.request("POST", "/setup/activate_window", json_body={}).status == 400
    assert c.window_size("xterm")[0] > 0
    assert c.request("POST", "/window_size", form={"app_class_name": "nothing-like-it"}).status == 404
    assert c.close_window("second-term") == "Window closed successfully."
    deadline = time.monotonic() + 5
    while any(w.title == "second-term" for w in _windows(served)):
        assert time.monotonic() < deadline, "second-term did not close"
        time.sleep(0.05)
    with pytest.raises(NotFound):
        c.close_window("second-term")


def _windows(served: Served) -> list:  # type: ignore[type-arg]
    from env.osworld_server.screen import XScreen

    screen = XScreen(served.box.display, served.box.xauthority)
    try:
        return screen.windows()
    finally:
        screen.close()


def test_open_file_of_a_program_and_a_missing_one(served: Served) -> None:
    c = served.client
    r = c.request("POST", "/setup/open_file", json_body={"path": "~/no-such-file.txt"})
    assert (r.status, r.text) == (404, "Application/file not found: ~/no-such-file.txt")
    assert c.request("POST", "/setup/open_file", json_body={}).status == 400


@pytest.mark.skipif(shutil.which("mousepad") is None, reason="mousepad is not installed")
def test_open_file_waits_for_the_window_of_the_file(served: Served) -> None:
    (served.home / "notes-for-open.txt").write_text("hello")
    t0 = time.monotonic()
    assert served.client.open_file("~/notes-for-open.txt") == "File opened and window activated successfully"
    assert time.monotonic() - t0 < 30
    assert any("notes-for-open" in w.title for w in _windows(served))
    served.client.close_window("notes-for-open")


def test_screenshot_has_the_cursor_drawn_in(served: Served) -> None:
    c = served.client
    r = c.call(
        "POST",
        "/kimi/act",
        json_body={"action": {"kind": "move", "point": {"x": 700, "y": 500, "space": "pixel"}}},
    )
    assert r.json()["ok"]
    assert c.cursor_position() == (700, 500)
    assert c.request("GET", "/cursor_position").json() == [700, 500]
    assert c.screen_size() == (1280, 800)
    assert c.request("POST", "/screen_size").json() == {"width": 1280, "height": 800}
    # Frames (no pointer) before and after the screenshot, until the screen held still around it.
    deadline = time.monotonic() + 10
    while True:
        before = c.call("GET", "/kimi/frame")
        png = c.screenshot()
        after = c.call("GET", "/kimi/frame")
        if before.body == after.body or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (after.headers["x-frame-width"], after.headers["x-frame-height"]) == ("1280", "800")
    shot = Image.open(io.BytesIO(png)).convert("RGB")
    assert shot.size == (1280, 800)
    plain = Image.frombuffer("RGB", (1280, 800), after.body, "raw", "BGRX", 0, 1)
    # The frame has no pointer; the screenshot differs from it only around the pointer.
    diff = [
        (x, y)
        for y in range(0, 800, 2)
        for x in range(0, 1280, 2)
        if shot.getpixel((x, y)) != plain.getpixel((x, y))
    ]
    assert diff, "no pointer was drawn"
    assert all(abs(x - 700) <= 40 and abs(y - 500) <= 40 for x, y in diff), diff[:5]


def test_a_frame_comes_as_rgb_bytes_and_a_bad_encoding_is_named(served: Served) -> None:
    """encoding=rgb: the same picture as the raw frame, three bytes a pixel in R, G, B order (what
    an HxWx3 array reads as it is)."""
    c = served.client
    deadline = time.monotonic() + 10
    while True:  # a still screen around the two frames
        raw, rgb, again = (c.call("GET", f"/kimi/frame?encoding={e}") for e in ("raw", "rgb", "raw"))
        if raw.body == again.body or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert rgb.headers["x-frame-encoding"] == "rgb" and len(rgb.body) == 1280 * 800 * 3
    assert rgb.body == Image.frombuffer("RGB", (1280, 800), raw.body, "raw", "BGRX", 0, 1).tobytes()
    bad = c.request("GET", "/kimi/frame?encoding=png")
    assert bad.status == 400 and "encoding must be raw, zlib or rgb, not 'png'" in bad.text


def test_terminal_and_accessibility_shapes(served: Served) -> None:
    assert served.client.request("GET", "/terminal").json() == {"output": None, "status": "success"}
    r = served.client.request("GET", "/accessibility", timeout_s=60)
    if r.status == 200:
        import xml.etree.ElementTree as ET

        assert ET.fromstring(r.json()["AT"]).tag == "desktop-frame"
    else:  # no AT-SPI on this machine: OSWorld's error shape, with the reason
        assert r.status == 500 and r.json()["status"] == "error" and "AT-SPI" in r.json()["message"]


@pytest.mark.skipif(shutil.which("mousepad") is None, reason="mousepad is not installed")
def test_an_app_launched_through_the_server_is_in_the_accessibility_tree(served: Served) -> None:
    import xml.etree.ElementTree as ET

    probe = served.client.request("GET", "/accessibility", timeout_s=60)
    if probe.status != 200:
        pytest.skip(f"no AT-SPI here: {probe.text[:200]}")
    served.client.launch(["mousepad"])
    st = "{https://accessibility.ubuntu.example.org/ns/state}"
    cp = "{https://accessibility.ubuntu.example.org/ns/component}"
    deadline = time.monotonic() + 20
    while True:
        tree = ET.fromstring(served.client.accessibility())
        frames = [f for a in tree.findall("application[@name='mousepad']") for f in a.findall("frame")]
        if frames:
            break
        assert time.monotonic() < deadline, "mousepad never showed in the AT-SPI tree"
        time.sleep(0.3)
    assert "Mousepad" in frames[0].get("name", "")
    assert frames[0].get(f"{st}showing") == "true" and frames[0].get(f"{cp}size", "").startswith("(")
    served.client.close_window("Mousepad")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_recording_makes_an_mp4(served: Served) -> None:
    c = served.client
    r = c.request("POST", "/end_recording")
    assert (r.status, r.json()["message"]) == (400, "No recording in progress to stop.")
    c.start_recording()
    r = c.request("POST", "/start_recording")
    assert (r.status, r.json()["message"]) == (400, "Recording is already in progress.")
    time.sleep(1.5)
    video = c.end_recording()
    assert video[4:8] == b"ftyp" and len(video) > 1000
    if shutil.which("ffprobe"):
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=width,height", "-of", "json", "-"],
            input=video,
            capture_output=True,
            timeout=30,
        )
        assert json.loads(probe.stdout)["streams"][0] == {"width": 1280, "height": 800}


# -- limits, sockets, the command line ---------------------------------------------------------------
def test_request_sizes_are_bounded(served: Served) -> None:
    with start_server(
        ServerConfig(
            display=served.box.display, env=served.box.env, max_upload_bytes=100_000, max_json_bytes=1000
        )
    ) as small:
        c = OSWorldClient(small.url, token=small.token)
        r = c.request("POST", "/execute", json_body={"command": "true " + "x" * 2000, "shell": True})
        assert r.status == 413
        with pytest.raises(Exception, match="413"):
            c.upload("~/big.bin", b"x" * 200_000)
        assert not (served.home / "big.bin").exists()
        assert c.upload("~/small.bin", b"x" * 5000) == "File Uploaded: 5000 bytes"
        c.close()
        # A chunked body has no length to check up front: it is cut off as it is read.
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", small.port, timeout=10)
        body = iter([b'{"command": "true ', b"x" * 5000, b'", "shell": true}'])
        headers = {"Authorization": f"Bearer {small.token}", "Content-Type": "application/json"}
        conn.request("POST", "/execute", body=body, headers=headers, encode_chunked=True)
        assert conn.getresponse().status == 413
        conn.close()


def test_a_unix_socket_server(served: Served, tmp_path: Path) -> None:
    path = tmp_path / "kimi.sock"
    with start_server(ServerConfig(display=served.box.display, env=served.box.env), socket_path=path) as s:
        assert s.url == f"unix:{path}" and oct(path.stat().st_mode & 0o777) == "0o600"
        with OSWorldClient(s.url, token=s.token) as c:
            assert c.screen_size() == (1280, 800)
            assert c.execute("echo via-socket", shell=True).output == "via-socket\n"
        with OSWorldClient(s.url) as c, pytest.raises(Unauthorized):
            c.screen_size()
    assert not path.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_kimi_agent_serve_command(served: Served, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("a-token-of-twenty-chars\n")
    port = _free_port()
    cmd = [sys.executable, "-m", "tasks.cli", "serve", "--display", served.box.display, "--port", str(port)]
    env = {**os.environ, "XAUTHORITY": str(served.box.xauthority)}  # as a desktop session has it
    proc = subprocess.Popen(
        [*cmd, "--token-file", str(token_file)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        with OSWorldClient(f"http://127.0.0.1:{port}", token="a-token-of-twenty-chars") as c:
            deadline = time.monotonic() + 20
            while True:
                try:
                    assert c.screen_size() == (1280, 800)
                    break
                except Exception:
                    assert time.monotonic() < deadline and proc.poll() is None, "serve did not start"
                    time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=20)[0].decode()
    assert f"serving DISPLAY={served.box.display} at http://127.0.0.1:{port}" in out
    assert "a-token-of-twenty-chars" not in out  # a given token is not printed
    bad = subprocess.run([*cmd, "--token", "short"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "at least 16 characters" in bad.stdout
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    none = subprocess.run(
        [sys.executable, "-m", "tasks.cli", "serve"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert none.returncode == 2 and "no X display" in none.stdout
    gone = subprocess.run(
        [sys.executable, "-m", "tasks.cli", "serve", "--display", ":4077"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gone.returncode == 2 and "cannot open X display :4077" in gone.stdout


def test_client_errors_are_typed_and_name_the_server(served: Served, tmp_path: Path) -> None:
    port = _free_port()
    with (
        OSWorldClient(f"http://127.0.0.1:{port}", token="t" * 20, timeout_s=2) as c,
        pytest.raises(Unreachable, match=f"cannot reach the server at http://127.0.0.1:{port}"),
    ):
        c.screen_size()
    with OSWorldClient(f"unix:{tmp_path}/none.sock") as c, pytest.raises(Unreachable):
        c.platform()
    with pytest.raises(ValueError, match="http://HOST:PORT or unix:/PATH"):
        OSWorldClient("ftp://example")
    with pytest.raises(ServerError) as e:
        served.client.end_recording()
    assert e.value.status == 400 and "No recording in progress" in e.value.body
    with pytest.raises(NotFound, match="not found"):
        served.client.activate_window("no such window at all")


def test_an_osworld_only_server_is_driven_through_execute(served: Served) -> None:
    from env.vm_desktop import VMDesktop

    config = ServerConfig(display=served.box.display, env=served.box.env, fast_endpoints=False)
    with start_server(config) as plain, VMDesktop(OSWorldClient(plain.url, token=plain.token)) as vm:
        assert not vm.fast and "OSWorld protocol" in vm.name
        from env.actions import Move, Point

        assert vm.execute(Move(point=Point.px(321, 123))).ok
        assert served.client.cursor_position() == (321, 123)


def test_a_new_token_never_reads_as_an_option() -> None:
    """`--vm-token TOKEN` takes a token starting with "-" for an option (1 draw in 64 did)."""
    from env.osworld_server.auth import check_token, new_token

    tokens = [new_token() for _ in range(5000)]
    assert not [t for t in tokens if t.startswith("-")]
    assert all(check_token(t) == t for t in tokens[:50]) and len(set(tokens)) == len(tokens)
