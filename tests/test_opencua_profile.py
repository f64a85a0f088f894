"""The OpenCUA profiles: reply grammar (V1 and V2 formats, L1/L2/L3), coordinate spaces with their
exact mapping to screen pixels, computer.triple_click, detection, prompts and published figures.

Reply fixtures follow OpenCUA's real formats: the V2 format block and examples (fxsc03/OSWorld-main-nex
mm_agents/opencua/prompts.py @ cfe2c9ba11f8294749f51d06b2c77553759cdc1e: ``l1/l2/l3_format_instruction``,
``code_instrucion``), the V1 bare labels (same file, ``SYSTEM_PROMPT_V1_L*``) and the example L2 reply
of /work/wt/i21-facts.md 2.2.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from agent.models.kimi_vl.vision import wire_size
from agent.models.opencua.parser import MAX_REPLY_CHARS, parse_reply
from agent.models.profile import shot_pixel
from agent.models.qwen_vision import model_size, smart_resize
from agent.models.registry import PROFILES, choose_profile
from env.actions import Click, Done, Drag, Point, Scroll, TypeText, Wait
from env.geometry import ScreenGeometry

OPENCUA = PROFILES["opencua"]
A3B = PROFILES["opencua-a3b"]
SCREENS = [(1920, 1080), (1280, 800)]

L1 = '# Step: 1\n## Action:\nClick the "Files" icon in the dock.\n## Code:\n```python\npyautogui.click(x=966, y=546)\n```'
L2 = (
    "# Step: 3\n## Thought:\nThe dialog is open; I should confirm it.\n## Action:\n"
    'Click the "OK" button.\n## Code:\n```python\npyautogui.click(x=960, y=540)\n```'
)
L3 = (
    "# Step: 2\n## Observation:\nA terminal is open.\n## Thought:\nI will type the command.\n"
    "## Action:\nType ls and press Enter.\n## Code:\n```python\npyautogui.write('ls')\npyautogui.press('enter')\n```"
)
V1_L2 = "Thought:\nThe text must be selected first.\nAction:\nTriple click the first line.\n```code\ncomputer.triple_click(x=0.5, y=0.25)\n```"
DONE = "## Action:\nThe file is saved; the task is done.\n## Code:\n```code\ncomputer.terminate(status=\"success\", answer='''42''')\n```"
FAIL = "## Thought:\nImpossible.\n## Action:\nGive up.\n## Code:\n```code\ncomputer.terminate(status='failure')\n```"
WAIT = "## Action:\nWait for the installation.\n## Code:\n```code\ncomputer.wait()\n```"


def test_the_three_levels_parse_into_thought_action_and_code() -> None:
    one = parse_reply(L1, points="pixels")
    assert (
        one.error is None and one.thought == "" and one.action_text == 'Click the "Files" icon in the dock.'
    )
    assert one.actions == [Click(point=Point.px(966, 546))]
    two = parse_reply(L2, points="pixels")
    assert (
        two.thought == "The dialog is open; I should confirm it."
        and two.action_text == 'Click the "OK" button.'
    )
    three = parse_reply(L3, points="pixels")
    assert three.thought == "I will type the command." and three.action_text == "Type ls and press Enter."
    assert three.actions[0] == TypeText(text="ls") and len(three.actions) == 2


def test_v1_labels_triple_click_terminate_and_wait() -> None:
    v1 = parse_reply(V1_L2, points="relative")
    assert v1.error is None and v1.thought == "The text must be selected first."
    assert v1.actions == [Click(point=Point.norm(0.5, 0.25), clicks=3)]
    assert parse_reply(DONE).actions == [Done(status="success", answer="42")]
    assert parse_reply(FAIL).actions == [Done(status="failure")]
    assert parse_reply(WAIT).actions and isinstance(parse_reply(WAIT).actions[0], Wait)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("## Thought:\nhm\n## Code:\n```python\npyautogui.click(x=1, y=2)\n```", "no ## Action: section"),
        ("## Action:\nClick OK.\n", "no ```python code block"),
        (
            "## Action:\nClick OK.\n## Code:\n```bash\nrm -rf /\n```",
            "no ```python code block (fenced as ```bash)",
        ),
        ("## Action:\nClick OK.\n## Code:\n```python\npyautogui.click(x=1,", "the code block is not closed"),
        (
            "## Action:\nRun it.\n```python\nimport os\nos.system('x')\n```",
            "line 1: only calls like pyautogui.click",
        ),
        (
            "## Action:\nTriple.\n```code\ncomputer.triple_click(x=5)\n```",
            "line 1: computer.triple_click(): needs x and y",
        ),
        ("## Action: Click OK.\n```python\npyautogui.click(x=1, y=2)\n```", "no ## Action: section"),
    ],
)
def test_bad_replies_are_one_line_errors(reply: str, error: str) -> None:
    parsed = parse_reply(reply, points="pixels")
    assert parsed.error is not None and parsed.error.startswith(error), parsed.error
    assert "\n" not in parsed.error and parsed.actions == []


def test_a_cut_reply_says_so_and_a_huge_one_is_not_read() -> None:
    cut = parse_reply("## Thought:\nlong", finish_reason="length")
    assert cut.error == "no ## Action: section (the reply hit max_new_tokens)"
    assert parse_reply("x" * (MAX_REPLY_CHARS + 1)).error.startswith("reply too long")  # type: ignore[union-attr]


def test_parsing_is_linear_on_hostile_replies() -> None:
    import time

    for hostile in ("## Action" + " " * 50_000 + "x", "`" * 99_000, "\n".join(["Action:"] * 30_000)):
        t = time.perf_counter()
        parse_reply(hostile)
        assert time.perf_counter() - t < 1.0


def test_smart_resize_follows_the_rule() -> None:
    assert [smart_resize(*s) for s in SCREENS] == [(1932, 1092), (1288, 812)]
    assert smart_resize(1280, 720) == (1288, 728) and smart_resize(2560, 1440) == (2548, 1428)
    assert smart_resize(20, 20) == (56, 56)  # below min_pixels: grown
    w, h = smart_resize(8000, 6000)  # above max_pixels: shrunk to multiples of 28 under it
    assert w * h <= 12845056 and w % 28 == h % 28 == 0
    with pytest.raises(ValueError, match="aspect ratio above 200"):
        smart_resize(20100, 100)
    # What the openai backend sends (the screenshot itself at the variant's limit) is what is resized.
    assert model_size(
        1920, 1080, OPENCUA.resolve_variant(override="7b", names=[]).variant.in_token_limit
    ) == (
        1932,
        1092,
    )


@pytest.mark.parametrize("screen", SCREENS)
def test_every_resized_pixel_centre_lands_in_its_screen_pixel(screen: tuple[int, int]) -> None:
    width, height = screen
    w, h = smart_resize(width, height)
    geometry = ScreenGeometry.plain(width, height)
    for i in range(w):  # the screen pixel containing the centre of resized pixel i: floor((i+.5) W / w)
        point = shot_pixel(i + 0.5, 0.5, (w, h), screen)
        assert geometry.to_screen(point)[0] == (2 * i + 1) * width // (2 * w)
    for j in range(h):
        point = shot_pixel(0.5, j + 0.5, (w, h), screen)
        assert geometry.to_screen(point)[1] == (2 * j + 1) * height // (2 * h)


@pytest.mark.parametrize("screen", SCREENS)
def test_a_7b_reply_maps_to_the_screen_and_a_point_beyond_the_image_is_an_error(
    screen: tuple[int, int],
) -> None:
    width, height = screen
    w, h = smart_resize(width, height)
    limit = OPENCUA.resolve_variant(override="7b", names=[]).variant.in_token_limit
    code = "pyautogui.moveTo({a}, {b})\npyautogui.dragTo({c}, {d})\npyautogui.scroll(-3, x={a}, y={b})"
    reply = f"## Action:\nDrag it.\n## Code:\n```python\n{code.format(a=0, b=0, c=w - 0.5, d=h - 0.5)}\n```"
    parsed = OPENCUA.read_reply(reply, "stop", screen, limit)
    assert parsed.error is None, parsed.error
    drag, scroll = parsed.actions[1], parsed.actions[2]
    assert isinstance(drag, Drag) and isinstance(scroll, Scroll)
    geometry = ScreenGeometry.plain(width, height)
    assert geometry.to_screen(drag.start) == (0, 0) and geometry.to_screen(drag.end) == (
        width - 1,
        height - 1,
    )
    assert geometry.to_screen(scroll.point) == (0, 0)  # type: ignore[arg-type]
    # The centre of the model's image is the centre of the screen.
    centre = OPENCUA.read_reply(
        L2.replace("960", str(w // 2)).replace("540", str(h // 2)), "stop", screen, limit
    )
    assert geometry.to_screen(centre.actions[0].point) == (width // 2, height // 2)  # type: ignore[attr-defined]
    for x, y in ((w, 10), (10, h), (w + 300, h + 300)):
        beyond = OPENCUA.read_reply(L2.replace("960", str(x)).replace("540", str(y)), "stop", screen, limit)
        assert beyond.error == f"point ({x}, {y}) lies outside the {w}x{h} image the model saw"
        assert beyond.actions == []


@pytest.mark.parametrize("screen", SCREENS)
def test_a3b_takes_fractions_only(screen: tuple[int, int]) -> None:
    width, height = screen
    geometry = ScreenGeometry.plain(width, height)
    reply = L2.replace("x=960, y=540", "x=0.25, y=0.75")
    parsed = A3B.read_reply(reply, "stop", screen, 4096)
    assert geometry.to_screen(parsed.actions[0].point) == (width // 4, height * 3 // 4)  # type: ignore[attr-defined]
    pixels = A3B.read_reply(L2, "stop", screen, 4096)
    assert (
        pixels.error
        == "line 1: pyautogui.click(): coordinates are fractions of the screen from 0 to 1, got (960, 540)"
    )


def test_auto_detection_and_variants() -> None:
    for root, profile, variant in (
        ("xlangai/OpenCUA-7B", "opencua", "7b"),
        ("/models/OpenCUA-32B", "opencua", "32b"),
        ("opencua-72b", "opencua", "72b"),
        ("xlangai/OpenCUA-A3B", "opencua-a3b", "a3b"),
        ("moonshotai/Kimi-VL-A3B-Instruct", "kimi-vl", "instruct"),
    ):
        chosen = choose_profile("auto", served_root=root)
        assert chosen.profile.name == profile, root
        resolved = chosen.profile.resolve_variant(override=None, names=[("the server's checkpoint", root)])
        assert resolved.variant.name == variant
    by_config = choose_profile(
        "auto", "my-model", {"model_type": "opencua", "architectures": ["OpenCUAForConditionalGeneration"]}
    )
    assert by_config.profile is OPENCUA and by_config.source == "auto: the checkpoint's config.json"
    with pytest.raises(ValueError, match="--variant instruct: OpenCUA's are 7b, 32b, 72b"):
        OPENCUA.resolve_variant(override="instruct", names=[])
    v = OPENCUA.resolve_variant(override=None, names=[]).variant
    assert (v.name, v.temperature, v.max_new_tokens, v.thinking) == ("7b", 0.0, 2048, False)


def test_prompts_are_packaged_per_level_and_the_default_is_l2() -> None:
    from agent.history import ContextBuilder, HistoryConfig

    assert OPENCUA.layouts[0] == A3B.layouts[0] == "opencua-l2"
    wants = {"opencua-l1": ("## Action:", "## Thought:"), "opencua-l2": ("## Thought:", "## Observation:")}
    for layout, (has, lacks) in wants.items():
        from PIL import Image

        built = ContextBuilder(HistoryConfig(profile=layout)).build(
            "Open the file.", [], Image.new("RGB", (64, 48)), 1
        )
        system = built.messages[0].parts[0].text  # type: ignore[union-attr]
        fmt = system.split("For each step, provide your response in this format:")[1].split("\n\n")[0]
        assert has in fmt and lacks not in fmt, layout
        assert '"enum": ["success", "failure"]' in system and "{" in system and "{{" not in system
        current = built.messages[-1].parts[-1].text  # type: ignore[union-attr]
        assert "computer.triple_click" not in system  # V2 does not offer it
        assert current.startswith("# Task Instruction:\nOpen the file.\n\nPlease generate the next move")


def test_published_figures_are_the_served_checkpoints() -> None:
    from tasks.osworld.report import published_references

    def refs(model: str) -> list[tuple[str, float]]:
        return published_references(model, None)

    assert [v for _, v in refs("xlangai/OpenCUA-7B")] == [24.3, 27.9, 26.6]
    assert [v for _, v in refs("opencua-72b")] == [39.0, 44.9, 45.0]
    a3b = [("GroundCUA paper (as quoted in kimi-agent's shared docs), OSWorld-Verified, 15 steps", 17.7)]
    assert refs("xlangai/OpenCUA-A3B") == a3b and refs("kimi-vl-a3b-instruct")[0][1] == 8.22
    assert published_references("opencua-a3b", ("opencua-a3b", "a3b")) == a3b
    assert published_references("opencua-7b", ("opencua-a3b", "a3b")) == []  # not the 7B's by its name
    # As its tasks' run.json record it: the profile's own figures, never Kimi-VL's by the name.
    assert [v for _, v in published_references("opencua-7b", ("opencua", "7b"))] == [24.3, 27.9, 26.6]
    assert published_references("kimi-vl-a3b-instruct", ("opencua", "7b")) == []


@dataclass
class ClickpadRun:
    """What a clickpad run left: the pad's presses, the steps, run.json's model and the requests."""

    downs: list[tuple[int, int]]
    steps: list[Any]
    model: dict[str, Any]
    requests: list[dict[str, Any]]


def run_clickpad(served: str, root: str, replies: list[str], size: tuple[int, int], tmp_path: Path,
                 kept: Path, capsys: pytest.CaptureFixture[str]) -> ClickpadRun:  # fmt: skip
    """`kimi-agent click` on a ``size`` sandbox with the clickpad open, against a loopback server
    serving ``served`` (loaded from ``root``) that answers ``replies`` in order."""
    from cli_args import clickpad_task, pad_downs
    from conftest import kept_home
    from fake_openai_server import FakeOpenAI, Reply

    from agent.trajectory import read_steps
    from tasks.cli import main

    server = FakeOpenAI(models=(served,), roots={served: root})
    try:
        server.replies.extend(Reply(r) for r in replies)
        out = tmp_path / "run"
        code = main(clickpad_task(server.url, served, out, size=size))
        assert code == 0, capsys.readouterr().out
        model = json.loads((out / "run.json").read_text())["model"]
        return ClickpadRun(pad_downs(kept_home(kept)), read_steps(out), model, list(server.requests))
    finally:
        server.close()


def sent_images(request: dict[str, Any]) -> list[tuple[int, int]]:
    """The size of each image in a chat request, in order."""
    from PIL import Image

    urls = [p["image_url"]["url"] for m in request["messages"] if isinstance(m["content"], list)
            for p in m["content"] if p["type"] == "image_url"]  # fmt: skip
    return [Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))).size for u in urls]


def check_opencua_requests(requests: list[dict[str, Any]]) -> None:
    """OpenCUA's agent as OSWorld runs it: the V2 L2 system prompt, past steps replayed as their
    ``## Action:`` text, three screenshots, temperature 0."""
    third = requests[2]["messages"]
    assert third[0]["content"].startswith("You are a GUI agent. You are given a task, a screenshot")
    assert "# Step: {step number}\n## Thought:\n{thought}\n## Action:" in third[0]["content"]
    history = [m["content"] for m in third if m["role"] == "assistant"]
    assert history == [
        '# Step 1:\n## Action:\nClick the "OK" button.',
        "# Step 2:\n## Action:\nTriple click the first line.",
    ]
    assert third[-1]["content"][-1]["text"].startswith("# Task Instruction:\n")
    assert requests[2]["temperature"] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("size", "expected"),
    [((1280, 800), [(960, 400), (99, 49)]), ((1920, 1080), [(960, 402), (99, 49)])],
    ids=["1280x800", "1920x1080"],
)
def test_cli_with_an_opencua_7b_server_clicks_the_intended_pixels(  # type: ignore[no-untyped-def]
    size: tuple[int, int], expected: list[tuple[int, int]], tmp_path, kept_sandboxes, capsys
) -> None:
    """The whole loop: a loopback OpenAI-compatible server reporting xlangai/OpenCUA-7B answers in
    OpenCUA's format with pixels of the smart-resized image the model sees of the screen (1288x812 of
    1280x800, 1932x1092 of 1920x1080); the clickpad in the sandbox records where the pointer went."""
    width, height = size
    w, h = smart_resize(width, height)

    def screen(x: str, y: str) -> tuple[int, int]:
        """OpenCUA's mapping, exactly: floor(x * W / w'), floor(y * H / h')."""
        return math.floor(Fraction(x) * width / w), math.floor(Fraction(y) * height / h)

    # the centre of resized pixel (966, 406), then resized (100, 50)
    first, second = screen("966.5", "406.5"), screen("100", "50")
    assert [first, second] == expected
    replies = [
        L2.replace("x=960, y=540", "x=966.5, y=406.5"),
        "# Step: 2\n" + V1_L2.replace("x=0.5, y=0.25", "x=100, y=50"),
        DONE,
    ]
    run = run_clickpad("opencua-7b", "xlangai/OpenCUA-7B", replies, size, tmp_path, kept_sandboxes, capsys)
    assert run.downs == [first, second, second, second]  # a click, then a triple click
    assert [s.actions[0].screen_points for s in run.steps[:2]] == [[first], [second]]
    assert (run.model["model_profile"], run.model["variant"], run.model["prompt_profile"]) == (
        "opencua",
        "7b",
        "opencua-l2",
    )
    assert (run.model["temperature"], run.model["max_new_tokens"]) == (0.0, 2048)
    check_opencua_requests(run.requests)
    assert sent_images(run.requests[2]) == [size] * 3  # the screenshot as it is; the server resizes it


