"""`kimi-agent export`: real runs made here (recorded Kimi-style replies through the real ModelPolicy
and context builder on a sandbox desktop, and the tiny random model through transformers), exported,
then every sample rendered back through our chat template and compared, token for token, with the
ids the backend was sent at that step."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from agent.backends.base import Completion, GenerationParams
from agent.backends.transformers import TransformersBackend
from agent.export import sharegpt
from agent.export.dataset import Manifest, export
from agent.export.records import Options
from agent.loop import run
from agent.messages import Message
from agent.model_policy import ModelPolicy as KimiPolicy
from agent.models.kimi_vl.chat import KimiChat
from agent.models.kimi_vl.tokenizer import load_tokenizer
from agent.models.kimi_vl.variants import Variant
from agent.policy import ScriptedPolicy
from agent.trajectory import RunInfo, TrajectoryWriter, read_steps
from env.actions import Done
from tasks.cli import main

ROOT = Path(__file__).resolve().parents[1]
LONG = "I look at the screen, find what the task needs and pick the next action. " * 9


def reply(code: str, thought: str = LONG, think: str | None = None) -> str:
    head = f"◁think▷{think}◁/think▷" if think else ""
    return f"{head}## Thought\n{thought}\n## Action:\nact\n## Code:\n```python\n{code}\n```"


def click(i: int) -> str:
    return f"pyautogui.click(x={0.05 + 0.04 * i:.2f}, y=0.5)"


def script(think: bool) -> list[str]:
    t = "the button is on the left" if think else None
    return [
        reply(click(1), think=t),
        "I would click the button.",  # unusable: retried within step 2
        reply(click(2), think=t),
        reply("pyautogui.click(x=5000, y=1)", think=t),  # outside the screen: the action fails
        *(reply(click(i), think=t) for i in range(3, 9)),
        reply("computer.terminate(status='success', answer='ok')", think=t),
    ]


class Recorded:
    """Plays recorded replies and keeps what it was sent: the ids as the transformers backend
    renders them, and a hash of each image's pixels."""

    def __init__(self, chat: KimiChat, replies: list[str]) -> None:
        self.chat, self.replies = chat, list(replies)
        self.sent: list[tuple[list[int], list[str]]] = []

    def generate(self, messages: list[Message], params: GenerationParams) -> Completion:
        r = self.chat.render(messages)
        self.sent.append((r.ids, [_pixels(im) for im in r.images]))
        return Completion(text=self.replies.pop(0), tokens_in=len(r.ids), tokens_out=1)


class Capturing(TransformersBackend):
    """The real transformers backend, keeping the input ids the model was given."""

    sent: list[tuple[list[int], list[str]]]

    def prompt(self, messages: list[Message]) -> Any:
        prompt, images = super().prompt(messages)
        self.sent.append((list(prompt.ids), [_pixels(im) for im in images]))
        return prompt, images


def _pixels(im: Image.Image) -> str:
    return hashlib.sha1(im.convert("RGB").tobytes()).hexdigest()


def _writer(path: Path, box: Any, task: str) -> TrajectoryWriter:
    g = box.geometry
    return TrajectoryWriter(
        path, RunInfo(task=task, started_at=time.time(), policy="p", desktop="d", screen=(g.width, g.height))
    )


