"""The UI-TARS-1.5 profile: its Thought/Action grammar read into typed actions (never run), its
smart_resize pixels mapped exactly to the screen, detection, prompts, sampling and published figures.

Reply fixtures follow UI-TARS's real format:
- bytedance/UI-TARS codes/tests/action_parser_test.py @ 2bcabab92bace3e93c8851f5f3d72eb364ad1bd6
  ("Thought: test\\nAction: click(point='<point>200 300</point>')" and the box-token form
  "click(start_box='<|box_start|>(112,224)<|box_end|>')");
- bytedance/UI-TARS codes/ui_tars/prompt.py @ 582f3a7ea5d285ee8ed9e2e84048d1ab01453c49 (the
  COMPUTER_USE action space: left_double, right_single, drag(start_box, end_box), hotkey(key='ctrl c'),
  type(content=...) with a trailing "\\n" to submit, scroll(direction=...), wait(), finished(content=...));
- OSWorld's mm_agents/uitars15_v1.py (mrwwk/DeskCraft @ 4893b45ee51b57b2c1279d0e140aee02a7d0f6a6):
  call_user(), several actions separated by a blank line.
"""

from __future__ import annotations

import pytest

from agent.models.profile import shot_pixel
from agent.models.qwen_vision import smart_resize
from agent.models.registry import PROFILES, choose_profile
from agent.models.ui_tars.parser import MAX_REPLY_CHARS, parse_reply
from env.actions import Click, Done, Drag, Hotkey, KeyPress, Move, Point, Scroll, TypeText, Wait
from env.geometry import ScreenGeometry

UI_TARS = PROFILES["ui-tars-1.5"]
SCREENS = [(1920, 1080), (1280, 800)]
LIMIT = UI_TARS.resolve_variant(override=None, names=[]).variant.in_token_limit

CLICK = "Thought: The Save button is in the toolbar; I click it.\nAction: click(start_box='<|box_start|>(966,546)<|box_end|>')"
POINT = "Thought: test\nAction: click(point='<point>200 300</point>')"
TYPE = "Thought: I type the command and press Enter.\nAction: type(content='echo \\'hi\\' > x.txt\\n')"
DONE = "Thought: The file is saved; the task is done.\nAction: finished(content='42')"


def px(x: float, y: float) -> Point:
    return Point.px(x, y)


@pytest.mark.parametrize(
    ("reply", "actions"),
    [
        (CLICK, [Click(point=px(966, 546))]),
        (POINT, [Click(point=px(200, 300))]),
        ("Action: click(start_box='(100,200)')", [Click(point=px(100, 200))]),
        ("Action: click(start_box='(10,20,30,40)')", [Click(point=px(20, 30))]),  # a box: its centre
        ("Action: left_double(start_box='<|box_start|>(5,6)<|box_end|>')", [Click(point=px(5, 6), clicks=2)]),
        ("Action: right_single(start_box='(5,6)')", [Click(point=px(5, 6), button="right")]),
        ("Action: hover(start_box='(5,6)')", [Move(point=px(5, 6))]),
        (
            "Action: drag(start_box='<|box_start|>(1,2)<|box_end|>', end_box='<|box_start|>(3,4)<|box_end|>')",
            [Drag(start=px(1, 2), end=px(3, 4))],
        ),
        (
            "Action: drag(start_point='<point>1 2</point>', end_point='<point>3 4</point>')",
            [Drag(start=px(1, 2), end=px(3, 4))],
        ),
        ("Action: hotkey(key='ctrl c')", [Hotkey(keys=["ctrl", "c"])]),
        ("Action: hotkey(key='arrowleft')", [KeyPress(key="left")]),
        (TYPE, [TypeText(text="echo 'hi' > x.txt"), KeyPress(key="enter")]),
        ("Action: type(content='it's here')", [TypeText(text="it's here")]),  # an unescaped quote, repaired
        ("Action: scroll(start_box='(7,8)', direction='down')", [Scroll(point=px(7, 8), direction="down")]),
        ("Action: scroll(direction='up')", [Scroll(direction="up")]),
        ("Action: wait()", [Wait(seconds=5.0)]),
        (DONE, [Done(status="success", answer="42")]),
        ("Action: finished()", [Done(status="success")]),
        (
            "Action: call_user()",
            [Done(status="failure", answer="call_user(): the model asked for a person's help")],
        ),
        (
            "Thought: two steps\nAction: hotkey(key='ctrl a')\n\ntype(content='x')",
            [Hotkey(keys=["ctrl", "a"]), TypeText(text="x")],
        ),
        # Reflection / Action_Summary before the action (action_parser.py's other prefixes)
        ("Reflection: it worked\nAction_Summary: next\nAction: wait()", [Wait(seconds=5.0)]),
    ],
)
def test_good_replies_become_typed_actions(reply: str, actions: list[object]) -> None:
    parsed = parse_reply(reply)
    assert parsed.error is None, parsed.error
    assert parsed.actions == actions


