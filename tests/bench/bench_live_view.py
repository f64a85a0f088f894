"""What the live view costs and how far behind it is.

1. Added cost per agent step: the same scripted run (typing into an xterm and clicking, so the screen
   changes every step and the VNC stream is busy) on a sandbox with no view, and with a view and a
   headless Chromium connected to it; rounds alternate the order. Prints each way's median seconds
   per step (the loop's whole step: screenshot, actions, settle wait, record) and the overhead.
   Target: at most 5 %.
2. Viewer latency: on a bare sandbox (no window manager: the root window is the screen) our own X
   client repaints the root window in a new colour and syncs; the page watches a canvas pixel on each
   animation frame and notes when the colour arrives. Prints the median and p90 of the delay
   (Date.now() on the page against time.time() here: one machine, one clock; +-1 frame, ~16 ms).

Run: .venv/bin/python tests/bench/bench_live_view.py [--steps 12] [--rounds 3] [--changes 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from browser import chromium, open_view

from agent.loop import run
from agent.policy import ScriptedPolicy
from agent.trajectory import RunInfo, TrajectoryWriter
from env.actions import Click, KeyPress, Point, TypeText
from env.sandbox import Sandbox
from env.xauth import authority
from tasks.view_server import ViewServer

W, H = 1280, 800


def script(steps: int) -> ScriptedPolicy:
    """Each step types a line into the xterm (which scrolls the screen) or clicks in it."""
    out = []
    for i in range(steps):
        if i % 3 == 2:
            out.append([Click(point=Point(x=0.3, y=0.3))])
        else:
            out.append([TypeText(text=f"echo step {i} {'x' * 40}"), KeyPress(key="enter")])
    return ScriptedPolicy(out)


def seconds_per_step(steps: int, viewer: bool) -> float:
    with ExitStack() as stack:
        box = stack.enter_context(
            Sandbox(W, H, desktop="minimal", apps=[["xterm", "-geometry", "150x45+0+0"]])
        )
        if viewer:
            view = stack.enter_context(ViewServer(box))
            browser = stack.enter_context(chromium())
            open_view(browser, view.url, 1300, 900)
        out = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "run"
        writer = TrajectoryWriter(
            out, RunInfo(task="bench", started_at=time.time(), policy="script", desktop="d", screen=(W, H))
        )
        traj = run("bench", script(steps), box, max_steps=steps, writer=writer)
        per_step = [s.finished_at - s.started_at for s in traj.steps]
        return statistics.median(per_step[1:])  # step 1 pays for warm-up


def latencies(changes: int) -> list[float]:
    from Xlib import display as xdisplay

    found = []
    with Sandbox(W, H, desktop=None) as box, ViewServer(box) as view, chromium() as browser:
        page = open_view(browser, view.url, 1300, 900)
        with authority(box.xauthority):
            d = xdisplay.Display(box.display)
        root = d.screen().root
        cmap = d.screen().default_colormap
        try:
            for i in range(changes):
                rgb = (255, 0, 0) if i % 2 == 0 else (0, 0, 255)
                pixel = cmap.alloc_color(rgb[0] * 257, rgb[1] * 257, rgb[2] * 257).pixel
                page.evaluate(
                    """([x, y, r, g, b]) => {
                      window.seenAt = null;
                      const ctx = document.querySelector('#screen canvas').getContext('2d');
                      const tick = () => {
                        const p = ctx.getImageData(x, y, 1, 1).data;
                        if (Math.abs(p[0] - r) < 40 && Math.abs(p[1] - g) < 40 && Math.abs(p[2] - b) < 40) {
                          window.seenAt = Date.now();
                        } else requestAnimationFrame(tick);
                      };
                      tick();
                    }""",
                    [W // 2, H // 2, *rgb],
                )
                root.change_attributes(background_pixel=pixel)
                root.clear_area(0, 0, W, H)
                d.sync()
                t0 = time.time() * 1000
                deadline = time.monotonic() + 5
                seen = None
                while seen is None and time.monotonic() < deadline:
                    time.sleep(0.005)
                    seen = page.evaluate("window.seenAt")
                if seen is None:
                    print(f"change {i}: not seen within 5 s")
                    continue
                found.append(max(0.0, seen - t0) / 1000)
                time.sleep(0.2)
        finally:
            d.close()
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--changes", type=int, default=20)
    a = ap.parse_args()
    ways: dict[bool, list[float]] = {False: [], True: []}
    for r in range(a.rounds):
        for viewer in (False, True) if r % 2 == 0 else (True, False):
            s = seconds_per_step(a.steps, viewer)
            ways[viewer].append(s)
            print(f"round {r + 1}: {'viewer' if viewer else 'no viewer'}: {s * 1000:.0f} ms per step")
    none, with_view = statistics.median(ways[False]), statistics.median(ways[True])
    print(f"per step: no viewer {none * 1000:.0f} ms, viewer connected {with_view * 1000:.0f} ms")
    print(f"added cost per step: {(with_view / none - 1) * 100:+.1f} % (target <= 5 %)")
    lat = sorted(latencies(a.changes))
    if lat:
        p90 = lat[min(len(lat) - 1, int(0.9 * len(lat)))]
        print(
            f"viewer latency ({len(lat)} changes, {W}x{H}): median {statistics.median(lat) * 1000:.0f} ms, "
            f"p90 {p90 * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
