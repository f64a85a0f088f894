"""`kimi-agent serve --display D --osworld-only` as its own process: our server answering like OSWorld's
(no /kimi/*), so the client falls back to /execute and /screenshot as it does against an OSWorld VM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from env.osworld_client import OSWorldClient, OSWorldError

REPO = Path(__file__).resolve().parent.parent
TOKEN = "osworld-only-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_osworld_only(display: str, xauthority: Path | None, token_dir: Path) -> Iterator[str]:
    """Yields the server's ``http://127.0.0.1:PORT`` once it answers; its token is ``TOKEN``."""
    token_file = token_dir / "osworld-only-token"
    token_file.write_text(TOKEN)
    port = free_port()
    env = dict(os.environ)
    if xauthority is not None:
        env["XAUTHORITY"] = str(xauthority)
    cmd = [sys.executable, "-m", "tasks.cli", "serve", "--display", display, "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--osworld-only", "--token-file", str(token_file)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with OSWorldClient(url, token=TOKEN, timeout_s=5) as c:
            deadline = time.monotonic() + 30
            while True:
                try:
                    c.platform()
                    break
                except OSWorldError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"serve --osworld-only did not start (status {proc.poll()})"
                        ) from None
                    time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
