"""The live view's page (`kimi-agent sandbox --view`, `kimi-agent "task" --view`): noVNC, served from
Debian's novnc package by a loopback server of ours (tasks/token_http.py), showing the stream of the
sandbox's x11vnc (env/live_view.py). Nothing is fetched from elsewhere: the page works offline.

With ``control`` the page has a "Take control" button: while the person holds the desktop the agent
waits between steps (``ControlState.held``, read by agent/loop.py's ``run(hold=...)``), and the run
records each takeover in the step that follows it (steps.jsonl, ``takeovers``)."""

from __future__ import annotations

import html
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from env.live_view import NOVNC_DIR, LiveDesktop, ViewableDesktop
from tasks.token_http import Reply, Request, TokenServer

STATIC = Path(__file__).with_name("view_static")


@dataclass(frozen=True)
class ControlChange:
    held: bool
    at: float  # time.time()


class ControlState:
    """Whether the person watching holds the mouse and keyboard. Thread-safe: the page's requests
    set it, the agent's loop reads it."""

    def __init__(self, on_change: Callable[[ControlChange], None] | None = None) -> None:
        self._held = threading.Event()
        self._lock = threading.Lock()
        self._on_change = on_change

    def held(self) -> bool:
        return self._held.is_set()

    def set(self, held: bool) -> bool:
        """Returns whether this changed anything."""
        with self._lock:
            if held == self._held.is_set():
                return False
            if held:
                self._held.set()
            else:
                self._held.clear()
        if self._on_change is not None:
            self._on_change(ControlChange(held, time.time()))
        return True


def page(title: str, endpoint_url: str, control: bool) -> bytes:
    """The page: its script (view.js) reads where to connect from data attributes, since the
    Content-Security-Policy allows no inline script."""
    t = html.escape(title)
    buttons = (
        '<button type="button" id="take">Take control</button>'
        '<button type="button" id="release" hidden>Give back control</button>'
        if control
        else ""
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{t}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="static/view.css">
<script type="module" src="static/view.js"></script>
</head>
<body>
<header>
<h1>{t}</h1>
<p id="status" role="status" aria-live="polite">Connecting…</p>
{buttons}
</header>
<main id="screen" aria-label="{t}: the sandbox's screen" data-ws="{html.escape(endpoint_url)}"
 data-control="{"1" if control else "0"}"></main>
</body>
</html>
""".encode()


class ViewServer:
    """The live view of one sandbox: its VNC side and the page, until close()."""

    def __init__(
        self,
        box: ViewableDesktop,
        *,
        control: bool = False,
        port: int = 0,
        on_change: Callable[[ControlChange], None] | None = None,
    ) -> None:
        self.control = ControlState(on_change)
        self.desktop = LiveDesktop(box, control=control)
        try:
            ep = self.desktop.endpoint
            body = page(f"Sandbox {box.display}: live view", ep.url, control)
            routes = {
                ("GET", "/"): lambda r: Reply(200, body, "text/html; charset=utf-8"),
                ("GET", "/state"): self._state,
            }
            if control:
                routes[("POST", "/control")] = self._control
            self.server = TokenServer(
                static={"novnc": NOVNC_DIR, "static": STATIC},
                routes=routes,
                # The page's own files, and the websocket of this view's proxy only.
                csp=(
                    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                    f"connect-src 'self' ws://127.0.0.1:{ep.port}; base-uri 'none'; form-action 'none'; "
                    "frame-ancestors 'none'"
                ),
                port=port,
            ).start()
        except BaseException:
            self.desktop.close()
            raise

    @property
    def url(self) -> str:
        return self.server.url

    def _state(self, _: Request) -> Reply:
        data = {"control": self.desktop.endpoint.control, "held": self.control.held()}
        return Reply(200, json.dumps(data).encode(), "application/json")

    def _control(self, req: Request) -> Reply:
        what = req.body.decode(errors="replace").strip()
        if what not in ("take", "release"):
            return Reply.text(400, f"expected 'take' or 'release', got {what[:40]!r}")
        self.control.set(what == "take")
        return self._state(req)

    @property
    def pids(self) -> list[int]:
        return self.desktop.pids

    def close(self) -> None:
        self.control.set(False)  # no one can give it back once the page is gone
        self.server.close()
        self.desktop.close()

    def __enter__(self) -> ViewServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
