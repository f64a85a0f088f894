"""Per-step overhead of a desktop behind our OSWorld-protocol server, against the sandbox used directly.

A step is what the agent loop does per action: execute one action, then take the screenshot the
model sees next. Settling is switched off (Settle with zero quiet time: two grabs) so the figures are
the transport's cost, not the app's. Paths, all on one 1920x1080 sandbox with an xterm:
  direct      Sandbox.execute + Sandbox.screenshot (in-process XTEST and mss)
  kimi tcp    VMDesktop through /kimi/act + /kimi/frame (raw BGRA) on loopback TCP
  kimi unix   the same over a unix socket
  osworld     OSWorld's own way through our server: POST /execute `python -c "import pyautogui; ..."`
              + GET /screenshot (PNG with the cursor)
  vm-osworld  VMDesktop on OSWorld's protocol only (generated pyautogui code, PNG screenshots)
  served      VMDesktop through /kimi/* to the server inside an isolated sandbox (a benchmark
              worker's path): over the loopback TCP port that forwards to it, and over its socket

Run: .venv/bin/python tests/bench/bench_vm.py [--steps 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from env.actions import Move, Point
from env.osworld_client import OSWorldClient
from env.osworld_server import ServerConfig, start_server
from env.sandbox import Sandbox
from env.served_sandbox import ServedSandbox
from env.settle import Settle
from env.vm_desktop import OSWORLD_PREFIX, VMDesktop

NO_SETTLE = Settle(timeout_s=1.0, interval_s=0.0, quiet_s=0.0)


def measure(step: Callable[[int], None], steps: int) -> list[float]:
    step(0)  # warm-up: connections, first grabs
    times = []
    for i in range(steps):
        t = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t)
    return times


def point(i: int) -> Point:
    return Point.px(200 + (i % 2) * 400, 300)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    rows: list[tuple[str, list[float]]] = []
    with Sandbox(1920, 1080, apps=[["xterm"]], settle=NO_SETTLE, desktop="minimal", isolation=None) as box:
        config = ServerConfig(display=box.display, env=box.env)

        def direct(i: int) -> None:
            assert box.execute(Move(point=point(i))).ok
            box.screenshot()

        rows.append(("direct sandbox", measure(direct, args.steps)))
        sock = Path(tempfile.mkdtemp()) / "kimi.sock"
        with start_server(config) as tcp, start_server(config, socket_path=sock) as unix:
            for name, server in (("kimi tcp", tcp), ("kimi unix", unix)):
                vm = VMDesktop(OSWorldClient(server.url, token=server.token), settle=NO_SETTLE)
                assert vm.fast

                def fast(i: int, vm: VMDesktop = vm) -> None:
                    assert vm.execute(Move(point=point(i))).ok
                    vm.screenshot()

                rows.append((f"VMDesktop, {name}", measure(fast, args.steps)))
                vm.close()

            client = OSWorldClient(tcp.url, token=tcp.token)

            def osworld(i: int) -> None:
                x, y = 200 + (i % 2) * 400, 300
                cmd = ["python", "-c", OSWORLD_PREFIX.format(command=f"pyautogui.moveTo({x}, {y})")]
                assert client.execute(cmd).ok
                client.screenshot()

            rows.append(("OSWorld's path (python -c + PNG)", measure(osworld, args.steps)))
            vm = VMDesktop(OSWorldClient(tcp.url, token=tcp.token), settle=NO_SETTLE, fast=False)

            def slow(i: int) -> None:
                assert vm.execute(Move(point=point(i))).ok
                vm.screenshot()

            rows.append(("VMDesktop, OSWorld protocol only", measure(slow, args.steps)))
            vm.close()
            client.close()
    with ServedSandbox(1920, 1080, apps=[["xterm"]], desktop="minimal") as served:
        for name, url in (("tcp forward", served.url), ("its socket", served.socket_url)):
            vm = VMDesktop(OSWorldClient(url, token=served.token), settle=NO_SETTLE)
            assert vm.fast

            def inside(i: int, vm: VMDesktop = vm) -> None:
                assert vm.execute(Move(point=point(i))).ok
                vm.screenshot()

            rows.append((f"server in isolated sandbox, {name}", measure(inside, args.steps)))
            vm.close()
    base = statistics.median(rows[0][1])
    print(f"per step (execute one move + the next screenshot), 1920x1080, {args.steps} steps, settle off:")
    for name, times in rows:
        med = statistics.median(times)
        print(
            f"  {name:40s} median {med * 1000:7.1f} ms  p90 {sorted(times)[int(len(times) * 0.9)] * 1000:7.1f} ms"
            f"  ({med / base:.1f}x direct)"
        )


if __name__ == "__main__":
    main()
