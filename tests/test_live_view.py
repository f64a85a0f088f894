"""The live view (env/live_view.py, tasks/view_server.py, tasks/token_http.py) in a real headless
Chromium against real sandboxes: the page's canvas shows the sandbox's pixels, a click lands only in
control mode, the agent waits while the person holds the desktop, a wrong token gets 403, and nothing
of the view is left running once it closes."""

from __future__ import annotations

import base64
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from browser import chromium, click_canvas, missing, open_view, wait_canvas
from sandbox_marks import marked

from tasks.token_http import Reply, TokenServer

W, H = 640, 480


def _get(
    url_or_port: int, path: str, host: str | None = None, method: str = "GET", body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", url_or_port, timeout=10)
    headers = {"Host": host} if host else {}
    c.request(method, path, body=body or None, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def test_token_server_refuses_what_lacks_the_token(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.js").write_text("export const a = 1;\n")
    (tmp_path / "secret.txt").write_text("not served")
    with TokenServer(
        static={"files": tmp_path / "files"}, routes={("POST", "/echo"): lambda r: Reply(200, r.body)}
    ) as srv:
        t = srv.token
        status, headers, body = _get(srv.port, f"/{t}/files/a.js")
        assert status == 200 and body == b"export const a = 1;\n"
        assert headers["content-type"].startswith("text/javascript")  # what ES modules need
        assert headers["referrer-policy"] == "no-referrer" and headers["cache-control"] == "no-store"
        assert "default-src" in headers["content-security-policy"]
        assert _get(srv.port, f"/{t}/echo", method="POST", body=b"hi")[::2] == (200, b"hi")
        for path in ("/", "/files/a.js", f"/{t[:-1]}/files/a.js", f"/{t}x/files/a.js", "/favicon.ico"):
            assert _get(srv.port, path)[0] == 403, path
        assert _get(srv.port, f"/{t}/files/a.js", host="evil.example:80")[0] == 403  # DNS rebinding
        for path in (f"/{t}/files/../secret.txt", f"/{t}/files/%2e%2e/secret.txt", f"/{t}/nothing/a.js"):
            assert _get(srv.port, path)[0] == 404, path
        assert _get(srv.port, f"/{t}/echo", method="POST", body=b"x" * 5000)[0] == 413
    assert srv.url.startswith("http://127.0.0.1:")


# -- the page in a browser, on a sandbox --------------------------------------------------------


def _need_all() -> None:
    from env.live_view import missing as no_view

    for why in (no_view(), missing()):
        if why:
            pytest.skip(why)


def _websocket(port: int, token: str) -> bytes:
    """A websocket handshake with websockify, and what it sends first (x11vnc's RFB banner, once open)."""
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            f"GET /websockify?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: binary\r\n\r\n".encode()
        )
        got = b""
        while b"RFB" not in got and (chunk := s.recv(4096)):
            got += chunk
        return got


@pytest.mark.x11
def test_the_websocket_needs_the_token_and_dies_with_the_sandbox() -> None:
    _need_all()
    from env.live_view import LiveDesktop
    from env.sandbox import Sandbox

    with Sandbox(320, 240, desktop=None) as box:
        view = LiveDesktop(box)
        ep = view.endpoint
        assert _websocket(ep.port, "x" + ep.token) == b""  # closed without an answer
        opened = _websocket(ep.port, ep.token)
        assert opened.startswith(b"HTTP/1.1 101") and b"RFB 003.008" in opened
        pids = view.pids
        # Not closed by us: the sandbox's close ends its helpers.
    assert not any(_alive(p) for p in pids)
    view.close()  # afterwards: harmless, and removes its directory


def _tcp_listeners(pid: int) -> list[tuple[str, int]]:
    """(address, port) of each TCP socket ``pid`` listens on, IPv4 and IPv6."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                addr, port = f[1].rsplit(":", 1)
                found.append((addr, int(port, 16)))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


@pytest.mark.slow
@pytest.mark.x11
def test_view_only_page_shows_the_sandbox_live(clickpad_on) -> None:
    _need_all()
    from env.sandbox import Sandbox
    from tasks.view_server import ViewServer

    with Sandbox(W, H, desktop="minimal", apps=[["xterm", "-geometry", "60x15+40+30"]]) as box:
        view = ViewServer(box)
        try:
            pids = view.pids
            # x11vnc: no TCP port at all (a unix socket of ours); websockify: loopback only.
            assert _tcp_listeners(pids[0]) == []
            assert [a for a, _ in _tcp_listeners(pids[1])] == ["0100007F"]  # 127.0.0.1
            bad = view.url.replace(view.server.token, "x" * len(view.server.token))
            assert _get(view.server.port, bad.split(str(view.server.port), 1)[1])[0] == 403

            with chromium() as browser:
                page = open_view(browser, view.url)
                assert page.title() == f"Sandbox {box.display}: live view"
                canvas = page.locator("#screen canvas")
                assert canvas.get_attribute("aria-label") and canvas.get_attribute("role") == "img"
                assert "view only" in page.inner_text("#status")
                assert page.locator("#take").count() == 0

                # The canvas shows the sandbox's pixels: read both at the same moment (a still screen).
                shot = np.asarray(box.screenshot().to_image().convert("RGB"), dtype=np.int16)
                assert shot.std() > 20  # xterm's white window on the black root: something to compare
                seen = np.asarray(
                    wait_canvas(page, lambda im: _close(np.asarray(im, dtype=np.int16), shot)), dtype=np.int16
                )
                assert seen.shape == shot.shape
                assert _close(seen, shot), f"mean difference {np.abs(seen - shot).mean():.1f}"

                # Live: the clickpad's white screen reaches the page; a click there does not reach it.
                pad = clickpad_on(box)
                white = wait_canvas(page, lambda im: np.asarray(im).min() > 200)
                assert np.asarray(white).min() > 200
                click_canvas(page, 0.5, 0.5)
                time.sleep(1.0)
                assert [e for e in pad.events() if e["kind"] == "down"] == []
        finally:
            view.close()
        assert not any(_alive(p) for p in pids)  # x11vnc, websockify and their children: gone
        assert box.screenshot().width == W  # the sandbox itself goes on


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """The same picture up to JPEG's loss: small mean difference, and few pixels far off."""
    if a.shape != b.shape:
        return False
    d = np.abs(a - b).max(axis=2)
    return bool(d.mean() < 4 and (d > 48).mean() < 0.01)


@pytest.mark.slow
@pytest.mark.x11
def test_control_mode_click_lands_and_the_agent_waits(clickpad_on, tmp_path: Path) -> None:
    _need_all()
    from agent.loop import run
    from agent.policy import ScriptedPolicy
    from agent.trajectory import RunInfo, TrajectoryWriter, read_steps
    from env.actions import Wait
    from env.sandbox import Sandbox
    from tasks.view_server import ViewServer

    with Sandbox(W, H, desktop="minimal") as box, ViewServer(box, control=True) as view:
        pad = clickpad_on(box)
        pids = view.pids
        with chromium() as browser:
            page = open_view(browser, view.url)
            click_canvas(page, 0.25, 0.5)  # not yet taken: noVNC sends nothing
            time.sleep(0.5)
            assert [e for e in pad.events() if e["kind"] == "down"] == []

            # The button is reached from the keyboard, and its focus shows.
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.id") == "take"
            outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            assert outline == "solid"
            page.keyboard.press("Enter")
            page.wait_for_selector('body[data-holding="1"]', state="attached")
            assert view.control.held()
            assert "You have control" in page.inner_text("#status")

            # The agent's run starts while the person holds the desktop: it waits before step 1.
            out = tmp_path / "run"
            writer = TrajectoryWriter(
                out, RunInfo(task="t", started_at=time.time(), policy="s", desktop="d", screen=(W, H))
            )
            done: list[object] = []
            agent = threading.Thread(
                target=lambda: done.append(
                    run(
                        "t",
                        ScriptedPolicy([[Wait(seconds=0.1)]]),
                        box,
                        max_steps=1,
                        writer=writer,
                        hold=view.control.held,
                    )
                )
            )
            agent.start()
            click_canvas(page, 0.25, 0.5)
            down = pad.wait_for(lambda e: e["kind"] == "down", what="the click from the page")
            assert abs(down["x"] - W * 0.25) <= 3 and abs(down["y"] - H * 0.5) <= 3
            time.sleep(1.0)
            assert agent.is_alive() and read_steps(out) == []  # still waiting

            page.click("#release")
            page.wait_for_selector('body[data-holding="0"]', state="attached")
            agent.join(timeout=30)
            assert not agent.is_alive() and not view.control.held()
            (step,) = read_steps(out)
            assert step.takeover is not None and step.takeover.ended_at - step.takeover.started_at >= 1.0
            assert "a person held the desktop" in (out / "report.html").read_text()

            click_canvas(page, 0.75, 0.5)  # given back: view-only again
            time.sleep(0.5)
            assert len([e for e in pad.events() if e["kind"] == "down"]) == 1

            # Whoever closes the page while holding the desktop gives it back.
            page.click("#take")
            page.wait_for_selector('body[data-holding="1"]', state="attached")
            page.close(run_before_unload=True)
            deadline = time.monotonic() + 5
            while view.control.held() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not view.control.held()
    assert not any(_alive(p) for p in pids)


@pytest.mark.x11
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_cli_sandbox_view_prints_the_url_and_leaves_nothing(
    kept_sandboxes: Path, sig: signal.Signals
) -> None:
    """`kimi-agent sandbox --view`: the URL it prints serves the page (a wrong token: 403); after
    Ctrl-C, or SIGKILL (the sandbox's reaper then cleans up), no process of the sandbox or its view
    is left, nor its directory."""
    _need_all()
    args = ["sandbox", "--view", "--size", "640x480", "--desktop-env", "minimal"]
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import sys; from tasks.cli import main; sys.exit(main({args!r}))"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "COLUMNS": "300"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    while not any("Ctrl-C stops it" in line for line in lines):
        line = proc.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
    text = "".join(lines)
    url = next(w for w in text.split() if w.startswith("http://127.0.0.1:"))
    assert "view only" in text
    port = int(url.split(":")[2].split("/")[0])
    path = url.split(str(port), 1)[1]
    status, _, body = _get(port, path)
    assert status == 200 and b"<title>" in body
    assert _get(port, path.replace(path.split("/")[1], "wrong"))[0] == 403
    assert len(marked(kept_sandboxes)) >= 4  # Xvfb, the supervisor, x11vnc, websockify: all marked
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=20)
    assert proc.returncode == (0 if sig == signal.SIGINT else -signal.SIGKILL), rest
    deadline = time.monotonic() + 10
    while (marked(kept_sandboxes) or list(kept_sandboxes.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marked(kept_sandboxes) == [] and list(kept_sandboxes.iterdir()) == []
    with pytest.raises(OSError):
        _get(port, path)


def test_view_is_for_sandboxes_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.cli import main

    script = tmp_path / "s.json"
    script.write_text('[{"kind": "wait", "seconds": 0}]')
    code = main(
        ["t", "--script", str(script), "--vm", "http://127.0.0.1:9", "--view", "--out", str(tmp_path / "o")]
    )
    assert code == 2 and "--view shows a sandbox" in capsys.readouterr().out
