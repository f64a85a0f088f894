"""A model policy: one model profile and one backend. History -> prompt -> backend -> parsed typed actions.

The profile (agent/models/) says what differs between model families (prompt layouts, reply parser,
defaults); the backend (agent/backends/) says how the model is reached. Neither knows the other.

A reply that does not parse goes back to the model with the error, a bounded number of times
within the step; every try is kept in the step's record. If the last try still fails, the step
records the error and the next step's prompt says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.backends.base import Backend, GenerationParams
from agent.history import ContextBuilder, HistoryConfig
from agent.models.profile import ModelProfile, VariantSettings
from agent.models.registry import DEFAULT_PROFILE
from agent.models.reply import ParsedReply
from agent.policy import Attempt, Decision, Observation, PromptState, StepView
from agent.prompt_record import PromptRecord


class ModelPolicy:
    """``profile``: the model family (default: the first profile, Kimi-VL); ``variant``: which of its
    checkpoints (sampling and image defaults). ``history_images`` and ``parse_retries`` default to
    the profile's."""

    def __init__(
        self,
        backend: Backend,
        variant: VariantSettings,
        *,
        profile: ModelProfile | None = None,
        count_text_tokens: Callable[[str], int] | None = None,
        history_images: int | None = None,
        max_context: int = 32768,
        temperature: float | None = None,
        max_new_tokens: int | None = None,
        parse_retries: int | None = None,
        prompt_profile: str | None = None,
        prompt_dir: Path | None = None,
    ) -> None:
        self.profile = profile = profile or DEFAULT_PROFILE
        prompt_profile = prompt_profile or profile.layouts[0]  # the family's own default layout
        self.backend = backend
        self.variant = variant
        self.params = GenerationParams(
            max_new_tokens=max_new_tokens or variant.max_new_tokens,
            temperature=variant.temperature if temperature is None else temperature,
            # A family that samples with nucleus sampling says so on its variant (Kimi K2.x: 0.95);
            # Kimi-VL's variants have no top_p, and its requests carry none.
            top_p=getattr(variant, "top_p", None),
            frequency_penalty=getattr(variant, "frequency_penalty", None),  # UI-TARS-1.5's runner: 1
            thinking=getattr(variant, "request_thinking", None),  # K2.x instant: False
        )
        retry_t = profile.retry_temperature
        self.retry_params = (
            self.params if retry_t is None else self.params.model_copy(update={"temperature": retry_t})
        )
        self.context = ContextBuilder(
            HistoryConfig(
                thinking=variant.thinking,
                in_token_limit=variant.in_token_limit,
                max_context=max_context,
                max_new_tokens=self.params.max_new_tokens,
                max_images=profile.history_images if history_images is None else history_images,
                count_text_tokens=count_text_tokens,
                profile=prompt_profile,
                prompt_dir=prompt_dir,
                family=profile.prompt_family,
                image_tokens=profile.image_tokens,
            )
        )
        self.parse_retries = profile.parse_retries if parse_retries is None else parse_retries
        # After the builder, which names an unknown layout itself (the message runs have always given).
        if prompt_profile not in profile.layouts:
            raise ValueError(
                f"the {profile.title} profile has no prompt layout {prompt_profile!r} "
                f"(choose from {', '.join(profile.layouts)})"
            )

    def prompt_record(self) -> PromptRecord:
        """For run.json: what rebuilds this policy's prompts (``kimi-agent export``)."""
        return self.context.record()

    def decide(self, obs: Observation, history: Sequence[StepView]) -> Decision:
        t0 = time.perf_counter()
        screenshot = obs.frame.to_image()
        built = self.context.build(obs.task, history, screenshot, obs.step)
        messages = built.messages
        state = PromptState(
            image_cutoff=self.context.image_cutoff, text_cutoff=self.context.text_cutoff, tokens=built.tokens
        )
        attempts: list[Attempt] = []
        for attempt in range(self.parse_retries + 1):
            t1 = time.perf_counter()
            completion = self.backend.generate(messages, self.retry_params if attempt else self.params)
            parsed = self.profile.read_reply(
                completion.text, completion.finish_reason, screenshot.size, self.variant.in_token_limit
            )
            if completion.reasoning is not None:
                self._take_reasoning(parsed, completion.reasoning)
            attempts.append(
                Attempt(
                    raw=completion.text,
                    error=parsed.error,
                    tokens_in=completion.tokens_in,
                    tokens_out=completion.tokens_out,
                    model_s=time.perf_counter() - t1,
                    token_ids=completion.token_ids,
                )
            )
            if parsed.error is None or attempt == self.parse_retries:
                break
            messages = self.context.retry(messages, completion.text, parsed.error)
        return Decision(
            thought=parsed.thought,
            action_text=parsed.action_text,
            actions=parsed.actions,
            raw=completion.text,
            thinking=parsed.thinking,
            error=parsed.error,
            notes=list(parsed.notes),
            attempts=attempts,
            tokens_in=sum(a.tokens_in for a in attempts),
            tokens_out=sum(a.tokens_out for a in attempts),
            model_s=time.perf_counter() - t0,
            prompt=state,
        )

    def _take_reasoning(self, parsed: ParsedReply, reasoning: str) -> None:
        """The thinking the server returned apart from the text goes into the step's record
        (``thinking``); for a family that thinks that way it is also the step's thought, which the
        history replays, as OSWorld's Kimi agent replays ``reasoning_content``."""
        reasoning = reasoning.strip()
        if not reasoning:
            return
        parsed.thinking = reasoning if parsed.thinking is None else f"{reasoning}\n\n{parsed.thinking}"
        if self.profile.thinking == "reasoning_content" and not parsed.thought:
            parsed.thought = reasoning
