"""Replies -> typed actions: real-shaped replies, hostile ones, and a fuzz test. Never raises."""

from __future__ import annotations

import time
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.models.kimi_vl.parser import MAX_REPLY_CHARS, parse_grounding, parse_reply
from agent.models.pyautogui_code import parse_code
from env.actions import (
    Click,
    Done,
    Drag,
    Hotkey,
    KeyDown,
    KeyPress,
    KeyUp,
    Move,
    Point,
    Scroll,
    TypeText,
    Wait,
)

INSTRUCT = """## Thought
The Save dialog is open; the file name field is focused.

## Action:
Type the file name and confirm.

## Code:
```python
pyautogui.click(x=0.412, y=0.305)
pyautogui.write("report_2024.txt")
pyautogui.press("enter")
```"""

THINKING = """◁think▷The user wants the terminal. I see an icon at the left dock, roughly 3% from the left
and 40% from the top. Let me double-click it.◁/think▷## Thought
Open the terminal from the dock.
## Action:
Double-click the terminal icon
## Code:
```python
pyautogui.doubleClick(0.031, 0.402)
```"""

CASES: list[tuple[str, list]] = [
    (
        INSTRUCT,
        [Click(point=Point.norm(0.412, 0.305)), TypeText(text="report_2024.txt"), KeyPress(key="enter")],
    ),
    (THINKING, [Click(point=Point.norm(0.031, 0.402), clicks=2)]),
    ("```python\npyautogui.click(960, 540)\n```", [Click(point=Point.px(960, 540))]),
    ("```python\npyautogui.click(x=1, y=1)\n```", [Click(point=Point.norm(1, 1))]),
    (
        "```\npyautogui.rightClick(x=0.5, y=0.5)\npyautogui.middleClick(10, 20)\n```",
        [Click(point=Point.norm(0.5, 0.5), button="right"), Click(point=Point.px(10, 20), button="middle")],
    ),
    ("```python\npyautogui.tripleClick(0.2, 0.3)\n```", [Click(point=Point.norm(0.2, 0.3), clicks=3)]),
    (
        "```python\npyautogui.click(0.2, 0.3, clicks=2, button='left')\n```",
        [Click(point=Point.norm(0.2, 0.3), clicks=2)],
    ),
    (
        "```python\npyautogui.moveTo(0.1, 0.1)\npyautogui.dragTo(0.5, 0.6, duration=0.5)\n```",
        [Move(point=Point.norm(0.1, 0.1)), Drag(start=Point.norm(0.1, 0.1), end=Point.norm(0.5, 0.6))],
    ),
    (
        "```python\npyautogui.scroll(-5, x=0.5, y=0.5)\n```",
        [Scroll(point=Point.norm(0.5, 0.5), direction="down", amount=5)],
    ),
    ("```python\npyautogui.scroll(3)\n```", [Scroll(direction="up", amount=3)]),
    (
        "```python\npyautogui.hscroll(-2, x=100, y=200)\n```",
        [Scroll(point=Point.px(100, 200), direction="left", amount=2)],
    ),
    ("```python\npyautogui.hotkey('ctrl', 'shift', 't')\n```", [Hotkey(keys=["ctrl", "shift", "t"])]),
    (
        "```python\npyautogui.press(['tab', 'tab', 'enter'])\n```",
        [KeyPress(key="tab", presses=2), KeyPress(key="enter")],
    ),
    ("```python\npyautogui.press('down', presses=3)\n```", [KeyPress(key="down", presses=3)]),
    (
        "```python\npyautogui.keyDown('shift')\npyautogui.click(0.5, 0.5)\npyautogui.keyUp('shift')\n```",
        [KeyDown(key="shift"), Click(point=Point.norm(0.5, 0.5)), KeyUp(key="shift")],
    ),
    ("```python\npyautogui.typewrite('你好, мир ✓')\n```", [TypeText(text="你好, мир ✓")]),
    ("```python\ncomputer.wait()\n```", [Wait(seconds=2.0)]),
    (
        "```python\ncomputer.terminate(status='success', answer='42 files')\n```",
        [Done(status="success", answer="42 files")],
    ),
    (
        '```python\ncomputer.terminate(status="failure")\npyautogui.click(0.5, 0.5)\n```',
        [Done(status="failure")],
    ),
    (
        "```python\nimport pyautogui\nimport time\npyautogui.click(0.5, 0.5)\ntime.sleep(1)\n```",
        [Click(point=Point.norm(0.5, 0.5)), Wait(seconds=1)],
    ),
    (
        "Thought: click it\npyautogui.click(x=0.25, y=0.75)",
        [Click(point=Point.norm(0.25, 0.75))],
    ),  # no fences
    ("## Code:\npyautogui.click(0.3, 0.3)", [Click(point=Point.norm(0.3, 0.3))]),
    ("```python\npyautogui.click((0.4, 0.6))\n```", [Click(point=Point.norm(0.4, 0.6))]),
    (
        "```python\npyautogui.click(0.1,0.1)\n```\n\nactually:\n```python\npyautogui.click(0.9, 0.9)\n```",
        [Click(point=Point.norm(0.9, 0.9))],
    ),  # the last block counts
]


