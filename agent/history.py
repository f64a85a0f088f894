"""The prompt for one step, within the context budget, in one of three layouts (prompt profiles).

``append`` (append-only, so step n+1's prompt starts with step n's and vLLM's prefix cache reuses it)::

    system | user: task | user: [screen 1] | assistant: # Step 1 ... | user: [screen 2] + feedback | ...
    | user: [current screen] + "what next?"

``osworld`` (the layout of OSWorld's ``mm_agents/kimi`` and ``mm_agents/opencua`` agents)::

    system | assistant: # Step 1 ... # Step n-3 (older steps, text only, one message)
    | user: [screen n-2] | assistant: # Step n-2 | user: [screen n-1] | assistant: # Step n-1
    | user: [current screen] + task + "what next?"

``ui-tars`` (the layout of OSWorld's UI-TARS-1.5 agent, ``mm_agents/uitars15_v1.py``: mrwwk/DeskCraft
@ 4893b45ee51b57b2c1279d0e140aee02a7d0f6a6)::

    system | user: task prompt | assistant: reply 1 | ... (older steps: their reply alone)
    | user: [screen n-4] | assistant: reply n-4 | ... | user: [screen n-1] | assistant: reply n-1
    | user: [current screen]

In all, every past step stays as text and screenshots are kept newest first; those of steps <=
``image_cutoff`` are dropped (in ``osworld`` such a step joins the text-only message). The cutoff
only moves forward. ``append`` moves it in chunks (a few images, or a quarter of the budget at once)
so most steps only append; ``osworld`` and ``ui-tars`` slide it one step at a time, as the reference
agents do (always min(max_images, n) screenshots). When the budget binds, all drop the oldest screenshots,
then the oldest steps' text, down to three quarters of the budget. What the model must hear about a
step (an unusable reply, a failed action, notes on the reply) goes in the next user turn (in
``osworld`` and ``ui-tars``, while that turn still shows its screenshot; past user turns hold nothing
else).

Token counts are exact for the text counter given: the chat template's fixed words (role names,
``image``) are counted with it too, and text runs are counted as the template joins them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from agent.layouts import OPENCUA_LAYOUTS, PROFILES, UI_TARS_LAYOUTS
from agent.messages import ImagePart, Message, Part, TextPart
from agent.models.kimi_vl.vision import image_tokens as kimi_vl_image_tokens
from agent.policy import StepView
from agent.prompt_record import PromptRecord
from prompts import load_profile, placeholders

OSWORLD_LIKE = ("osworld", *OPENCUA_LAYOUTS, *UI_TARS_LAYOUTS)  # one-step image window

# Special tokens around the words the tokenizer counts: <|im_x|> role <|im_middle|> ... <|im_end|>;
# <|media_start|> image <|media_content|> (pads) <|media_end|>; <|im_assistant|> assistant <|im_middle|>.
MESSAGE_SPECIALS = 3
IMAGE_SPECIALS = 3
GENERATION_SPECIALS = 2
THINK_CLOSE = "◁/think▷"  # Kimi-VL Thinking: the reasoning ends here, the answer follows
CUT = " [...]"

# template -> (placeholders it must use, placeholders it may use)
_Schema = dict[str, tuple[frozenset[str], frozenset[str]]]


def _s(required: str = "", optional: str = "") -> tuple[frozenset[str], frozenset[str]]:
    return frozenset(required.split()), frozenset(optional.split())


_COMMON: _Schema = {
    "agent_system": _s(optional="thought_guidance"),
    "thought_instruct": _s(),
    "thought_thinking": _s(),
    "agent_step": _s("action", "step thought"),
    "history_omitted": _s(optional="last"),
    "parse_feedback": _s("error"),  # a retry within the step, and the next step after an unusable reply
    "action_feedback": _s("error", "step"),
    "notes_feedback": _s("notes", "step"),
}
SCHEMAS: dict[str, _Schema] = {
    "append": {
        **_COMMON,
        "agent_task": _s("task"),
        "screen_caption": _s(optional="step"),
        "screen_omitted": _s(optional="step"),
        "agent_current": _s(optional="step"),
    },
    "osworld": {
        **_COMMON,
        "agent_step_thinking": _s("action", "step thought"),
        "agent_current": _s("task", "step"),
    },
}
SCHEMAS.update({name: SCHEMAS["osworld"] for name in OPENCUA_LAYOUTS})
# The task prompt is the first user turn; the current turn is its screenshot alone.
SCHEMAS.update({name: {**_COMMON, "agent_task": _s("task")} for name in UI_TARS_LAYOUTS})


def utf8_upper_bound(text: str) -> int:
    """Byte-level BPE tokens each cover at least one byte, so the byte count never under-counts."""
    return len(text.encode("utf-8"))


def load_templates(profile: str, prompt_dir: Path | None = None, family: str | None = None) -> dict[str, str]:
    """The profile's templates, checked: ValueError (one line) for an unknown profile, a missing
    template, or a placeholder that is unknown or missing. Call it at start-up."""
    if profile not in SCHEMAS:
        raise ValueError(f"unknown prompt profile {profile!r} (choose from {', '.join(PROFILES)})")
    schema = SCHEMAS[profile]
    out = {}
    user_dir = Path(prompt_dir) if prompt_dir is not None else None
    for name, (text, where) in load_profile(profile, schema, user_dir, family).items():
        required, optional = schema[name]
        used = placeholders(text, where)
        if used - required - optional:
            allowed = ", ".join(f"{{{p}}}" for p in sorted(required | optional)) or "none"
            raise ValueError(
                f"prompt template {where}: unknown placeholder {{{min(used - required - optional)}}} "
                f"(allowed: {allowed})"
            )
        if required - used:
            raise ValueError(f"prompt template {where}: lacks the placeholder {{{min(required - used)}}}")
        out[name] = text
    return out


@dataclass(frozen=True)
class HistoryConfig:
    thinking: bool = False
    in_token_limit: int = 4096
    max_context: int = 32768
    max_new_tokens: int = 1024
    margin: int = 256
    max_images: int | None = 3  # None: as many as the budget holds
    count_text_tokens: Callable[[str], int] | None = None
    profile: str = "append"
    prompt_dir: Path | None = None  # templates here replace the packaged ones of the same name
    family: str | None = None  # the model profile's own templates (prompts/models/FAMILY/), if any
    # (width, height, in_token_limit) -> tokens one screenshot costs: the model profile's rule
    # (Qwen2.5-VL's 28-px cells for OpenCUA-7B and UI-TARS, MoonViT's for the Kimi families).
    image_tokens: Callable[[int, int, int], int] = kimi_vl_image_tokens

    @property
    def budget(self) -> int:
        return self.max_context - self.max_new_tokens - self.margin

    @property
    def image_chunk(self) -> int:
        """How many images one eviction drops when the image cap is what binds."""
        if self.profile in OSWORLD_LIKE:
            return 1  # the reference window: always min(max_images, n) screenshots
        return max(1, ((self.max_images or 1) + 1) // 2)


@dataclass
class BuiltPrompt:
    messages: list[Message]
    tokens: int
    image_steps: list[int]  # steps whose screenshot is in the prompt (the current one included)
    first_text_step: int  # steps before this were dropped as text too (only when text alone overflows)


@dataclass
class ContextBuilder:
    """Builds each step's prompt; remembers what it evicted so evictions never undo themselves.

    Constructing it loads and checks the profile's templates (ValueError, one line)."""

    cfg: HistoryConfig
    image_cutoff: int = 0
    text_cutoff: int = 0
    _images: dict[int, Image.Image] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)
    _t: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._t = self._t or load_templates(self.cfg.profile, self.cfg.prompt_dir, self.cfg.family)

    @classmethod
    def replaying(
        cls, record: PromptRecord, count_text_tokens: Callable[[str], int] | None = None
    ) -> ContextBuilder:
        """A builder with a recorded run's templates and settings, to rebuild its prompts."""
        missing = set(SCHEMAS.get(record.profile, {})) - set(record.templates)
        if record.profile not in SCHEMAS or missing:
            what = f"template {min(missing)}" if missing else f"profile {record.profile!r}"
            raise ValueError(f"the run's prompt record has an unknown or incomplete {what}")
        cfg = HistoryConfig(
            thinking=record.thinking,
            in_token_limit=record.in_token_limit,
            max_context=record.max_context,
            max_new_tokens=record.max_new_tokens,
            margin=record.margin,
            max_images=record.max_images,
            count_text_tokens=count_text_tokens,
            profile=record.profile,
        )
        return cls(cfg, _t=dict(record.templates))

    def record(self) -> PromptRecord:
        c = self.cfg
        return PromptRecord(
            profile=c.profile,
            templates=dict(self._t),
            prompt_dir=str(c.prompt_dir) if c.prompt_dir else None,
            thinking=c.thinking,
            in_token_limit=c.in_token_limit,
            max_context=c.max_context,
            max_new_tokens=c.max_new_tokens,
            margin=c.margin,
            max_images=c.max_images,
            text_counter="tokenizer" if c.count_text_tokens else "utf8",
        )

    def rebuild(
        self,
        task: str,
        history: Sequence[StepView],
        step: int,
        cutoffs: tuple[int, int],
        screenshots: Mapping[int, Image.Image],
    ) -> BuiltPrompt:
        """Step ``step``'s prompt as ``build`` made it, given where its cutoffs (image, text) stood
        then and the screenshots of the steps after the image cutoff (the budget rules are not run
        again: what they decided is recorded)."""
        self.image_cutoff, self.text_cutoff = cutoffs
        self._images = {k: v for k, v in screenshots.items() if k > self.image_cutoff}
        return self._render(task, history, step)

    def count(self, text: str) -> int:
        if text not in self._counts:
            self._counts[text] = (self.cfg.count_text_tokens or utf8_upper_bound)(text)
        return self._counts[text]

    def fill(self, name: str, **values: object) -> str:
        return self._t[name].format_map(values)

    def build(
        self, task: str, history: Sequence[StepView], screenshot: Image.Image, step: int
    ) -> BuiltPrompt:
        cfg = self.cfg
        self._images[step] = screenshot
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
            del self._images[k]
        return prompt

    def retry(self, messages: list[Message], reply: str, error: str) -> list[Message]:
        """The prompt for another try within the step: the unusable reply, then why (only appends).

        The reply loses its thinking and may take half the room the budget leaves (cut, marked),
        so a reply that hit max_new_tokens still leaves room for the next tries; only a prompt
        already at the budget can pass it, by the feedback line, which the margin absorbs."""
        feedback = Message.text("user", self.fill("parse_feedback", error=error))
        used = (
            GENERATION_SPECIALS
            + self.count("assistant")
            + sum(self._tokens(m) for m in (*messages, feedback))
        )
        room = self.cfg.budget - used - MESSAGE_SPECIALS - self.count("assistant")
        _, close, answer = reply.partition(THINK_CLOSE)
        text = answer.strip() if close and answer.strip() else reply
        return [*messages, Message.text("assistant", self._fit(text, room // 2)), feedback]

    def _fit(self, text: str, room: int) -> str:
        """``text``, or its longest head that fits ``room`` tokens with a mark that it was cut."""
        count = self.cfg.count_text_tokens or utf8_upper_bound  # uncached: the heads are throwaway
        if count(text) <= room:
            return text
        lo, hi = 0, len(text)  # the longest head that fits lies in [lo, hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if count(text[:mid] + CUT) <= room else (lo, mid)
        return text[:lo] + CUT

    def _render(self, task: str, history: Sequence[StepView], step: int) -> BuiltPrompt:
        guidance = self._t["thought_thinking" if self.cfg.thinking else "thought_instruct"]
        system = Message.text("system", self.fill("agent_system", thought_guidance=guidance))
        views = [v for v in history if self.text_cutoff < v.step < step]
        omitted = self.fill("history_omitted", last=self.text_cutoff) if self.text_cutoff else None
        kept: list[int] = []
        profile = self.cfg.profile
        layout = (
            self._uitars
            if profile in UI_TARS_LAYOUTS
            else self._osworld
            if profile in OSWORLD_LIKE
            else self._append
        )
        messages = [system, *layout(task, views, step, omitted, kept)]
        tokens = GENERATION_SPECIALS + self.count("assistant") + sum(self._tokens(m) for m in messages)
        return BuiltPrompt(messages, tokens, kept, self.text_cutoff + 1)

    def _append(
        self, task: str, views: list[StepView], step: int, omitted: str | None, kept: list[int]
    ) -> list[Message]:
        messages = [Message.text("user", self.fill("agent_task", task=task))]
        feedback = omitted
        for view in views:
            shown = self._keep(view.step, kept)
            caption = self.fill("screen_caption" if shown else "screen_omitted", step=view.step)
            messages.append(Message("user", _parts(shown, feedback, caption)))
            messages.append(Message.text("assistant", self.step_text(view)))
            feedback = self.feedback(view)
        current = self.fill("agent_current", step=step)
        messages.append(Message("user", _parts(self._keep(step, kept), feedback, current)))
        return messages

    def _osworld(
        self, task: str, views: list[StepView], step: int, omitted: str | None, kept: list[int]
    ) -> list[Message]:
        messages: list[Message] = []
        texts: list[str] = []  # consecutive steps without a screenshot: one text-only message
        feedback: str | None = None
        for view in views:
            shown = self._keep(view.step, kept)
            if shown is None:
                texts.append(self.step_text(view))
            else:
                if texts:
                    messages.append(Message.text("assistant", "\n\n".join(texts)))
                    texts = []
                messages.append(Message("user", _parts(shown, feedback, None)))
                messages.append(Message.text("assistant", self.step_text(view)))
            feedback = self.feedback(view)
        if texts:
            messages.append(Message.text("assistant", "\n\n".join(texts)))
        current = self.fill("agent_current", task=task, step=step)
        before = "\n".join(t for t in (omitted, feedback) if t) or None
        messages.append(Message("user", _parts(self._keep(step, kept), before, current)))
        return messages

    def _uitars(
        self, task: str, views: list[StepView], step: int, omitted: str | None, kept: list[int]
    ) -> list[Message]:
        # As uitars15_v1.py's predict (DeskCraft @ 4893b45e): a past step whose screenshot left the
        # window is its reply alone, one assistant turn each (not merged, no user turn before it).
        messages = [Message.text("user", self.fill("agent_task", task=task))]
        feedback: str | None = None
        for view in views:
            shown = self._keep(view.step, kept)
            if shown is not None:
                messages.append(Message("user", _parts(shown, feedback, None)))
            messages.append(Message.text("assistant", self.step_text(view)))
            feedback = self.feedback(view)
        before = "\n".join(t for t in (omitted, feedback) if t) or None  # mostly none: the image alone
        messages.append(Message("user", _parts(self._keep(step, kept), before, None)))
        return messages

    def _keep(self, step: int, kept: list[int]) -> ImagePart | None:
        if step <= self.image_cutoff or step not in self._images:
            return None
        kept.append(step)
        return ImagePart(self._images[step], key=f"step-{step}")

    def _tokens(self, m: Message) -> int:
        """As the chat template renders it: adjacent text parts form one string."""
        n = MESSAGE_SPECIALS + self.count(m.role)
        run: list[str] = []
        for p in (*m.parts, None):
            if isinstance(p, TextPart):
                run.append(p.text)
                continue
            if run:
                n += self.count("".join(run))
                run = []
            if isinstance(p, ImagePart):
                size = self.cfg.image_tokens(p.image.width, p.image.height, self.cfg.in_token_limit)
                n += IMAGE_SPECIALS + self.count("image") + size
        return n

    def step_text(self, view: StepView) -> str:
        """A past step as the assistant's turn."""
        d = view.decision
        name = (
            "agent_step_thinking" if self.cfg.thinking and "agent_step_thinking" in self._t else "agent_step"
        )
        return self.fill(
            name, step=view.step, thought=d.thought or "-", action=d.action_text or _actions_text(view) or "-"
        )

    def feedback(self, view: StepView) -> str | None:
        """What the model must hear about step ``view`` in the next turn."""
        d, lines = view.decision, []
        if d.error:
            lines.append(self.fill("parse_feedback", error=d.error))
        errors = [e for e in view.results if e]
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            lines.append(self.fill("action_feedback", error=errors[0] + more, step=view.step))
        if d.notes:
            lines.append(self.fill("notes_feedback", notes="; ".join(d.notes), step=view.step))
        return "\n".join(lines) or None


def _parts(image: ImagePart | None, feedback: str | None, text: str | None) -> tuple[Part, ...]:
    # One text part per message: the template renders adjacent texts as one string.
    body = "\n".join(t for t in (feedback, text) if t)
    parts: list[Part] = [image] if image is not None else []
    if body:
        parts.append(TextPart(body))
    return tuple(parts)


def _actions_text(view: StepView) -> str:
    from env.actions import describe

    return "; ".join(describe(a) for a in view.decision.actions)
