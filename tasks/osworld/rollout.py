"""Grouped rollouts on disk, for GRPO-style trainers (`kimi-agent rollout`; docs/training.md,
"Grouped rollouts").

Each rollout is an ordinary run directory of the OSWorld runner, ``<domain>/<task_id>/rollout-<k>``
under the run's root (run.json, steps.jsonl, screenshots, outcome.json, result.txt: what
`kimi-agent export` and `bench osworld report` read). Beside them, written from those files alone
(so a resumed run writes them again, complete):

    rollouts.jsonl   one line per finished rollout: the task, its group and index, the reward (the
                     official evaluator's score, as outcome.json has it) and outcome kind, and per
                     step the exact prompt ids, the images in the order their tokens appear, and
                     the sampled reply's ids
    groups.jsonl     one line per task: its group's rewards, their mean and standard deviation

Prompt ids are rebuilt from run.json's prompt record as `kimi-agent export` rebuilds them
(agent/export: AgentRun.samples, then the chat template through the checkpoint's tokenizer). Reply
ids are the ids the model sampled where the backend recorded them (steps.jsonl, each attempt's
``token_ids``), else the reply's text through the tokenizer (``reply_ids_source`` says which).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from agent.export.dataset import prompt_ids, prompt_images, reply_ids
from agent.export.records import Options, Sample, Skip
from agent.export.trajectories import AgentRun
from agent.models.kimi_vl.chat import KimiChat
from agent.trajectory import StepRecord, read_steps_lenient
from tasks.osworld.results import TaskRef, read_outcome, read_score, ref_dir, write_atomic

FORMAT = "kimi-agent-rollout/1"
ROLLOUTS_FILE = "rollouts.jsonl"
GROUPS_FILE = "groups.jsonl"
ROLLOUT_DIR = "rollout-{k}"  # under the task's directory

ReplySource = Literal["sampled", "tokenized"]
# The chat (template and tokenizer) for a run's image budget (run.json's in_token_limit).
ChatFor = Callable[[int], KimiChat]


class StepLine(BaseModel):
    step: int
    # The executed and refused actions of the step, as steps.jsonl records them (env/actions).
    actions: list[dict[str, Any]] = Field(default_factory=list)
    # None for a scripted policy (no prompt, no reply) and for a step left out (``skipped``).
    prompt_ids: list[int] | None = None
    images: list[str] | None = None  # relative to the file's directory, in the order of their tokens
    reply_ids: list[int] | None = None
    reply_ids_source: ReplySource | None = None
    reply: str | None = None  # the reply's text as the backend gave it


class SkippedStep(BaseModel):
    step: int
    reason: str


class RolloutLine(BaseModel):
    format: str = FORMAT
    task_id: str
    domain: str
    group_id: str
    rollout: int  # 0 .. K-1 within the group
    run_dir: str  # relative to the file's directory
    reward: float  # the official evaluator's score (0.0 when the task crashed, timed out, ...)
    outcome: str  # scored / crashed / timed_out / unsupported / setup_failed
    error: str | None = None
    policy: Literal["model", "script"]
    # MoonViT's patch budget the prompts were built with: an image's pad count follows from it
    # (agent/models/kimi_vl/vision.image_tokens); None for a script.
    in_token_limit: int | None = None
    steps: list[StepLine] = Field(default_factory=list)
    skipped: list[SkippedStep] = Field(default_factory=list)  # model steps without usable ids, and why


class GroupLine(BaseModel):
    format: str = FORMAT
    group_id: str
    task_id: str
    domain: str
    size: int  # K, the rollouts asked for
    rollouts: list[int]  # the indices that finished, in order
    rewards: list[float]  # their rewards, in that order
    mean: float | None  # None when none finished
    std: float | None  # population standard deviation (ddof=0)
    complete: bool  # every one of the K finished


def rollout_refs(refs: list[TaskRef], group: int) -> list[TaskRef]:
    """Each task ``group`` times, each copy in its own run directory; a task's copies in a row, so
    that the first tasks' groups finish first."""
    return [
        r.model_copy(update={"run_dir": f"{r.domain}/{r.task_id}/{ROLLOUT_DIR.format(k=k)}"})
        for r in refs
        for k in range(group)
    ]


def rollout_index(ref: TaskRef) -> int:
    return int((ref.run_dir or "").rsplit("-", 1)[-1])


