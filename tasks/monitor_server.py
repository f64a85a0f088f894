"""The run monitor (`--monitor [PORT]` on `bench osworld run`, `kimi-agent rollout`,
`bench screenspot run`): a read-only page served by tasks/token_http.py on loopback, its URL (token
included) printed at start. Routes, all GET:

- ``/TOKEN/``: the page (tasks/monitor_static/): it polls ``state.json`` and fetches a worker's
  screen only when that worker's ``shot`` number changed;
- ``/TOKEN/state.json``: the board's Snapshot (tasks/monitor_state.py);
- ``/TOKEN/shot?w=I``: worker I's latest recorded screen as PNG, encoded from the frame the worker
  holds in memory (never read back from a path, so nothing a sandbox could link is served);
- ``/TOKEN/results/...``: the run's finished tasks' reports, under the run's root (token_http's
  static folder: a path that resolves outside the root is refused).

Nothing here changes the run: no route takes a body or acts on one."""

from __future__ import annotations

import argparse
import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs

from tasks.cli_common import UsageError
from tasks.monitor_state import Board
from tasks.token_http import Reply, Request, TokenServer

STATIC = Path(__file__).with_name("monitor_static")
# Reports (agent/report.py) carry their own <style>; no script of theirs may run under the token.
SEEN_WINDOW_S = 5.0  # a page that polled this recently is waited for at the end (see finish)
CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; script-src 'self'"


class ShotCache:
    """One PNG per worker, encoded when first asked for after the worker recorded a new screen."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self._lock = threading.Lock()
        self._png: dict[int, tuple[int, bytes]] = {}

    def png(self, worker: int) -> bytes | None:
        got = self.board.frame(worker)
        if got is None:
            return None
        shot, frame = got
        with self._lock:
            cached = self._png.get(worker)
            if cached is not None and cached[0] == shot:
                return cached[1]
        buf = io.BytesIO()
        frame.to_image().save(buf, format="PNG", compress_level=1)
        with self._lock:
            self._png[worker] = (shot, buf.getvalue())
        return buf.getvalue()


class Monitor:
    """Serves ``board`` from a thread of its own once started, until close()."""

    def __init__(self, board: Board, port: int = 0, results: Path | None = None) -> None:
        self.board = board
        self.shots = ShotCache(board)
        static = {"static": STATIC} | ({"results": results} if results is not None else {})
        self.server = TokenServer(
            static=static,
            routes={
                ("GET", "/"): self._page,
                ("GET", "/state.json"): self._state,
                ("GET", "/shot"): self._shot,
            },
            csp=CSP,
            port=port,
        )
        self._polled_at = 0.0
        self._end_seen = threading.Event()

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> Monitor:
        self.server.start()
        return self

    def close(self) -> None:
        self.server.close()

    def finish(self, timeout_s: float = 3.0) -> None:
        """Once the board has ended: give a page that is watching the time to read the final
        state (its next poll), so it does not end on the last state before the summary."""
        if time.monotonic() - self._polled_at < SEEN_WINDOW_S:
            self._end_seen.wait(timeout_s)

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _page(self, req: Request) -> Reply:
        return Reply(200, (STATIC / "index.html").read_bytes(), "text/html; charset=utf-8")

    def _state(self, req: Request) -> Reply:
        snap = self.board.snapshot()
        self._polled_at = time.monotonic()
        if snap.ended:
            self._end_seen.set()
        body = snap.model_dump_json().encode()
        return Reply(200, body, "application/json")

    def _shot(self, req: Request) -> Reply:
        raw = parse_qs(req.query).get("w", [""])[0]
        if not raw.isdigit():
            return Reply.text(400, "shot?w=N: N is a worker's number")
        png = self.shots.png(int(raw))
        if png is None:
            return Reply.text(404, "no screen from this worker yet")
        return Reply(200, png, "image/png")


def add_monitor_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--monitor",
        nargs="?",
        type=int,
        const=0,
        metavar="PORT",
        help="serve a page on 127.0.0.1 that shows the run as it goes (progress, score, each worker's "
        "screen and last action, finished tasks' reports); its URL, with its token, is printed at "
        "start (default port: a free one; docs/live-view.md)",
    )


@contextmanager
def monitoring(
    port: int | None, board: Board, say: Callable[[str], None], results: Path | None = None
) -> Iterator[Monitor | None]:
    """The monitor for ``--monitor PORT`` (None: no monitor) while the block runs."""
    if port is None:
        yield None
        return
    if not 0 <= port <= 65535:
        raise UsageError(f"--monitor: {port} is not a port number")
    try:
        m = Monitor(board, port, results)
    except OSError as e:
        raise UsageError(f"--monitor {port}: cannot listen on 127.0.0.1:{port} ({e.strerror or e})") from e
    with m:
        say(f"monitor: {m.url}")
        yield m
