"""What MCP adds to a call: computer_click + computer_screenshot over stdio against the same calls on
a Desktop directly (Sandbox.execute + Sandbox.screenshot with the same downscale and PNG encoding),
in one run, on equal sandboxes (minimal desktop, 1280x800).

The settle wait is switched off on both sides (--sleep-after 0; Settle(sleep_after_s=0)): it waits
on the app, not on us, and would hide the transport's cost. Run: .venv/bin/python tests/bench/bench_mcp.py
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from env.actions import Click, Point  # noqa: E402
from env.sandbox import Sandbox  # noqa: E402
from env.settle import Settle  # noqa: E402

SIZE = (1280, 800)
MAX_SIDE = 960  # a real downscale on both sides


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def line(name: str, xs: list[float]) -> str:
    ms = [x * 1000 for x in xs]
    return f"{name:<34} median {statistics.median(ms):7.2f} ms   p90 {pct(ms, 0.9):7.2f} ms   (n={len(ms)})"


def direct(n: int) -> tuple[list[float], list[float]]:
    clicks, shots = [], []
    with Sandbox(*SIZE, desktop="minimal", settle=Settle(sleep_after_s=0)) as box:
        for i in range(n):
            t0 = time.perf_counter()
            assert box.execute(Click(point=Point.norm(0.3 + 0.001 * i, 0.5))).ok
            t1 = time.perf_counter()
            image = box.screenshot().to_image()
            k = MAX_SIDE / max(image.size)
            image = image.resize((round(image.width * k), round(image.height * k)), Image.Resampling.LANCZOS)
            image.save(io.BytesIO(), "PNG", compress_level=1)
            t2 = time.perf_counter()
            clicks.append(t1 - t0)
            shots.append(t2 - t1)
    return clicks, shots


async def over_stdio(n: int) -> tuple[list[float], list[float]]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "tasks.cli", "mcp", "--allow", "sandbox,computer", "--sleep-after", "0"],
        cwd=str(ROOT),
    )
    clicks, shots = [], []
    async with stdio_client(params) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        made = await s.call_tool("sandbox_create", {"size": f"{SIZE[0]}x{SIZE[1]}"})
        assert not made.is_error
        for i in range(n):
            t0 = time.perf_counter()
            res = await s.call_tool(
                "computer_click", {"x": 0.3 + 0.001 * i, "y": 0.5, "coordinates": "relative"}
            )
            t1 = time.perf_counter()
            shot = await s.call_tool("computer_screenshot", {"max_side": MAX_SIDE})
            t2 = time.perf_counter()
            assert not res.is_error and not shot.is_error
            clicks.append(t1 - t0)
            shots.append(t2 - t1)
    return clicks, shots


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=50, help="calls of each kind (default 50)")
    n = ap.parse_args().n
    d_click, d_shot = direct(n)
    m_click, m_shot = anyio.run(over_stdio, n)
    print(f"{SIZE[0]}x{SIZE[1]} sandbox, screenshots downscaled to {MAX_SIDE} px long side, PNG; n={n}")
    print(line("direct Desktop click", d_click))
    print(line("MCP stdio computer_click", m_click))
    print(line("direct screenshot+resize+PNG", d_shot))
    print(line("MCP stdio computer_screenshot", m_shot))
    d = [a + b for a, b in zip(d_click, d_shot, strict=True)]
    m = [a + b for a, b in zip(m_click, m_shot, strict=True)]
    print(line("direct click + screenshot", d))
    print(line("MCP click + screenshot", m))
    print(
        f"MCP overhead per click + screenshot (medians): {1000 * (statistics.median(m) - statistics.median(d)):.2f} ms"
    )


if __name__ == "__main__":
    main()
