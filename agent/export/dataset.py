"""Runs -> a LLaMA-Factory dataset directory: tokenized/ (the samples as the ids the model was
given and labels on its replies, which LLaMA-Factory trains on as they are: agent/export/tokenized.py),
data.json (the same samples as ShareGPT multimodal text, for reading and other tools),
dataset_info.json, images/ (hard links to the screenshots, or copies), manifest.json (what was taken,
what was skipped and why, each sample's token count, LLaMA-Factory's settings).

Run directories are found anywhere under the given directories (an OSWorld result tree holds ours
in its task directories). A run that cannot be read is skipped with its reason, never a crash.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agent.export import sharegpt, tokenized
from agent.export.records import LeftOut, Options, Run, Sample, Skip
from agent.export.tokenized import TokenizedSample
from agent.export.trajectories import AgentRun
from agent.messages import ImagePart
from agent.models.kimi_vl.chat import KimiChat

DATA_FILE = "data.json"
TOKENIZED_DIR = "tokenized"  # LLaMA-Factory's tokenized_path: the samples as ids and labels
# A grounding run directory (tasks/screenspot) -> its reader; given by the caller, so that agent/
# needs nothing from tasks/.
GroundingReader = Callable[[Path], Run]


class Skipped(BaseModel):
    ref: dict[str, Any]
    reason: str
    kind: LeftOut = "problem"


class RunEntry(BaseModel):
    path: str
    kind: str = "agent"
    task: str | None = None
    score: float | None = None
    taken: bool = False
    reason: str | None = None  # why the whole run was left out
    left_out: LeftOut | None = None  # the kind of that reason
    samples: int = 0
    skipped: list[Skipped] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class SampleEntry(BaseModel):
    index: int  # its place in data.json
    run: str
    ref: dict[str, Any]
    tokens: int


class Manifest(BaseModel):
    dataset: str
    file: str = DATA_FILE
    samples: list[SampleEntry] = Field(default_factory=list)
    runs: list[RunEntry] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    tokenizer: str = ""
    # Settings LLaMA-Factory needs to see what the agent saw (docs/export.md).
    llamafactory: dict[str, Any] = Field(default_factory=dict)

    @property
    def skipped_steps(self) -> int:
        return sum(len(r.skipped) for r in self.runs)


class CountingChat(KimiChat):
    """Our chat template with each text's ids kept: a step's history text recurs in every later
    sample of its run, and tokenizing it again each time would be most of the export's work."""

    def __init__(self, tokenizer: Any, in_token_limit: int) -> None:
        super().__init__(tokenizer, in_token_limit)
        self._ids: dict[str, list[int]] = {}

    def text_ids(self, text: str) -> list[int]:
        ids = self._ids.get(text)
        if ids is None:
            if len(self._ids) > 100_000:
                self._ids.clear()
            ids = self._ids[text] = super().text_ids(text)
        return ids


def find_runs(inputs: Sequence[Path]) -> Iterator[Path | tuple[Path, str]]:
    """Every run directory under ``inputs`` (itself included), in path order: ours (run.json and
    steps.jsonl) and grounding runs (run.json and predictions.jsonl). A problem yields (path, why)."""
    for root in inputs:
        if not root.is_dir():
            raise ValueError(f"{root} is not a directory")
        found = False
        for here, dirs, files in os.walk(root):
            dirs.sort()
            if "run.json" in files and ("steps.jsonl" in files or "predictions.jsonl" in files):
                dirs[:] = []  # a run's own folders hold no runs
                found = True
                yield Path(here)
        if not found:
            yield root, "no run directory (run.json with steps.jsonl or predictions.jsonl) under it"


class _Images:
    """Each source image once under images/, linked (or copied) under a name unique in the set."""

    def __init__(self, out: Path, copy: bool) -> None:
        self.out, self.copy = out, copy
        self._names: dict[Path, str] = {}
        self._taken: set[str] = set()

    def add(self, src: Path, folder: str) -> str:
        name = self._names.get(src)
        if name is None:
            name, n = f"images/{folder}/{src.name}", 1
            while name in self._taken:
                n += 1
                name = f"images/{folder}/{src.stem}-{n}{src.suffix}"
            dest = self.out / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if self.copy:
                shutil.copyfile(src, dest)
            else:
                try:
                    os.link(src, dest)
                except OSError:  # another file system, or links not allowed: a copy
                    shutil.copyfile(src, dest)
            self._names[src] = name
            self._taken.add(name)
        return name