@pytest.mark.slow
@pytest.mark.parametrize(
    ("size", "expected"),
    [((1280, 800), [(960, 400), (100, 50)]), ((1920, 1080), [(1440, 540), (150, 67)])],
    ids=["1280x800", "1920x1080"],
)
def test_cli_with_an_opencua_a3b_server_clicks_the_intended_pixels(  # type: ignore[no-untyped-def]
    size: tuple[int, int], expected: list[tuple[int, int]], tmp_path, kept_sandboxes, capsys
) -> None:
    """The whole loop for OpenCUA-A3B: a loopback server reporting xlangai/OpenCUA-A3B answers in
    OpenCUA's format with fractions of the screen (A3B is Kimi-VL-A3B based: OSWorld's runner uses
    ``coordinate_type relative`` for it); the clickpad records where the pointer went."""
    width, height = size
    # floor(f * W): fractions exact in binary, so the expected pixels are exact too
    first, second = (int(0.75 * width), int(0.5 * height)), (int(0.078125 * width), int(0.0625 * height))
    assert [first, second] == expected
    replies = [
        L2.replace("x=960, y=540", "x=0.75, y=0.5"),
        "# Step: 2\n" + V1_L2.replace("x=0.5, y=0.25", "x=0.078125, y=0.0625"),
        DONE,
    ]
    run = run_clickpad("opencua-a3b", "xlangai/OpenCUA-A3B", replies, size, tmp_path, kept_sandboxes, capsys)
    assert run.downs == [first, second, second, second]  # a click, then a triple click
    assert [s.actions[0].screen_points for s in run.steps[:2]] == [[first], [second]]
    assert (run.model["model_profile"], run.model["variant"], run.model["prompt_profile"]) == (
        "opencua-a3b",
        "a3b",
        "opencua-l2",
    )
    assert (run.model["temperature"], run.model["max_new_tokens"]) == (0.0, 2048)
    check_opencua_requests(run.requests)
    # Kimi-VL's MoonViT rule at 4096 patches, applied before sending (1137x710, 1196x672)
    assert sent_images(run.requests[2]) == [wire_size(width, height, 4096)] * 3


