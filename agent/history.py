"""The prompt for one step, within the context budget.

Layout (append-only, so step n+1's prompt starts with step n's and vLLM's prefix cache reuses it):

    system | user: task | user: [screen 1] | assistant: # Step 1 ... | user: [screen 2] + feedback | ...
    | user: [current screen] + "what next?"

Every past step stays as text. Screenshots are kept newest first; those of steps <= ``cutoff`` are
dropped. The cutoff only moves forward, and in chunks (a few images, or a quarter of the budget at
once), so most steps only append. The token count is exact given the text counter: the chat
template's fixed tokens are counted too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from PIL import Image

from agent.messages import ImagePart, Message, Part, TextPart
from agent.policy import StepView
from agent.vision import image_tokens
from prompts import load_prompt

# <|im_x|> role <|im_middle|> ... <|im_end|>, and <|im_assistant|>assistant<|im_middle|> at the end.
MESSAGE_OVERHEAD = 4
GENERATION_PROMPT = 3
# <|media_start|> image <|media_content|> (pads) <|media_end|>
IMAGE_OVERHEAD = 4


def utf8_upper_bound(text: str) -> int:
    """Byte-level BPE tokens each cover at least one byte, so the byte count never under-counts."""
    return len(text.encode("utf-8"))


@dataclass(frozen=True)
class HistoryConfig:
    thinking: bool = False
    in_token_limit: int = 4096
    max_context: int = 32768
    max_new_tokens: int = 1024
    margin: int = 256
    max_images: int | None = 3  # None: as many as the budget holds
    count_text_tokens: Callable[[str], int] | None = None

    @property
    def budget(self) -> int:
        return self.max_context - self.max_new_tokens - self.margin

    @property
    def image_chunk(self) -> int:
        """How many images one eviction drops when the image cap is what binds."""
        return max(1, ((self.max_images or 1) + 1) // 2)


@dataclass
class BuiltPrompt:
    messages: list[Message]
    tokens: int
    image_steps: list[int]  # steps whose screenshot is in the prompt (the current one included)
    first_text_step: int  # steps before this were dropped as text too (only when text alone overflows)


@dataclass
class ContextBuilder:
    """Builds each step's prompt; remembers what it evicted so evictions never undo themselves."""

    cfg: HistoryConfig
    image_cutoff: int = 0
    text_cutoff: int = 0
    _images: dict[int, Image.Image] = field(default_factory=dict)
    _image_tokens: dict[int, int] = field(default_factory=dict)

    def count(self, text: str) -> int:
        return (self.cfg.count_text_tokens or utf8_upper_bound)(text)

    def build(
        self, task: str, history: Sequence[StepView], screenshot: Image.Image, step: int
    ) -> BuiltPrompt:
        cfg = self.cfg
        self._images[step] = screenshot
        self._image_tokens[step] = image_tokens(screenshot.width, screenshot.height, cfg.in_token_limit)
        if cfg.max_images is not None and step - self.image_cutoff > cfg.max_images:
            self.image_cutoff = step - (cfg.max_images - cfg.image_chunk + 1)
        prompt = self._render(task, history, step)
        if prompt.tokens > cfg.budget:
            # Drop the oldest screenshots until a quarter of the budget is free: one cache miss
            # now buys several steps of pure appends.
            target = cfg.budget * 3 // 4
            while prompt.tokens > target and self.image_cutoff < step - 1:
                self.image_cutoff += 1
                prompt = self._render(task, history, step)
            while prompt.tokens > target and self.text_cutoff < step - 1:
                self.text_cutoff = min(step - 1, self.text_cutoff + max(1, (step - self.text_cutoff) // 4))
                prompt = self._render(task, history, step)
            if prompt.tokens > cfg.budget:
                raise ValueError(
                    f"the prompt needs {prompt.tokens} tokens even with no history; the budget is "
                    f"{cfg.budget} (max_context {cfg.max_context} - max_new_tokens {cfg.max_new_tokens} - "
                    f"margin {cfg.margin})"
                )
        for k in [k for k in self._images if k <= self.image_cutoff]:
            del self._images[k], self._image_tokens[k]
        return prompt

    def _render(self, task: str, history: Sequence[StepView], step: int) -> BuiltPrompt:
        guidance = load_prompt("thought_thinking" if self.cfg.thinking else "thought_instruct")
        messages = [
            Message.text("system", load_prompt("agent_system").format(thought_guidance=guidance)),
            Message.text("user", load_prompt("agent_task").format(task=task)),
        ]
        kept: list[int] = []
        feedback: str | None = None
        if self.text_cutoff:
            feedback = f"(steps 1-{self.text_cutoff} are omitted to fit the context)"
        for view in history:
            if view.step <= self.text_cutoff:
                continue
            shown = self._keep(view.step, kept)
            caption = f"Screen at step {view.step}." if shown else f"Screen at step {view.step} (not shown)."
            messages.append(Message("user", _parts(shown, feedback, caption)))
            messages.append(Message.text("assistant", step_text(view)))
            feedback = step_feedback(view)
        current = load_prompt("agent_current").format(step=step)
        messages.append(Message("user", _parts(self._keep(step, kept), feedback, current)))
        tokens = GENERATION_PROMPT + sum(self._tokens(m) for m in messages)
        return BuiltPrompt(messages, tokens, kept, self.text_cutoff + 1)

    def _keep(self, step: int, kept: list[int]) -> ImagePart | None:
        if step <= self.image_cutoff or step not in self._images:
            return None
        kept.append(step)
        return ImagePart(self._images[step], key=f"step-{step}")

    def _tokens(self, m: Message) -> int:
        n = MESSAGE_OVERHEAD
        for p in m.parts:
            if isinstance(p, TextPart):
                n += self.count(p.text)
            else:
                n += IMAGE_OVERHEAD + self._image_tokens[int(p.key.split("-")[1])]
        return n


def _parts(image: ImagePart | None, feedback: str | None, text: str) -> tuple[Part, ...]:
    # One text part per message: the template renders adjacent texts as one string, so counting
    # the joined text is what makes the count exact.
    body = TextPart(f"{feedback}\n{text}" if feedback else text)
    return (image, body) if image is not None else (body,)


def step_text(view: StepView) -> str:
    d = view.decision
    return load_prompt("agent_step").format(
        step=view.step, thought=d.thought or "-", action=d.action_text or _actions_text(view) or "-"
    )


def _actions_text(view: StepView) -> str:
    from env.actions import describe

    return "; ".join(describe(a) for a in view.decision.actions)


def step_feedback(view: StepView) -> str | None:
    """What the model must hear about step ``view`` in the next turn."""
    if view.decision.error:
        return load_prompt("parse_feedback").format(error=view.decision.error)
    errors = [e for e in view.results if e]
    if errors:
        return load_prompt("action_feedback").format(error=errors[0])
    return None
