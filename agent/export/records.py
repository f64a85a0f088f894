"""What a run reader hands the dataset writer: samples, skipped items, and a run's summary."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from agent.history import THINK_CLOSE
from agent.messages import Message

Thinking = Literal["keep", "drop"]
# Why something was left out, for the counts `kimi-agent export` prints at the end: runs that are
# never training data (dry runs, replays and other scripted runs: no model acted), what teaches the
# wrong thing unless asked for (failed tasks, missed grounding answers, failed steps), the user's
# own filters, and problems (files missing, a prompt that cannot be rebuilt).
LeftOut = Literal[
    "dry-run", "replay", "scripted", "failed-task", "missed", "failed-step", "filter", "problem"
]


@dataclass(frozen=True)
class Options:
    thinking: Thinking = "keep"
    keep_failed: bool = False  # steps whose reply did not parse, was retried, or whose actions failed
    include_failed_tasks: bool = False  # runs that did not succeed (OSWorld score below 1, unfinished)
    include_missed: bool = False  # grounding answers whose point missed the target, or had none
    min_score: float | None = None  # runs scoring at least this, instead of successes only
    task_regex: re.Pattern[str] | None = None
    max_steps: int | None = None
    max_tokens: int | None = None


@dataclass
class Sample:
    prompt: list[Message]  # what the model was sent, the system message first
    target: str  # the reply it gave, as it is to be learned
    images: dict[str, Path]  # each ImagePart's key -> the file its pixels came from
    ref: dict[str, Any]  # which step or record it is, for the manifest


@dataclass
class Skip:
    ref: dict[str, Any]
    reason: str
    kind: LeftOut = "problem"


@dataclass
class RunSummary:
    """What the run-level filters read, before any step is rebuilt."""

    kind: Literal["agent", "grounding"]
    task: str | None  # None: many (a grounding run)
    steps: int | None
    score: float | None  # OSWorld's result.txt, else 1.0 / 0.0 for a finished run, None if unknown
    success: bool | None
    checkpoint: str | None
    in_token_limit: int
    warnings: list[str] = field(default_factory=list)
    model: str | None = None  # the model name the run asked for (a hub id, or a served name)
    # Set for a run that is never training data, whatever the options: (kind, why).
    never: tuple[LeftOut, str] | None = None


class Run(Protocol):
    path: Path
    summary: RunSummary

    def samples(self, opts: Options, count_text_tokens: Any) -> Iterator[Sample | Skip]: ...


def target_text(raw: str, thinking: Thinking) -> str:
    """The reply to learn: as the model gave it, or without its thinking (``◁think▷...◁/think▷``)."""
    if thinking == "drop":
        _, close, answer = raw.partition(THINK_CLOSE)
        if close:
            return answer.strip()
    return raw