def _folder(run: Path, roots: Sequence[Path], taken: set[str]) -> str:
    """A readable, unique folder name for a run's images: its path below the input it came from."""
    for root in roots:
        try:
            rel = run.resolve().relative_to(root.resolve())
        except ValueError:
            continue
        base = "-".join((root.resolve().name, *rel.parts)) if rel.parts else root.resolve().name
        break
    else:
        base = run.name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "run"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    taken.add(name)
    return name


def _run_filter(run: Run, opts: Options) -> tuple[LeftOut, str] | None:
    """Why the whole run is left out (None: it is kept). Dry runs and replays never go in; runs
    that did not succeed only when asked for (--include-failed-tasks, or a --min-score they reach)."""
    s = run.summary
    if s.never is not None:
        return s.never
    if s.kind == "grounding":
        return None  # its filters apply record by record
    if opts.task_regex is not None and not opts.task_regex.search(s.task or ""):
        return "filter", "the task does not match --task-regex"
    if opts.max_steps is not None and (s.steps or 0) > opts.max_steps:
        return "filter", f"{s.steps} steps > --max-steps {opts.max_steps}"
    if opts.min_score is not None:
        if s.score is None or s.score < opts.min_score:
            return (
                "filter",
                "no score" if s.score is None else f"score {s.score:g} < --min-score {opts.min_score:g}",
            )
    elif not s.success and not opts.include_failed_tasks:
        why = "not a success" if s.success is False else "the outcome is unknown (the run did not finish)"
        if s.score is not None and s.success is False:
            why += f" (score {s.score:g})"
        return "failed-task", why
    return None


# How the end-of-export counts name each kind: (one, many, why / what takes them).
_LEFT_OUT: dict[tuple[LeftOut, bool], tuple[str, str, str]] = {
    ("dry-run", True): ("dry run", "dry runs", "never training data"),
    ("replay", True): ("replay", "replays", "never training data"),
    ("scripted", True): ("scripted run", "scripted runs", "never training data"),
    ("failed-task", True): (
        "failed or unfinished task",
        "failed or unfinished tasks",
        "--include-failed-tasks takes them",
    ),
    ("missed", False): ("missed grounding answer", "missed grounding answers", "--include-missed takes them"),
    ("failed-step", False): ("failed step", "failed steps", "--include-failed-steps takes them"),
    ("filter", True): ("run", "runs", "by your filters"),
    ("filter", False): ("sample", "samples", "by your filters"),
    ("problem", True): ("run", "runs", "could not be read"),
    ("problem", False): ("step or record", "steps or records", "could not be used"),
}


def left_out(m: Manifest) -> list[str]:
    """What was left out and why, counted by kind: runs for whole runs, samples otherwise."""
    counts: dict[tuple[LeftOut, bool], int] = {}
    for r in m.runs:
        if r.left_out is not None:
            counts[r.left_out, True] = counts.get((r.left_out, True), 0) + 1
        for k in r.skipped:
            counts[k.kind, False] = counts.get((k.kind, False), 0) + 1
    return _counted(counts)


class NothingToExport(ValueError):
    """Every run is left out whole (scripted, failed, filtered...): no tokenizer, no dataset."""


def _counted(counts: dict[tuple[LeftOut, bool], int]) -> list[str]:
    out = []
    for key, (one, many, note) in _LEFT_OUT.items():
        n = counts.get(key, 0)
        if n:
            out.append(f"{n} {one if n == 1 else many} ({note})")
    return out


