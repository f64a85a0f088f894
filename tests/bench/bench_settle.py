"""Stale screenshots after actions: our settle wait against OSWorld's fixed sleep, in one run.

The same scripted session (windows, menus, dialogs and app start-ups in real apps on the XFCE
sandbox, plus no-op actions) is played twice, each time in a fresh sandbox: once with our wait
(env/settle.py: pixels plus window and process activity), once with a fixed sleep after every action
(OSWorld's runners: 3 s). After each action the screenshot the model would see next is taken; then,
--after seconds later, another. The first is stale when it differs materially from the second
(more than --stale-px changed pixels: a blinking cursor or the panel clock's minute are less).

With --vm the actions go the way of a server without /kimi (OSWorld's own): through `kimi-agent serve
--osworld-only` on the sandbox's display, behind a counting proxy; the wait is then watched from the
client on screenshots alone (env/settle.py's settle_by_looks), and each action's /screenshot requests
are counted, the one the model is shown next included. The late screenshot is taken directly.

Prints each action's wait and verdict, then for each way: the stale rate and the median and p90 wait.

Run: .venv/bin/python tests/bench/bench_settle.py [--fixed 3] [--after 4] [--no-office] [--vm]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from counting_proxy import CountingProxy
from osworld_only import TOKEN, serve_osworld_only

from env.actions import Action, Click, Hotkey, KeyPress, Move, Point, TypeText
from env.desktop import Frame
from env.osworld_client import OSWorldClient
from env.sandbox import Sandbox
from env.settle import Settle
from env.vm_desktop import VMDesktop

W, H = 1280, 800


def px(x: int, y: int) -> Point:
    return Point.norm(x / W, y / H)


@dataclass(frozen=True)
class Step:
    label: str
    action: Action
    noop: bool = False  # nothing on the screen should change


EMPTY = px(900, 300)  # bare desktop, away from the icons
STEPS = [
    Step("move over the empty desktop", Move(point=EMPTY), noop=True),
    Step("click the empty desktop", Click(point=EMPTY), noop=True),
    Step("press shift", KeyPress(key="shift"), noop=True),
    Step("right-click the desktop: its menu", Click(point=px(640, 400), button="right")),
    Step("escape closes the menu", KeyPress(key="escape")),
    Step("click Applications: the menu", Click(point=px(50, 12))),
    Step("escape closes it", KeyPress(key="escape")),
    Step("dock's terminal launcher", Click(point=px(567, 775))),
    # Off the launcher: its tooltip would show whenever its timer says, after any later action.
    Step("move onto the terminal", Move(point=px(300, 300)), noop=True),
    Step("type a command", TypeText(text="echo hello")),
    Step("enter runs it", KeyPress(key="enter")),
    Step("press shift in the terminal", KeyPress(key="shift"), noop=True),
    Step("start mousepad from the shell", TypeText(text="mousepad &\n")),
    Step("type into mousepad", TypeText(text="Hello from the settle benchmark")),
    Step("alt+f: mousepad's File menu", Hotkey(keys=["alt", "f"])),
    Step("escape closes the menu", KeyPress(key="escape")),
    Step("ctrl+o: the Open dialog", Hotkey(keys=["ctrl", "o"])),
    Step("escape closes the dialog", KeyPress(key="escape")),
    Step("ctrl+s: the Save As dialog", Hotkey(keys=["ctrl", "s"])),
    Step("type the file name", TypeText(text="note.txt")),
    Step("enter saves and closes it", KeyPress(key="enter")),
    Step("shift+f10: the context menu", Hotkey(keys=["shift", "f10"])),
    Step("escape closes it", KeyPress(key="escape")),
    Step("ctrl+q quits mousepad", Hotkey(keys=["ctrl", "q"])),
    Step("ctrl+alt+t: a second terminal", Hotkey(keys=["ctrl", "alt", "t"])),
    Step("exit closes it", TypeText(text="exit\n")),
    Step("start thunar from the shell", TypeText(text="thunar &\n")),
    Step("ctrl+l: thunar's location bar", Hotkey(keys=["ctrl", "l"])),
    Step("ctrl+h: thunar shows hidden files", Hotkey(keys=["ctrl", "h"])),
    Step("ctrl+q quits thunar", Hotkey(keys=["ctrl", "q"])),
    Step("move over the terminal", Move(point=px(700, 420)), noop=True),
]
OFFICE = [
    Step("start LibreOffice Writer from the shell", TypeText(text="soffice --writer &\n")),
    Step("escape closes its tip of the day", KeyPress(key="escape")),
    Step("ctrl+q quits it", Hotkey(keys=["ctrl", "q"])),
]
END = [
    Step("alt+f4 closes the terminal", Hotkey(keys=["alt", "f4"])),
    Step("click the empty desktop again", Click(point=EMPTY), noop=True),
    Step("press escape on the desktop", KeyPress(key="escape"), noop=True),
    Step("move the mouse again", Move(point=px(1000, 500)), noop=True),
]


@dataclass
class Outcome:
    label: str
    wait_s: float
    reason: str
    stale_px: int  # pixels that changed between the settled screenshot and the late one
    changed_px: int  # pixels the action changed in all (before it, to the late screenshot)
    shots: int = 0  # --vm: /screenshot requests from the action to the screen shown next, included


def changed(a: Frame, b: Frame) -> int:
    x = np.frombuffer(a.bgra, np.uint8).reshape(-1, 4)[:, :3].astype(np.int16)
    y = np.frombuffer(b.bgra, np.uint8).reshape(-1, 4)[:, :3].astype(np.int16)
    return int((np.abs(x - y).max(axis=1) > 8).sum())


def play(
    steps: list[Step],
    settle: Settle,
    after_s: float,
    isolated: bool,
    save: Path | None = None,
    stale_px: int = 0,
    vm: bool = False,
) -> list[Outcome]:
    """Play ``steps`` in a fresh sandbox; ``save``: where to write both screenshots of a stale step."""
    from env.isolation import Isolation

    out = []
    with ExitStack() as stack:
        box = stack.enter_context(
            Sandbox(W, H, desktop="xfce", isolation=Isolation() if isolated else None, settle=settle)
        )
        desktop: Sandbox | VMDesktop = box
        proxy = None
        if vm:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            url = stack.enter_context(serve_osworld_only(box.display, box.xauthority, tmp))
            proxy = stack.enter_context(CountingProxy(url))
            desktop = stack.enter_context(VMDesktop(OSWorldClient(proxy.url, token=TOKEN), settle=settle))
            assert not desktop.fast
        time.sleep(after_s)  # the desktop's own start-up (icons, panel plugins) is not an action's
        for step in steps:
            before = box.screenshot()
            desktop.screenshot()  # the model's view of it (through --vm: what the wait compares with)
            shots0 = proxy.counts()["/screenshot"] if proxy else 0
            r = desktop.execute(step.action)
            if not r.ok:
                raise SystemExit(f"{step.label}: {r.error}")
            seen = desktop.screenshot()  # what the model would be shown next
            shots = (proxy.counts()["/screenshot"] - shots0) if proxy else 0
            time.sleep(after_s)
            late = box.screenshot()
            o = Outcome(
                step.label, r.settle_s, r.settle_reason, changed(seen, late), changed(before, late), shots
            )
            if save is not None and o.stale_px > stale_px:
                save.mkdir(parents=True, exist_ok=True)
                name = f"{len(out):02d}-{'fixed' if settle.sleep_after_s is not None else 'ours'}"
                seen.to_image().save(save / f"{name}-seen.png")
                late.to_image().save(save / f"{name}-late.png")
            out.append(o)
    return out


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--fixed", type=float, default=3.0, help="the fixed sleep to compare with (OSWorld's: 3 s)"
    )
    ap.add_argument("--after", type=float, default=4.0, help="seconds until the late, true screenshot")
    ap.add_argument("--stale-px", type=int, default=1500, help="changed pixels that make a screenshot stale")
    ap.add_argument("--no-office", action="store_true", help="leave out LibreOffice's start-up")
    ap.add_argument("--no-isolation", action="store_true", help="sandboxes without bubblewrap")
    ap.add_argument("--save", type=Path, help="write both screenshots of every stale action here")
    ap.add_argument(
        "--vm", action="store_true", help="through serve --osworld-only (screenshots only), counting them"
    )
    args = ap.parse_args()

    steps = STEPS + ([] if args.no_office else OFFICE) + END
    ways = {"ours": Settle(), f"fixed {args.fixed:g} s": Settle(sleep_after_s=args.fixed)}
    results = {}
    for name, settle in ways.items():
        t0 = time.perf_counter()
        results[name] = play(
            steps, settle, args.after, not args.no_isolation, args.save, args.stale_px, args.vm
        )
        print(f"[{name}: {len(steps)} actions played in {time.perf_counter() - t0:.0f} s]", flush=True)

    ours, fixed = results.values()
    print(f"\n{'action':42s} {'ours':>24s}   {'fixed':>16s}  changed px")
    for o, f, step in zip(ours, fixed, steps, strict=True):
        mark = lambda r: "STALE" if r.stale_px > args.stale_px else "ok"  # noqa: E731
        print(
            f"{step.label[:42]:42s} {o.wait_s:5.2f} s {o.reason:9s} {mark(o):5s} {o.stale_px:>6d}"
            f"   {f.wait_s:5.2f} s {mark(f):5s} {f.stale_px:>6d}  {o.changed_px:>7d}"
            + (f"  shots {o.shots}/{f.shots}" if args.vm else "")
            + ("  (meant to change nothing)" if step.noop else "")
            + ("  (changed nothing: off script?)" if not step.noop and o.changed_px == 0 else "")
        )
    print(
        f"\n{len(steps)} actions ({sum(s.noop for s in steps)} no-ops); stale: > {args.stale_px} px differ "
        f"from the screenshot {args.after:g} s later"
    )
    for name, rs in results.items():
        waits = [r.wait_s for r in rs]
        stale = sum(r.stale_px > args.stale_px for r in rs)
        shots = sum(r.shots for r in rs)
        print(
            f"{name:12s} stale {stale}/{len(rs)} ({stale / len(rs):.0%}); wait median {statistics.median(waits):.2f} s, "
            f"p90 {pct(waits, 90):.2f} s, total {sum(waits):.1f} s"
            + (f"; /screenshot {shots} for {len(rs)} actions ({shots / len(rs):.2f} each)" if args.vm else "")
        )


if __name__ == "__main__":
    main()
