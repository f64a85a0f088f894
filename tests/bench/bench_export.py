"""`kimi-agent export` throughput (steps/s) and output size per step, on a real 200-step run.

The run is made first: the real loop, ModelPolicy and context builder on a sandbox desktop
(1920x1080, 3 screenshots in context, the 32K budget), a backend that answers every step with a
Kimi-style click, the tiny test checkpoint's tokenizer as the counter. Then it is exported (linked
images, then copied) and timed; the figures are the median of 3 exports each.
Run: .venv/bin/python tests/bench/bench_export.py [--steps 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tiny_kimi import write_tiny_kimi

from agent.backends.base import Completion, GenerationParams
from agent.export.dataset import export
from agent.export.records import Options
from agent.loop import run
from agent.messages import Message
from agent.model_policy import ModelPolicy
from agent.models.kimi_vl.chat import KimiChat
from agent.models.kimi_vl.tokenizer import load_tokenizer
from agent.models.kimi_vl.variants import Variant
from agent.trajectory import RunInfo, TrajectoryWriter
from env.sandbox import Sandbox

THOUGHT = "The dialog is open; the next field is to the right, so I click it before typing."


class Clicks:
    """Answers step n with a click that moves along the screen (no two steps alike)."""

    def __init__(self) -> None:
        self.n = 0

    def generate(self, messages: list[Message], params: GenerationParams) -> Completion:
        self.n += 1
        x, y = 0.05 + (self.n % 90) / 100, 0.05 + (self.n // 90) / 10
        code = f"pyautogui.click(x={x:.3f}, y={y:.3f})"
        text = f"## Thought\n{THOUGHT}\n## Action:\nclick the field\n## Code:\n```python\n{code}\n```"
        return Completion(text=text, tokens_in=1, tokens_out=1)


def make_run(path: Path, checkpoint: Path, steps: int) -> None:
    chat = KimiChat(load_tokenizer(checkpoint), 4096)
    policy = ModelPolicy(Clicks(), Variant.named("instruct"), count_text_tokens=chat.count_text_tokens)
    with Sandbox(1920, 1080) as box:
        g = box.geometry
        info = RunInfo(
            task="fill the form",
            started_at=time.time(),
            policy="bench",
            desktop="sandbox",
            screen=(g.width, g.height),
        )
        run(
            "fill the form", policy, box, max_steps=steps, writer=TrajectoryWriter(path, info), repeat_limit=0
        )


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint = write_tiny_kimi(root / "tiny")
        t0 = time.perf_counter()
        make_run(root / "run", checkpoint, args.steps)
        print(f"made a {args.steps}-step run in {time.perf_counter() - t0:.1f} s")
        for copy in (False, True):
            times = []
            for i in range(3):
                out = root / f"out-{copy}-{i}"
                t0 = time.perf_counter()
                # Its clicks never finish the form (a failed task): asked for explicitly.
                opts = Options(include_failed_tasks=True)
                m = export([root / "run"], out, opts, load_tokenizer, checkpoint, copy_images=copy)
                times.append(time.perf_counter() - t0)
            n = len(m.samples)
            data = (out / "data.json").stat().st_size
            images = size(out / "images")
            tokens = statistics.mean(s.tokens for s in m.samples)
            print(
                f"{'copied' if copy else 'linked'} images: {n} samples, {n / statistics.median(times):.1f} steps/s "
                f"(median of 3: {statistics.median(times):.2f} s); per step: data.json {data / n / 1024:.1f} KiB, "
                f"images {images / n / 1024:.1f} KiB ({'new bytes on disk' if copy else 'hard links: no new bytes'}), "
                f"{tokens:.0f} tokens on average"
            )


if __name__ == "__main__":
    main()
