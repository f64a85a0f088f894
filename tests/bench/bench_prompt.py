"""Prompt-build + parse time per step, and prefix reuse between consecutive prompts, per profile.

Build = the history's messages for the step + rendering them to input ids with the (tiny, test)
tokenizer, image placeholders expanded; parse = reading a typical reply into typed actions.
Prefix reuse = the share of each prompt's ids that equal the previous prompt's first ids (what a
prefix cache such as vLLM's can skip), images compared by the screenshot they show.
Run: .venv/bin/python tests/bench/bench_prompt.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from PIL import Image
from prompt_tokens import common_prefix
from tiny_kimi import write_tiny_kimi

from agent.history import PROFILES, ContextBuilder, HistoryConfig
from agent.models.kimi_vl.chat import KimiChat
from agent.models.kimi_vl.parser import parse_reply
from agent.models.kimi_vl.tokenizer import load_tokenizer
from agent.policy import Decision, StepView
from env.actions import Click, Point

REPLY = "## Thought\nThe file menu is open.\n## Action:\nClick Save\n## Code:\n```python\npyautogui.click(x=0.231, y=0.118)\n```"


def steps(cfg: HistoryConfig, chat: KimiChat, n: int) -> tuple[list[float], list[float], list[int]]:
    builder = ContextBuilder(cfg)
    history: list[StepView] = []
    shots = [Image.new("RGB", (1920, 1080), (i * 7 % 255, 100, 50)) for i in range(n)]
    times, shares, kept = [], [], []
    prev: list[int] | None = None
    for k in range(1, n + 1):
        t0 = time.perf_counter()
        built = builder.build("rename every file in ~/docs to lower case", history, shots[k - 1], k)
        ids = chat.render(built.messages).ids
        parsed = parse_reply(REPLY)
        times.append(time.perf_counter() - t0)
        kept.append(len(built.image_steps))
        # Images tagged by step so equal ids mean the same screenshot.
        tagged = _tag(ids, built.image_steps, chat)
        if prev is not None:
            shares.append(common_prefix(prev, tagged) / len(tagged))
        prev = tagged
        d = Decision(
            thought=parsed.thought,
            action_text=parsed.action_text,
            actions=[Click(point=Point.norm(0.2, 0.1))],
        )
        history.append(StepView(step=k, decision=d, results=[None]))
    return times, shares, kept


def _tag(ids: list[int], image_steps: list[int], chat: KimiChat) -> list[object]:
    pad, out, it = chat.ids["<|media_pad|>"], [], iter(image_steps)
    current = None
    for i, t in enumerate(ids):
        if t == pad and (i == 0 or ids[i - 1] != pad):
            current = next(it)
        out.append(("img", current) if t == pad else t)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        chat = KimiChat(load_tokenizer(write_tiny_kimi(Path(tmp))), 4096)
    count = chat.count_text_tokens
    settings = {
        "cap 3 images, 32K context (default)": HistoryConfig(max_images=3, count_text_tokens=count),
        "cap 30 images, 128K context": HistoryConfig(
            max_images=30, max_context=131072, count_text_tokens=count
        ),
        "no cap, 32K context (budget-driven)": HistoryConfig(
            max_images=None, max_context=32768, count_text_tokens=count
        ),
        "no cap, 128K context (budget-driven)": HistoryConfig(
            max_images=None, max_context=131072, count_text_tokens=count
        ),
    }
    for name, cfg in settings.items():
        for profile in PROFILES:
            times, shares, kept = steps(replace(cfg, profile=profile), chat, 50)
            late = [t for t, k in zip(times, kept, strict=True) if k == max(kept)]
            print(
                f"{profile:8} {name}: build+render+parse median {statistics.median(times) * 1000:.1f} ms "
                f"(with {max(kept)} screenshots retained: median {statistics.median(late) * 1000:.1f} ms); "
                f"prefix reuse over 50 steps: mean {statistics.mean(shares) * 100:.1f}%"
            )


if __name__ == "__main__":
    main()