@pytest.mark.slow
def test_an_osworld_suite_task_with_each_opencua_profile_scores_and_prints_its_published_figures(
    tmp_path,
) -> None:  # type: ignore[no-untyped-def]
    """`bench osworld run os-hello-file --backend openai`, once per profile, both at once: against a
    loopback server reporting xlangai/OpenCUA-7B and one reporting xlangai/OpenCUA-A3B. OpenCUA's
    prompt goes out, its replies are executed, OSWorld's evaluator scores the task, and the figures
    printed beside each run are that checkpoint's own."""
    import os
    import subprocess
    import sys

    from fake_openai_server import FakeOpenAI, Reply

    eval_venv = os.environ.get("KIMI_OSWORLD_EVAL_VENV") or str(
        Path(__file__).parents[1] / ".cache" / "osworld-eval"
    )
    write = "pyautogui.write(\"echo 'Hello, OSWorld!' > ~/hello.txt\")\npyautogui.press('enter')"
    first = L3.replace("pyautogui.write('ls')\npyautogui.press('enter')", write)
    runs = {"opencua-7b": "xlangai/OpenCUA-7B", "opencua-a3b": "xlangai/OpenCUA-A3B"}
    servers = {name: FakeOpenAI(models=(name,), roots={name: root}) for name, root in runs.items()}
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for name, server in servers.items():
            server.replies.extend([Reply(first), Reply(DONE)])
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "tasks.cli", "bench", "osworld", "run", "os-hello-file", "--backend", "openai",
                 "--model", name, "--base-url", server.url, "--out", str(tmp_path / name), "--max-steps", "2"],
                env={**os.environ, "KIMI_OSWORLD_EVAL_VENV": eval_venv, "XDG_CACHE_HOME": str(tmp_path / f"cache-{name}")},
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        outputs = {name: proc.communicate(timeout=300)[0] for name, proc in procs.items()}
        for name, proc in procs.items():
            assert proc.returncode == 0, f"{name}: {outputs[name][-3000:]}"
            assert "score 1 (mean 1.00)" in outputs[name], name
            system = servers[name].requests[0]["messages"][0]["content"]
            assert "# Step: {step number}\n## Thought:\n{thought}\n## Action:" in system, name
            assert len(servers[name].requests) == 2, name
        seven, a3b = outputs["opencua-7b"], outputs["opencua-a3b"]
        assert "published: OpenCUA README, OSWorld-Verified, 15 steps: 24.30%" in seven
        assert "8.22" not in seven and "17.70" not in seven  # not Kimi-VL's, not A3B's
        assert (
            "published: GroundCUA paper (as quoted in kimi-agent's shared docs), OSWorld-Verified, "
            "15 steps: 17.70%"
        ) in a3b
        assert "8.22" not in a3b and "24.30" not in a3b  # not Kimi-VL's, not the 7B's
        for name, profile in (("opencua-7b", ("opencua", "7b")), ("opencua-a3b", ("opencua-a3b", "a3b"))):
            task = tmp_path / name / "pyautogui" / "screenshot" / name / "os" / "os-hello-file"
            model = json.loads((task / "run.json").read_text())["model"]
            assert (model["model_profile"], model["variant"]) == profile
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for server in servers.values():
            server.close()