@pytest.fixture(scope="module")
def tok(tiny_kimi: Path) -> Any:
    return load_tokenizer(tiny_kimi)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tok: Any, tiny_kimi: Path) -> Iterator[dict[str, Any]]:
    """Real runs on a sandbox desktop: both prompt profiles, Instruct and Thinking, the tokenizer's
    counter and the UTF-8 bound, budgets small enough that screenshots and old steps are dropped."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    from env.sandbox import Sandbox

    root = tmp_path_factory.mktemp("runs")
    made: dict[str, Any] = {}
    with Sandbox(1280, 800) as box:
        for name, profile, variant, exact in (
            ("append", "append", "instruct", True),
            ("osworld", "osworld", "thinking", False),
        ):
            chat = KimiChat(tok, 4096)
            backend = Recorded(chat, script(variant == "thinking"))
            policy = KimiPolicy(
                backend,
                Variant.named(variant),  # type: ignore[arg-type]
                count_text_tokens=chat.count_text_tokens if exact else None,
                history_images=3,
                max_context=5200,
                max_new_tokens=256,
                parse_retries=1,
                prompt_profile=profile,
            )
            path = root / name
            task = f"click along the row ({name})"
            traj = run(task, policy, box, max_steps=12, writer=_writer(path, box, task))
            assert traj.stop_reason == "done", traj.error
            made[name] = (path, backend.sent)
        # A scripted run has no model prompt: nothing to export from it.
        path = root / "scripted"
        run("nothing", ScriptedPolicy([[Done()]]), box, writer=_writer(path, box, "scripted"))
        made["scripted"] = (path, [])
    yield made


def _sent_by_step(
    run_dir: Path, sent: list[tuple[list[int], list[str]]]
) -> dict[int, tuple[list[int], list[str]]]:
    """The last call of each step (the one whose reply was taken)."""
    out, i = {}, 0
    for rec in read_steps(run_dir):
        i += len(rec.attempts)
        if rec.attempts:
            out[rec.step] = sent[i - 1]
    assert i == len(sent)
    return out


def read_tokenized(out: Path) -> list[dict[str, Any]]:
    """The tokenized dataset's rows, read with pyarrow as `datasets`' load_from_disk reads them."""
    import pyarrow as pa

    state = json.loads((out / "tokenized" / "state.json").read_text())
    rows: list[dict[str, Any]] = []
    for f in state["_data_files"]:
        with pa.memory_map(str(out / "tokenized" / f["filename"])) as source:
            rows += pa.ipc.open_stream(source).read_all().to_pylist()
    return rows


def _check_round_trip(
    out: Path, m: Manifest, sent_by_run: dict[str, dict], tok: Any, in_token_limit: int = 4096
) -> int:
    data = json.loads((out / "data.json").read_text(encoding="utf-8"))
    rows = read_tokenized(out)
    assert len(data) == len(m.samples) == len(rows)
    assert m.llamafactory["cutoff_len"] == max(len(r["input_ids"]) for r in rows)
    assert m.llamafactory["tokenized_path"] == str(out.resolve() / "tokenized")
    checked = 0
    for entry, sample, row in zip(m.samples, data, rows, strict=True):
        sharegpt.check_sample(sample)
        ids, pixels = sent_by_run[entry.run][entry.ref["step"]]
        chat = KimiChat(tok, in_token_limit)
        messages = sharegpt.to_messages(sample, lambda p: Image.open(out / p))
        prompt, target = messages[:-1], messages[-1]
        rendered = chat.render(prompt)
        assert rendered.ids == ids, f"{entry.run} step {entry.ref['step']}: the prompt differs"
        assert [_pixels(im) for im in rendered.images] == pixels
        full = chat.render(messages, add_generation_prompt=False).ids
        assert full == ids + chat.text_ids(target.parts[0].text) + [chat.ids["<|im_end|>"]]
        assert entry.tokens == len(full)
        # What LLaMA-Factory trains on: the ids as sent, labels on the reply and its <|im_end|> only.
        assert row["input_ids"] == full and row["attention_mask"] == [1] * len(full)
        assert row["labels"] == [-100] * len(ids) + full[len(ids) :]
        assert row["images"] == [str(out.resolve() / p) for p in sample["images"]]
        checked += 1
    return checked


def test_every_step_round_trips_token_for_token(
    runs: dict[str, Any], tok: Any, tiny_kimi: Path, tmp_path: Path
) -> None:
    sent = {str(p): _sent_by_step(p, s) for name, (p, s) in runs.items() if name != "scripted"}
    for name in ("append", "osworld"):
        steps = read_steps(runs[name][0])
        # The budget bound: screenshots and whole old steps were left out along the way.
        assert max(s.prompt.image_cutoff for s in steps if s.prompt) > 0
        assert max(s.prompt.text_cutoff for s in steps if s.prompt) > 0
    out = tmp_path / "all"
    m = export([runs["append"][0].parent], out, Options(keep_failed=True), load_tokenizer, tiny_kimi)
    assert _check_round_trip(out, m, sent, tok) == 2 * 10  # every step, the retried and failed ones too
    scripted = next(r for r in m.runs if r.path.endswith("scripted"))
    assert not scripted.taken and "no model prompt" in (scripted.reason or "")
    assert scripted.left_out == "scripted"
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["kimi_agent"]["columns"] == {"messages": "messages", "images": "images"}
    assert (
        info["kimi_agent"]["formatting"] == "sharegpt"
        and info["kimi_agent"]["tags"]["system_tag"] == "system"
    )
    # The screenshots are linked once each, not once per sample.
    assert len(list((out / "images").rglob("*.png"))) == 2 * 10


def test_failed_steps_are_skipped_by_default_and_thinking_can_be_dropped(
    runs: dict[str, Any], tiny_kimi: Path, tmp_path: Path
) -> None:
    out = tmp_path / "default"
    m = export([runs["osworld"][0]], out, Options(thinking="drop"), load_tokenizer, tiny_kimi)
    [entry] = m.runs
    reasons = {s.ref["step"]: s.reason for s in entry.skipped}
    assert reasons[2].startswith("retried (1 unusable reply first)")
    assert "outside" in reasons[3]
    assert entry.samples == 8 and [s.ref["step"] for s in m.samples] == [1, *range(4, 11)]
    data = json.loads((out / "data.json").read_text())
    targets = [s["messages"][-1]["content"] for s in data]
    assert all(t.startswith("## Thought") for t in targets)
    kept = export([runs["osworld"][0]], tmp_path / "kept", Options(), load_tokenizer, tiny_kimi)
    first = json.loads((tmp_path / "kept" / "data.json").read_text())[0]["messages"][-1]["content"]
    assert first.startswith("◁think▷the button is on the left◁/think▷## Thought") and kept.samples


def test_osworld_result_trees_filters_and_the_cli(
    runs: dict[str, Any], tiny_kimi: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "results"
    for name, score, domain in (("append", "1.0", "chrome"), ("osworld", "0.0", "gimp")):
        task = tree / "pyautogui" / "screenshot" / "kimi-vl" / domain / f"task-{name}"
        shutil.copytree(runs[name][0], task)
        (task / "result.txt").write_text(score + "\n")
        (task / "traj.jsonl").write_text("{}\n")
    out = tmp_path / "ds"
    code = main(["export", str(tree), "--out", str(out), "--success-only", "--tokenizer", str(tiny_kimi)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    m = Manifest.model_validate_json((out / "manifest.json").read_text())
    taken = {Path(r.path).parent.name: r for r in m.runs}
    assert taken["chrome"].taken and taken["chrome"].score == 1.0
    assert not taken["gimp"].taken and taken["gimp"].reason == "not a success (score 0)"
    assert taken["gimp"].left_out == "failed-task"
    assert "8 samples from 1 of 2 runs" in printed and "image_max_pixels: 1024000" in printed
    assert f"tokenized_path: {out.resolve() / 'tokenized'}" in " ".join(printed.split())
    moved = tmp_path / "moved"
    assert (
        main(
            [
                "export",
                str(tree),
                "--out",
                str(moved),
                "--tokenizer",
                str(tiny_kimi),
                "--image-root",
                "/data/ds",
            ]
        )
        == 0
    )
    m = Manifest.model_validate_json((moved / "manifest.json").read_text())
    assert (
        m.llamafactory["dataset_dir"] == "/data/ds"
        and m.llamafactory["tokenized_path"] == "/data/ds/tokenized"
    )
    assert all(p.startswith("/data/ds/images/") for row in read_tokenized(moved) for p in row["images"])
    assert main(["export", str(tree), "--out", str(tmp_path / "rel"), "--image-root", "data/ds"]) == 2
    assert "--image-root must be an absolute path, not data/ds" in capsys.readouterr().out
    printed = " ".join(printed.split())
    assert "1 failed or unfinished task (--include-failed-tasks takes them)" in printed
    assert "2 failed steps (--include-failed-steps takes them)" in printed
    cases = [
        ([], {"chrome"}),  # the default: successes only
        (["--include-failed-tasks"], {"chrome", "gimp"}),
        (["--min-score", "0.5"], {"chrome"}),
        (["--min-score", "0"], {"chrome", "gimp"}),  # a score floor replaces "successes only"
        (["--task-regex", "osworld", "--include-failed-tasks"], {"gimp"}),
        (["--task-regex", "osworld"], set()),
        (["--max-steps", "10", "--include-failed-tasks"], {"chrome", "gimp"}),
        (["--max-steps", "9"], set()),
        (["--max-tokens", "100", "--include-failed-tasks"], set()),
    ]
    for n, (flags, want) in enumerate(cases):
        dest = tmp_path / f"ds{n}"
        code = main(["export", str(tree), "--out", str(dest), "--tokenizer", str(tiny_kimi), *flags])
        printed = capsys.readouterr().out
        if not dest.exists():  # every run left out whole: said at once, nothing written
            assert not want and code == 1 and printed.startswith("nothing to export: "), flags
            assert len(printed.strip().splitlines()) == 1, printed
            continue
        m = Manifest.model_validate_json((dest / "manifest.json").read_text())
        assert {Path(r.path).parent.name for r in m.runs if r.taken} == want, flags
        assert code == (0 if want else 1)
    over = [k.reason for r in m.runs for k in r.skipped]
    assert sum(bool(re.fullmatch(r"\d+ tokens > --max-tokens 100", r)) for r in over) == 2 * 8
    assert main(["export", str(tree), "--out", str(out), "--tokenizer", str(tiny_kimi)]) == 2  # not empty
    both = ["--success-only", "--include-failed-tasks"]
    assert main(["export", str(tree), "--out", str(tmp_path / "x"), *both]) == 2
    assert "contradicts" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "is not a directory" in capsys.readouterr().out


def test_dry_runs_and_replays_never_go_in_and_failed_tasks_only_when_asked(
    runs: dict[str, Any], tiny_kimi: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Made by the real CLI: a dry run of a model (its replies were never acted on, yet it ends
    'done, success') and a replay of a recorded run (no model replied)."""
    from fake_openai_server import FakeOpenAI, Reply

    from agent.trajectory import read_info

    tree = tmp_path / "in"
    server = FakeOpenAI(models=("kimi-vl",), roots={"kimi-vl": "moonshotai/Kimi-VL-A3B-Instruct"})
    try:
        server.replies.extend([Reply(reply(click(1))), Reply(reply("computer.terminate(status='success')"))])
        model = ["--backend", "openai", "--base-url", server.url, "--model", "kimi-vl"]
        main(["click along", *model, "--dry-run", "--out", str(tree / "dry"), "--size", "640x480"])
    finally:
        server.close()
    assert read_info(tree / "dry").dry_run and read_info(tree / "dry").prompt is not None
    main(["replay", str(runs["append"][0]), "--out", str(tree / "replay"), "--size", "640x480"])
    assert read_info(tree / "replay").policy.startswith("replay of ")
    shutil.copytree(runs["append"][0], tree / "ok")
    shutil.copytree(runs["osworld"][0], tree / "failed")
    (tree / "failed" / "result.txt").write_text("0.0\n")
    capsys.readouterr()
    for n, flags in enumerate(([], ["--success-only"], ["--include-failed-tasks", "--include-failed-steps"])):
        out = tmp_path / f"out{n}"
        assert main(["export", str(tree), "--out", str(out), "--tokenizer", str(tiny_kimi), *flags]) == 0
        printed = " ".join(capsys.readouterr().out.split())
        m = Manifest.model_validate_json((out / "manifest.json").read_text())
        by_name = {Path(r.path).name: r for r in m.runs}
        assert (by_name["dry"].left_out, by_name["replay"].left_out) == ("dry-run", "replay"), flags
        assert not by_name["dry"].taken and not by_name["replay"].taken
        assert by_name["ok"].taken
        include = "--include-failed-tasks" in flags
        assert by_name["failed"].taken == include
        assert "1 dry run (never training data); 1 replay (never training data)" in printed
        assert ("1 failed or unfinished task (--include-failed-tasks takes them)" in printed) != include
        assert {Path(s.run).name for s in m.samples} == ({"ok", "failed"} if include else {"ok"})


