"""KV-cache and image-feature reuse in the local backend (agent/backends/reuse.py), on the tiny random Kimi-VL
through the real transformers path in float32: a run with reuse must say exactly what a run
without it says, step for step, while prefilling and encoding only what is new."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from agent.backends.base import GenerationParams
from agent.backends.reuse import common_prefix
from agent.backends.transformers import Run, TransformersBackend
from agent.history import ContextBuilder, HistoryConfig
from agent.messages import ImagePart, Message, TextPart
from agent.policy import Decision, StepView
from env.actions import Click, Point

GREEDY = GenerationParams(max_new_tokens=4, temperature=0.0)


@pytest.fixture(scope="module")
def pair(tiny_kimi: Path) -> tuple[TransformersBackend, TransformersBackend]:
    """The same checkpoint with and without reuse (each its own model, so nothing is shared)."""
    return (
        TransformersBackend.load(str(tiny_kimi), device="cpu"),
        TransformersBackend.load(str(tiny_kimi), device="cpu", kv_reuse=False),
    )


def screen(k: int) -> Image.Image:
    """Step k's screenshot: a new picture each step, except that steps 9 and 21 show the same screen
    as the step before (a new Image with equal pixels). Sizes vary, and so do the images' token
    counts."""
    shown = {9: 8, 21: 20}.get(k, k)
    size = (196 + 28 * (shown % 3), 140 + 28 * (shown % 2))
    img = Image.new("RGB", size, (shown * 37 % 256, shown * 91 % 256, shown * 53 % 256))
    img.paste((255 - shown * 5 % 256, 0, 0), (shown % 5 * 3, 0, shown % 5 * 3 + 20, 20))
    return img


def check_same(a: Run, b: Run, step: str) -> None:
    assert a.new == b.new, f"{step}: {a.new} with reuse, {b.new} without"
    diff = float((a.first_logits - b.first_logits).abs().max())
    assert diff <= 1e-4, f"{step}: first-token logits differ by {diff}"


def test_a_30_step_run_with_evictions_says_the_same_with_and_without_reuse(
    pair: tuple[TransformersBackend, TransformersBackend],
) -> None:
    reuse, full = pair
    reuse.prefix.clear()
    # No image cap and a small context: the budget evicts screenshots (then old steps' text) every
    # few steps, each eviction a prefix break; parse retries append within a step.
    builder = ContextBuilder(
        HistoryConfig(
            max_images=None,
            max_context=1900,
            max_new_tokens=GREEDY.max_new_tokens,
            margin=16,
            count_text_tokens=reuse.count_text_tokens,
        )
    )
    history: list[StepView] = []
    encodes, breaks, appends, retries, prefilled, prompt_tokens = 0, 0, 0, 0, 0, 0
    last_prompt = 0
    held: list[int] = []  # the ids the reuse backend's cache holds after the last call
    last_image = (0, 0)  # where the last call's last image started and ended
    end = reuse.chat.ids["<|media_end|>"]
    cutoffs = (0, 0)
    for k in range(1, 31):
        messages = builder.build("rename the files", history, screen(k), k).messages
        evicted = (builder.image_cutoff, builder.text_cutoff) != cutoffs
        cutoffs = (builder.image_cutoff, builder.text_cutoff)
        tries = 2 if k % 7 == 0 else 1  # a parse retry within the step: only the feedback is new
        for t in range(tries):
            prompt, images = reuse.prompt(messages)
            ids = prompt.ids
            a, b = reuse.run(messages, GREEDY), full.run(messages, GREEDY)
            check_same(a, b, f"step {k} try {t + 1}")
            # Only what the cache held and the new prompt shares is skipped; the cache holds the
            # prompt and the reply but its last token.
            assert a.reused <= common_prefix(held, ids) and ids[: a.reused] == held[: a.reused]
            assert reuse.prefix.kv.get_seq_length() == len(ids) + len(a.new) - 1
            if t == 0 and k > 1:
                if evicted:  # the break lies at or before the first evicted screenshot
                    breaks += 1
                    assert a.reused < last_image[0], f"step {k}"
                else:  # only appended: everything up to the last turn's caption is reused
                    appends += 1
                    assert a.reused >= last_image[1], f"step {k}"
            if t > 0:  # a retry: the whole last prompt is reused, the reply and feedback prefilled
                retries += 1
                assert a.reused >= last_prompt and a.encoded == 0, f"step {k}"
            held, last_prompt = reuse.prefix.prompt.ids, len(ids)
            last_image = (prompt.starts[-1], prompt.starts[-1] + ids[prompt.starts[-1] :].index(end))
            encodes += a.encoded
            prefilled += a.prefilled
            prompt_tokens += a.prompt_tokens
            assert b.reused == 0 and b.encoded == len(images)  # without reuse: every image, every call
            if t + 1 < tries:
                messages = builder.retry(messages, reuse.decode(a.new)[0], "no ## Code block")
        decision = Decision(
            thought=f"step {k}", action_text="click", actions=[Click(point=Point.norm(0.5, 0.5))]
        )
        history.append(StepView(step=k, decision=decision, results=[None]))
    assert builder.image_cutoff > 10 and breaks >= 3 and appends >= 10 and retries == 4
    # Each distinct screenshot went through MoonViT once: 30 steps, two repeated screens.
    assert encodes == 28
    assert prefilled < prompt_tokens / 3, (prefilled, prompt_tokens)
    assert len(reuse.features) == len(set(reuse.prefix.prompt.keys))  # only the last prompt's


def test_another_picture_under_the_same_pads_is_prefilled_again(
    pair: tuple[TransformersBackend, TransformersBackend],
) -> None:
    """Same text, same image size: the ids are equal, the prompts are not."""
    reuse, full = pair
    reuse.prefix.clear()

    def prompt(color: tuple[int, int, int]) -> list[Message]:
        img = Image.new("RGB", (112, 84), color)
        return [Message("user", (TextPart("look"), ImagePart(img), TextPart("what next?")))]

    first = reuse.run(prompt((10, 200, 30)), GREEDY)
    second = prompt((200, 10, 30))
    start = reuse.prompt(second)[0].starts[0]
    a, b = reuse.run(second, GREEDY), full.run(second, GREEDY)
    check_same(a, b, "the changed picture")
    assert a.reused == start and a.encoded == 1 and first.encoded == 1
    # The same picture as a new Image object: reused to the end, and not encoded again.
    again = reuse.run(prompt((200, 10, 30)), GREEDY)
    assert again.reused == again.prompt_tokens - 1 and again.encoded == 0
    assert again.new == a.new


def test_sampling_with_reuse_draws_as_without(pair: tuple[TransformersBackend, TransformersBackend]) -> None:
    """Same seed, same draws: the cache changes what is computed, not the distribution."""
    reuse, full = pair
    msgs = [Message("user", (ImagePart(screen(3)), TextPart("what next?")))]
    reuse.run(msgs, GREEDY)  # warm the cache with this prompt
    params = GenerationParams(max_new_tokens=6, temperature=0.9)
    torch.manual_seed(7)
    a = reuse.run(msgs, params)
    torch.manual_seed(7)
    b = full.run(msgs, params)
    assert a.reused > 0 and a.new == b.new


@pytest.mark.parametrize("flag", [[], ["--no-kv-reuse"]])
def test_both_clis_load_the_local_backend_with_reuse_unless_told_not_to(
    tiny_kimi: Path, flag: list[str]
) -> None:
    from tasks.cli import parsers
    from tasks.model import load_local
    from tasks.screenspot.cli import parser as screenspot_parser

    agent_args = parsers()["kimi-agent"].parse_args(["a task", "--model", str(tiny_kimi), *flag])
    bench_args = screenspot_parser().parse_args(
        ["run", "data", "--out", "out", "--backend", "transformers", "--model", str(tiny_kimi), *flag]
    )
    for args in (agent_args, bench_args):
        backend, _, _ = load_local(args, print, None)
        assert backend.kv_reuse is not flag
