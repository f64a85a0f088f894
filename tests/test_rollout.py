"""`kimi-agent rollout`: grouped rollouts for GRPO-style trainers, on real sandboxes with the official
evaluators. The model rollouts run the tiny random Kimi-VL through the real transformers path, in
this process, so that the ids the backend fed the model can be set beside the ids the rollout file
rebuilt from the run's prompt record."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.backends.base import Completion
from agent.backends.transformers import TransformersBackend
from agent.models.kimi_vl.tokenizer import load_tokenizer
from agent.trajectory import read_steps
from tasks.osworld import suite
from tasks.osworld.results import model_dir, read_manifest

REPO = Path(__file__).resolve().parent.parent
EVAL_VENV = REPO / ".cache" / "osworld-eval"
TASK = "os-hello-file"  # setup: none; scored by a command's output: the cheapest suite task
FLAGS = ["--desktop-env", "minimal"]
needs_x = pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed")


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def rollout_cli(*args: str | Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache"), "KIMI_OSWORLD_EVAL_VENV": str(EVAL_VENV)}
    return subprocess.run(
        [sys.executable, "-m", "tasks.cli", "rollout", *map(str, args)],
        cwd=REPO,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@needs_x
def test_a_scripted_group_scores_the_reference_solution_in_every_rollout(tmp_path: Path) -> None:
    out = tmp_path / "rollouts"
    r = rollout_cli(TASK, "--group", "2", "--workers", "2", "--script-dir", "suite", "--out", out, *FLAGS,
                    tmp=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    root = model_dir(out, f"script-{suite.SOLUTIONS.name}")
    (group,) = lines(root / "groups.jsonl")
    assert group["rewards"] == [1.0, 1.0] and group["rollouts"] == [0, 1]
    assert (group["mean"], group["std"], group["complete"], group["size"]) == (1.0, 0.0, True, 2)
    rollouts = lines(root / "rollouts.jsonl")
    assert [(x["task_id"], x["group_id"], x["rollout"]) for x in rollouts] == [
        (TASK, TASK, 0),
        (TASK, TASK, 1),
    ]
    for x in rollouts:
        assert (x["policy"], x["reward"], x["outcome"]) == ("script", 1.0, "scored")
        assert x["steps"][-1]["actions"] == [{"kind": "done", "status": "success", "answer": None}]
        assert all(s["prompt_ids"] is None and s["reply_ids"] is None for s in x["steps"])
        run = root / x["run_dir"]  # an ordinary run directory: what export and report read
        assert (run / "result.txt").read_text().strip() == "1.0"
        assert json.loads((run / "outcome.json").read_text())["score"] == 1.0
    # The run's manifest lists the two rollouts, so the summary (and a resume) sees both.
    assert [t.run_dir for t in read_manifest(root).tasks] == [f"os/{TASK}/rollout-0", f"os/{TASK}/rollout-1"]
    assert "2 rollouts in 1 groups (1 complete)" in r.stdout


@pytest.mark.slow
@needs_x
def test_a_model_group_records_the_ids_the_model_was_fed_and_sampled(
    tmp_path: Path, tiny_kimi: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.cli import main

    fed: list[Completion] = []
    generate = TransformersBackend.generate

    def recording(self: TransformersBackend, *a: Any, **kw: Any) -> Completion:
        c = generate(self, *a, **kw)
        fed.append(c)
        return c

    monkeypatch.setattr(TransformersBackend, "generate", recording)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("KIMI_OSWORLD_EVAL_VENV", str(EVAL_VENV))
    out = tmp_path / "rollouts"
    status = main(["rollout", TASK, "--group", "2", "--out", str(out), "--backend", "transformers",
                   "--model", str(tiny_kimi), "--offline", "--max-steps", "2", "--max-new-tokens", "16",
                   "--in-token-limit", "256", "--temperature", "1.0", *FLAGS])  # fmt: skip
    printed = capsys.readouterr().out
    assert status == 0, printed
    root = model_dir(out, str(tiny_kimi))
    rollouts = lines(root / "rollouts.jsonl")
    assert [x["rollout"] for x in rollouts] == [0, 1]
    (group,) = lines(root / "groups.jsonl")
    assert group["rewards"] == [x["reward"] for x in rollouts] and group["complete"]
    tok = load_tokenizer(tiny_kimi)
    calls = iter(fed)  # one worker: the rollouts ran one after the other, their steps in order
    for x in rollouts:
        assert x["policy"] == "model" and x["outcome"] == "scored" and not x["skipped"], x
        assert x["in_token_limit"] == 256
        records = read_steps(root / x["run_dir"])
        assert [s["step"] for s in x["steps"]] == [r.step for r in records] and records
        for s, rec in zip(x["steps"], records, strict=True):
            taken = [next(calls) for _ in rec.attempts][-1]  # a retried step's last call is the one taken
            assert s["prompt_ids"] == taken.prompt_ids  # exactly what the model was fed
            assert s["reply_ids"] == taken.token_ids and s["reply_ids_source"] == "sampled"
            stopped = s["reply_ids"][-1] == tok.convert_tokens_to_ids("<|im_end|>")
            assert (
                tok.decode(s["reply_ids"][:-1] if stopped else s["reply_ids"], skip_special_tokens=True)
                == (s["reply"])
            )
            assert s["reply"] == rec.raw
            # The images, in the order of their tokens: this step's screenshot last.
            assert s["images"] and s["images"][-1] == f"{x['run_dir']}/{rec.screenshot}"
            assert all((root / im).is_file() for im in s["images"])
            pads = s["prompt_ids"].count(tok.convert_tokens_to_ids("<|media_pad|>"))
            assert pads > 0 and s["prompt_ids"].count(tok.convert_tokens_to_ids("<|media_start|>")) == len(
                s["images"]
            )
    assert next(calls, None) is None  # every call the model made is in the file


def test_bad_input_is_one_line_each(tmp_path: Path) -> None:
    r = rollout_cli("no-such-task", "--group", "2", "--script-dir", "suite", tmp=tmp_path)
    assert r.returncode == 2 and r.stdout.count("\n") == 1, r.stdout
    assert "no-such-task: neither a split" in r.stdout
    r = rollout_cli(TASK, "--group", "0", "--script-dir", "suite", tmp=tmp_path)
    assert r.returncode == 2 and r.stdout.count("\n") == 1 and "--group must be at least 1, not 0" in r.stdout
    task = json.loads((suite.EXAMPLES / "os" / f"{TASK}.json").read_text())
    task["evaluator"]["func"] = "no_such_metric"
    bad = tmp_path / "unknown-metric.json"
    bad.write_text(json.dumps({**task, "id": "unknown-metric"}))
    r = rollout_cli(bad, "--group", "2", "--script-dir", "suite", tmp=tmp_path)
    assert r.returncode == 2 and r.stdout.count("\n") == 1, r.stdout
    assert "task unknown-metric: not supported on a sandbox:" in r.stdout and "no_such_metric" in r.stdout


TYPE_IT = (
    "## Action:\nwrite the file\n## Code:\n```python\n"
    "pyautogui.typewrite(\"echo 'Hello, OSWorld!' > ~/hello.txt\")\npyautogui.press('enter')\n```"
)
DONE = "## Action:\ndone\n## Code:\n```python\ncomputer.terminate(status='success')\n```"


@pytest.mark.slow
@needs_x
def test_a_server_gives_the_sampled_ids_where_it_returns_them_else_the_text_is_tokenized(
    tmp_path: Path, tiny_kimi: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """vLLM returns ``token_ids`` per choice when asked; a server that does not leaves them unknown,
    and the line says the reply's ids are its text tokenized. The replies solve the task: reward 1."""
    from fake_openai_server import FakeOpenAI, Reply

    from agent.models.kimi_vl.chat import KimiChat
    from tasks.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("KIMI_OSWORLD_EVAL_VENV", str(EVAL_VENV))
    server = FakeOpenAI(models=("kimi-vl",), roots={"kimi-vl": str(tiny_kimi)})
    server.replies.extend([Reply(TYPE_IT, token_ids=[5, 6, 7]), Reply(DONE)])
    out = tmp_path / "rollouts"
    try:
        status = main(["rollout", TASK, "--group", "1", "--out", str(out), "--backend", "openai",
                       "--base-url", server.url, "--model", "kimi-vl", "--max-steps", "2", *FLAGS])  # fmt: skip
    finally:
        server.close()
    assert status == 0, capsys.readouterr().out
    assert all(r["return_token_ids"] is True for r in server.requests)
    (line,) = lines(model_dir(out, "kimi-vl") / "rollouts.jsonl")
    assert (line["reward"], line["outcome"], line["policy"]) == (1.0, "scored", "model")
    first, second = line["steps"]
    assert (first["reply_ids"], first["reply_ids_source"]) == ([5, 6, 7], "sampled")
    chat = KimiChat(load_tokenizer(tiny_kimi), 4096)
    assert second["reply_ids_source"] == "tokenized" and second["reply"] == DONE
    assert second["reply_ids"] == [*chat.text_ids(DONE), chat.ids["<|im_end|>"]]
    for step in (first, second):
        assert step["prompt_ids"][-1] == chat.render([]).ids[-1]  # ends with the assistant's opening
        assert step["prompt_ids"].count(chat.ids["<|media_start|>"]) == len(step["images"]) == step["step"]