def test_a_killed_or_corrupt_run_is_exported_up_to_its_last_complete_step(
    runs: dict[str, Any], tiny_kimi: Path, tok: Any, tmp_path: Path
) -> None:
    killed = tmp_path / "in" / "killed"
    shutil.copytree(runs["append"][0], killed)
    info = json.loads((killed / "run.json").read_text())
    (killed / "run.json").write_text(json.dumps({**info, "stop_reason": None, "finished_at": None}))
    data = (killed / "steps.jsonl").read_bytes()
    lines = data.split(b"\n")
    (killed / "steps.jsonl").write_bytes(b"\n".join(lines[:8]) + b"\n" + lines[8][: len(lines[8]) // 2])
    (killed / "step_008.png").unlink()  # the encoder had not finished the last screenshot
    broken = tmp_path / "in" / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    (broken / "steps.jsonl").write_text("")
    out = tmp_path / "out"
    warnings: list[str] = []
    opts = Options(keep_failed=True, include_failed_tasks=True)  # a killed run's outcome is unknown
    m = export([tmp_path / "in"], out, opts, load_tokenizer, tiny_kimi, warn=warnings.append)
    entry = next(r for r in m.runs if r.path.endswith("killed"))
    assert [s.ref["step"] for s in m.samples] == list(range(1, 8))
    assert {s.ref["step"]: s.reason for s in entry.skipped} == {8: "screenshot step_008.png is missing"}
    assert any("did not finish" in w for w in entry.warnings) and any("torn" in w for w in entry.warnings)
    bad = next(r for r in m.runs if r.path.endswith("broken"))
    assert not bad.taken and bad.reason and bad.reason.startswith("cannot read it")
    assert any("broken" in w for w in warnings)
    sent = {str(killed): _sent_by_step(runs["append"][0], runs["append"][1])}
    assert _check_round_trip(out, m, sent, tok) == 7


@pytest.mark.slow
def test_a_run_of_the_tiny_model_round_trips(sandbox, tiny_kimi: Path, tok: Any, tmp_path: Path) -> None:
    backend = Capturing.load(str(tiny_kimi))
    backend.sent = []
    policy = KimiPolicy(
        backend,
        Variant.named("instruct"),
        count_text_tokens=backend.count_text_tokens,
        max_new_tokens=24,
        max_context=6000,
        parse_retries=1,
    )
    path = tmp_path / "tiny"
    run("open a terminal", policy, sandbox, max_steps=3, writer=_writer(path, sandbox, "open a terminal"))
    out = tmp_path / "out"
    every = Options(keep_failed=True, include_failed_tasks=True)  # random replies never finish the task
    m = export([path], out, every, load_tokenizer, tiny_kimi)
    assert m.samples  # random replies: most do not parse, every one is retried once, kept here
    assert _check_round_trip(out, m, {str(path): _sent_by_step(path, backend.sent)}, tok) == len(m.samples)


def grounding_run(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A real `bench screenspot` run (6 records: 3 hits, 2 misses, 1 without a point) against a
    model server on loopback; its data directory and the requests the server got, by instruction."""
    from fake_openai_server import FakeOpenAI, Reply
    from test_screenspot_runner import REPLIES, answer_by_instruction, run_args, write_pro

    from tasks.screenspot.cli import main as bench

    data = write_pro(tmp_path / "pro", [{}, {}, {}, {}, {}, {"group": None, "ui_type": "icon"}])
    server = FakeOpenAI(models=("kimi-vl",), roots={"kimi-vl": "moonshotai/Kimi-VL-A3B-Instruct"})
    try:
        answer_by_instruction(server, lambda instruction: Reply(text=REPLIES[instruction]))
        assert bench(run_args(data, tmp_path / "run", server.url)) == 0
        return data, {r["messages"][1]["content"][1]["text"]: r for r in server.requests}
    finally:
        server.close()


def test_grounding_runs_are_single_turn_samples(tmp_path: Path, tiny_kimi: Path, tok: Any) -> None:
    from tasks.screenspot.export import GroundingRun
    from tasks.screenspot.prompt import messages, system_prompt

    data, requests = grounding_run(tmp_path)
    out = tmp_path / "out"
    every = Options(thinking="drop", include_missed=True)
    m = export([tmp_path / "run"], out, every, load_tokenizer, tiny_kimi, grounding=GroundingRun)
    assert sorted(s.ref["id"] for s in m.samples) == ["s0", "s1", "s2", "s3", "s4", "s5"]
    samples = json.loads((out / "data.json").read_text())
    chat = KimiChat(tok, 4096)
    for entry, sample, row in zip(m.samples, samples, read_tokenized(out), strict=True):
        sharegpt.check_sample(sample)
        system, user, target = sample["messages"]
        request = requests[user["content"].removeprefix("<image>")]
        assert system["content"] == request["messages"][0]["content"] == system_prompt()
        i = int(entry.ref["id"][1:])
        original = data / "images" / "app_os" / f"shot{i}.png"
        assert (out / sample["images"][0]).read_bytes() == original.read_bytes()
        # As the in-process runner sends it: the same ids.
        with Image.open(original) as im:
            sent = chat.render(messages(system_prompt(), im, f"target {i}")).ids
        assert chat.render(sharegpt.to_messages(sample, lambda p: Image.open(out / p))[:-1]).ids == sent
        assert "◁think▷" not in target["content"]
        reply = [*chat.text_ids(target["content"]), chat.ids["<|im_end|>"]]
        assert row["input_ids"] == sent + reply and row["labels"] == [-100] * len(sent) + reply
        assert row["images"] == [str(out.resolve() / sample["images"][0])]
    # By default only the answers that hit: not s2 and s5 (outside), nor s3 ("I cannot find it.").
    correct = export(
        [tmp_path / "run"], tmp_path / "ok", Options(), load_tokenizer, tiny_kimi, grounding=GroundingRun
    )
    assert sorted(s.ref["id"] for s in correct.samples) == ["s0", "s1", "s4"]
    [entry] = correct.runs
    assert {k.ref["id"]: (k.kind, k.ref["correctness"]) for k in entry.skipped} == {
        "s2": ("missed", "wrong"),
        "s3": ("missed", "wrong_format"),
        "s5": ("missed", "wrong"),
    }
    targets = [s["messages"][-1]["content"] for s in json.loads((tmp_path / "ok" / "data.json").read_text())]
    assert "I cannot find it." not in targets and len(targets) == 3


def test_a_prompt_that_cannot_be_rebuilt_exactly_is_not_exported(
    runs: dict[str, Any], tiny_kimi: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edited = tmp_path / "edited"
    shutil.copytree(runs["append"][0], edited)
    info = json.loads((edited / "run.json").read_text())
    info["prompt"]["templates"]["agent_current"] += " Be quick."  # not what the run sent
    (edited / "run.json").write_text(json.dumps(info))
    m = export([edited], tmp_path / "out", Options(keep_failed=True), load_tokenizer, tiny_kimi)
    [entry] = m.runs
    assert not m.samples and len(entry.skipped) == 10
    assert all(
        re.match(r"the rebuilt prompt counts \d+ tokens where the run counted \d+", s.reason)
        for s in entry.skipped
    )
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "--out", str(tmp_path / "x")]) == 2
    assert "nothing to export" in capsys.readouterr().out and not (tmp_path / "x").exists()


HUB_ID = "moonshotai/Kimi-VL-A3B-Instruct"


def _cli(args: list[str], home: Path, endpoint: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A user's `kimi-agent ...` in a fresh process: huggingface_hub reads HF_* when imported."""
    ours = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    environ = {**clean, "HF_ENDPOINT": endpoint, "HF_HOME": str(home), "NO_PROXY": "127.0.0.1", **env}
    return subprocess.run(
        args, env=environ, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.slow
def test_a_model_server_run_gets_the_tokenizer_of_the_hub_id_it_names_and_never_the_weights(
    tmp_path: Path, tiny_kimi: Path
) -> None:
    """A grounding run against a model server: run.json names the server's checkpoint, a hub id,
    and there is no checkpoint here. Export fetches that id's tokenizer files alone from a real HTTP
    hub on loopback (tests/fake_hub.py), with the weights' offline rules."""
    from fake_hub import fake_hub
    from fake_openai_server import FakeOpenAI, Reply
    from test_screenspot_runner import REPLIES, answer_by_instruction, run_args, write_pro

    from agent.backends.weights import TOKENIZER_FILES
    from agent.export.dataset import export as export_here
    from tasks.screenspot.cli import main as bench

    data = write_pro(tmp_path / "pro", [{}, {}, {}, {}, {}, {}])
    server = FakeOpenAI(models=("kimi-vl",), roots={"kimi-vl": HUB_ID})
    try:
        answer_by_instruction(server, lambda instruction: Reply(text=REPLIES[instruction]))
        assert bench(run_args(data, tmp_path / "run", server.url)) == 0
    finally:
        server.close()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["checkpoint"] == HUB_ID
    repo = tmp_path / "repo"
    shutil.copytree(tiny_kimi, repo)
    (repo / "README.md").write_text("x" * 100_000)
    export = [sys.executable, "-m", "tasks.cli", "export", str(tmp_path / "run")]
    home = tmp_path / "home"
    with fake_hub({HUB_ID: repo}) as hub:
        done = _cli([*export, "--out", str(tmp_path / "a")], home, hub.url)
        assert done.returncode == 0, done.stdout + done.stderr
        printed = " ".join(done.stdout.split())
        size = sum((repo / f).stat().st_size for f in TOKENIZER_FILES)
        assert (
            f"fetching only the tokenizer of {HUB_ID} (3 files, {size / 1e6:.1f} MB; no weights)" in printed
        )
        assert sorted(hub.downloads()) == sorted(TOKENIZER_FILES)  # no weights, config or README
        assert "3 samples from 1 of 1 runs" in printed
        # The same dataset as with the checkpoint directory at hand.
        from tasks.screenspot.export import GroundingRun

        export_here(
            [tmp_path / "run"], tmp_path / "b", Options(), load_tokenizer, tiny_kimi, grounding=GroundingRun
        )
        manifests = [json.loads((tmp_path / d / "manifest.json").read_text()) for d in "ab"]
        assert [s["tokens"] for s in manifests[0]["samples"]] == [
            s["tokens"] for s in manifests[1]["samples"]
        ]
        assert (tmp_path / "a" / "data.json").read_bytes() == (tmp_path / "b" / "data.json").read_bytes()

        # Cached: offline takes it from the cache without a request.
        seen = len(hub.requests)
        again = _cli([*export, "--out", str(tmp_path / "c")], home, hub.url, HF_HUB_OFFLINE="1")
        assert again.returncode == 0, again.stdout + again.stderr
        assert len(hub.requests) == seen
        # A tokenizer alone is not a checkpoint: loading the model still wants its weights.
        probe = f"from agent.backends.weights import resolve_checkpoint as r; r({HUB_ID!r}, offline=True)"
        refused = _cli([sys.executable, "-c", probe], home, hub.url)
        assert "is not (fully) in the Hugging Face cache" in refused.stderr

        # Offline with nothing cached: nothing is fetched, and the error says the exact command...
        fresh = tmp_path / "fresh"
        for how, env in (("HF_HUB_OFFLINE is set", {"HF_HUB_OFFLINE": "1"}), ("--offline", {})):
            flags = ["--offline"] if how == "--offline" else []
            refused = _cli([*export, "--out", str(tmp_path / "d"), *flags], fresh, hub.url, **env)
            lines = refused.stdout.strip().splitlines()
            assert refused.returncode == 2 and len(lines) == 1, refused.stdout + refused.stderr
            assert f"offline mode is on ({how})" in lines[0] and len(hub.requests) == seen
            assert not (tmp_path / "d").exists()
        command = re.search(r"run `([^`]+)`", lines[0])
        assert command is not None and command[1].split()[1:3] == ["download", HUB_ID]
        # ...which, run where there is network, is all the export needs.
        fetched = _cli(shlex.split(command[1]), fresh, hub.url)
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        assert sorted(hub.downloads()) == sorted(TOKENIZER_FILES * 2)
        seen = len(hub.requests)
        offline = _cli([*export, "--out", str(tmp_path / "e")], fresh, hub.url, HF_HUB_OFFLINE="1")
        assert offline.returncode == 0, offline.stdout + offline.stderr
        assert len(hub.requests) == seen


def test_a_run_naming_only_a_server_path_says_how_to_pass_the_tokenizer(
    runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "served"
    shutil.copytree(runs["append"][0], run)
    info = json.loads((run / "run.json").read_text())
    info["model"] = {**info["model"], "checkpoint": "/srv/models/kimi-vl", "model": "kimi-vl"}
    (run / "run.json").write_text(json.dumps(info))
    assert main(["export", str(run), "--out", str(tmp_path / "out"), "--offline"]) == 2
    printed = " ".join(capsys.readouterr().out.split())
    assert "no tokenizer: the runs name /srv/models/kimi-vl, kimi-vl" in printed
    assert "pass --tokenizer CHECKPOINT_DIR_OR_HUB_ID" in printed and not (tmp_path / "out").exists()


def test_a_failed_tokenizer_download_says_to_pass_tokenizer(runs: dict[str, Any], tmp_path: Path) -> None:
    """No network (a closed loopback port as the hub): export's hint is its own flag, not the main
    command's --model or a model server."""
    run = tmp_path / "served"
    shutil.copytree(runs["append"][0], run)
    info = json.loads((run / "run.json").read_text())
    info["model"] = {**info["model"], "checkpoint": HUB_ID, "model": "kimi-vl"}
    (run / "run.json").write_text(json.dumps(info))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: every request is refused
    export = [sys.executable, "-m", "tasks.cli", "export", str(run), "--out", str(tmp_path / "out")]
    done = _cli(export, tmp_path / "home", f"http://127.0.0.1:{port}", HF_HUB_ETAG_TIMEOUT="5")
    printed = " ".join(done.stdout.split())
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"could not download {HUB_ID} from http://127.0.0.1:{port}" in printed
    assert "pass --tokenizer CHECKPOINT_DIR_OR_HUB_ID" in printed
    assert "--backend openai" not in printed and "--model" not in printed
    assert not (tmp_path / "out").exists()


def test_only_scripted_runs_say_nothing_to_export_at_once(
    runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No tokenizer is needed (none is passed, and the run names none) and no config is printed."""
    capsys.readouterr()
    assert main(["export", str(runs["scripted"][0]), "--out", str(tmp_path / "out")]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == ["nothing to export: 1 scripted run (never training data)"]
    assert not (tmp_path / "out").exists()


def read_back(python: Path, export_dir: Path, model: Path, tmp: Path) -> list[dict[str, Any]]:
    """The samples as the real LLaMA-Factory's SFT data path yields them (tests/llamafactory/read_back.py)."""
    out = tmp / f"{export_dir.name}.read-back.json"
    r = subprocess.run(
        [
            str(python),
            str(ROOT / "tests" / "llamafactory" / "read_back.py"),
            str(export_dir),
            str(model),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())["samples"]


def _as_recorded(export_dir: Path, m: Manifest, python: Path, model: Path, tmp: Path) -> int:
    """LLaMA-Factory, given the manifest's settings unchanged, reads each sample as exported: the same ids,
    labels on the same positions, every image whole with the token count its ids hold."""
    rows = read_tokenized(export_dir)
    got = read_back(python, export_dir, model, tmp)
    assert len(got) == len(rows) == len(m.samples)
    pad = tok_id(model, "<|media_pad|>")
    for row, lf, entry in zip(rows, got, m.samples, strict=True):
        where = f"{entry.run} {entry.ref}"
        assert lf["input_ids"] == row["input_ids"], f"{where}: the ids differ"
        assert lf["labels"] == row["labels"], f"{where}: the labels differ"
        runs_of_pads = [len(list(g)) for k, g in itertools.groupby(row["input_ids"]) if k == pad]
        assert [im["tokens"] for im in lf["images"]] == runs_of_pads, where
        for im, path in zip(lf["images"], row["images"], strict=True):
            with Image.open(path) as original:
                assert tuple(im["size"]) == original.size, f"{where}: {path} was resized"
    return len(got)


def tok_id(model: Path, name: str) -> int:
    return load_tokenizer(model).convert_tokens_to_ids(name)


@pytest.mark.slow
def test_the_real_llamafactory_reads_every_sample_kind_as_recorded(
    runs: dict[str, Any], tiny_kimi: Path, tok: Any, tmp_path: Path, llamafactory_python: Path
) -> None:
    """LLaMA-Factory 0.9.5 (its own get_train_args, load_tokenizer, kimi_vl template, get_dataset, SFT
    collator, image regularization; tests/llamafactory/read_back.py says what stands in for the tiny
    checkpoint's missing remote code) on exports of real runs: Instruct with history eviction (the
    append layout), Thinking (the osworld layout, thoughts kept as written), Thinking-2506 (16384-token
    images) and grounding. Our rows are checked against the ids the agent sent in _check_round_trip
    and the grounding test; here LLaMA-Factory's reading is checked against our rows."""
    from env.sandbox import Sandbox
    from tasks.screenspot.export import GroundingRun

    sent = {str(p): _sent_by_step(p, s) for name, (p, s) in runs.items() if name != "scripted"}
    counts: dict[str, int] = {}
    out = tmp_path / "agent"
    m = export([runs["append"][0].parent], out, Options(keep_failed=True), load_tokenizer, tiny_kimi)
    _check_round_trip(out, m, sent, tok)
    assert any(
        "◁think▷the button is on the left◁/think▷" in tok.decode(r["input_ids"]) for r in read_tokenized(out)
    )
    counts["instruct and thinking"] = _as_recorded(out, m, llamafactory_python, tiny_kimi, tmp_path)
    # The control: without tokenized_path LLaMA-Factory renders data.json with its kimi_vl template,
    # and an Instruct reply learns an empty thought the model never wrote.
    bare = tmp_path / "without-tokenized-path"
    bare.mkdir()
    block = {k: v for k, v in m.llamafactory.items() if k != "tokenized_path"}
    (bare / "manifest.json").write_text(json.dumps({"llamafactory": block}))
    rendered = read_back(llamafactory_python, bare, tiny_kimi, tmp_path)
    rows = read_tokenized(out)
    instruct = [i for i, e in enumerate(m.samples) if e.run.endswith("append")]
    assert instruct and all(rendered[i]["input_ids"] != rows[i]["input_ids"] for i in instruct)
    learned = [tok.decode([t for t in rendered[i]["labels"] if t != -100]) for i in instruct]
    assert all(text.startswith("◁think▷◁/think▷") for text in learned), learned[0][:80]

    chat = KimiChat(tok, 16384)
    backend = Recorded(chat, script(True))
    policy = KimiPolicy(
        backend, Variant.named("thinking-2506"), history_images=2, max_context=9000, max_new_tokens=256
    )
    run_dir = tmp_path / "runs-2506" / "thinking-2506"
    with Sandbox(1280, 800) as box:
        task = "click along the row (2506)"
        traj = run(task, policy, box, max_steps=12, writer=_writer(run_dir, box, task))
    assert traj.stop_reason == "done", traj.error
    out = tmp_path / "2506"
    m = export([run_dir], out, Options(keep_failed=True), load_tokenizer, tiny_kimi)
    _check_round_trip(out, m, {str(run_dir): _sent_by_step(run_dir, backend.sent)}, tok, in_token_limit=16384)
    from tiny_kimi import write_tiny_kimi

    model_2506 = write_tiny_kimi(tmp_path / "tiny-2506", in_token_limit=16384)
    counts["thinking-2506"] = _as_recorded(out, m, llamafactory_python, model_2506, tmp_path)

    grounding_run(tmp_path / "grounding")
    out = tmp_path / "grounding-export"
    every = Options(include_missed=True)
    m = export(
        [tmp_path / "grounding" / "run"], out, every, load_tokenizer, tiny_kimi, grounding=GroundingRun
    )
    counts["grounding"] = _as_recorded(out, m, llamafactory_python, tiny_kimi, tmp_path)
    print(f"LLaMA-Factory 0.9.5 read back as recorded: {counts}")
    assert counts == {"instruct and thinking": 20, "thinking-2506": 10, "grounding": 6}