@pytest.mark.parametrize(("reply", "expected"), CASES)
def test_real_shaped_replies(reply: str, expected: list) -> None:
    parsed = parse_reply(reply)
    assert parsed.error is None, parsed.error
    assert parsed.actions == expected


def test_sections_and_thinking_are_split() -> None:
    p = parse_reply(INSTRUCT)
    assert (
        p.thought.startswith("The Save dialog is open") and p.action_text == "Type the file name and confirm."
    )
    assert p.thinking is None
    t = parse_reply(THINKING)
    assert (
        t.thinking.startswith("The user wants the terminal")
        and t.thought == "Open the terminal from the dock."
    )


HOSTILE = [
    ("◁think▷I will now think for a very long time and never fini", "cut off inside thinking"),
    ("", "no ## Code block"),
    ("I think we are done here.", "no ## Code block"),
    ("```python\n__import__('os').system('rm -rf /')\n```", "only pyautogui.* and computer.* calls"),
    ("```python\nos.system('rm -rf /')\n```", "os.system() is not an allowed call"),
    (
        "```python\npyautogui.__class__.__bases__[0].__subclasses__()\n```",
        "only pyautogui.* and computer.* calls",
    ),
    (
        "```python\npyautogui.click.__globals__['os'].system('x')\n```",
        "only pyautogui.* and computer.* calls",
    ),
    ("```python\nimport os\npyautogui.click(0.5, 0.5)\n```", "only calls like"),
    ("```python\npyautogui.click(x, 0.5)\n```", "name 'x' is used before it is bound"),
    ("```python\npyautogui.click(1e308, 5)\n```", "out of range"),
    ("```python\npyautogui.click(1e12, 5)\n```", "out of range"),
    ("```python\npyautogui.click(10**100, 5)\n```", "is not a literal value"),
    ("```python\npyautogui.click(float('nan'), 5)\n```", "is not a literal value"),
    ("```python\npyautogui.write(f'{open(\"/etc/passwd\").read()}')\n```", "is not a literal value"),
    ("```python\n(lambda: __import__('os'))()\n```", "only pyautogui.* and computer.* calls"),
    ("```python\npyautogui.click(0.5, 700)\n```", "mixes a normalised and a pixel"),
    ("```python\npyautogui.click(-0.1, 0.5)\n```", "must not be negative"),
    ("```python\npyautogui.click(0.5)\n```", "needs both x and y"),
    ("```python\npyautogui.click(0.5, 0.5, clicks=9)\n```", "clicks"),
    ("```python\npyautogui.click(0.5, 0.5, button='sideways')\n```", "button"),
    ("```python\npyautogui.press('hyperspace')\n```", "unknown key"),
    ("```python\npyautogui.dragTo(0.5, 0.5)\n```", "needs a start point"),
    ("```python\npyautogui.click(0.5, 0.5, **{'x': 1})\n```", "**kwargs"),
    ("```python\npyautogui.click(0.5, 0.5, evil=1)\n```", "has no argument 'evil'"),
    ("```python\npyautogui.click(0.5, 0.5\n```", "not valid Python"),
    ("```python\nπ.click(0.5, 0.5)\n```", "not an allowed call"),
    ("```python\n" + "pyautogui.press('a')\n" * 200 + "```", "too many calls"),
    ("```python\n" + "(" * 300 + "1" + ")" * 300 + "\n```", ""),
    ("```python\n" + "pyautogui.click(" * 2000 + "```", ""),
]