def export(
    inputs: Sequence[Path],
    out: Path,
    opts: Options,
    load_tokenizer: Callable[[Path], Any],
    tokenizer: Path | None = None,
    *,
    resolve_tokenizer: Callable[[str], Path] | None = None,
    grounding: GroundingReader | None = None,
    name: str = "kimi_agent",
    copy_images: bool = False,
    image_root: Path | None = None,
    warn: Callable[[str], None] = lambda line: None,
) -> Manifest:
    """Export every run under ``inputs`` into ``out`` (which must not exist or be empty).
    ``tokenizer``: a checkpoint directory; else the runs' own, found by ``resolve_tokenizer``
    (default: agent.backends.weights.resolve_tokenizer offline, the cache only). ``image_root``: where ``out``
    will be when training reads it (its absolute path by default): the tokenized dataset names
    each image by its path there."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty directory; pass another --out")
    runs: list[tuple[Path, Run | None, str | None]] = []
    for found in find_runs(inputs):
        if isinstance(found, tuple):
            runs.append((found[0], None, found[1]))
            continue
        try:
            if (found / "steps.jsonl").is_file():
                runs.append((found, AgentRun(found), None))
            elif grounding is not None:
                runs.append((found, grounding(found), None))
            else:
                runs.append((found, None, "a grounding run, and no grounding reader was given"))
        except (OSError, ValueError) as e:
            runs.append((found, None, f"cannot read it: {_line(e)}"))
    readable = [r for _, r, _ in runs if r is not None]
    if not readable:
        path, _, problem = runs[0]
        raise ValueError(f"nothing to export: {path}: {problem}")
    # Known before any tokenizer is needed: say it now rather than write an empty dataset.
    whole: dict[tuple[LeftOut, bool], int] = {}
    for _, run, _ in runs:
        why = ("problem", "") if run is None else _run_filter(run, opts)
        if why is None:
            break
        whole[why[0], True] = whole.get((why[0], True), 0) + 1
    else:
        raise NothingToExport("nothing to export: " + "; ".join(_counted(whole)))
    if tokenizer is None:
        if resolve_tokenizer is None:
            from agent.backends.weights import resolve_tokenizer as resolve

            resolve_tokenizer = partial(resolve, offline=True)
        tokenizer = default_tokenizer(readable, resolve_tokenizer)
    tok = load_tokenizer(tokenizer)
    marks = sharegpt.markers(list(tok.get_added_vocab()))
    chats: dict[int, CountingChat] = {}
    out.mkdir(parents=True, exist_ok=True)
    images = _Images(out, copy_images)
    manifest = Manifest(dataset=name, tokenizer=str(tokenizer), options=_options(opts))
    data: list[dict[str, Any]] = []
    ids: list[TokenizedSample] = []
    folders: set[str] = set()
    sizes: set[tuple[int, int]] = set()
    root = image_root if image_root is not None else out.resolve()
    for path, run, problem in runs:
        entry = RunEntry(path=str(path), reason=problem, left_out="problem" if problem else None)
        manifest.runs.append(entry)
        if run is None:
            warn(f"{path}: skipped: {problem}")
            continue
        s = run.summary
        entry.kind, entry.task, entry.score, entry.warnings = s.kind, s.task, s.score, s.warnings
        left_out = _run_filter(run, opts)
        if left_out is not None:
            entry.left_out, entry.reason = left_out
            continue
        chat = chats.get(s.in_token_limit) or chats.setdefault(
            s.in_token_limit, CountingChat(tok, s.in_token_limit)
        )
        folder = _folder(path, inputs, folders)
        try:
            for item in run.samples(opts, chat.count_text_tokens):
                if isinstance(item, Skip):
                    entry.skipped.append(Skipped(ref=item.ref, reason=item.reason, kind=item.kind))
                    continue
                why, prompt_ids, reply_ids = _check(item, chat, marks, opts)
                tokens = len(prompt_ids) + len(reply_ids)
                if why is not None:
                    kind: LeftOut = "filter" if "--max-tokens" in why else "problem"
                    entry.skipped.append(Skipped(ref=item.ref, reason=why, kind=kind))
                    continue
                sample = sharegpt.to_sample(
                    item.prompt,
                    item.target,
                    lambda p, item=item, folder=folder: images.add(item.images[p.key], folder),
                )
                sharegpt.check_sample(sample)
                sizes.update(im.size for m in item.prompt for im in m.images)
                manifest.samples.append(
                    SampleEntry(index=len(data), run=str(path), ref=item.ref, tokens=tokens)
                )
                data.append(sample)
                ids.append(
                    TokenizedSample.of(prompt_ids, reply_ids, [str(root / p) for p in sample["images"]])
                )
                entry.samples += 1
        except Exception as e:  # one unreadable run must not cost the others
            if entry.samples or entry.skipped:
                entry.warnings.append(f"stopped reading it: {_line(e)}")
            else:
                entry.reason, entry.left_out = f"cannot export it: {_line(e)}", "problem"
                warn(f"{path}: skipped: {entry.reason}")
        entry.taken = entry.samples > 0
        for w in entry.warnings:
            warn(f"{path}: {w}")
    # LLaMA-Factory's settings (its hparams, docs/training.md). tokenized_path makes it train on our
    # ids and labels as they are (its kimi_vl template would re-render the samples otherwise; see
    # agent/export/tokenized.py); it still asks for a dataset name. Its collator loads the images
    # by the paths in the tokenized dataset and resizes any outside [image_min_pixels,
    # image_max_pixels] (default 32*32 to 768*768) before the processor, which would change their
    # token count: the bounds are the smallest and largest screenshot. cutoff_len is its own count
    # of the longest sample (len(input_ids)); it cuts nothing loaded from tokenized_path.
    pixels = [w * h for w, h in sizes] or [0]
    tokenized.write(out / TOKENIZED_DIR, ids)
    manifest.llamafactory = {
        "dataset": name,
        "dataset_dir": str(root),
        "tokenized_path": str(root / TOKENIZED_DIR),
        "template": "kimi_vl",
        "image_max_pixels": max(pixels),
        "image_min_pixels": min(pixels),
        "cutoff_len": max((len(s.input_ids) for s in ids), default=0),
    }
    _write_json(out / DATA_FILE, data)
    _write_json(out / "dataset_info.json", sharegpt.dataset_info(name, DATA_FILE))
    _write_json(out / "manifest.json", manifest.model_dump(mode="json"))
    return manifest


def prompt_ids(item: Sample, chat: KimiChat) -> list[int]:
    """The ids of a sample's prompt as the model was given them: the chat template's, each image's
    pads expanded, ending with the assistant's opening."""
    return chat.render(item.prompt).ids


