"""Kimi-VL in the loop: the tiny random checkpoint through the real transformers path, and the
policy against a loopback OpenAI-compatible server."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from cli_args import openai_task
from conftest import kept_home
from fake_openai_server import FakeOpenAI, Reply
from PIL import Image
from safetensors.torch import load_file, save_file

from agent.backends.base import BackendError, GenerationParams
from agent.backends.openai import OpenAIBackend
from agent.backends.transformers import TransformersBackend
from agent.loop import run
from agent.messages import ImagePart, Message, TextPart
from agent.model_policy import ModelPolicy as KimiPolicy
from agent.models.kimi_vl.variants import Variant, resolve_variant
from agent.trajectory import RunInfo, TrajectoryWriter, read_steps
from tasks.cli import main


@pytest.fixture(scope="module")
def tiny_backend(tiny_kimi: Path) -> TransformersBackend:
    return TransformersBackend.load(str(tiny_kimi))


def test_official_layout_loads_with_every_weight_in_place(
    tiny_kimi: Path, tiny_backend: TransformersBackend
) -> None:
    raw = load_file(str(tiny_kimi / "model.safetensors"))
    sd = tiny_backend.model.state_dict()
    assert torch.equal(sd["lm_head.weight"], raw["language_model.lm_head.weight"])
    assert torch.equal(
        sd["model.language_model.embed_tokens.weight"], raw["language_model.model.embed_tokens.weight"]
    )
    assert torch.equal(sd["model.mm_projector.in_proj.weight"], raw["multi_modal_projector.linear_1.weight"])
    assert torch.equal(sd["model.mm_projector.pre_norm.bias"], raw["multi_modal_projector.pre_norm.bias"])
    cfg = tiny_backend.model.config
    assert (
        cfg.image_token_id
        == json.loads((tiny_kimi / "config.json").read_text())["media_placeholder_token_id"]
    )
    assert cfg.tie_word_embeddings is False and cfg.vision_config.pos_emb_height == 8


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_a_checkpoint_off_the_layout_is_refused(tiny_kimi: Path, tmp_path: Path, change: str) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(tiny_kimi, bad)
    weights = load_file(str(bad / "model.safetensors"))
    if change == "extra":
        weights["multi_modal_projector.linear_3.weight"] = torch.zeros(2, 2)
    else:
        del weights["language_model.model.norm.weight"]
    save_file(weights, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(BackendError, match="does not match the Kimi-VL layout"):
        TransformersBackend.load(str(bad))


def test_generate_counts_image_tokens_and_stops_within_budget(tiny_backend: TransformersBackend) -> None:
    shot = Image.new("RGB", (1280, 800), (40, 80, 120))
    c = tiny_backend.generate(
        [Message("user", (ImagePart(shot), TextPart("next?")))], GenerationParams(max_new_tokens=12)
    )
    assert 1066 < c.tokens_in < 1200  # 1066 image tokens plus the template and text
    assert 1 <= c.tokens_out <= 12 and c.finish_reason in ("stop", "length")


def test_tiny_model_drives_a_full_agent_step_in_a_sandbox(
    sandbox, tiny_backend: TransformersBackend, tmp_path: Path
) -> None:
    policy = KimiPolicy(
        tiny_backend,
        Variant.from_name("Kimi-VL-A3B-Instruct"),
        count_text_tokens=tiny_backend.count_text_tokens,
        max_new_tokens=16,
        parse_retries=1,
    )
    g = sandbox.geometry
    writer = TrajectoryWriter(
        tmp_path,
        RunInfo(
            task="t", started_at=time.time(), policy="tiny", desktop="sandbox", screen=(g.width, g.height)
        ),
    )
    traj = run("open a terminal", policy, sandbox, max_steps=1, writer=writer)
    assert traj.stop_reason in ("max_steps", "done")
    [step] = read_steps(tmp_path)
    assert step.raw and step.tokens_in > 1066 and 1 <= step.tokens_out <= 32  # two tries at most
    assert step.parse_error or step.actions  # a random reply is usually unparseable: recorded, not fatal
    assert (tmp_path / step.screenshot).exists() and step.timing.model_s > 0


def test_parse_errors_go_back_to_the_model_and_are_retried() -> None:
    server = FakeOpenAI()
    try:
        server.replies.extend(
            [
                Reply("I would click the button."),
                Reply(
                    "## Thought\nok\n## Action:\nclick\n## Code:\n```python\npyautogui.click(0.5, 0.5)\n```"
                ),
            ]
        )
        policy = KimiPolicy(
            OpenAIBackend(server.url, "kimi-vl", max_retries=0), Variant.from_name("kimi-vl"), parse_retries=2
        )
        from agent.policy import Observation
        from env.desktop import Frame
        from env.geometry import ScreenGeometry

        frame = Frame.from_image(Image.new("RGB", (640, 480)))
        d = policy.decide(Observation("t", 1, frame, ScreenGeometry.plain(640, 480)), [])
        assert d.error is None and len(d.actions) == 1 and d.thought == "ok"
        assert len(server.requests) == 2
        retry = server.requests[1]["messages"]
        assert retry[-2] == {"role": "assistant", "content": "I would click the button."}
        assert "could not be executed: no ## Code block" in retry[-1]["content"]
        assert d.tokens_in == 2 * 1234
        # Every try is kept for the record: the unparsable reply with its error, then the one taken.
        assert [a.raw for a in d.attempts] == ["I would click the button.", d.raw]
        assert "no ## Code block" in (d.attempts[0].error or "") and d.attempts[1].error is None
    finally:
        server.close()


def test_cli_with_the_openai_backend_runs_in_a_sandbox(tmp_path: Path, kept_sandboxes: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    server = FakeOpenAI()
    target = "~/done.txt"
    try:
        server.replies.extend(
            [
                Reply(
                    "## Thought\nfocus\n## Action:\nclick the terminal\n## Code:\n```python\npyautogui.click(0.1, 0.1)\n```"
                ),
                Reply(
                    f"## Thought\ntype\n## Action:\nwrite\n## Code:\n```python\npyautogui.write('echo ok > {target}')\npyautogui.press('enter')\n```"
                ),
                Reply(
                    "## Thought\ndone\n## Action:\nfinish\n## Code:\n```python\ncomputer.terminate(status='success', answer='ok')\n```"
                ),
            ]
        )
        out = tmp_path / "run"
        code = main(
            [
                "write ok",
                "--backend",
                "openai",
                "--base-url",
                server.url,
                "--model",
                "kimi-vl",
                "--out",
                str(out),
                "--size",
                "1024x768",
                "--app",
                "xterm -geometry 80x24+0+0",
                "--keep",
            ]
        )
        printed = capsys.readouterr().out
        assert code == 0, printed
        assert (kept_home(kept_sandboxes) / "done.txt").read_text() == "ok\n"
        steps = read_steps(out)
        assert [s.action_text for s in steps] == ["click the terminal", "write", "finish"]
        assert steps[0].actions[0].screen_points == [(102, 76)]
        assert len(server.requests[2]["messages"]) > len(server.requests[0]["messages"])  # history grew
        assert json.loads((out / "run.json").read_text())["model"]["token_counts"] == "UTF-8 upper bound"
    finally:
        server.close()


def test_cli_with_the_tiny_checkpoint_and_missing_weights(tiny_kimi: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "tiny-run"
    code = main(
        [
            "open a terminal",
            "--model",
            str(tiny_kimi),
            "--max-steps",
            "1",
            "--max-new-tokens",
            "8",
            "--out",
            str(out),
            "--size",
            "640x480",
            "--no-kv-reuse",
        ]
    )
    assert code == 1 and len(read_steps(out)) == 1  # random weights do not finish the task
    model = json.loads((out / "run.json").read_text())["model"]
    assert model["backend"] == "transformers" and model["checkpoint"] == str(tiny_kimi)
    assert model["kv_reuse"] is False
    assert model["in_token_limit"] == 4096 and model["prompt_profile"] == "append"
    capsys.readouterr()
    assert main(["open a terminal", "--model", str(tmp_path / "no-such-dir")]) == 2
    err = capsys.readouterr().out
    assert "no checkpoint directory" in err and len(err.strip().splitlines()) == 1


def test_the_variant_comes_from_what_is_loaded_and_flags_override() -> None:
    r = resolve_variant(
        override=None,
        names=[
            ("the server's checkpoint", "/models/Kimi-VL-A3B-Thinking-2506"),
            ("the served model", "kimi"),
        ],
    )
    assert (r.variant.name, r.variant.thinking, r.variant.in_token_limit) == ("thinking-2506", True, 16384)
    assert "the server's checkpoint" in r.source
    r = resolve_variant(override=None, names=[("the served model", "kimi")])
    assert r.variant.name == "instruct" and r.source.startswith("default")
    r = resolve_variant(
        override="thinking",
        names=[("the checkpoint", "Kimi-VL-A3B-Instruct")],
        in_token_limit=9000,
        in_token_limit_source="the checkpoint's preprocessor_config.json",
    )
    assert (r.variant.name, r.variant.in_token_limit, r.source) == ("thinking", 9000, "--variant")
    assert r.in_token_limit_source == "the checkpoint's preprocessor_config.json"
    r = resolve_variant(override=None, names=[], in_token_limit=9000, in_token_limit_override=2048)
    assert r.record()["in_token_limit"] == 2048 and r.record()["in_token_limit_from"] == "--in-token-limit"


def test_the_cli_spells_the_variants_and_profiles_as_the_code_does() -> None:
    from typing import get_args

    from agent.history import OPENCUA_LAYOUTS, PROFILES, UI_TARS_LAYOUTS
    from agent.models.kimi_k2.variants import VARIANTS as K2_VARIANTS
    from agent.models.kimi_vl.variants import VariantName
    from agent.models.opencua.variants import A3B_VARIANTS, QWEN_VARIANTS
    from agent.models.ui_tars.variants import VARIANTS as UI_TARS_VARIANTS
    from tasks import cli_common as cli

    assert [*get_args(VariantName), *K2_VARIANTS, *QWEN_VARIANTS, *A3B_VARIANTS] == cli.VARIANTS
    assert set(UI_TARS_VARIANTS) <= set(cli.VARIANTS)  # "7b", shared with OpenCUA's
    assert list(PROFILES) == cli.PROFILES and [*PROFILES, *OPENCUA_LAYOUTS, *UI_TARS_LAYOUTS] == cli.LAYOUTS


def test_cli_takes_the_variant_from_the_servers_checkpoint(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    server = FakeOpenAI(models=("kimi",), roots={"kimi": "moonshotai/Kimi-VL-A3B-Thinking-2506"})
    try:
        server.replies.append(
            Reply(
                "◁think▷fine◁/think▷## Action:\nend\n## Code:\n```python\ncomputer.terminate(status='success')\n```"
            )
        )
        out = tmp_path / "run"
        args = ["t", "--backend", "openai", "--base-url", server.url, "--model", "kimi", "--size", "640x480"]
        assert main([*args, "--out", str(out)]) == 0, capsys.readouterr().out
        model = json.loads((out / "run.json").read_text())["model"]
        assert (model["variant"], model["in_token_limit"]) == ("thinking-2506", 16384)
        assert "Kimi-VL-A3B-Thinking-2506" in model["variant_from"] and model["temperature"] == 0.8
        assert model["checkpoint"] == "moonshotai/Kimi-VL-A3B-Thinking-2506"
        from prompts import load_prompt

        system = server.requests[0]["messages"][0]["content"]
        assert load_prompt("thought_thinking") in system  # the Thinking guidance
        # The flags win over what the server says, and the record says so.
        server.replies.append(Reply("## Action:\nend\n## Code:\n```python\ncomputer.terminate()\n```"))
        out2 = tmp_path / "run2"
        flags = ["--variant", "instruct", "--in-token-limit", "1024", "--out", str(out2)]
        assert main([*args, *flags]) == 0
        model = json.loads((out2 / "run.json").read_text())["model"]
        assert (model["variant"], model["variant_from"], model["in_token_limit"]) == (
            "instruct",
            "--variant",
            1024,
        )
    finally:
        server.close()


def test_an_unreachable_server_is_reported_before_any_desktop_starts(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    t0 = time.monotonic()
    code = main(openai_task(f"http://127.0.0.1:{port}/v1", "--retries", "2", "--out", str(out)))
    printed = capsys.readouterr().out
    assert code == 2 and not out.exists(), printed  # no run directory: nothing was started
    lines = printed.strip().splitlines()
    assert lines[-1].startswith("kimi-agent: error:") and f"127.0.0.1:{port}" in lines[-1]
    assert "Traceback" not in printed and time.monotonic() - t0 < 30
    assert "retry" not in printed and len(lines) == 1  # issue 18: at start-up, refused is one line at once


@pytest.mark.slow
def test_the_main_command_fetches_the_default_checkpoint_on_first_use(
    tiny_kimi: Path, tmp_path: Path
) -> None:
    """`kimi-agent "task"` with no --model on a machine with a (loopback) hub: one notice line with
    the size, the download, then the run, as a transformers user expects."""
    import os
    import subprocess
    import sys

    from fake_hub import fake_hub

    with fake_hub({"moonshotai/Kimi-VL-A3B-Instruct": tiny_kimi}) as hub:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))
        }
        env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "NO_PROXY": "127.0.0.1"}
        out = tmp_path / "run"
        code = "import sys; from tasks.cli import main; sys.exit(main(sys.argv[1:]))"
        args = ["open a terminal", "--max-steps", "1", "--max-new-tokens", "4", "--size", "640x480"]
        run = subprocess.run(
            [sys.executable, "-c", code, *args, "--out", str(out)],
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=240,
        )
        downloads = hub.downloads()
    printed = run.stdout + run.stderr
    assert run.returncode == 1, printed[-3000:]  # random weights do not finish the task
    assert "moonshotai/Kimi-VL-A3B-Instruct" in printed and "MB" in printed  # the notice with the size
    assert any(d.endswith("model.safetensors") for d in downloads)
    model = json.loads((out / "run.json").read_text())["model"]
    assert str(tmp_path / "hf") in model["checkpoint"] and model["variant"] == "instruct"


def test_a_lone_surrogate_from_the_server_does_not_break_the_run(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    server = FakeOpenAI()
    wait = "## Thought\nx\ud800y\n## Action:\nwait\n## Code:\n```python\ncomputer.wait(0.1)\n```"
    try:
        server.replies.extend([Reply("no code \ud800"), Reply(wait), Reply(wait.replace("0.1", "0.2"))])
        server.default = Reply("## Action:\nend\n## Code:\n```python\ncomputer.terminate()\n```")
        out = tmp_path / "run"
        args = openai_task(server.url, "--model", "kimi-vl", "--size", "640x480")
        assert main([*args, "--out", str(out)]) == 0, capsys.readouterr().out
    finally:
        server.close()
    steps = read_steps(out)
    assert [len(s.attempts) for s in steps] == [2, 1, 1] and steps[0].thought == "x\\ud800y"
    assert all("\ud800" not in json.dumps(r["messages"], ensure_ascii=False) for r in server.requests[1:])


def test_a_context_too_small_for_the_first_prompt_is_a_usage_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    server = FakeOpenAI()
    try:
        out = tmp_path / "run"
        args = ["t", "--backend", "openai", "--base-url", server.url, "--model", "kimi-vl", "--out", str(out)]
        assert main([*args, "--max-context", "2000", "--max-new-tokens", "100"]) == 2
    finally:
        server.close()
    assert "--max-context is too small" in capsys.readouterr().out and not out.exists()
    assert not server.requests  # no model call either
