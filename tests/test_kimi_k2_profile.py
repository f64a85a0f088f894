"""The Kimi K2.5 / K2.6 profile: its parser on replies in the real format of OSWorld's ``mm_agents/kimi``
agent (/work/wt/i21-facts.md 1.4: the examples quoted there, from YangYzzzz/OSSymphony-Selfuse
``mm_agents/kimi/kimi_agent.py`` @ 2f96870592cf44d31a0436204bb91574414ea00f), its detection, variants and
image rule, and the whole CLI against a loopback OpenAI-compatible server that answers as K2 does (thinking
in ``reasoning_content``), on a real sandbox."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cli_args import clickpad_app
from conftest import kept_home
from fake_openai_server import FakeOpenAI, Reply
from PIL import Image

from agent.backends.openai import OpenAIBackend, env_api_key
from agent.model_policy import ModelPolicy
from agent.models.kimi_k2.parser import parse_reply
from agent.models.kimi_k2.variants import Variant, resolve_variant
from agent.models.kimi_k2.vision import image_tokens, model_size
from agent.models.registry import PROFILES, choose_profile
from agent.policy import Observation
from env.actions import Click, Done, Point, Wait
from env.desktop import Frame
from env.geometry import ScreenGeometry
from tasks.cli import main

K2 = PROFILES["kimi-k2"]
# The fact file's examples, as Python string literals of the reply's content.
SAVE = '## Action:\nClick the "Save" button in the toolbar.\n## Code:\n```python\npyautogui.click(x=0.412, y=0.087)\n```'
TERMINATE = "```code\ncomputer.terminate(status=\"success\", answer='42')\n```"


def test_the_real_format_parses_to_typed_actions() -> None:
    r = parse_reply(SAVE)
    assert r.error is None and r.action_text == 'Click the "Save" button in the toolbar.'
    assert r.actions == [Click(point=Point.norm(0.412, 0.087))]
    r = parse_reply(TERMINATE)
    assert r.error is None and r.actions == [Done(status="success", answer="42")]
    r = parse_reply("## Action:\nWait for the installer.\n## Code:\n```code\ncomputer.wait()\n```")
    assert r.error is None and isinstance(r.actions[0], Wait)
    r = parse_reply("## Action:\nGive up.\n## Code:\n```python\ncomputer.terminate(status='fail')\n```")
    assert r.actions == [Done(status="failure")]
    # Non-thinking mode: a ## Thought section; pixels where both values exceed 1; the last block runs.
    r = parse_reply(
        "## Thought:\nThe menu is open.\n\n## Action:\nOpen File.\n## Code:\n```python\npyautogui.click(1, 0.5)\n```\n"
        "```python\npyautogui.click(x=960, y=540)\n```"
    )
    assert (r.thought, r.error) == ("The menu is open.", None)
    assert r.actions == [Click(point=Point.px(960, 540))]
    # K2 served without a reasoning parser: the thinking is inline.
    r = parse_reply("<think>the toolbar is at the top</think>" + SAVE)
    assert r.thinking == "the toolbar is at the top" and r.error is None and len(r.actions) == 1


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("## Action:\nClick Save.", "no ```python code block after ## Code:"),
        (
            "## Code:\n```python\npyautogui.click(0.4, 0.1)\n```",
            "no ## Action: section saying what the code does",
        ),
        ("## Action:\nList.\n## Code:\n```bash\nls\n```", "the code is fenced as ```bash; write pyautogui"),
        ("## Action:\nRun.\n## Code:\n```python\nimport os; os.system('x')\n```", "line 1: only calls like"),
        (
            "## Action:\nRun.\n## Code:\n```python\nsubprocess.run('x')\n```",
            "subprocess.run() is not an allowed",
        ),
        (
            "## Action:\nMix.\n## Code:\n```python\npyautogui.click(0.5, 300)\n```",
            "mixes a normalised and a pixel",
        ),
        ("<think>still thinking about it", "reply cut off inside its thinking"),
        ("## Action:\nEmpty.\n## Code:\n```python\n```", "the code block is empty"),
    ],
)
def test_bad_replies_are_one_line_errors(reply: str, error: str) -> None:
    r = parse_reply(reply)
    assert r.error is not None and error in r.error and "\n" not in r.error and r.actions == []


def test_a_reply_cut_by_max_tokens_says_so_and_huge_replies_are_read_in_linear_time() -> None:
    r = parse_reply("## Action:\nClick.\n## Code:\n```python\npyautogui.click(0.5,", finish_reason="length")
    assert r.error == "the code block was cut off (the reply hit max_tokens)"
    t0 = time.perf_counter()
    for hostile in ("## Action\n" * 20_000, " \t" * 100_000 + "\n#", "```\n" * 50_000, "#" * 200_000):
        assert parse_reply(hostile).error is not None
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize(
    ("name", "variant"),
    [
        ("kimi-k2.5", "k2.5"),
        ("moonshotai/Kimi-K2.6", "k2.6"),
        ("moonshot/kimi-k2.6", "k2.6"),
        ("/m/Kimi-K2_5-int4", "k2.5"),
    ],
)
def test_auto_recognises_k2_by_name_and_the_variant_follows(name: str, variant: str) -> None:
    chosen = choose_profile("auto", served_root=name)
    assert chosen.profile is K2 and chosen.source == f"auto: {name!r}"
    resolved = K2.resolve_variant(override=None, names=[("the served model", name)])
    assert resolved.variant.name == variant
    assert choose_profile("auto", checkpoint_config={"model_type": "kimi_k25"}).profile is K2
    assert choose_profile("auto", served_root="moonshotai/Kimi-VL-A3B-Instruct").profile.name == "kimi-vl"


def test_variants_carry_the_reference_agents_sampling_and_a_wrong_variant_is_one_line() -> None:
    k25, k26 = Variant.named("k2.5"), Variant.named("k2.6")
    assert (k25.temperature, k25.top_p, k25.max_new_tokens, k25.thinking) == (1.0, 0.95, 4096, True)
    assert (k26.max_new_tokens, k26.in_token_limit) == (32768, 16384)
    with pytest.raises(
        ValueError,
        match=r"^--variant 'instruct' is not a Kimi K2 variant \(choose from k2.5, k2.6, k2.5-instant, k2.6-instant\)$",
    ):
        resolve_variant(override="instruct", names=[])


def test_instant_mode_switches_thinking_off_per_request_and_only_by_name() -> None:
    """``--variant k2.6-instant``: the same checkpoint with thinking off. The request says so the way
    the server understands (vLLM/SGLang: chat_template_kwargs; Moonshot's API: its thinking field),
    at temperature 0.6, and the history replays no thinking. A checkpoint's name never picks it."""
    from agent.backends.openai import thinking_switch

    instant = resolve_variant(override="k2.6-instant", names=[]).variant
    assert (instant.thinking, instant.temperature, instant.top_p, instant.request_thinking) == (
        False,
        0.6,
        0.95,
        False,
    )
    assert resolve_variant(override=None, names=[("served", "kimi-k2.6-instant")]).variant.name == "k2.6"
    assert thinking_switch("api.moonshot.ai", False) == {"thinking": {"type": "disabled"}}
    assert thinking_switch("127.0.0.1", False) == {"chat_template_kwargs": {"thinking": False}}
    server = FakeOpenAI(models=("kimi-k2.6",))
    try:
        server.replies.append(Reply(SAVE))
        backend = OpenAIBackend(server.url, "kimi-k2.6", in_token_limit=instant.in_token_limit)
        policy = ModelPolicy(backend, instant, profile=K2, max_context=65536)
        frame = Frame.from_image(Image.new("RGB", (640, 400), "white"))
        decision = policy.decide(Observation("save", 1, frame, ScreenGeometry.plain(640, 400)), [])
        assert decision.error is None and decision.thinking is None
        sent = server.requests[0]
        assert (sent["chat_template_kwargs"], sent["temperature"], sent["top_p"]) == (
            {"thinking": False},
            0.6,
            0.95,
        )
        thinking_on = resolve_variant(override="k2.6", names=[]).variant
        assert "chat_template_kwargs" not in ModelPolicy(backend, thinking_on, profile=K2).params.model_dump()
    finally:
        server.close()


def test_the_image_rule_gives_the_worked_sizes() -> None:
    # /work/wt/i21-facts.md 1.9: 1080p unchanged (2691 tokens), 1280x800 1334, 1440p and 4K shrunk.
    assert (model_size(1920, 1080, 16384), image_tokens(1920, 1080, 16384)) == ((1920, 1080), 2691)
    assert image_tokens(1280, 800, 16384) == 1334
    assert (model_size(2560, 1440, 16384), image_tokens(2560, 1440, 16384)) == ((2404, 1352), 4214)
    assert model_size(3840, 2160, 16384) == (2392, 1345)
    assert max(model_size(20000, 300, 16384)) <= 7168  # no side beyond 512 patches


def test_moonshot_keys_go_only_to_moonshot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("MOONSHOT_API_KEY", raising=False)
    monkeypatch.setenv("KIMI_API_KEY", "sk-kimi")
    assert env_api_key("api.moonshot.ai") == "sk-kimi"
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-moon")
    assert env_api_key("api.moonshot.cn") == "sk-moon"
    assert env_api_key("127.0.0.1") is None  # another server never gets a Moonshot key


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_the_servers_reasoning_becomes_the_steps_thinking_and_thought(field: str) -> None:
    server = FakeOpenAI(models=("kimi-k2.6",), roots={"kimi-k2.6": "moonshotai/Kimi-K2.6"})
    try:
        server.replies.append(Reply(SAVE, reasoning="The Save button is top left.", reasoning_field=field))
        backend = OpenAIBackend(server.url, "kimi-k2.6", max_retries=0)
        policy = ModelPolicy(backend, Variant.named("k2.6"), profile=K2, max_context=262144)
        frame = Frame.from_image(Image.new("RGB", (1280, 800), "white"))
        d = policy.decide(Observation("save the file", 1, frame, ScreenGeometry.plain(1280, 800)), [])
        assert d.error is None and d.thinking == d.thought == "The Save button is top left."
        body = server.requests[0]
        assert (body["temperature"], body["top_p"], body["max_tokens"]) == (1.0, 0.95, 32768)
        assert body["messages"][0]["content"].startswith("You are a GUI agent.")  # prompts/models/kimi_k2
    finally:
        server.close()


def _clicks(log: Path, n: int) -> list[tuple[int, int]]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        events = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.exists() else []
        downs = [(e["x"], e["y"]) for e in events if e["kind"] == "down"]
        if len(downs) >= n:
            return downs
        time.sleep(0.05)
    raise AssertionError(f"{n} clicks were not seen in {log}")


@pytest.mark.slow
@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (1280, 800)])
def test_the_cli_runs_k2_end_to_end_and_its_clicks_land_on_the_pixel(
    width: int, height: int, tmp_path: Path, kept_sandboxes: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    server = FakeOpenAI(models=("kimi-k2.6",), roots={"kimi-k2.6": "moonshotai/Kimi-K2.6"})
    try:
        server.replies.extend(
            [
                Reply(SAVE.replace("0.412, y=0.087", "0.25, y=0.75"), reasoning="The target is low left."),
                Reply(
                    f"## Action:\nClick the centre.\n## Code:\n```python\npyautogui.click(x={width // 2}, y={height // 2})\n```",
                    reasoning="Now the centre, in pixels.",
                    reasoning_field="reasoning",  # newer vLLM
                ),
                Reply(TERMINATE, reasoning="Both clicks are done."),
            ]
        )
        out = tmp_path / "run"
        code = main(
            [
                "click the two targets",
                *("--backend", "openai", "--base-url", server.url, "--model", "kimi-k2.6"),
                *("--size", f"{width}x{height}", "--out", str(out), "--keep", "--max-steps", "5"),
                *("--app", clickpad_app("clicks.jsonl"), "--desktop-env", "minimal"),
            ]
        )
        printed = capsys.readouterr().out
        assert code == 0, printed
        # The fake server takes 32768 tokens, as a small vLLM would: K2.6's 32768-token output budget
        # is lowered so that the prompt has room, and the run says so.
        assert "--max-new-tokens lowered to 8192" in printed
        downs = _clicks(kept_home(kept_sandboxes) / "clicks.jsonl", 2)
        assert downs == [(int(0.25 * width), int(0.75 * height)), (width // 2, height // 2)]
        model = json.loads((out / "run.json").read_text())["model"]
        assert (model["model_profile"], model["variant"], model["top_p"], model["prompt_profile"]) == (
            "kimi-k2",
            "k2.6",
            0.95,
            "osworld",
        )
        steps = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
        assert [s["thinking"] for s in steps] == [
            "The target is low left.",
            "Now the centre, in pixels.",
            "Both clicks are done.",
        ]
        # The history replays the thinking as OSWorld's Kimi agent does, with the action, never the code.
        second = server.requests[1]["messages"]
        assert second[-2] == {
            "role": "assistant",
            "content": '# Step 1:\n◁think▷The target is low left.◁/think▷## Action:\nClick the "Save" button in the toolbar.',
        }
        assert all(
            (r["top_p"], r["temperature"], r["max_tokens"]) == (0.95, 1.0, 8192) for r in server.requests
        )
    finally:
        server.close()


def test_a_screenspot_run_against_a_k2_server(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """`bench screenspot run` with the server reporting Kimi-K2.5: the profile and variant come from its
    root, each answer in K2's format (thinking in reasoning_content) is scored, and no published figure
    is printed, since none of K2's is known: Kimi-VL's must not stand beside it."""
    from screenspot_data import write_screenspot_pro

    from tasks.screenspot.cli import main as screenspot

    written = write_screenspot_pro(tmp_path / "pro")
    centres = {}
    for s in written.samples:
        if s.target.box is not None and s.instruction not in centres:
            x1, y1, x2, y2 = s.target.box
            w, h = Image.open(s.image).size
            centres[s.instruction] = ((x1 + x2) / 2 / w, (y1 + y2) / 2 / h)
    server = FakeOpenAI(models=("kimi-k2.5",), roots={"kimi-k2.5": "moonshotai/Kimi-K2.5"})
    base: type = server.httpd.RequestHandlerClass

    class ByInstruction(base):  # type: ignore[misc, valid-type]
        def _answer(self, body: dict, reply: Reply | None) -> None:  # type: ignore[type-arg]
            instruction = body["messages"][-1]["content"][-1]["text"].split("## Task Instruction:\n", 1)[1]
            x, y = centres.get(instruction, (0.999, 0.999))
            code = f"## Action:\nClick it.\n## Code:\n```python\npyautogui.click(x={x:.4f}, y={y:.4f})\n```"
            super()._answer(body, Reply(code, reasoning="It is the coloured box."))

    server.httpd.RequestHandlerClass = ByInstruction
    out = tmp_path / "out"
    try:
        args = ["run", str(written.root), "--out", str(out), "--model", "kimi-k2.5", "--base-url", server.url]
        assert screenspot([*args, "--no-progress"]) in (0, 1)
    finally:
        server.close()
    printed = capsys.readouterr().out
    run = json.loads((out / "run.json").read_text())
    assert (run["model_profile"], run["variant"]) == ("kimi-k2", "k2.5")
    details = json.loads((out / "results.json").read_text())["details"]
    boxed = [d for d in details if d["id"] in {s.id for s in written.samples if s.target.box is not None}]
    assert boxed and [d["correctness"] for d in boxed] == ["correct"] * len(boxed), boxed
    assert "published" not in printed and "Kimi-VL" not in printed


@pytest.mark.slow
def test_an_osworld_suite_task_with_k2_scores_and_prints_k2s_published_number(tmp_path: Path) -> None:
    """`bench osworld run os-hello-file --backend openai` against the loopback server answering as K2.6:
    OSWorld's own evaluator scores the file the typed command wrote, and the figure printed beside the
    run is K2.6's published one (not Kimi-VL's)."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    server = FakeOpenAI(models=("kimi-k2.6",), roots={"kimi-k2.6": "moonshotai/Kimi-K2.6"})
    write = (
        "## Action:\nWrite the greeting into ~/hello.txt from the terminal.\n## Code:\n```python\n"
        "pyautogui.write(\"echo 'Hello, OSWorld!' > ~/hello.txt\")\npyautogui.press('enter')\n```"
    )
    server.replies.extend(
        [
            Reply(write, reasoning="A terminal is open; one echo writes the file."),
            Reply("## Action:\nDone.\n## Code:\n```code\ncomputer.terminate(status='success')\n```"),
        ]
    )
    out = tmp_path / "results"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "COLUMNS": "200"}
    env.setdefault("KIMI_OSWORLD_EVAL_VENV", str(repo / ".cache" / "osworld-eval"))
    try:
        r = subprocess.run(
            [sys.executable, "-m", "tasks.cli", "bench", "osworld", "run", "os-hello-file", "--backend", "openai",
             "--base-url", server.url, "--model", "kimi-k2.6", "--out", str(out), "--desktop-env", "minimal",
             "--max-steps", "5"],
            cwd=repo, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        server.close()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    scores = [float(p.read_text()) for p in out.rglob("result.txt")]
    assert scores == [1.0], r.stdout[-3000:]
    assert "published: Kimi-K2.6 model card, OSWorld-Verified, thinking: 73.10%" in r.stdout
    assert "Kimi-VL technical report" not in r.stdout


def test_kimi_vl_requests_and_records_stay_without_top_p() -> None:
    """The shared additions are invisible to Kimi-VL: no top_p in its requests or its params' record,
    and a server's reasoning field is the step's thinking only (its thought stays the reply's own)."""
    from agent.models.kimi_vl.variants import Variant as KimiVariant

    server = FakeOpenAI(models=("kimi-vl",), roots={"kimi-vl": "moonshotai/Kimi-VL-A3B-Instruct"})
    try:
        server.replies.append(Reply("## Thought\nsave it\n" + SAVE, reasoning="aside"))
        policy = ModelPolicy(
            OpenAIBackend(server.url, "kimi-vl", max_retries=0), KimiVariant.named("instruct")
        )
        assert policy.params.model_dump() == {"max_new_tokens": 1024, "temperature": 0.2}
        frame = Frame.from_image(Image.new("RGB", (640, 480)))
        d = policy.decide(Observation("t", 1, frame, ScreenGeometry.plain(640, 480)), [])
        assert "top_p" not in server.requests[0] and d.error is None
        assert (d.thought, d.thinking) == ("save it", "aside")
    finally:
        server.close()
