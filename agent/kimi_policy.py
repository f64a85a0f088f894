"""The Kimi-VL policy: history -> prompt -> backend -> parsed typed actions.

A reply that does not parse goes back to the model with the error, a bounded number of times
within the step; every try is kept in the step's record. If the last try still fails, the step
records the error and the next step's prompt says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from agent.backends.base import Backend, GenerationParams
from agent.history import ContextBuilder, HistoryConfig
from agent.parser import parse_reply
from agent.policy import Attempt, Decision, Observation, PromptState, StepView
from agent.prompt_record import PromptRecord

VariantName = Literal["instruct", "thinking", "thinking-2506"]


@dataclass(frozen=True)
class Variant:
    """What differs between Kimi-VL checkpoints (shared/docs/kimi-vl.md, "Variants")."""

    name: VariantName
    thinking: bool
    temperature: float
    in_token_limit: int
    max_new_tokens: int

    @classmethod
    def named(cls, name: VariantName) -> Variant:
        think = name != "instruct"
        return cls(
            name=name,
            thinking=think,
            temperature=0.8 if think else 0.2,
            in_token_limit=16384 if name == "thinking-2506" else 4096,
            max_new_tokens=8192 if think else 1024,
        )

    @classmethod
    def from_name(cls, model: str) -> Variant:
        return cls.named(guess_variant(model) or "instruct")


def guess_variant(name: str) -> VariantName | None:
    """The variant a checkpoint name or path says it is (Kimi-VL-A3B-Thinking-2506, ...), or None."""
    low = name.lower()
    if "thinking" in low and "2506" in low:
        return "thinking-2506"
    if "thinking" in low:
        return "thinking"
    if "instruct" in low:
        return "instruct"
    return None


@dataclass(frozen=True)
class ResolvedVariant:
    """The variant a run uses and where each part of it came from (recorded in run.json)."""

    variant: Variant
    source: str
    in_token_limit_source: str

    def record(self) -> dict[str, Any]:
        v = self.variant
        return {
            "variant": v.name,
            "variant_from": self.source,
            "in_token_limit": v.in_token_limit,
            "in_token_limit_from": self.in_token_limit_source,
        }


def resolve_variant(
    *,
    override: VariantName | None,
    names: Sequence[tuple[str, str]],
    in_token_limit: int | None = None,
    in_token_limit_source: str = "",
    in_token_limit_override: int | None = None,
) -> ResolvedVariant:
    """``--variant`` wins; else the first of ``names`` ((what, value), most reliable first: the
    checkpoint the server loaded, the checkpoint directory, the served name) that says which; else
    Instruct. The patch limit: ``--in-token-limit``, else the checkpoint's own (preprocessor_config),
    else the variant's."""
    if override is not None:
        name, source = override, "--variant"
    else:
        found = next(
            ((guess_variant(v), f"{what} {v!r}") for what, v in names if v and guess_variant(v)), None
        )
        name, source = found if found else ("instruct", "default (no name said which variant)")
    variant = Variant.named(name)  # type: ignore[arg-type]
    limit_source = f"the {variant.name} default"
    if in_token_limit_override is not None:
        variant, limit_source = replace(variant, in_token_limit=in_token_limit_override), "--in-token-limit"
    elif in_token_limit is not None:
        variant, limit_source = replace(variant, in_token_limit=in_token_limit), in_token_limit_source
    return ResolvedVariant(variant, source, limit_source)


class KimiPolicy:
    def __init__(
        self,
        backend: Backend,
        variant: Variant,
        *,
        count_text_tokens: Callable[[str], int] | None = None,
        history_images: int = 3,
        max_context: int = 32768,
        temperature: float | None = None,
        max_new_tokens: int | None = None,
        parse_retries: int = 2,
        prompt_profile: str = "append",
        prompt_dir: Path | None = None,
    ) -> None:
        self.backend = backend
        self.variant = variant
        self.params = GenerationParams(
            max_new_tokens=max_new_tokens or variant.max_new_tokens,
            temperature=variant.temperature if temperature is None else temperature,
        )
        self.context = ContextBuilder(
            HistoryConfig(
                thinking=variant.thinking,
                in_token_limit=variant.in_token_limit,
                max_context=max_context,
                max_new_tokens=self.params.max_new_tokens,
                max_images=history_images,
                count_text_tokens=count_text_tokens,
                profile=prompt_profile,
                prompt_dir=prompt_dir,
            )
        )
        self.parse_retries = parse_retries

    def prompt_record(self) -> PromptRecord:
        """For run.json: what rebuilds this policy's prompts (``kimi-agent export``)."""
        return self.context.record()

    def decide(self, obs: Observation, history: Sequence[StepView]) -> Decision:
        t0 = time.perf_counter()
        built = self.context.build(obs.task, history, obs.frame.to_image(), obs.step)
        messages = built.messages
        state = PromptState(
            image_cutoff=self.context.image_cutoff, text_cutoff=self.context.text_cutoff, tokens=built.tokens
        )
        attempts: list[Attempt] = []
        for attempt in range(self.parse_retries + 1):
            t1 = time.perf_counter()
            completion = self.backend.generate(messages, self.params)
            parsed = parse_reply(completion.text, finish_reason=completion.finish_reason)
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
