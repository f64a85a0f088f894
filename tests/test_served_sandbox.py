"""The OSWorld-protocol server running inside an isolated sandbox (env/served_sandbox.py): what a
benchmark task's requests execute is walled off like everything else there, and the server is still
reachable from the host on loopback TCP, with or without a network inside."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from env.isolation import Isolation
from env.osworld_client import OSWorldClient, Unauthorized, Unreachable
from env.served_sandbox import ServedSandbox
from tests.test_isolation import ROOT, SECRET, canary, tmp_path  # noqa: F401 (fixtures)

pytestmark = pytest.mark.x11
if shutil.which("bwrap") is None:
    pytest.skip("bubblewrap is not installed", allow_module_level=True)


def _post(served: ServedSandbox, path: str, body: dict, auth: str | None) -> tuple[int, dict]:
    """A request as OSWorld's getters make it: ``http://{vm_ip}:{port}`` turns the token in the URL's
    user part into basic auth; urllib needs the header spelled out."""
    req = urllib.request.Request(
        f"http://{served.host}:{served.port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    if auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth}:".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {}


def test_requests_execute_inside_as_the_sandbox_user(canary: Path, tmp_path: Path) -> None:  # noqa: F811
    with ServedSandbox(800, 600, desktop="minimal", parent_dir=tmp_path) as served:
        c = OSWorldClient(served.url, token=served.token)
        who = c.execute(["sh", "-c", "id -un; echo $HOME; hostname; cat /proc/1/cmdline | tr '\\0' ' '"])
        user, home, host, init = who.output.splitlines()
        assert (user, home, host) == ("user", "/home/user", "kimi-sandbox")
        assert init.startswith("bwrap ")  # pid 1 is bubblewrap's: a pid namespace of its own
        # What a task's commands try against the host fails: the host's files are read-only, the
        # runner's HOME and secrets are out of sight.
        hostile = c.execute(
            [
                "sh",
                "-c",
                f"rm -f {canary}/victim.txt; echo rm=$?; cat {canary}/home/secret.txt; "
                "env | grep -c OPENAI_API_KEY; touch /etc/kimi-owned; echo touch=$?",
            ]
        )
        assert "rm=1" in hostile.output and "touch=1" in hostile.output, hostile
        assert SECRET not in hostile.output + hostile.error
        assert (canary / "victim.txt").read_text() == "still here\n"
        # /run_python too runs inside, with our interpreter bound in read-only.
        py = c.run_python("import os, sys; print(os.getuid(), sys.prefix.startswith('/'))")
        assert py["status"] == "success" and py["output"] == "1000 True\n", py
        # Files the server writes land in the sandbox's home, as the host sees it.
        c.upload("~/up/data.bin", b"\x00\xff" * 10)
        assert (served.sandbox.home / "up" / "data.bin").read_bytes() == b"\x00\xff" * 10
        c.close()


def test_official_style_requests_need_the_token(tmp_path: Path) -> None:  # noqa: F811
    with ServedSandbox(640, 480, desktop=None, parent_dir=tmp_path) as served:
        body = {"command": ["echo", "hi"], "shell": False}
        assert _post(served, "/execute", body, served.token) == (
            200,
            {"status": "success", "output": "hi\n", "error": "", "returncode": 0},
        )
        assert _post(served, "/execute", body, None)[0] == 401
        assert _post(served, "/execute", body, "x" * 32)[0] == 401
        assert served.vm_ip == f"{served.token}:@127.0.0.1"
        with OSWorldClient(served.url, token="y" * 32) as wrong, pytest.raises(Unauthorized):
            wrong.screen_size()
        # Our client can skip the forwarding hop and use the server's socket directly.
        with OSWorldClient(served.socket_url, token=served.token) as direct:
            assert direct.screen_size() == (640, 480)


def test_reachable_without_a_network_inside(tmp_path: Path) -> None:  # noqa: F811
    probe = "import socket; s = socket.socket(); s.settimeout(2); s.connect(('127.0.0.1', {})); print('up')"
    with (
        ServedSandbox(640, 480, desktop=None, isolation=Isolation(network=False), parent_dir=tmp_path) as off,
        OSWorldClient(off.url, token=off.token) as c,
    ):
        assert len(c.screenshot()) > 1000
        # The sandbox's loopback is its own: the host's forwarded port is not there.
        r = c.execute(["python3", "-c", probe.format(off.port)])
        assert r.returncode == 1 and "up" not in r.output, r


def test_the_accessibility_tree_of_the_xfce_desktop(tmp_path: Path) -> None:  # noqa: F811
    if shutil.which("xfce4-panel") is None:
        pytest.skip("XFCE is not installed")
    with (
        ServedSandbox(1280, 800, parent_dir=tmp_path) as served,
        OSWorldClient(served.url, served.token) as c,
    ):
        tree = c.accessibility()
        assert '<application name="xfce4-panel">' in tree and "<desktop-frame" in tree


def test_close_takes_the_server_down_and_leaves_nothing(tmp_path: Path) -> None:  # noqa: F811
    served = ServedSandbox(640, 480, desktop=None, parent_dir=tmp_path)
    root, port, server = served.sandbox.root, served.port, served.server_process
    assert server.poll() is None
    served.close()
    assert not root.exists()
    with (
        OSWorldClient(f"http://127.0.0.1:{port}", token=served.token, timeout_s=2) as c,
        pytest.raises(Unreachable),
    ):
        c.platform()


def test_kimi_agent_serve_sandbox(tmp_path: Path) -> None:  # noqa: F811
    """`kimi-agent serve --sandbox`: a light local OSWorld VM on a loopback port until Ctrl-C."""
    cmd = [sys.executable, "-m", "tasks.cli", "serve", "--sandbox", "--port", "0", "--size", "800x600"]
    cmd += ["--desktop-env", "minimal"]
    env = {**os.environ, "TMPDIR": str(tmp_path), "COLUMNS": "300"}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        said = [proc.stdout.readline() for _ in range(3)]
        url = re.search(r"at (http://127\.0\.0\.1:\d+);", said[0])
        token = said[1].removeprefix("token: ").strip()
        assert url and token, said
        with OSWorldClient(url[1], token=token) as c:
            assert c.screen_size() == (800, 600)
            assert c.execute(["id", "-un"]).output == "user\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert "stopped" in proc.stdout.read()
        assert not list(tmp_path.glob("kimi-sandbox-*"))
    finally:
        proc.kill()
        proc.wait()
