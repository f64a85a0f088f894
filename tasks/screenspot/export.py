"""A grounding run (``kimi-agent bench screenspot``) -> single-turn samples for ``kimi-agent export``:
the grounding prompt exactly as the runner sent it (system prompt, then the screenshot and the
instruction), the model's reply as the target. Only answers that hit their target are taken unless
``--include-missed`` asks for the others (a point outside the target, or none: "I cannot find it.")."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from agent.export.records import Options, RunSummary, Sample, Skip, target_text
from agent.jsonfile import read_json
from agent.messages import ImagePart, Message
from tasks.screenspot import prompt
from tasks.screenspot.runner import instruction, read_log

PACKAGED = "prompts/grounding_system.md"


class GroundingRun:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.settings: dict[str, Any] = read_json(path / "run.json")
        if not isinstance(self.settings, dict) or "dataset_dir" not in self.settings:
            raise ValueError("run.json is not a grounding run's (no dataset_dir)")
        self.summary = RunSummary(
            kind="grounding",
            task=None,
            steps=None,
            score=None,
            success=None,
            checkpoint=self.settings.get("checkpoint"),
            in_token_limit=int(self.settings.get("in_token_limit") or 4096),
            model=self.settings.get("model"),
        )

    def system(self) -> str:
        """The system prompt the run sent, found again and checked against its recorded hash."""
        recorded = self.settings.get("system_prompt") or PACKAGED
        if recorded == PACKAGED:
            candidates = [prompt.system_prompt(), prompt.system_prompt(refusals=True)]
        else:
            candidates = [prompt.system_prompt(Path(recorded))]
        want = self.settings.get("system_prompt_sha256")
        for text in candidates:
            if want is None or hashlib.sha256(text.encode()).hexdigest() == want:
                return text
        raise ValueError(f"the system prompt {recorded} has changed since the run (its sha256 differs)")

    def samples(
        self, opts: Options, count_text_tokens: Callable[[str], int] | None
    ) -> Iterator[Sample | Skip]:
        from tasks.screenspot.datasets import load_dataset
        from tasks.screenspot.scoring import correctness

        system = self.system()
        dataset = load_dataset(Path(self.settings["dataset_dir"]))
        by_id = {s.id: s for s in dataset.samples}
        for pid, p in read_log(self.path / "predictions.jsonl").items():
            ref: dict[str, Any] = {"id": pid}
            s = by_id.get(pid)
            if s is None:
                yield Skip(ref, "the dataset has no such record any more")
                continue
            if p.error is not None:
                yield Skip(ref, f"the model could not be asked: {p.error}")
                continue
            verdict = correctness(s, p)
            ref["correct"], ref["correctness"] = verdict == "correct", verdict
            text = instruction(s, p.language)
            if verdict != "correct" and not opts.include_missed:
                why = "no point in the answer" if verdict == "wrong_format" else "the point missed the target"
                yield Skip(ref, f"{why} (--include-missed takes it)", "missed")
            elif opts.task_regex is not None and not opts.task_regex.search(text):
                yield Skip(ref, "the instruction does not match --task-regex", "filter")
            elif not s.image.is_file():
                yield Skip(ref, f"image {s.image} is missing")
            else:
                with Image.open(s.image) as im:
                    size = im.size
                # Only its size counts tokens: a blank stand-in spares decoding every screenshot.
                messages = _keyed(prompt.messages(system, Image.new("1", size), text))
                yield Sample(messages, target_text(p.raw_response, opts.thinking), {"screen": s.image}, ref)


def _keyed(messages: list[Message]) -> list[Message]:
    return [
        replace(m, parts=tuple(replace(p, key="screen") if isinstance(p, ImagePart) else p for p in m.parts))
        for m in messages
    ]