def test_thought_and_action_text_are_kept_for_the_history() -> None:
    parsed = parse_reply(CLICK)
    assert parsed.thought == "The Save button is in the toolbar; I click it."
    assert parsed.action_text == "click(start_box='<|box_start|>(966,546)<|box_end|>')"
    assert parse_reply("Reflection: r\nThought: t\nAction: wait()").thought == "r\nt"


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("Thought: nothing to do", "no Action: line"),
        ("", "no Action: line"),
        (
            "Action: rm(path='/')",
            "unknown action 'rm' (known: call_user, click, drag, finished, hotkey, hover, "
            "left_double, left_single, press, right_single, scroll, select, type, wait)",
        ),
        (
            "Action: pyautogui.click(100, 200)",
            "unknown action 'pyautogui' (known: call_user, click, drag, "
            "finished, hotkey, hover, left_double, left_single, press, right_single, scroll, select, type, wait)",
        ),
        ("Action: click(start_box=(100,200))", "click: the value of 'start_box' must be a quoted string"),
        ("Action: click(x='1')", "click: unknown argument 'x' (takes: point, start_box, start_point)"),
        ("Action: click()", "click: needs a point (start_box='<|box_start|>(x,y)<|box_end|>')"),
        ("Action: click(start_box='here')", "bad point 'here' (expected '<|box_start|>(x,y)<|box_end|>')"),
        ("Action: click(start_box='(1,2)'", "click: the call is not closed with ')'"),
        ("Action: click(start_box='(1,2)') and more", "click: text after the call's ')': ' and more'"),
        ("Action: click(start_box='(1,2)', start_box='(3,4)')", "click: argument 'start_box' given twice"),
        (
            "Action: click(start_box='(1,2)', point='<point>3 4</point>')",
            "click: give one of point, start_box",
        ),
        (
            "Action: drag(start_box='(1,2)')",
            "drag: needs a point (start_box='<|box_start|>(x,y)<|box_end|>')",
        ),
        (
            "Action: scroll(direction='sideways')",
            "scroll: direction must be up, down, left or right, got 'sideways'",
        ),
        ("Action: hotkey(key='')", "hotkey: needs key='...' (e.g. key='ctrl c')"),
        ("Action: hotkey(key='ctrl banana')", "hotkey: keys.1: unknown key 'banana'"),
        ("Action: type(content='')", "type: content is empty"),
        ("Action: click(start_box='(1,2", "a quoted argument is not closed"),
    ],
)
def test_bad_replies_are_one_line_errors(reply: str, error: str) -> None:
    parsed = parse_reply(reply)
    assert parsed.error == error and parsed.actions == []
    assert "\n" not in parsed.error


def test_a_cut_reply_says_so_and_a_huge_one_is_not_read() -> None:
    assert parse_reply("Thought: I will", "length").error == "no Action: line (the reply hit max_new_tokens)"
    huge = parse_reply("Action: wait()" + " " * MAX_REPLY_CHARS)
    assert huge.error is not None and huge.error.startswith("reply too long") and huge.actions == []


