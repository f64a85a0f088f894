"""Replies -> typed actions: real-shaped replies, hostile ones, and a fuzz test. Never raises."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.parser import parse_code, parse_grounding, parse_reply
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
    ("```python\nx = 0.5\npyautogui.click(x, 0.5)\n```", "only calls like"),
    ("```python\npyautogui.click(x, 0.5)\n```", "is not a literal value"),
    ("```python\npyautogui.click(1e308, 5)\n```", "out of range"),
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
args = st.lists(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers(-(10**30), 10**30).map(str),
        st.text(max_size=8).map(repr),
        st.sampled_from(
            ["x=0.5", "y=2", "button='right'", "clicks=2", "'enter'", "[1, 2]", "None", "lambda: 1", "*a"]
        ),
    ),
    max_size=4,
)
call = st.builds(lambda f, a: f"{f}({', '.join(a)})", code_atoms, args)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(call, max_size=6), st.text(max_size=200))
def test_fuzz_never_raises_and_only_returns_valid_actions(calls: list[str], noise: str) -> None:
    for reply in (f"## Code:\n```python\n{chr(10).join(calls)}\n```", noise, noise + "```python\n" + noise):
        parsed = parse_reply(reply)
        assert parsed.error is None or parsed.actions == []  # an error never comes with actions
        for a in parsed.actions:
            type(a).model_validate(a.model_dump())  # every action re-validates


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_parse_code_raises_only_parse_errors(code: str) -> None:
    from agent.parser import ParseError

    try:
        actions = parse_code(code)
    except ParseError as e:
        assert str(e)  # a reason the model can act on
    else:
        assert all(type(a).model_validate(a.model_dump()) == a for a in actions)
