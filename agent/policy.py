"""What a policy sees and what it decides; the scripted and replay policies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field

from agent.jsonfile import JSONFileError, read_json
from env.actions import Action, action_from_dict, describe
from env.desktop import Frame
from env.geometry import ScreenGeometry


@dataclass(frozen=True)
class Observation:
    task: str
    step: int  # 1-based
    frame: Frame
    geometry: ScreenGeometry


class Attempt(BaseModel):
    """One model call within a step: a reply that did not parse is retried, and every try is kept."""

    raw: str = ""
    error: str | None = None  # why this reply could not be used (None: it was the one taken)
    tokens_in: int = 0
    tokens_out: int = 0
    model_s: float = 0.0
    # The reply's ids as the model sampled them (Completion.token_ids); None where the backend did
    # not say (a server that does not return them): `kimi-agent rollout` then tokenizes ``raw``.
    token_ids: list[int] | None = None


class PromptState(BaseModel):
    """Where the context builder stood when it built a step's prompt: with the run's prompt record
    (run.json ``prompt``) and the earlier steps, enough to rebuild that prompt exactly."""

    image_cutoff: int = 0  # screenshots of steps <= this were left out
    text_cutoff: int = 0  # steps <= this were left out altogether
    tokens: int = 0  # the builder's count of the prompt (exact with the tokenizer's counter)


class Decision(BaseModel):
    """One policy step: the model's words and the typed actions parsed from them.

    A reply that could not be parsed has ``actions=[]`` and ``error`` set; the loop records it and
    the policy shows the error to the model next turn. ``notes`` are remarks on a reply that did
    parse (e.g. code after ``computer.terminate()`` was ignored); they too go back to the model.
    """

    thought: str = ""
    action_text: str = ""  # the "## Action:" line: a short description in the model's words
    actions: list[Action] = Field(default_factory=list)
    raw: str = ""
    thinking: str | None = None
    error: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    model_s: float = 0.0
    notes: list[str] = Field(default_factory=list)
    attempts: list[Attempt] = Field(default_factory=list)  # every model call of the step, in order
    prompt: PromptState | None = None  # set by policies that prompt a model (ModelPolicy)


class StepView(BaseModel):
    """What a policy may read about an earlier step (the loop's history)."""

    step: int
    decision: Decision
    results: list[str | None] = Field(default_factory=list)  # per action: None = ok, else the error


class Policy(Protocol):
    def decide(self, obs: Observation, history: Sequence[StepView]) -> Decision: ...


class ScriptedPolicy:
    """Plays a fixed list of steps (each a list of actions). It claims no outcome of its own: a
    script that should end a run says so with a ``done`` step; run it for ``len(policy)`` steps."""

    def __init__(self, steps: Sequence[Sequence[Action]], thought: str = "scripted") -> None:
        self._steps = [list(s) for s in steps]
        self._thought = thought

    def __len__(self) -> int:
        return len(self._steps)

    @classmethod
    def from_file(cls, path: Path) -> ScriptedPolicy:
        """A JSON list of steps; a step is one action object or a list of them, e.g.
        ``[[{"kind": "click", "point": {"x": 0.5, "y": 0.5}}], {"kind": "type", "text": "hi"}]``."""
        try:
            data = read_json(path)
        except JSONFileError as e:
            raise ValueError(f"cannot read script: {e}") from None
        if not isinstance(data, list):
            raise ValueError(f"script {path}: expected a JSON list of steps, got {type(data).__name__}")
        steps = []
        for i, step in enumerate(data, 1):
            items = step if isinstance(step, list) else [step]
            try:
                steps.append([action_from_dict(a) for a in items])
            except ValueError as e:
                raise ValueError(f"script {path}, step {i}: {e}") from e
        return cls(steps, thought=f"scripted from {Path(path).name}")

    def decide(self, obs: Observation, history: Sequence[StepView]) -> Decision:
        i = obs.step - 1
        if i >= len(self._steps):
            return Decision(
                thought=self._thought, error=f"the script has {len(self._steps)} steps, not {obs.step}"
            )
        actions = self._steps[i]
        return Decision(
            thought=self._thought,
            action_text="; ".join(describe(a) for a in actions),
            actions=actions,
        )
