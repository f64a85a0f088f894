"""The typed actions: strict at the boundary (issue 7.3), and still read back from JSON (steps.jsonl, --script)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent.policy import ScriptedPolicy
from env.actions import (
    MAX_PIXEL,
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
    action_from_dict,
    describe,
)

EVERY_KIND = [
    Click(point=Point.norm(0.412, 0.305)),
    Click(point=Point.px(960, 540), button="right", clicks=2),
    Move(point=Point.px(0, 1079)),
    Drag(start=Point.norm(0.1, 0.1), end=Point.norm(0.9, 0.5), button="middle"),
    Scroll(direction="down", amount=3),
    Scroll(point=Point.norm(0.5, 0.5), direction="left", amount=1),
    TypeText(text="héllo\n\twörld 你好 👩\u200d💻"),
    KeyPress(key="enter", presses=3),
    Hotkey(keys=["ctrl", "shift", "t"]),
    KeyDown(key="shift"),
    KeyUp(key="shift"),
    Wait(seconds=0.5),
    Done(status="failure", answer="not possible: \u202e shown escaped"),
    Done(),
]


@pytest.mark.parametrize("action", EVERY_KIND, ids=describe)
def test_round_trip_through_dict_and_json(action: object) -> None:
    assert action_from_dict(action.model_dump()) == action
    assert action_from_dict(json.loads(action.model_dump_json())) == action
    assert action_from_dict(json.loads(json.dumps(action.model_dump(mode="json")))) == action


def test_a_script_file_with_json_numbers_and_lists_still_loads(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(
            [
                {"kind": "click", "point": {"x": 960, "y": 540, "space": "pixel"}},  # ints for float fields
                [{"kind": "type", "text": "hi"}, {"kind": "hotkey", "keys": ["ctrl", "s"]}],
                {"kind": "wait", "seconds": 1},
            ]
        )
    )
    policy = ScriptedPolicy.from_file(script)
    assert policy._steps == [
        [Click(point=Point.px(960, 540))],
        [TypeText(text="hi"), Hotkey(keys=["ctrl", "s"])],
        [Wait(seconds=1.0)],
    ]


@pytest.mark.parametrize("text", ["[" * 100_000, "{", '{"kind": "click"}'])
def test_a_script_file_that_is_not_a_list_of_steps_is_one_line_naming_it(tmp_path: Path, text: str) -> None:
    script = tmp_path / "script.json"
    script.write_text(text)
    with pytest.raises(ValueError) as e:
        ScriptedPolicy.from_file(script)
    assert str(script) in str(e.value) and "\n" not in str(e.value)


LAX = [  # each was coerced before: "3" -> 3 clicks, True -> 1, "0.5" -> a coordinate, 1e12 px accepted
    (
        {"kind": "click", "point": {"x": 0.5, "y": 0.5}, "clicks": "3"},
        "click.clicks: Input should be a valid integer",
    ),
    ({"kind": "click", "point": {"x": 0.5, "y": 0.5}, "clicks": True}, "got True"),
    ({"kind": "click", "point": {"x": "0.5", "y": 0.5}}, "click.point.x: Input should be a valid number"),
    ({"kind": "click", "point": {"x": True, "y": 0.5}}, "click.point.x"),
    (
        {"kind": "move", "point": {"x": 1e12, "y": 5, "space": "pixel"}},
        f"pixel x must be at most {MAX_PIXEL}",
    ),
    ({"kind": "scroll", "direction": "up", "amount": "5"}, "scroll.amount"),
    ({"kind": "scroll", "direction": "up", "amount": 2.0}, "scroll.amount"),
    ({"kind": "key", "key": "a", "presses": "2"}, "key.presses"),
    ({"kind": "wait", "seconds": "1"}, "wait.seconds"),
    ({"kind": "wait", "seconds": False}, "wait.seconds"),
    ({"kind": "hotkey", "keys": "ctrl"}, "hotkey.keys"),
    ({"kind": "type", "text": 5}, "type.text"),
    ({"kind": "done", "answer": 42}, "done.answer"),
]


@pytest.mark.parametrize(("data", "fragment"), LAX)
def test_no_lax_coercion(data: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=None) as e:
        action_from_dict(data)
    assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_constructors_are_strict_too() -> None:
    with pytest.raises(ValidationError):
        Click(point=Point.norm(0.5, 0.5), clicks="3")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Point(x="0.5", y=0.5)  # type: ignore[arg-type]
    assert Point.px(MAX_PIXEL, 0).x == MAX_PIXEL
    with pytest.raises(ValidationError, match="at most"):
        Point.px(MAX_PIXEL + 1, 0)


HIDDEN = [
    ("\x00", "\\x00"),
    ("\x1b[2J", "\\x1b"),
    ("\r", "\\r"),
    ("\x7f", "\\x7f"),
    ("\x85", "\\x85"),
    *[(chr(c), f"\\u{c:04x}") for c in range(0x202A, 0x202F)],  # LRE RLE PDF LRO RLO
    *[(chr(c), f"\\u{c:04x}") for c in range(0x2066, 0x206A)],  # LRI RLI FSI PDI
    ("\u200b", "\\u200b"),  # zero-width space
    ("\u200e", "\\u200e"),  # left-to-right mark
    ("\ufeff", "\\ufeff"),  # BOM / zero-width no-break space
    ("\u2028", "\\u2028"),  # line separator
    ("\U000e0041", "\\U000e0041"),  # a tag character ("ASCII smuggling")
]


@pytest.mark.parametrize(("char", "escaped"), HIDDEN, ids=[e for _, e in HIDDEN])
def test_typed_text_refuses_hidden_characters_naming_them(char: str, escaped: str) -> None:
    text = "echo safe" + char + "; rm -rf ~"
    with pytest.raises(ValueError) as e:
        action_from_dict({"kind": "type", "text": text})
    msg = str(e.value)
    assert f"character {escaped}" in msg and "at position 9" in msg and "\n" not in msg, msg
    assert msg.isprintable()  # the error itself shows the character escaped


def test_typed_text_keeps_newline_tab_and_joiners() -> None:
    for text in ("a\nb", "a\tb", "👩\u200d💻", "می\u200cخواهم", "עברית and English", "e\u0301"):
        assert TypeText(text=text).text == text


def test_answer_is_display_text_but_no_nul() -> None:
    assert Done(answer="\u202eflipped\x1b[0m").answer == "\u202eflipped\x1b[0m"  # the terminal layer escapes
    with pytest.raises(ValueError, match=r"done.answer: character \\x00 at position 1"):
        action_from_dict({"kind": "done", "answer": "a\x00b"})


@pytest.mark.parametrize("kind", ["type", "done"])
def test_a_lone_surrogate_is_refused_in_one_line(kind: str) -> None:
    field = "text" if kind == "type" else "answer"
    with pytest.raises(ValueError, match=f"{kind}.{field}: Input should be a valid string"):
        action_from_dict({"kind": kind, field: "a\ud800"})


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False), st.text(max_size=6)
)
json_values = st.recursive(
    json_scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=8,
)
kinds = st.sampled_from(
    ["click", "move", "drag", "scroll", "type", "key", "hotkey", "key_down", "key_up", "wait", "done"]
)
FIELD_NAMES = "point start end button clicks direction amount text key presses keys seconds status answer"
fields = st.sampled_from(FIELD_NAMES.split())


@settings(max_examples=300, deadline=None)
@given(kinds, st.dictionaries(fields, json_values | st.just({"x": 0.5, "y": 0.5}), max_size=4))
def test_fuzz_json_into_actions_is_a_one_line_error_or_a_valid_action(kind: str, rest: dict) -> None:
    try:
        action = action_from_dict({"kind": kind, **rest})
    except ValueError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert action_from_dict(json.loads(action.model_dump_json())) == action