@pytest.mark.parametrize(("reply", "fragment"), HOSTILE)
def test_hostile_replies_are_parse_errors(reply: str, fragment: str) -> None:
    parsed = parse_reply(reply)
    assert parsed.actions == [] or parsed.error is None
    assert parsed.error is not None and fragment in parsed.error, parsed.error


def test_cut_off_reply_says_so() -> None:
    assert "max_new_tokens" in parse_reply("## Thought\nI will", finish_reason="length").error


def test_grounding_point() -> None:
    assert parse_grounding(
        "## Action:\nclick OK\n## Code:\n```python\npyautogui.click(x=0.204, y=0.149)\n```"
    ) == Point.norm(0.204, 0.149)
    assert parse_grounding("The OK button is at the bottom.") is None


code_atoms = st.sampled_from(
    [
        "pyautogui.click",
        "pyautogui.press",
        "computer.terminate",
        "pyautogui.scroll",
        "pyautogui.hotkey",
        "os.system",
        "__import__",
        "pyautogui.write",
        "x",
        "pyautogui.dragTo",
    ]
)
arg = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.text(max_size=8).map(repr),
    st.sampled_from(
        [
            "x=0.5",
            "y=2",
            "button='right'",
            "clicks=2",
            "'enter'",
            "[1, 2]",
            "None",
            "lambda: 1",
            "*a",
            "x",
            "y",
        ]
    ),
)
call = st.builds(lambda f, a: f"{f}({', '.join(a)})", code_atoms, st.lists(arg, max_size=4))
# literal assignments (the script style) between calls, bound or not, literal or not
assignment = st.builds(lambda t, v: f"{t} = {v}", st.sampled_from(["x", "y", "x, y", "[x, y]", "p.q"]), arg)
statement = st.one_of(call, assignment)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(statement, max_size=6), st.text(max_size=200))
def test_fuzz_never_raises_and_only_returns_valid_actions(calls: list[str], noise: str) -> None:
    for reply in (f"## Code:\n```python\n{chr(10).join(calls)}\n```", noise, noise + "```python\n" + noise):
        parsed = parse_reply(reply)
        assert parsed.error is None or parsed.actions == parsed.notes == []  # an error comes alone
        for a in parsed.actions:
            type(a).model_validate(a.model_dump())  # every action re-validates


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_parse_code_raises_only_parse_errors(code: str) -> None:
    from agent.models.pyautogui_code import ParseError

    try:
        actions = parse_code(code)
    except ParseError as e:
        assert str(e)  # a reason the model can act on
    else:
        assert all(type(a).model_validate(a.model_dump()) == a for a in actions)


# --- issue 7.1: linear parsing ---------------------------------------------------------------------

OK_BLOCK = "```python\npyautogui.click(0.5, 0.5)\n```"


@pytest.mark.parametrize(
    "reply",
    [
        "Thinking" + "\n" * 160_000 + OK_BLOCK,  # 96 s before the fix
        "## Code" + " " * 200_000 + "x",  # 2.5 s at 20,000 spaces before the fix
        "#" + " " * 200_000 + "x\n" + OK_BLOCK,
        "## Thought\r\n" * 20_000 + OK_BLOCK,
        ("Action:" + " " * 100 + "\n") * 2_000 + OK_BLOCK,
        "```python\n" + "a" * 200_000,  # an unclosed fence
        "`" * 200_000,
        ("pyautogui." + " " * 50 + "\n") * 3_000,
    ],
    ids=[
        "newlines",
        "code-spaces",
        "hash-spaces",
        "crlf-headers",
        "label-spaces",
        "unclosed",
        "ticks",
        "calls",
    ],
)
def test_long_whitespace_runs_parse_in_linear_time(reply: str) -> None:
    t0 = time.perf_counter()
    parse_reply(reply)
    # Generous (the target, < 50 ms, is measured by tests/bench/bench_parser.py); catches a quadratic scan.
    assert time.perf_counter() - t0 < 1.0