def rollout_line(root: Path, ref: TaskRef, chat_for: ChatFor | None) -> RolloutLine | None:
    """The line of one rollout, or None while it has not finished. ``chat_for``: the chat for a
    model run's image budget (None: prompts are not tokenized, a scripted run needs none)."""
    d = ref_dir(root, ref)
    score = read_score(d)
    if score is None:
        return None
    outcome = read_outcome(d)
    line = RolloutLine(
        task_id=ref.task_id,
        domain=ref.domain,
        group_id=ref.task_id,
        rollout=rollout_index(ref),
        run_dir=os.path.relpath(d, root),
        reward=score,
        outcome=outcome.kind if outcome is not None else "scored",
        error=outcome.error if outcome is not None else None,
        policy="script",
    )
    if not (d / "run.json").is_file():  # it never played (setup failed, unsupported, crashed early)
        return line
    records, _ = read_steps_lenient(d)
    run = AgentRun(d)
    if run.info.prompt is None:  # a script: no prompt, no reply; what it did and the reward
        line.steps = [StepLine(step=r.step, actions=[a.action for a in r.actions]) for r in records]
        return line
    line.policy, line.in_token_limit = "model", run.summary.in_token_limit
    if chat_for is None:
        raise ValueError(f"{d}: a model's run, and no tokenizer to give its prompt ids")
    chat = chat_for(run.summary.in_token_limit)
    by_step = {r.step: r for r in records}
    # Every step, the failed ones too (a trainer learns from them); a retried step's prompt holds
    # its failed replies as they were sent, and its last reply is the one taken.
    for item in run.samples(Options(keep_failed=True), chat.count_text_tokens):
        step = int(item.ref["step"])
        rec = by_step[step]
        actions = [a.action for a in rec.actions]
        if isinstance(item, Skip):
            line.skipped.append(SkippedStep(step=step, reason=item.reason))
            line.steps.append(StepLine(step=step, actions=actions))
            continue
        line.steps.append(_model_step(item, rec, actions, chat, root))
    return line


def _model_step(
    item: Sample, rec: StepRecord, actions: list[dict[str, Any]], chat: KimiChat, root: Path
) -> StepLine:
    sampled = rec.attempts[-1].token_ids if rec.attempts else None
    ids = list(sampled) if sampled is not None else reply_ids(rec.raw, chat)
    return StepLine(
        step=rec.step,
        actions=actions,
        prompt_ids=prompt_ids(item, chat),
        images=[os.path.relpath(p, root) for p in prompt_images(item)],
        reply_ids=ids,
        reply_ids_source="sampled" if sampled is not None else "tokenized",
        reply=rec.raw,
    )


def group_line(ref: TaskRef, lines: list[RolloutLine], size: int) -> GroupLine:
    rewards = [x.reward for x in lines]
    mean = sum(rewards) / len(rewards) if rewards else None
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards)) if mean is not None else None
    return GroupLine(
        group_id=ref.task_id,
        task_id=ref.task_id,
        domain=ref.domain,
        size=size,
        rollouts=[x.rollout for x in lines],
        rewards=rewards,
        mean=mean,
        std=std,
        complete=len(lines) == size,
    )


class Written(BaseModel):
    rollouts: int  # lines in rollouts.jsonl
    unfinished: int  # rollouts without a result yet (a resume runs them)
    groups: int
    complete_groups: int
    steps: int
    sampled_steps: int  # steps whose reply ids are the sampled ones
    skipped_steps: int


def write(root: Path, tasks: list[TaskRef], group: int, chat_for: ChatFor | None) -> Written:
    """rollouts.jsonl and groups.jsonl in ``root`` for ``tasks`` (each run ``group`` times)."""
    out_lines: list[str] = []
    groups: list[str] = []
    unfinished = complete = steps = sampled = skipped = 0
    for ref in tasks:
        lines: list[RolloutLine] = []
        for r in rollout_refs([ref], group):
            line = rollout_line(root, r, chat_for)
            if line is None:
                unfinished += 1
                continue
            lines.append(line)
            out_lines.append(line.model_dump_json())
            steps += len(line.steps)
            sampled += sum(s.reply_ids_source == "sampled" for s in line.steps)
            skipped += len(line.skipped)
        g = group_line(ref, lines, group)
        complete += g.complete
        groups.append(g.model_dump_json())
    write_atomic(root / ROLLOUTS_FILE, "".join(x + "\n" for x in out_lines))
    write_atomic(root / GROUPS_FILE, "".join(x + "\n" for x in groups))
    return Written(
        rollouts=len(out_lines),
        unfinished=unfinished,
        groups=len(groups),
        complete_groups=complete,
        steps=steps,
        sampled_steps=sampled,
        skipped_steps=skipped,
    )