def reply_ids(text: str, chat: KimiChat) -> list[int]:
    """A reply's text as ids, then <|im_end|> (where the model learns to stop)."""
    return [*chat.text_ids(text), chat.ids["<|im_end|>"]]


def prompt_images(item: Sample) -> list[Path]:
    """The files of a sample's images, in the order their tokens appear in its prompt (the
    template renders messages and their parts in order)."""
    return [item.images[p.key] for m in item.prompt for p in m.parts if isinstance(p, ImagePart)]


def _check(
    item: Sample, chat: KimiChat, marks: re.Pattern[str], opts: Options
) -> tuple[str | None, list[int], list[int]]:
    """Why a sample cannot be used (None: it can), its prompt's ids (ending with the assistant's
    opening, as the model was given them) and its reply's (the target, then <|im_end|>: the model
    learns to stop there)."""
    marker = sharegpt.find_marker(item.prompt, item.target, marks)
    if marker is not None:
        return f"its text holds {marker!r}, which LLaMA-Factory would read as a marker", [], []
    prompt = prompt_ids(item, chat)
    reply = reply_ids(item.target, chat)
    tokens = len(prompt) + len(reply)
    if opts.max_tokens is not None and tokens > opts.max_tokens:
        return f"{tokens} tokens > --max-tokens {opts.max_tokens}", prompt, reply
    missing = [
        p.key for m in item.prompt for p in m.parts if isinstance(p, ImagePart) and p.key not in item.images
    ]
    if missing:
        return f"no file for image {missing[0]}", prompt, reply
    return None, prompt, reply


def default_tokenizer(runs: Sequence[Run], resolve: Callable[[str], Path]) -> Path:
    """The tokenizer of the first model a run names that ``resolve`` finds: the checkpoint the
    run (or its server) loaded, else the model name it asked for. A run against a model server
    names the server's path or hub id; a hub id gives its tokenizer files, never the weights."""
    from agent.backends.base import BackendError

    tried: dict[str, str] = {}
    for run in runs:
        for name in (run.summary.checkpoint, run.summary.model):
            if not name or name in tried:
                continue
            try:
                return resolve(name)
            except BackendError as e:
                tried[name] = str(e)
    if not tried:
        raise ValueError(
            "no tokenizer: no run names its checkpoint; pass --tokenizer CHECKPOINT_DIR_OR_HUB_ID"
        )
    # A hub id's error says what to run (offline: the exact download command): the most useful.
    hub = [
        why for name, why in tried.items() if name.count("/") == 1 and not name.startswith((".", "/", "~"))
    ]
    if hub:
        raise ValueError(f"no tokenizer: {hub[0]}")
    names = ", ".join(tried)
    raise ValueError(
        f"no tokenizer: the runs name {names}, neither a checkpoint directory here nor a hub id that "
        f"has one; pass --tokenizer CHECKPOINT_DIR_OR_HUB_ID (a hub id fetches the tokenizer only, a few MB)"
    )


def _options(opts: Options) -> dict[str, Any]:
    d = {k: getattr(opts, k) for k in opts.__dataclass_fields__}
    d["task_regex"] = opts.task_regex.pattern if opts.task_regex else None
    return d


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    os.replace(tmp, path)


def _line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if isinstance(e, (OSError, ValueError)) and text:
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