def test_newline_run_before_the_code_still_parses() -> None:
    assert parse_reply("Thinking" + "\n" * 40_000 + OK_BLOCK).actions == [Click(point=Point.norm(0.5, 0.5))]


def test_a_reply_over_the_cap_is_refused_not_scanned() -> None:
    p = parse_reply("x" * (MAX_REPLY_CHARS + 1) + OK_BLOCK)
    assert p.actions == [] and "reply too long" in p.error and str(MAX_REPLY_CHARS) in p.error


# --- issue 6.2: Kimi / OpenCUA reply conventions ---------------------------------------------------

CONVENTIONS: list[tuple[str, list]] = [
    ('```code\ncomputer.terminate(status="fail")\n```', [Done(status="failure")]),
    ("```code\ncomputer.terminate(status='failure')\n```", [Done(status="failure")]),
    ("```code\ncomputer.terminate(status='success')\n```", [Done(status="success")]),
    ("```code\ncomputer.wait()\n```", [Wait(seconds=2.0)]),
    ("```py\npyautogui.click(0.5, 0.5)\n```", [Click(point=Point.norm(0.5, 0.5))]),
    ("```Python\npyautogui.click(0.5, 0.5)\n```", [Click(point=Point.norm(0.5, 0.5))]),
    ("```pyautogui.click(0.2, 0.3)```", [Click(point=Point.norm(0.2, 0.3))]),  # "py" is not a tag here
    ("```python pyautogui.click(0.2, 0.3)```", [Click(point=Point.norm(0.2, 0.3))]),
    ("```python\nx, y = 0.42, 0.17\npyautogui.click(x, y)\n```", [Click(point=Point.norm(0.42, 0.17))]),
    ("```python\nx = 0.42\ny = 0.17\npyautogui.click(x=x, y=y)\n```", [Click(point=Point.norm(0.42, 0.17))]),
    ("```python\n[x, y] = [0.1, 0.2]\npyautogui.click(x, y)\n```", [Click(point=Point.norm(0.1, 0.2))]),
    ("```python\np = (0.4, 0.6)\npyautogui.click(p)\n```", [Click(point=Point.norm(0.4, 0.6))]),
    (
        "```python\nx = y = 0.3\nx: float = 0.4\npyautogui.click(x, y)\n```",
        [Click(point=Point.norm(0.4, 0.3))],
    ),
    (
        "```python\nx = 0.1\npyautogui.click(x, 0.1)\nx = 0.9\npyautogui.click(x, 0.1)\n```",
        [Click(point=Point.norm(0.1, 0.1)), Click(point=Point.norm(0.9, 0.1))],
    ),
    ("```python\nkey = 'enter'\npyautogui.press(key)\n```", [KeyPress(key="enter")]),
]


@pytest.mark.parametrize(("reply", "expected"), CONVENTIONS)
def test_kimi_and_opencua_conventions(reply: str, expected: list) -> None:
    parsed = parse_reply(reply)
    assert parsed.error is None, parsed.error
    assert parsed.actions == expected


def test_opencua_reply_layout() -> None:
    opencua = "## Action:\nFinish the task.\n```code\ncomputer.terminate(status='success', answer='4')\n```"
    p = parse_reply(opencua)
    assert p.action_text == "Finish the task." and p.actions == [Done(answer="4")]
    bare = "Thought:\nThe page is loading.\nAction:\nWait.\n```code\ncomputer.wait()\n```"
    p = parse_reply(bare)
    assert (p.thought, p.action_text, p.actions) == ("The page is loading.", "Wait.", [Wait(seconds=2.0)])
    thinking = (
        "◁think▷hmm◁/think▷## Action:\nclick OK\n## Code:\n```python\n# Code\npyautogui.click(0.5, 0.5)\n```"
    )
    p = parse_reply(thinking)
    assert (p.thinking, p.action_text, len(p.actions)) == ("hmm", "click OK", 1)