def screenspot_run(tmp_path: Path, served: str, root: str, replies: dict[str, str]) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """`bench screenspot run` on four samples (a 200x100 screenshot, box 40..80 x 20..60) against a
    loopback server reporting ``root``, answering each instruction from ``replies``: (the samples'
    details by id, run.json)."""
    from fake_openai_server import FakeOpenAI, Reply
    from test_screenspot_runner import answer_by_instruction, write_pro

    from tasks.screenspot.cli import main

    data = write_pro(tmp_path / "pro", [{}, {}, {}, {}])
    server = FakeOpenAI(models=(served,), roots={served: root})
    try:
        answer_by_instruction(server, lambda instruction: Reply(text=replies[instruction]))
        out = tmp_path / "out"
        args = ["run", str(data), "--out", str(out), "--model", served, "--base-url", server.url]
        assert main([*args, "--no-progress"]) == 0
    finally:
        server.close()
    results = json.loads((out / "results.json").read_text())
    return {d["id"]: d for d in results["details"]}, json.loads((out / "run.json").read_text())


def test_a_screenspot_run_reads_an_opencua_7b_servers_points_in_its_resized_pixels(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`bench screenspot run` against a loopback server reporting xlangai/OpenCUA-7B: a 200x100
    screenshot is seen as 196x112 (smart_resize), so the model's (59, 45) is the image's
    (59 * 200/196, 45 * 100/112) = (60.2, 40.2), inside the box (40..80, 20..60); a point beyond the
    model's image is no point."""
    assert smart_resize(200, 100) == (196, 112)
    details, run = screenspot_run(
        tmp_path,
        "opencua-7b",
        "xlangai/OpenCUA-7B",
        {
            "target 0": L2.replace("x=960, y=540", "x=59, y=45"),
            "target 1": "pyautogui.click(x=59, y=45)",  # a bare grounding answer
            "target 2": L2.replace("x=960, y=540", "x=196, y=45"),  # beyond the 196 pixels the model saw
            "target 3": L2.replace("x=960, y=540", "x=10, y=10"),  # (10.2, 8.9): outside the box
        },
    )
    assert [details[f"s{i}"]["correctness"] for i in range(4)] == [
        "correct",
        "correct",
        "wrong_format",
        "wrong",
    ]
    assert details["s0"]["pred"] == pytest.approx([59 * 200 / 196, 45 * 100 / 112])
    assert (run["model_profile"], run["variant"], run["checkpoint"]) == (
        "opencua",
        "7b",
        "xlangai/OpenCUA-7B",
    )


def test_a_screenspot_run_reads_an_opencua_a3b_servers_points_as_fractions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`bench screenspot run` against a loopback server reporting xlangai/OpenCUA-A3B: its points are
    fractions of the image, so (0.3, 0.4) of a 200x100 screenshot is (60, 40), inside the box
    (40..80, 20..60); pixels are not A3B's answer and count as a wrong format."""
    details, run = screenspot_run(
        tmp_path,
        "opencua-a3b",
        "xlangai/OpenCUA-A3B",
        {
            "target 0": L2.replace("x=960, y=540", "x=0.3, y=0.4"),
            "target 1": "pyautogui.click(x=0.3, y=0.4)",  # a bare grounding answer
            "target 2": L2.replace("x=960, y=540", "x=60, y=40"),  # pixels: the 7B's space, not A3B's
            "target 3": L2.replace("x=960, y=540", "x=0.05, y=0.05"),  # (10, 5): outside the box
        },
    )
    assert [details[f"s{i}"]["correctness"] for i in range(4)] == [
        "correct",
        "correct",
        "wrong_format",
        "wrong",
    ]
    assert details["s0"]["pred"] == pytest.approx([60, 40]) and details["s3"]["pred"] == pytest.approx(
        [10, 5]
    )
    assert (run["model_profile"], run["variant"], run["checkpoint"]) == (
        "opencua-a3b",
        "a3b",
        "xlangai/OpenCUA-A3B",
    )


def test_the_v1_training_prompts_ship_as_layouts_too() -> None:
    from agent.history import load_templates

    assert set(OPENCUA.layouts) >= {"opencua-v1-l1", "opencua-v1-l2", "opencua-v1-l3"}
    for level, sections in (
        ("l1", ["Action:"]),
        ("l2", ["Thought:", "Action:"]),
        ("l3", ["Observation:", "Thought:", "Action:"]),
    ):
        system = load_templates(f"opencua-v1-{level}")["agent_system"].format_map({})
        labels = [line for line in system.splitlines() if line in ("Observation:", "Thought:", "Action:")]
        assert labels == sections and '{"name": "computer.triple_click"' in system


def test_a_variant_of_another_family_is_one_line(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from cli_args import openai_task
    from fake_openai_server import FakeOpenAI

    from tasks.cli import main

    server = FakeOpenAI(models=("opencua-7b",), roots={"opencua-7b": "xlangai/OpenCUA-7B"})
    try:
        args = openai_task(server.url, "--model", "opencua-7b", "--out", str(tmp_path / "r"))
        assert main([*args, "--variant", "thinking"]) == 2
        err = capsys.readouterr().out.strip()
        assert err == (
            "kimi-agent: error: --variant thinking: the OpenCUA (7B/32B/72B) checkpoints are 7b, 32b, 72b"
        )
    finally:
        server.close()


def test_the_local_backend_refuses_an_opencua_7b_before_any_download(capsys) -> None:  # type: ignore[no-untyped-def]
    from tasks.cli import main

    assert main(["t", "--model", "xlangai/OpenCUA-7B", "--offline"]) == 2
    assert capsys.readouterr().out.strip() == (
        "kimi-agent: error: OpenCUA (7B/32B/72B) runs through --backend openai (vllm serve xlangai/OpenCUA-7B "
        "--trust-remote-code, vLLM >= 0.12.0); the transformers backend loads Kimi-VL checkpoints"
    )
