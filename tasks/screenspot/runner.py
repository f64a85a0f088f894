"""Run a grounding dataset through a model: N requests in flight over one or more servers, every
finished sample appended to ``OUT/predictions.jsonl`` at once, a rerun resuming where the log ends.

The log is the run's only state. A line is written (and fsynced) by one thread, the main one, as a
sample finishes; a SIGKILL can at worst leave a torn last line, which a rerun cuts off before it
appends. A rerun skips every id the log holds with a prediction and asks again for those it holds
only with an ``error`` (a server fault that outlived the backend's retries): the last line of an id
is the one that counts.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from agent.backends.base import Backend, BackendError, Completion, GenerationParams
from agent.backends.openai import OpenAIBackend, data_url
from agent.jsonfile import read_json
from agent.models.kimi_vl.vision import check_sides, model_size
from agent.models.profile import ModelProfile
from tasks.screenspot import prompt
from tasks.screenspot.sample import Prediction, Sample

FILTER_KEYS = ("platform", "group", "application", "ui_type", "data_source")
Language = Literal["en", "cn"]
Ask = Callable[[Sample], Prediction]
# Formats a server decodes to exactly our pixels; with mode RGB its convert("RGB") changes nothing.
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


# --- choosing the samples -------------------------------------------------------------------------------


def parse_filters(items: Iterable[str]) -> dict[str, set[str]]:
    """``--filter key=value`` (repeatable; a key given twice keeps either value; values compare
    case-insensitively). ValueError naming the bad item."""
    out: dict[str, set[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise ValueError(f"--filter {item!r}: write key=value, e.g. platform=macos")
        if key not in FILTER_KEYS:
            raise ValueError(f"--filter {item!r}: unknown key {key!r} (one of {', '.join(FILTER_KEYS)})")
        out.setdefault(key, set()).add(value.strip().lower())
    return out


def select(
    samples: Sequence[Sample], filters: dict[str, set[str]], limit: int | None, language: Language
) -> list[Sample]:
    """The samples a run asks about, in dataset order: filtered, then the first ``limit``."""
    chosen = [s for s in samples if all(str(getattr(s, k)).lower() in v for k, v in filters.items())]
    if limit is not None:
        chosen = chosen[: max(limit, 0)]
    if language == "cn":
        missing = [s for s in chosen if not s.instruction_cn]
        if missing:
            raise ValueError(
                f"--language cn: {len(missing)} of {len(chosen)} samples have no Chinese instruction "
                f"(first: {missing[0].source})"
            )
    return chosen


# --- the run log ----------------------------------------------------------------------------------------


def read_log(path: Path) -> dict[str, Prediction]:
    """id -> its last prediction in the log. A line that does not read (a torn tail) is ignored."""
    done: dict[str, Prediction] = {}
    if not path.exists():
        return done
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                p = Prediction.model_validate_json(line)
            except ValidationError:
                continue
            done[p.id] = p
    return done


class Log:
    """Appends predictions, one JSON line each, flushed and fsynced before ``write`` returns."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_tail(path)
        self._f = path.open("a", encoding="utf-8")

    def write(self, p: Prediction) -> None:
        self._f.write(p.model_dump_json() + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def _cut_torn_tail(path: Path) -> None:
    """A kill mid-write leaves a last line without its newline: drop it, or the next line joins it."""
    if not path.exists():
        return
    with path.open("rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


# --- asking about one sample ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AskSettings:
    system: str
    params: GenerationParams
    in_token_limit: int
    language: Language = "en"
    send: Literal["original", "resized"] = "original"
    # A family other than Kimi-VL (OpenCUA): its replies' points are read in its coordinate space.
    profile: ModelProfile | None = None


def instruction(sample: Sample, language: Language) -> str:
    return (sample.instruction_cn or "") if language == "cn" else sample.instruction


def image_url(path: Path, in_token_limit: int, send: str) -> tuple[str, tuple[int, int]]:
    """The data URL to send and the image's size. ``original``: the file's own bytes when the server
    decodes them to the very pixels the official processor would get (an RGB PNG/JPEG/WebP), so
    it resizes once, by MoonViT's rule, as the official processor does, and the client spares a
    decode/resize/encode of a 4K image. Otherwise (or ``resized``): agent.models.kimi_vl.vision.wire_image as PNG."""
    with Image.open(path) as im:
        size = im.size
        check_sides(*model_size(*size, in_token_limit))  # MoonViT refuses it: say so before sending
        mime = _MIME.get(im.format or "")
        if send == "original" and mime and im.mode == "RGB":
            return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii"), size
        im.load()
        return data_url(im, in_token_limit), size


def openai_ask(backend: OpenAIBackend, s: AskSettings) -> Ask:
    def ask(sample: Sample) -> Prediction:
        url, size = image_url(sample.image, s.in_token_limit, s.send)
        c = backend.chat(prompt.openai_messages(s.system, url, instruction(sample, s.language)), s.params)
        return _prediction(sample, c, size, s.language, s)

    return ask


def local_ask(backend: Backend, s: AskSettings) -> Ask:
    def ask(sample: Sample) -> Prediction:
        with Image.open(sample.image) as im:
            im.load()
            msgs = prompt.messages(s.system, im, instruction(sample, s.language))
            c = backend.generate(msgs, s.params)
            return _prediction(sample, c, im.size, s.language, s)

    return ask


def _prediction(
    sample: Sample, c: Completion, read: tuple[int, int], language: Language, s: AskSettings | None = None
) -> Prediction:
    """``read``: the image's size as the file says; a normalised point maps to the annotation's
    stated size when it gives one (the official scripts' denominator), else to that."""
    return Prediction(
        id=sample.id,
        point=prompt.read_point(
            c.text, sample.image_size or read, s.profile if s else None, s.in_token_limit if s else 0
        ),
        declined=prompt.declined(c.text),
        image_size=read,
        raw_response=c.text,
        language=language,
        tokens_in=c.tokens_in,
        tokens_out=c.tokens_out,
        model_s=round(c.latency_s, 4),
    )


def ask_safely(ask: Ask, sample: Sample, language: Language) -> Prediction:
    """A prediction, or the same sample recorded with ``error``: a model that could not be asked
    (after the backend's retries) or an image that cannot be read is never dropped silently."""
    try:
        return ask(sample)
    except BackendError as e:
        error = str(e)
    except (OSError, ValueError) as e:  # unreadable or oversized image
        error = f"image {sample.image}: {e}"
    except Exception as e:  # a bug: recorded for this sample, the run goes on
        error = f"{type(e).__name__}: {e}"
    return Prediction(
        id=sample.id, point=None, error=error.splitlines()[0] if error else "error", language=language
    )


# --- the run --------------------------------------------------------------------------------------------


@dataclass
class Slot:
    """One request slot: what it asks now and what the model last answered (the run monitor's tile)."""

    name: str
    sample: str = ""
    instruction: str = ""
    answer: str = ""
    started: float = 0.0  # time.time() of the current request


@dataclass
class Group:
    """A group's counts (the run monitor's per-group table)."""

    samples: int = 0
    done: int = 0
    correct: int = 0


def group_of(s: Sample) -> str:
    """The coarsest grouping a dataset has: ScreenSpot-Pro's group, v1/v2's split, else its platform."""
    return s.group or s.split or s.platform or s.dataset


@dataclass
class Tally:
    """Counts for the progress line (and the run monitor, which reads the same)."""

    total: int
    done: int = 0
    correct: int = 0
    errors: int = 0
    in_flight: int = 0
    started: float = field(default_factory=time.monotonic)
    new: int = 0  # finished in this session (the rate's numerator)
    slots: list[Slot] = field(default_factory=list)
    groups: dict[str, Group] = field(default_factory=dict)

    def add(self, p: Prediction, hit: bool, group: str | None = None) -> None:
        self.done += 1
        self.errors += p.error is not None
        self.correct += hit
        if group is not None:
            g = self.groups.setdefault(group, Group())
            g.done += 1
            g.correct += hit

    def line(self) -> str:
        scored = self.done - self.errors
        acc = f"{100 * self.correct / scored:5.1f}%" if scored else "  -  "
        rate = self.new / max(time.monotonic() - self.started, 1e-9)
        err = f" · [red]{self.errors} errors[/]" if self.errors else ""
        return f"acc {acc} · {rate:5.2f} samples/s · {self.in_flight} in flight{err}"


def run_samples(
    samples: Sequence[Sample],
    askers: Sequence[Ask],
    log_path: Path,
    *,
    language: Language = "en",
    hit: Callable[[Sample, Prediction], bool] = lambda s, p: False,
    console: Console | None = None,
    show_progress: bool = True,
    tally: Tally | None = None,
) -> dict[str, Prediction]:
    """Ask about every sample the log does not hold yet, one thread per asker (``askers[i]`` is the
    i-th request slot; several slots may share a backend). Returns id -> prediction for ``samples``.
    ``tally``: counts to keep in (empty; a run monitor reads them), else a new one."""
    done = read_log(log_path)
    todo = [s for s in samples if s.id not in done or done[s.id].error is not None]
    by_id = {s.id: s for s in samples}
    tally = tally if tally is not None else Tally(total=len(samples))
    tally.total = len(samples)
    for s in samples:
        tally.groups.setdefault(group_of(s), Group()).samples += 1
        if s.id in done and done[s.id].error is None:
            tally.add(done[s.id], hit(s, done[s.id]), group_of(s))
    jobs: queue.SimpleQueue[Sample] = queue.SimpleQueue()
    for s in todo:
        jobs.put(s)
    results: queue.SimpleQueue[Prediction] = queue.SimpleQueue()
    stop = threading.Event()
    lock = threading.Lock()

    def work(ask: Ask, slot: Slot) -> None:
        while not stop.is_set():
            try:
                s = jobs.get_nowait()
            except queue.Empty:
                slot.sample = slot.instruction = ""
                return
            with lock:
                tally.in_flight += 1
            slot.sample, slot.instruction, slot.started = s.id, instruction(s, language), time.time()
            p = ask_safely(ask, s, language)
            slot.answer = p.error or p.raw_response
            with lock:
                tally.in_flight -= 1
            results.put(p)

    # Daemon threads: a Ctrl-C ends the run at once; what is in flight is asked again on resume.
    used = askers[: max(len(todo), 1)]
    tally.slots[:] = [Slot(f"slot-{i + 1}") for i in range(len(used))]
    threads = [
        threading.Thread(target=work, args=(a, slot), daemon=True)
        for a, slot in zip(used, tally.slots, strict=True)
    ]
    log = Log(log_path)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not show_progress,
        transient=False,
    )
    try:
        with progress:
            bar = progress.add_task("grounding", total=tally.total, completed=tally.done, stats=tally.line())
            for t in threads:
                t.start()
            for _ in range(len(todo)):
                while True:
                    try:
                        p = results.get(timeout=0.25)
                        break
                    except queue.Empty:
                        progress.update(bar, stats=tally.line())
                log.write(p)
                done[p.id] = p
                tally.new += 1
                tally.add(p, p.error is None and hit(by_id[p.id], p), group_of(by_id[p.id]))
                progress.update(bar, completed=tally.done, stats=tally.line())
    except KeyboardInterrupt:
        (console or Console(stderr=True)).print(
            f"interrupted: {tally.done} of {tally.total} samples are in {log_path}; "
            "rerun the same command to go on from there"
        )
        raise
    finally:
        stop.set()
        log.close()
    return {s.id: done[s.id] for s in samples if s.id in done}


def write_json(path: Path, value: Any) -> None:
    """Written whole or not at all (a kill mid-write leaves the previous file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def check_resume(out: Path, settings: dict[str, Any], keys: Sequence[str]) -> None:
    """A rerun into the same directory must ask the same question of the same model: otherwise the
    log would mix two runs. ValueError naming the first setting that differs."""
    f = out / "run.json"
    if not f.exists():
        return
    before = read_json(f)
    for k in keys:
        if k in before and before[k] != settings.get(k):
            raise ValueError(
                f"{out} holds a run with {k}={before[k]!r}, not {settings.get(k)!r}: "
                "use another --out, or delete it to start over"
            )