# --- issue 7.2: arguments bound as pyautogui's real signatures bind them ----------------------------

SIGNATURE_ERRORS = [
    ("pyautogui.click(x=0.1, y=0.1, x=0.9)", "pyautogui.click(): argument 'x' is given twice"),
    ("pyautogui.click(0.1, 0.1, x=0.9, y=0.9)", "argument 'x' is given by position and by keyword"),
    ("pyautogui.hotkey('ctrl', 'c', keys='alt')", "pyautogui.hotkey(): has no argument 'keys'"),
    ("pyautogui.moveTo(0.1, 0.1)\npyautogui.dragTo(.9, .9, .5, 'right')", "dragTo(): tween is not supported"),
    ("pyautogui.click(0.5, 0.5, 1, 0.0, 'left', 0.0, 'linear')", "tween is not supported"),
    (
        "pyautogui.moveTo(0.1, 0.1)\npyautogui.dragTo(0.5, 0.5, mouseDownUp=False)",
        "mouseDownUp is not supported",
    ),
    ("pyautogui.scroll(0)", "scroll(0) scrolls nothing"),
    ("pyautogui.hscroll(0, x=0.5, y=0.5)", "scroll(0) scrolls nothing"),
    ("pyautogui.scroll(2.5)", "clicks must be a whole number"),
    ("pyautogui.press('a', presses=0)", "presses=0 presses nothing"),
    ("pyautogui.rightClick(0.5, 0.5, 0, 0, None, None, True, 1)", "takes at most 7 positional"),
    ("pyautogui.keyDown(['shift'])", "key must be one key name"),
    ("pyautogui.hotkey()", "needs at least one key"),
    ("time.sleep(secs=1)", "takes no keyword arguments"),
    ("computer.terminate(status='done')", "status must be 'success' or 'failure'"),
    ("pyautogui.click(*[0.5, 0.5])", "*args are not allowed"),
    ("pyautogui.click(duration=-1)", "duration must not be negative"),
    # names: bound to literals only, and before use
    ("x = get_x()\npyautogui.click(x, 0.5)", "x = ...: 'get_x()' is not a literal value"),
    ("pyautogui.click(y, 0.5)\ny = 0.5", "name 'y' is used before it is bound"),
    ("x, y = 0.5\npyautogui.click(x, y)", "cannot unpack"),
    ("x, *y = 0.5, 0.5\npyautogui.click(x, 0.5)", "starred assignment"),
    ("pyautogui.x = 0.5\npyautogui.click(0.5, 0.5)", "only plain names can be assigned"),
    ("p = [[0.1, 0.2]]\npyautogui.click(p)", "nested lists are not allowed"),
    ("x = 0.5\nx += 0.1\npyautogui.click(x, x)", "only calls like"),
]


@pytest.mark.parametrize(("code", "fragment"), SIGNATURE_ERRORS)
def test_arguments_bind_as_the_real_signatures(code: str, fragment: str) -> None:
    parsed = parse_reply(f"```python\n{code}\n```")
    assert parsed.actions == [] and parsed.error is not None
    assert fragment in parsed.error and "\n" not in parsed.error, parsed.error


def test_press_a_list_presses_the_whole_list_n_times() -> None:
    p = parse_reply("```python\npyautogui.press(['tab', 'enter'], presses=3)\n```")
    assert [a.key for a in p.actions] == ["tab", "enter"] * 3


def test_positional_arguments_follow_pyautogui_order() -> None:
    # rightClick(x, y, interval, duration): a third positional is the interval, accepted and ignored
    p = parse_reply(
        "```python\npyautogui.rightClick(0.5, 0.5, 0.1)\npyautogui.doubleClick(0.2, 0.2, 0, 'right')\n```"
    )
    assert p.actions == [
        Click(point=Point.norm(0.5, 0.5), button="right"),
        Click(point=Point.norm(0.2, 0.2), clicks=2, button="right"),
    ]


