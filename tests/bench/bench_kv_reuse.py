"""Local backend with and without KV / image-feature reuse: tokens prefilled, screenshots run through
MoonViT and wall time per step, over an agent run of 1920x1080 screenshots (the tiny random Kimi-VL
of tests/tiny_kimi.py in float32, on this machine's CPU unless --device says otherwise).

The prompts are the history's (agent/history.py, ``append`` profile) for fixed decisions, as in
bench_prompt.py, so both runs see the same prompts; each call decodes --new-tokens tokens.
Without reuse a call prefills its whole prompt and encodes every screenshot in it (tests/test_kv_reuse.py
checks that), so those two figures are counted for every step; its wall time is measured on the
steps --full-steps names (every step by default; at 128K a full prefill of the tiny model on CPU takes
minutes, so pass a few there). Run:
    .venv/bin/python tests/bench/bench_kv_reuse.py [--setting default|128k] [--full-steps 1,25,50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch
from PIL import Image
from tiny_kimi import write_tiny_kimi

from agent.backends.base import GenerationParams
from agent.backends.transformers import TransformersBackend
from agent.history import ContextBuilder, HistoryConfig
from agent.messages import Message
from agent.policy import Decision, StepView
from env.actions import Click, Point

SETTINGS = {
    "default": dict(max_images=3, max_context=32768),  # the CLI's defaults
    "128k": dict(max_images=None, max_context=131072),  # no image cap: the budget decides
}


def prompts(cfg: HistoryConfig, steps: int) -> Iterator[tuple[int, list[Message]]]:
    builder = ContextBuilder(cfg)
    history: list[StepView] = []
    for k in range(1, steps + 1):
        shot = Image.new("RGB", (1920, 1080), (k * 7 % 255, 100, 50))
        shot.paste((255, 255, 255), (40 * k % 1800, 500, 40 * k % 1800 + 120, 540))  # the screen changed
        yield k, builder.build("rename every file in ~/docs to lower case", history, shot, k).messages
        d = Decision(
            thought=f"The file menu is open at step {k}.",
            action_text="Click Save",
            actions=[Click(point=Point.norm(0.231, 0.118))],
        )
        history.append(StepView(step=k, decision=d, results=[None]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", choices=list(SETTINGS), action="append")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--full-steps", help="steps whose call without reuse is run and timed (default: all)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_tiny_kimi(Path(tmp))
        reuse = TransformersBackend.load(root, device=args.device)
        full = TransformersBackend.load(root, device=args.device, kv_reuse=False)
    params = GenerationParams(max_new_tokens=args.new_tokens, temperature=0.0)
    timed = {int(s) for s in args.full_steps.split(",")} if args.full_steps else None
    for name in args.setting or list(SETTINGS):
        cfg = HistoryConfig(count_text_tokens=reuse.count_text_tokens, **SETTINGS[name])  # type: ignore[arg-type]
        reuse.prefix.clear()
        rows = []
        for k, messages in prompts(cfg, args.steps):
            t0 = time.perf_counter()
            a = reuse.run(messages, params)
            t_reuse = time.perf_counter() - t0
            images = len(reuse.prompt(messages)[1])
            t_full = None
            if timed is None or k in timed:
                t0 = time.perf_counter()
                b = full.run(messages, params)
                t_full = time.perf_counter() - t0
                assert b.prefilled == b.prompt_tokens and b.encoded == images and b.new == a.new
            rows.append((k, a.prompt_tokens, a.prefilled, a.encoded, images, t_reuse, t_full))
            print(
                f"  {name} step {k:2}: prompt {a.prompt_tokens:6} tokens, {images:2} screenshots | prefilled "
                f"{a.prefilled:6} with reuse, {a.prompt_tokens:6} without | encoded {a.encoded} vs {images} | "
                f"{t_reuse:6.2f} s vs " + (f"{t_full:6.2f} s" if t_full is not None else "(not timed)"),
                flush=True,
            )
        report(name, rows)


def report(name: str, rows: list[tuple]) -> None:
    n = len(rows)
    pre_r = sum(r[2] for r in rows) / n
    pre_f = sum(r[1] for r in rows) / n
    enc_r = sum(r[3] for r in rows) / n
    enc_f = sum(r[4] for r in rows) / n
    both = [r for r in rows if r[6] is not None]
    print(f"{name}, {n} steps (tiny Kimi-VL, float32):")
    print(
        f"  tokens prefilled per step: {pre_r:.0f} with reuse, {pre_f:.0f} without ({pre_f / pre_r:.1f}x fewer)"
    )
    print(
        f"  screenshots encoded per step: {enc_r:.2f} with reuse, {enc_f:.2f} without ({enc_f / enc_r:.1f}x fewer)"
    )
    t = [r[5] for r in rows]
    print(
        f"  wall time per step with reuse: mean {statistics.mean(t):.2f} s, median {statistics.median(t):.2f} s"
    )
    if both:
        tr, tf = [r[5] for r in both], [r[6] for r in both]
        steps = ",".join(str(r[0]) for r in both) if len(both) < n else "all"
        print(
            f"  wall time per step on steps {steps}: mean {statistics.mean(tr):.2f} s with reuse, "
            f"{statistics.mean(tf):.2f} s without ({sum(tf) / sum(tr):.1f}x); median {statistics.median(tr):.2f} s "
            f"vs {statistics.median(tf):.2f} s"
        )


if __name__ == "__main__":
    main()
