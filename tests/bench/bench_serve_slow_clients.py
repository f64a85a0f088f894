"""Slow clients against `kimi-agent serve`: the red team's slowloris (issue 18, 2.4), with figures.

N clients each send a request head a byte at a time, one byte every --every seconds, never finishing
it; meanwhile a client with the token asks GET /platform once a second. Printed: how many slow
clients the server still holds over time, when the last one was dropped, the latency of the
requests with the token, and the most threads the server had. Defaults are the issue's: 150 clients,
a byte every 5 s, watched for 75 s. Loopback only.

Run: .venv/bin/python tests/bench/bench_serve_slow_clients.py [--clients 150] [--every 5] [--seconds 75]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: slow_client

from slow_client import held

from env.osworld_client import OSWorldClient
from env.osworld_server import ServerConfig, start_server
from env.sandbox import Sandbox

HEAD = b"GET /platform HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=150)
    ap.add_argument("--every", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=75.0)
    args = ap.parse_args()
    with Sandbox(640, 400, desktop="minimal", isolation=None) as box:
        config = ServerConfig(display=box.display, env=box.env)
        with start_server(config) as srv, OSWorldClient(srv.url, token=srv.token, timeout_s=30) as c:
            print(
                f"server: header_timeout_s={config.header_timeout_s:g}, max_unauthenticated={config.max_unauthenticated}"
            )
            threads0 = threading.active_count()
            socks = [
                socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(args.clients)
            ]
            t0 = time.monotonic()
            sent, last_drop, peak_threads, latencies = 0, None, 0, []
            next_byte = t0
            while time.monotonic() - t0 < args.seconds:
                now = time.monotonic()
                if now >= next_byte:
                    for s in socks:
                        if held(s):
                            with contextlib.suppress(OSError):
                                s.send(HEAD[sent : sent + 1])
                    sent, next_byte = sent + 1, next_byte + args.every
                t = time.monotonic()
                assert c.platform() == "Linux"
                latencies.append(time.monotonic() - t)
                peak_threads = max(peak_threads, threading.active_count() - threads0)
                n = sum(held(s) for s in socks)
                if n == 0 and last_drop is None:
                    last_drop = time.monotonic() - t0
                elapsed = time.monotonic() - t0
                if int(elapsed) % 5 == 0 and elapsed - int(elapsed) < 1.0:
                    print(f"  t={elapsed:5.1f}s  slow clients held: {n:4d}")
                time.sleep(max(0.0, 1.0 - (time.monotonic() - t)))
            for s in socks:
                s.close()
    print(f"slow clients: {args.clients}, a byte every {args.every:g} s, watched {args.seconds:g} s")
    print(f"last slow client dropped at: {'never' if last_drop is None else f'{last_drop:.1f} s'}")
    print(
        f"GET /platform with the token: n={len(latencies)}, median {statistics.median(latencies) * 1000:.1f} ms,"
        f" max {max(latencies) * 1000:.1f} ms"
    )
    print(f"most server threads beyond the idle server's: {peak_threads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