def test_code_after_terminate_is_ignored_and_said_so() -> None:
    p = parse_reply(
        "```python\npyautogui.click(0.1, 0.1)\ncomputer.terminate(status='failure')\n"
        "pyautogui.click(0.5, 0.5)\npyautogui.write('x')\n```"
    )
    assert p.error is None and p.actions == [Click(point=Point.norm(0.1, 0.1)), Done(status="failure")]
    assert p.notes == ["2 calls after computer.terminate() were ignored"]
    assert parse_reply("```python\ncomputer.terminate()\npyautogui.click(0.5, 0.5)\n```").notes == [
        "1 call after computer.terminate() was ignored"
    ]
    assert parse_reply(OK_BLOCK).notes == []


def test_earlier_code_blocks_are_noted() -> None:
    p = parse_reply(
        "```python\npyautogui.click(0.1,0.1)\n```\nno:\n```python\npyautogui.click(0.9, 0.9)\n```"
    )
    assert p.actions == [Click(point=Point.norm(0.9, 0.9))]
    assert p.notes == ["1 earlier code block was ignored; only the last one runs"]


def test_other_languages_and_cut_blocks_are_errors() -> None:
    assert "fenced as ```bash" in parse_reply("```bash\nxdotool click 1\n```").error
    cut = parse_reply("## Code:\n```python\npyautogui.write('hel", finish_reason="length")
    assert cut.actions == [] and "cut off" in cut.error


# --- issue 7.3: strict types from the parser to the actions ------------------------------------------

STRICT = [
    ("pyautogui.click(0.5, 0.5, clicks='3')", "clicks: Input should be a valid integer, got '3'"),
    ("pyautogui.click(0.5, 0.5, clicks=True)", "clicks: Input should be a valid integer, got True"),
    ("pyautogui.click('0.5', '0.5')", "x must be a number, got '0.5'"),
    ("pyautogui.click(True, 0.5)", "x must be a number, got True"),
    ("pyautogui.click(1e12, 5)", "out of range"),
    ("pyautogui.write('abc\\u202edef')", "\\u202e (RIGHT-TO-LEFT OVERRIDE) at position 3"),
    ("pyautogui.write('ls\\x1b[2J')", "\\x1b at position 2"),
    ("pyautogui.write('a\\u2066b')", "\\u2066"),
    ("pyautogui.write('pass\\u200bword')", "\\u200b"),
    ("pyautogui.write('x\\rrm -rf ~')", "\\r at position 1"),
    ("computer.terminate(answer='a\\x00b')", "\\x00 at position 1"),
    ("pyautogui.press('a', presses='2')", "presses must be a number"),
]


@pytest.mark.parametrize(("code", "fragment"), STRICT)
def test_no_lax_coercion_and_no_hidden_text(code: str, fragment: str) -> None:
    parsed = parse_reply(f"```python\n{code}\n```")
    assert parsed.actions == [] and parsed.error is not None and fragment in parsed.error, parsed.error


def test_visible_unicode_and_answers_pass() -> None:
    p = parse_reply(
        "```python\npyautogui.write('line1\\n\\tline2 👩\\u200d💻 é')\n"
        "computer.terminate(answer='\\u202eshown escaped by the terminal')\n```"
    )
    assert p.error is None
    assert p.actions == [
        TypeText(text="line1\n\tline2 👩\u200d💻 é"),
        Done(answer="\u202eshown escaped by the terminal"),
    ]


def test_python_warnings_about_model_code_stay_quiet() -> None:
    # ast.parse warns on stderr ("invalid decimal literal", "invalid escape sequence"): model text that
    # would reach the terminal. Neither warns now.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = parse_reply("```python\npyautogui.click(1if 1 else 2, 0.5)\npyautogui.write('C:\\d')\n```")
    assert caught == [] and p.error is not None