def test_parsing_is_linear_on_hostile_replies() -> None:
    import time

    for hostile in (
        "Action: " + "(" * 19_000,
        "Action: type(content='" + "'" * 19_000 + ")",
        "\n".join(["Action:"] * 2_000),
        "Action: click(start_box='" + "1," * 9_000 + "')",
        "Action: " + "wait()\n\n" * 2_000,
    ):
        t = time.perf_counter()
        assert parse_reply(hostile).error is not None
        assert time.perf_counter() - t < 1.0


@pytest.mark.parametrize("screen", SCREENS)
def test_the_model_sees_smart_resize_at_uitars_min_pixels_and_maps_back_exactly(
    screen: tuple[int, int],
) -> None:
    width, height = screen
    w, h = UI_TARS.model_size(width, height, LIMIT)
    assert (w, h) == {(1920, 1080): (1932, 1092), (1280, 800): (1288, 812)}[screen]
    assert UI_TARS.model_size(200, 100, LIMIT) == (420, 224) != smart_resize(200, 100)  # min_pixels 78400
    geometry = ScreenGeometry.plain(width, height)
    for i in range(w):  # the screen pixel containing the centre of resized pixel i: floor((i+.5) W / w)
        assert geometry.to_screen(shot_pixel(i + 0.5, 0.5, (w, h), screen))[0] == (2 * i + 1) * width // (
            2 * w
        )
    for j in range(h):
        assert geometry.to_screen(shot_pixel(0.5, j + 0.5, (w, h), screen))[1] == (2 * j + 1) * height // (
            2 * h
        )
    # Through the profile: corners, the centre, and a point beyond the model's image.
    reply = f"Action: drag(start_box='(0,0)', end_box='({w - 0.5},{h - 0.5})')"
    drag = UI_TARS.read_reply(reply, "stop", screen, LIMIT).actions[0]
    assert isinstance(drag, Drag)
    assert geometry.to_screen(drag.start) == (0, 0) and geometry.to_screen(drag.end) == (
        width - 1,
        height - 1,
    )
    centre = UI_TARS.read_reply(
        f"Action: click(point='<point>{w // 2} {h // 2}</point>')", "stop", screen, LIMIT
    )
    assert geometry.to_screen(centre.actions[0].point) == (width // 2, height // 2)  # type: ignore[attr-defined]
    beyond = UI_TARS.read_reply(f"Action: click(start_box='({w},10)')", "stop", screen, LIMIT)
    assert beyond.error == f"point ({w}, 10) lies outside the {w}x{h} image the model saw"


def test_detection_variant_sampling_and_history() -> None:
    assert choose_profile("auto", "ByteDance-Seed/UI-TARS-1.5-7B").profile is UI_TARS
    assert choose_profile("auto", "ui-tars").profile is UI_TARS
    config = {"model_type": "qwen2_5_vl", "_name_or_path": "/models/UI-TARS-1.5-7B"}
    assert choose_profile("auto", "served", config).source == "auto: the checkpoint's config.json"
    assert choose_profile("auto", "served", config).profile is UI_TARS
    assert choose_profile("auto", "Qwen/Qwen2.5-VL-7B-Instruct").profile.name == "kimi-vl"  # the default
    assert choose_profile("auto", "xlangai/OpenCUA-7B").profile.name == "opencua"
    resolved = UI_TARS.resolve_variant(override=None, names=[])
    variant = resolved.variant
    # qwen25vl_normal's runner (limenlp/OS_Blind run_multienv_uitars15_v1.py @ 2d10a469) and agent
    # (frequency_penalty 1 on every request, retries at temperature 1; DeskCraft uitars15_v1.py @ 4893b45e)
    assert (variant.name, variant.temperature, variant.max_new_tokens, variant.thinking) == (
        "7b",
        0.0,
        1000,
        False,
    )
    assert (variant.top_p, variant.frequency_penalty) == (0.9, 1.0)
    assert (resolved.record()["top_p"], resolved.record()["frequency_penalty"]) == (0.9, 1.0)
    assert (UI_TARS.parse_retries, UI_TARS.retry_temperature) == (2, 1.0)  # 3 tries in all
    with pytest.raises(ValueError, match=r"--variant 32b: UI-TARS-1\.5's are 7b"):
        UI_TARS.resolve_variant(override="32b", names=[])
    assert (UI_TARS.history_images, UI_TARS.coordinates, UI_TARS.layouts) == (
        5,
        "pixels_resized",
        ("ui-tars",),
    )
    assert all(p.retry_temperature is None for p in PROFILES.values() if p is not UI_TARS)


def test_prompts_ship_with_the_package_and_speak_uitars_grammar() -> None:
    from agent.history import load_templates

    # UITARS_USR_PROMPT_THOUGHT with qwen25vl_normal's action space, language English (DeskCraft
    # mm_agents/uitars15_v1.py @ 4893b45ee51b57b2c1279d0e140aee02a7d0f6a6), as the first user turn.
    t = load_templates("ui-tars")
    assert t["agent_system"] == "You are a helpful assistant."
    task = t["agent_task"]
    assert task.startswith(
        "You are a GUI agent. You are given a task and your action history, with screenshots. You need to "
        "perform the next action to complete the task. \n\n## Output Format\n```\nThought: ...\nAction: ...\n```"
    )
    assert "\n\n## Action Space\n\nclick(start_box='<|box_start|>(x1,y1)<|box_end|>')\n" in task
    assert (
        "type(content='') #If you want to submit your input, use \"\\n\" at the end of `content`.\n" in task
    )
    assert "finished(content='xxx') # Use escape characters \\', \\\", and \\n in content part" in task
    assert "call_user" not in task and "pyautogui" not in task
    assert task.endswith("- Use English in `Thought` part.\n- Write a small plan and finally summarize your next "
                         "action (with its target element) in one sentence in `Thought` part.\n\n"
                         "## User Instruction\n{task}")  # fmt: skip
    assert t["agent_step"] == "Thought: {thought}\nAction: {action}"
    # A bare integer point is replayed with its box tokens, as the agent's add_box_token does.
    drag = parse_reply("Thought: t\nAction: drag(start_box='(1,2)', end_box='(3,4)')").action_text
    assert drag == "drag(start_box='<|box_start|>(1,2)<|box_end|>', end_box='<|box_start|>(3,4)<|box_end|>')"


def test_published_figures_are_the_open_7b() -> None:
    from tasks.osworld.report import published_references

    refs = published_references("ByteDance-Seed/UI-TARS-1.5-7B", ("ui-tars-1.5", "7b"))
    assert [v for _, v in refs] == [27.5, 24.5, 27.3, 27.4]
    assert refs[0][0] == "UI-TARS README, OSWorld, 100 steps"
    assert [v for _, v in published_references("ui-tars-1.5-7b", None)] == [27.5, 24.5, 27.3, 27.4]


@pytest.mark.slow
@pytest.mark.parametrize("screen", [(1280, 800), (1920, 1080)], ids=["1280x800", "1920x1080"])
def test_cli_with_a_uitars_server_clicks_the_intended_pixels(
    tmp_path, kept_sandboxes, capsys, screen
) -> None:  # type: ignore[no-untyped-def]
    """The whole loop: a loopback OpenAI-compatible server reporting ByteDance-Seed/UI-TARS-1.5-7B
    answers in UI-TARS's format with pixels of the image the model sees (smart_resize at min_pixels
    78400: 1288x812 of a 1280x800 screen, 1932x1092 of 1920x1080); the clickpad in the sandbox records
    where the pointer really went. The same run checks the agent's layout (5 screenshots) and its
    sampling (top_p 0.9, frequency_penalty 1, a retry at temperature 1 after an unparsable reply)."""
    import json

    from cli_args import clickpad_task, pad_downs
    from conftest import kept_home
    from fake_openai_server import FakeOpenAI, Reply

    from agent.trajectory import read_steps
    from tasks.cli import main

    server = FakeOpenAI(models=("ui-tars",), roots={"ui-tars": "ByteDance-Seed/UI-TARS-1.5-7B"})
    width, height = screen
    w, h = UI_TARS.model_size(width, height, LIMIT)
    assert (w, h) == {(1280, 800): (1288, 812), (1920, 1080): (1932, 1092)}[screen]
    mx, my = w * 3 // 4 + 0.5, h // 2 + 0.5  # off the model's pixel grid
    first = f"Thought: I click the button.\nAction: click(start_box='<|box_start|>({mx},{my})<|box_end|>')"
    bad = "Thought: I click.\nAction: click(start_box='here')"
    second = "Thought: Now the corner, twice.\nAction: left_double(point='<point>100 50</point>')"
    hovers = [f"Thought: I look around.\nAction: hover(start_box='({10 * k},{10 * k})')" for k in range(1, 5)]
    # The screen pixel a model point lands on: (floor(x * W / w), floor(y * H / h)), e.g. 1280x800:
    # (966.5, 406.5) -> (floor(966.5*1280/1288), floor(406.5*800/812)) = (960, 400); 1920x1080:
    # (1449.5, 546.5) -> (floor(1449.5*1920/1932), floor(546.5*1080/1092)) = (1440, 540); (100, 50) -> (99, 49).
    middle = (int(mx * width / w), int(my * height / h))
    corner = (100 * width // w, 50 * height // h)
    assert (middle, corner) == {(1280, 800): ((960, 400), (99, 49)), (1920, 1080): ((1440, 540), (99, 49))}[
        screen
    ]
    try:
        server.replies.extend([Reply(first), Reply(bad), Reply(second), *map(Reply, hovers), Reply(DONE)])
        out = tmp_path / "run"
        code = main(clickpad_task(server.url, "ui-tars", out, size=screen))
        assert code == 0, capsys.readouterr().out
        downs = pad_downs(kept_home(kept_sandboxes))
        assert downs == [middle, corner, corner]  # a click, then a double click
        steps = read_steps(out)
        assert [s.actions[0].screen_points for s in steps[:2]] == [[middle], [corner]]
        model = json.loads((out / "run.json").read_text())["model"]
        assert (model["model_profile"], model["variant"], model["prompt_profile"]) == (
            "ui-tars-1.5",
            "7b",
            "ui-tars",
        )
        assert (model["temperature"], model["max_new_tokens"], model["top_p"], model["frequency_penalty"]) == (
            0.0, 1000, 0.9, 1.0
        )  # fmt: skip
        assert (model["parse_retries"], model["retry_temperature"]) == (2, 1.0)
        # Every request samples as the runner does; the retry after the bad reply at temperature 1.
        requests = server.requests
        assert len(requests) == 8
        assert [(r["temperature"], r["top_p"], r["frequency_penalty"]) for r in requests] == [
            (1.0 if i == 2 else 0.0, 0.9, 1.0) for i in range(8)
        ]
        # The last step (7) as the agent lays it out: steps 1-2 are replies alone, steps 3-7 keep their
        # screenshots (5 images), each alone in its user turn; the replies as the model wrote them.
        last = requests[-1]["messages"]
        assert [m["role"] for m in last] == ["system", "user", "assistant", "assistant"] + [
            "user", "assistant"
        ] * 4 + ["user"]  # fmt: skip
        assert last[0]["content"] == "You are a helpful assistant."
        assert last[1]["content"].startswith(
            "You are a GUI agent. You are given a task and your action history"
        )
        assert last[1]["content"].endswith("\n\n## User Instruction\nclick")  # the task: "click"
        replies = [m["content"] for m in last if m["role"] == "assistant"]
        boxed = [hover.replace("'(", "'<|box_start|>(").replace(")')", ")<|box_end|>')") for hover in hovers]
        assert replies == [first, second, *boxed]
        for m in last[4::2]:  # the user turns after the task: a screenshot alone
            assert [p["type"] for p in m["content"]] == ["image_url"]
        assert sum(isinstance(m["content"], list) for m in last) == 5
    finally:
        server.close()


@pytest.mark.slow
def test_an_osworld_suite_task_with_a_uitars_server_scores_and_prints_its_published_figures(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`bench osworld run os-hello-file --backend openai` against a loopback server reporting
    ByteDance-Seed/UI-TARS-1.5-7B: UI-TARS's prompt goes out, its type(content=...) is typed and
    submitted, OSWorld's evaluator scores the task 1.0, and UI-TARS-1.5-7B's figures are printed."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from fake_openai_server import FakeOpenAI, Reply

    eval_venv = os.environ.get("KIMI_OSWORLD_EVAL_VENV") or str(
        Path(__file__).parents[1] / ".cache" / "osworld-eval"
    )
    server = FakeOpenAI(models=("ui-tars-1.5-7b",), roots={"ui-tars-1.5-7b": "ByteDance-Seed/UI-TARS-1.5-7B"})
    write = "Thought: I write the file from the terminal.\nAction: type(content='echo \\'Hello, OSWorld!\\' > ~/hello.txt\\n')"
    server.replies.extend([Reply(write), Reply(DONE)])
    try:
        r = subprocess.run(
            [sys.executable, "-m", "tasks.cli", "bench", "osworld", "run", "os-hello-file", "--backend", "openai",
             "--model", "ui-tars-1.5-7b", "--base-url", server.url, "--out", str(tmp_path / "out"), "--max-steps", "5"],
            env={**os.environ, "KIMI_OSWORLD_EVAL_VENV": eval_venv, "XDG_CACHE_HOME": str(tmp_path / "cache")},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "score 1 (mean 1.00)" in r.stdout
        assert "published: UI-TARS README, OSWorld, 100 steps: 27.50%" in r.stdout
        assert "8.22" not in r.stdout  # not Kimi-VL's
        first = server.requests[0]["messages"]
        assert first[0]["content"] == "You are a helpful assistant."
        assert "## Action Space\n\nclick(start_box='<|box_start|>(x1,y1)<|box_end|>')" in first[1]["content"]
    finally:
        server.close()


def test_a_screenspot_run_reads_a_uitars_servers_points_in_its_resized_pixels(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """`bench screenspot run` against a loopback server reporting ByteDance-Seed/UI-TARS-1.5-7B: a
    200x100 screenshot is seen as 420x224 (smart_resize at min_pixels 78400), so the model's (126, 90)
    is the image's (60, 40.2), inside the box (40..80, 20..60); a point beyond its image is no point."""
    import json

    from fake_openai_server import FakeOpenAI, Reply
    from test_screenspot_runner import answer_by_instruction, write_pro

    from tasks.screenspot.cli import main

    replies = {
        "target 0": "Thought: the target.\nAction: click(start_box='<|box_start|>(126,90)<|box_end|>')",
        "target 1": "click(start_box='(126,90)')",  # a bare grounding answer
        "target 2": "Action: click(start_box='(420,90)')",  # beyond the 420 pixels the model saw
        "target 3": "Action: click(point='<point>10 10</point>')",  # (4.8, 4.5): outside the box
    }
    data = write_pro(tmp_path / "pro", [{}, {}, {}, {}])
    server = FakeOpenAI(models=("ui-tars",), roots={"ui-tars": "ByteDance-Seed/UI-TARS-1.5-7B"})
    try:
        answer_by_instruction(server, lambda instruction: Reply(text=replies[instruction]))
        out = tmp_path / "out"
        args = ["run", str(data), "--out", str(out), "--model", "ui-tars", "--base-url", server.url]
        assert main([*args, "--no-progress"]) == 0
    finally:
        server.close()
    details = {d["id"]: d for d in json.loads((out / "results.json").read_text())["details"]}
    assert [details[f"s{i}"]["correctness"] for i in range(4)] == [
        "correct",
        "correct",
        "wrong_format",
        "wrong",
    ]
    assert details["s0"]["pred"] == pytest.approx([126 * 200 / 420, 90 * 100 / 224])
    # Its own published ScreenSpot-Pro figure (UI-TARS README, 7B), named as its, not Kimi-VL's, and
    # held back from a run over 4 of the 1581 samples.
    printed = " ".join(capsys.readouterr().out.split())
    assert "UI-TARS-1.5's published 49.6 (7b) is over the whole set in English" in printed
    assert "4 of the 1581 samples scored" in printed and "Kimi-VL" not in printed
    run = json.loads((out / "run.json").read_text())
    assert "ByteDance-Seed/UI-TARS-1.5-7B" in json.dumps(run)
