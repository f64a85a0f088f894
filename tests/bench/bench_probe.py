"""How long the start-up probe of an OpenAI-compatible server takes to report a server that is not
there (a loopback port with no listener) or that never answers (a listener that accepts and stays
silent), with the CLI's defaults (--timeout 300, --retries 4). Before issue 18 the refused case took
16.6 s of retries and back-off. Only loopback: an unroutable address would wait on the probe timeout,
like the silent listener. Run: .venv/bin/python tests/bench/bench_probe.py
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.backends.base import BackendError
from agent.backends.openai import OpenAIBackend


def probe(url: str) -> tuple[float, str]:
    b = OpenAIBackend(url, "kimi-vl", timeout_s=300.0, max_retries=4)  # the CLI's defaults
    t0 = time.perf_counter()
    try:
        b.probe()
    except BackendError as e:
        return time.perf_counter() - t0, str(e)
    finally:
        b.close()
    raise AssertionError("the probe of a missing server succeeded")


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        took, line = probe(f"http://127.0.0.1:{s.getsockname()[1]}/v1")
    print(f"refused connection: {took:.3f} s, {line.count(chr(10)) + 1} line: {line[:90]}...")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)  # accepts (the kernel does), never answers
        took, line = probe(f"http://127.0.0.1:{s.getsockname()[1]}/v1")
    print(f"silent listener:    {took:.3f} s, {line.count(chr(10)) + 1} line: {line}")


if __name__ == "__main__":
    main()
