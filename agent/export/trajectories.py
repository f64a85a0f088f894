"""One of our run directories -> one sample per step: the prompt the agent sent at that step,
rebuilt from run.json's prompt record and the steps before it, and the reply it acted on.

The context builder's budget rules are not run again: each step records where its cutoffs stood,
so the rebuild takes the same screenshots and history text whatever counter is at hand. Only a
retried step (``--keep-failed``) needs the run's own counter, to cut the failed reply as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image

from agent.export.records import LeftOut, Options, RunSummary, Sample, Skip, target_text
from agent.history import ContextBuilder
from agent.policy import Decision, StepView
from agent.trajectory import TORN, RunInfo, StepRecord, read_info, read_steps_lenient

RESULT_FILE = "result.txt"  # OSWorld's score file, next to our run in its result tree


def read_score(run_dir: Path, warnings: list[str]) -> float | None:
    f = run_dir / RESULT_FILE
    if not f.is_file():
        return None
    try:
        return float(f.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError, ValueError):
        warnings.append(f"{f} holds no number: the run is taken as unscored")
        return None


class AgentRun:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.info: RunInfo = read_info(path)
        warnings: list[str] = []
        score = read_score(path, warnings)
        finished = self.info.stop_reason is not None
        done = self.info.stop_reason == "done" and self.info.status == "success"
        # OSWorld's checker decides where it ran; else the run's own claim, once it has ended.
        success = score >= 1.0 if score is not None else done if finished else None
        if score is None and finished:
            score = 1.0 if done else 0.0
        if not finished:
            warnings.append("the run did not finish (killed?): exported up to its last complete step")
        model = self.info.model
        limit = (
            self.info.prompt.in_token_limit if self.info.prompt else int(model.get("in_token_limit", 4096))
        )
        self.summary = RunSummary(
            kind="agent",
            task=self.info.task,
            steps=self.info.steps,
            score=score,
            success=success,
            checkpoint=model.get("checkpoint"),
            in_token_limit=limit,
            warnings=warnings,
            model=model.get("model"),
            never=never_data(self.info),
        )

    def samples(
        self, opts: Options, count_text_tokens: Callable[[str], int] | None
    ) -> Iterator[Sample | Skip]:
        record = self.info.prompt
        if record is None:
            raise ValueError(
                "run.json has no prompt record (a scripted run, or one made before runs recorded it)"
            )
        records, problem = read_steps_lenient(self.path)
        if problem is not None:
            self.summary.warnings.append(
                f"{problem}: exported up to the last complete step"
                if problem.endswith(TORN)
                else f"{problem}: exported the steps before it"
            )
        counter = count_text_tokens if record.text_counter == "tokenizer" else None
        builder = ContextBuilder.replaying(record, counter)
        shots: dict[int, Image.Image] = {}
        files = {r.step: self.path / r.screenshot for r in records}
        views: list[StepView] = []
        try:
            for rec in records:
                ref = {"step": rec.step}
                if rec.prompt is None:
                    yield Skip(ref, rec.error or "the model was not asked (no prompt recorded)")
                    continue
                why = None if opts.keep_failed else failure(rec)
                if why is not None:
                    yield Skip(ref, why, "failed-step")
                else:
                    yield self._sample(rec, views, builder, files, shots, opts)
                views.append(view_of(rec))
        finally:
            for im in shots.values():
                im.close()

    def _sample(
        self,
        rec: StepRecord,
        views: list[StepView],
        builder: ContextBuilder,
        files: dict[int, Path],
        shots: dict[int, Image.Image],
        opts: Options,
    ) -> Sample | Skip:
        assert rec.prompt is not None
        cutoffs = (rec.prompt.image_cutoff, rec.prompt.text_cutoff)
        # The screenshots the prompt shows: the steps after both cutoffs, and this one.
        needed = [v.step for v in views if v.step > max(cutoffs)] + [rec.step]
        for k in needed:
            if k not in shots:
                if not files[k].is_file():
                    return Skip({"step": rec.step}, f"screenshot {files[k].name} is missing")
                shots[k] = Image.open(files[k])  # read lazily: the size is what counts tokens
        for k in [k for k in shots if k <= cutoffs[0]]:
            shots.pop(k).close()  # cutoffs only move forward
        built = builder.rebuild(self.info.task, views, rec.step, cutoffs, shots)
        if built.tokens != rec.prompt.tokens:
            # The same inputs give the same count: a difference means other templates' text or
            # (for a run counted with its tokenizer) another tokenizer than the run's.
            return Skip(
                {"step": rec.step},
                f"the rebuilt prompt counts {built.tokens} tokens where the run counted {rec.prompt.tokens} "
                "(another tokenizer than the run's? pass --tokenizer)",
            )
        prompt = built.messages
        for a in rec.attempts[:-1]:  # a retried step: its failed replies and why, as they were sent
            prompt = builder.retry(prompt, a.raw, a.error or "")
        images = {f"step-{k}": files[k] for k in needed}
        return Sample(prompt, target_text(rec.raw, opts.thinking), images, {"step": rec.step})


REPLAY_LABEL = "replay of "  # how `kimi-agent replay` names its policy in run.json


def never_data(info: RunInfo) -> tuple[LeftOut, str] | None:
    """Why a run is never training data: its replies were not acted on (a dry run records a
    success for actions that never ran), or no model replied at all (a replay, a script)."""
    if info.dry_run:
        return "dry-run", "a dry run: its actions were never executed, so its outcome says nothing"
    if info.policy.startswith(REPLAY_LABEL):
        return "replay", f"a {info.policy}: recorded actions played again, no model reply"
    if info.prompt is None:
        return "scripted", "no model prompt in run.json (a scripted run, or one made before runs recorded it)"
    return None


def failure(rec: StepRecord) -> str | None:
    """Why a step is not a good example (None: it is): its reply did not parse or had to be asked
    again, or its actions were refused, not executed or failed."""
    if rec.parse_error:
        return f"the reply did not parse: {rec.parse_error}"
    if rec.retries:
        return f"retried ({rec.retries} unusable {'reply' if rec.retries == 1 else 'replies'} first)"
    if rec.error:
        return f"the step failed: {rec.error}"
    if not rec.actions:
        return "no action"
    for a in rec.actions:
        if not a.executed or not a.ok:
            return f"{a.description}: {a.error or 'not executed'}"
    return None


def view_of(rec: StepRecord) -> StepView:
    """The step as the loop's history held it (agent/loop.py: the decision, then each action's error)."""
    decision = Decision(
        thought=rec.thought,
        action_text=rec.action_text,
        actions=[a.to_action() for a in rec.actions],
        raw=rec.raw,
        thinking=rec.thinking,
        error=rec.parse_error,
        notes=list(rec.notes),
    )
    results = [a.error and f"{a.description}: {a.error}" for a in rec.actions]
    return StepView(step=rec.step, decision=decision, results=results)
