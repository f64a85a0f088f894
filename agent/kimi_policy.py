"""The Kimi-VL policy: history -> prompt -> backend -> parsed typed actions.

A reply that does not parse goes back to the model with the error, a bounded number of times
within the step; if it still fails, the step records the error and the next step's prompt says so.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.backend import Backend, GenerationParams
from agent.history import ContextBuilder, HistoryConfig
from agent.messages import Message
from agent.parser import parse_reply
from agent.policy import Decision, Observation, StepView
from prompts import load_prompt


@dataclass(frozen=True)
class Variant:
    """What differs between Kimi-VL checkpoints (shared/docs/kimi-vl.md, "Variants")."""

    thinking: bool
    temperature: float
    in_token_limit: int
    max_new_tokens: int

    @classmethod
    def from_name(cls, model: str, thinking: bool | None = None) -> Variant:
        name = model.lower()
        think = "thinking" in name if thinking is None else thinking
        return cls(
            thinking=think,
            temperature=0.8 if think else 0.2,
            in_token_limit=16384 if "2506" in name else 4096,
            max_new_tokens=8192 if think else 1024,
        )


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
            )
        )
        self.parse_retries = parse_retries

    def decide(self, obs: Observation, history: Sequence[StepView]) -> Decision:
        t0 = time.perf_counter()
        messages = self.context.build(obs.task, history, obs.frame.to_image(), obs.step).messages
        tokens_in = tokens_out = 0
        for attempt in range(self.parse_retries + 1):
            completion = self.backend.generate(messages, self.params)
            tokens_in += completion.tokens_in
            tokens_out += completion.tokens_out
            parsed = parse_reply(completion.text, finish_reason=completion.finish_reason)
            if parsed.error is None or attempt == self.parse_retries:
                break
            messages = [
                *messages,
                Message.text("assistant", completion.text),
                Message.text("user", feedback_for(parsed.error)),
            ]
        return Decision(
            thought=parsed.thought,
            action_text=parsed.action_text,
            actions=parsed.actions,
            raw=completion.text,
            thinking=parsed.thinking,
            error=parsed.error,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            model_s=time.perf_counter() - t0,
        )


def policy_from_args(args: argparse.Namespace) -> tuple[KimiPolicy, str]:
    """The CLI's model flags -> a policy (loading the backend) and a label for the run."""
    variant = Variant.from_name(args.model, args.thinking)
    counter = None
    if args.backend == "openai":
        from agent.openai_backend import OpenAIBackend

        backend: Backend = OpenAIBackend(args.base_url, args.model, in_token_limit=variant.in_token_limit)
        label = f"{args.model} via {args.base_url}"
    else:
        from agent.transformers_backend import TransformersBackend

        tb = TransformersBackend.load(args.model, trust_remote_code=args.trust_remote_code)
        variant = Variant(variant.thinking, variant.temperature, tb.in_token_limit, variant.max_new_tokens)
        backend, counter = tb, tb.count_text_tokens
        label = f"{args.model} (transformers, {tb.device})"
    policy = KimiPolicy(
        backend,
        variant,
        count_text_tokens=counter,
        history_images=args.history_images,
        max_context=args.max_context,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
    )
    return policy, label


def feedback_for(error: str) -> str:
    return load_prompt("parse_feedback").format(error=error)
