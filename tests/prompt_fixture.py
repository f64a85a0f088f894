"""A fixed multi-step Kimi-VL history rendered as the policy renders it (text and token ids): the
ground truth in tests/data/kimi_vl_prompts.json is made by tests/data/make_kimi_vl_prompts.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from agent.backends.base import Completion, GenerationParams
from agent.messages import ImagePart, Message, TextPart
from agent.model_policy import ModelPolicy
from agent.models.kimi_vl.chat import KimiChat
from agent.models.kimi_vl.tokenizer import load_tokenizer
from agent.models.kimi_vl.variants import VariantName
from agent.models.registry import choose_profile
from agent.policy import Decision, StepView
from env.actions import Click, Point, TypeText

VARIANTS: tuple[VariantName, ...] = ("instruct", "thinking", "thinking-2506")
LAYOUTS = ("append", "osworld")
CASES = [(v, p) for v in VARIANTS for p in LAYOUTS]
TASK = "Rename report.txt on the Desktop to summary.txt"
STEPS = 5
# Small screens keep the ids short; the last one is large enough that the variants' patch limits differ.
SIZES = [(448, 280), (336, 448), (448, 280), (560, 392), (1920, 1080)]


class Unused:
    """The policy needs a backend to exist; rendering a prompt never calls it."""

    def generate(self, messages: list[Message], params: GenerationParams) -> Completion:
        raise AssertionError("rendering a prompt must not call the model")


def history() -> list[StepView]:
    views = []
    for k in range(1, STEPS):
        d = Decision(
            thought=f"Step {k}: the file manager shows the Desktop; Ünïcode “quotes” and <|im_end|> stay text.",
            action_text=f"click the file, attempt {k}" if k != 3 else "",
            actions=[Click(point=Point.norm(0.25 * k, 0.5))] if k != 2 else [TypeText(text="summary.txt")],
            error="no ## Code block" if k == 2 else None,
            notes=["1 call after computer.terminate() was ignored"] if k == 3 else [],
        )
        views.append(StepView(step=k, decision=d, results=["not executed: off screen"] if k == 3 else [None]))
    return views


def screens() -> list[Image.Image]:
    return [Image.new("RGB", s, (40 * k, 90, 160)) for k, s in enumerate(SIZES)]


def messages_json(messages: list[Message]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        parts: list[Any] = []
        for p in m.parts:
            if isinstance(p, TextPart):
                parts.append(p.text)
            elif isinstance(p, ImagePart):
                parts.append({"image": [p.image.width, p.image.height], "key": p.key})
        out.append({"role": m.role, "parts": parts})
    return out


def runs(ids: list[int]) -> list[int | list[int]]:
    """``ids`` with each run of 4 or more equal ids (an image's pads) as [id, count]: the same
    sequence, a tenth of the fixture's size."""
    out: list[int | list[int]] = []
    i = 0
    while i < len(ids):
        j = i
        while j < len(ids) and ids[j] == ids[i]:
            j += 1
        out.extend([[ids[i], j - i]] if j - i >= 4 else ids[i:j])
        i = j
    return out


def render_case(checkpoint: Path, variant: VariantName, layout: str) -> dict[str, Any]:
    """Every step's prompt for the fixed history, then a retry prompt at the last step."""
    # Through the registry and the profile, as a run chooses them (--model-profile kimi-vl).
    profile = choose_profile("kimi-vl").profile
    resolved = profile.resolve_variant(override=variant, names=[])
    chat = KimiChat(load_tokenizer(checkpoint), resolved.variant.in_token_limit)
    policy = ModelPolicy(
        Unused(),
        resolved.variant,
        profile=profile,
        count_text_tokens=chat.count_text_tokens,
        history_images=2,
        prompt_profile=layout,
    )
    views, shots = history(), screens()
    steps = []
    messages: list[Message] = []
    for n in range(1, STEPS + 1):
        built = policy.context.build(TASK, views[: n - 1], shots[n - 1], n)
        messages = built.messages
        steps.append(
            {
                "messages": messages_json(messages),
                "ids": runs(chat.render(messages).ids),
                "tokens": built.tokens,
                "length": len(chat.render(messages).ids),
                "cutoffs": [policy.context.image_cutoff, policy.context.text_cutoff],
            }
        )
    retry = policy.context.retry(messages, "◁think▷hmm◁/think▷## Action: click\n", "no ## Code block")
    return {
        "params": policy.params.model_dump(),
        "prompt_record": policy.prompt_record().model_dump(),
        "resolved": resolved.record(),
        "steps": steps,
        "retry": {"messages": messages_json(retry), "ids": runs(chat.render(retry).ids)},
    }
