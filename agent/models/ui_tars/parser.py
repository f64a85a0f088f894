"""UI-TARS-1.5 replies -> typed actions. Strict and linear; nothing in a reply is run.

The format (read from these sources; no code taken from them):
- bytedance/UI-TARS codes/ui_tars/prompt.py and codes/ui_tars/action_parser.py
  @ 582f3a7ea5d285ee8ed9e2e84048d1ab01453c49: a reply is ``Thought: ...`` then ``Action: ...``
  (also ``Reflection:`` / ``Action_Summary:`` before the action); the calls follow the last
  ``Action:``, several separated by a blank line; each call has keyword arguments only, each a
  quoted string. Points are ``'<|box_start|>(x1,y1)<|box_end|>'``, ``'(x1,y1)'``, a box
  ``'(x1,y1,x2,y2)'`` (its centre) or ``'<point>x1 y1</point>'`` (keywords ``point`` /
  ``start_point`` / ``end_point`` beside ``start_box`` / ``end_box``).
- The OSWorld agent mm_agents/uitars15_v1.py (mrwwk/DeskCraft @ 4893b45ee51b57b2c1279d0e140aee02a7d0f6a6):
  click / left_single, left_double, right_single, hover, drag, hotkey(key='ctrl c') (keys split on
  spaces), type(content=...) (a trailing "\\n" presses Enter), scroll(direction=...), wait() (5 s),
  finished(content=...), call_user().

Differences from those readers, on purpose: no ``eval``/``ast`` (a hand-written reader of the call
grammar, one pass over the text), an unknown action or keyword is an error, not skipped; a point
stays in pixels of the image the model saw (Point.px), which the profile maps to the screenshot.
``call_user()`` ends the task as a failure (OSWorld scores CALL_USER as not done).
"""

from __future__ import annotations

import re

from pydantic import ValidationError

from agent.models.reply import ParsedReply, cut_note, start_reply
from env.actions import (
    Action,
    Click,
    Done,
    Drag,
    Hotkey,
    KeyPress,
    Move,
    Point,
    Scroll,
    TypeText,
    Wait,
    brief_error,
)

MAX_REPLY_CHARS = 20_000  # max_tokens 1000 is ~5k characters; beyond this, not read
MAX_ACTIONS = 10
WAIT_S = 5.0  # the OSWorld agent's wait()
_LABEL = re.compile(r"[ \t]*(thought|reflection|action_summary|action)[ \t]*:", re.I)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")
_NUM = r"[ \t]*(\d{1,6}(?:\.\d{1,6})?)[ \t]*"
_PAIR = re.compile(rf"\({_NUM},{_NUM}\)")
_BOX = re.compile(rf"\({_NUM},{_NUM},{_NUM},{_NUM}\)")
_POINT_TAG = re.compile(rf"<point>{_NUM}[ \t,]{_NUM}</point>")
# An integer point written bare, e.g. start_box='(100,200)': replayed in the history with its box
# tokens, as the OSWorld agent's add_box_token re-wraps it (uitars15_v1.py, DeskCraft @ 4893b45e).
_BARE_BOX = re.compile(r"\b(start_box|end_box)='\((\d{1,6}),(\d{1,6})\)'")
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"'}
# keyword -> the role of the point it gives
_START = {"start_box", "point", "start_point"}
_END = {"end_box", "end_point"}
# action -> keywords it takes (a point's keywords are any of _START / _END)
_TAKES: dict[str, set[str]] = {
    "click": _START,
    "left_single": _START,
    "left_double": _START,
    "right_single": _START,
    "hover": _START,
    "drag": _START | _END,
    "select": _START | _END,
    "hotkey": {"key"},
    "press": {"key"},
    "type": {"content"},
    "scroll": _START | {"direction"},
    "wait": set(),
    "finished": {"content"},
    "call_user": set(),
}
# free text: a quote inside it may be unescaped (the model writes type(content='it's') too); the
# value then runs to the last quote before the call's closing parenthesis.
_FREE_TEXT = {"type", "finished"}


class ParseError(ValueError):
    pass


def _string(text: str, i: int, free: bool) -> tuple[str, int]:
    """The quoted string at text[i] and the index after it."""
    quote = text[i]
    if free:
        end = text.rstrip().rfind(quote)
        if end <= i or text[end + 1 :].strip() != ")":
            raise ParseError("a text argument must be the call's last, quoted, before its ')'")
        return _unescape(text[i + 1 : end]), end + 1
    out: list[str] = []
    j = i + 1
    while j < len(text):
        c = text[j]
        if c == quote:
            return _unescape("".join(out)), j + 1
        if c == "\\" and j + 1 < len(text):
            out.append(text[j : j + 2])
            j += 2
            continue
        out.append(c)
        j += 1
    raise ParseError("a quoted argument is not closed")


def _unescape(raw: str) -> str:
    out: list[str] = []
    j = 0
    while j < len(raw):
        if raw[j] == "\\" and j + 1 < len(raw) and raw[j + 1] in _ESCAPES:
            out.append(_ESCAPES[raw[j + 1]])
            j += 2
        else:
            out.append(raw[j])
            j += 1
    return "".join(out)


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\n":
        i += 1
    return i


def read_call(text: str) -> tuple[str, dict[str, str]]:
    """``name(key='value', ...)`` -> (name, {key: value}); ParseError for anything else."""
    text = text.strip()
    m = _NAME.match(text)
    if m is None:
        raise ParseError(f"expected an action call like click(start_box='(x,y)'), got {text[:60]!r}")
    name = m.group(0)
    if name not in _TAKES:
        raise ParseError(f"unknown action {name!r} (known: {', '.join(sorted(_TAKES))})")
    i = _skip(text, m.end())
    if i >= len(text) or text[i] != "(":
        raise ParseError(f"{name}: expected '(' after the action's name")
    args: dict[str, str] = {}
    i = _skip(text, i + 1)
    while i < len(text) and text[i] != ")":
        k = _NAME.match(text, i)
        if k is None:
            raise ParseError(f"{name}: arguments must be key='value'")
        key = k.group(0)
        if key not in _TAKES[name]:
            allowed = ", ".join(sorted(_TAKES[name])) or "none"
            raise ParseError(f"{name}: unknown argument {key!r} (takes: {allowed})")
        if key in args:
            raise ParseError(f"{name}: argument {key!r} given twice")
        i = _skip(text, k.end())
        if i >= len(text) or text[i] != "=":
            raise ParseError(f"{name}: expected '=' after {key!r}")
        i = _skip(text, i + 1)
        if i >= len(text) or text[i] not in "'\"":
            raise ParseError(f"{name}: the value of {key!r} must be a quoted string")
        args[key], i = _string(text, i, name in _FREE_TEXT)
        i = _skip(text, i)
        if i < len(text) and text[i] == ",":
            i = _skip(text, i + 1)
        elif i < len(text) and text[i] != ")":
            raise ParseError(f"{name}: expected ',' or ')' after {key!r}")
    if i >= len(text):
        raise ParseError(f"{name}: the call is not closed with ')'")
    if text[i + 1 :].strip():
        raise ParseError(f"{name}: text after the call's ')': {text[i + 1 : i + 41]!r}")
    return name, args


def read_point(value: str) -> Point:
    """A point in the model's image pixels, from any of UI-TARS's spellings."""
    v = value.strip().replace("<|box_start|>", "").replace("<|box_end|>", "").strip()
    if m := _PAIR.fullmatch(v) or _POINT_TAG.fullmatch(v):
        return Point.px(float(m.group(1)), float(m.group(2)))
    if m := _BOX.fullmatch(v):
        x1, y1, x2, y2 = (float(g) for g in m.groups())
        return Point.px((x1 + x2) / 2, (y1 + y2) / 2)
    raise ParseError(f"bad point {value[:60]!r} (expected '<|box_start|>(x,y)<|box_end|>')")


def _one_point(name: str, args: dict[str, str], keys: set[str], need: bool) -> Point | None:
    given = [k for k in keys if k in args]
    if len(given) > 1:
        raise ParseError(f"{name}: give one of {', '.join(sorted(given))}")
    if not given:
        if need:
            raise ParseError(f"{name}: needs a point (start_box='<|box_start|>(x,y)<|box_end|>')")
        return None
    return read_point(args[given[0]])


def to_actions(name: str, args: dict[str, str]) -> list[Action]:
    if name in ("click", "left_single", "left_double", "right_single", "hover"):
        point = _one_point(name, args, _START, True)
        assert point is not None
        if name == "hover":
            return [Move(point=point)]
        if name == "right_single":
            return [Click(point=point, button="right")]
        return [Click(point=point, clicks=2 if name == "left_double" else 1)]
    if name in ("drag", "select"):
        start, end = _one_point(name, args, _START, True), _one_point(name, args, _END, True)
        assert start is not None and end is not None
        return [Drag(start=start, end=end)]
    if name in ("hotkey", "press"):
        keys = args.get("key", "").split()
        if not keys:
            raise ParseError(f"{name}: needs key='...' (e.g. key='ctrl c')")
        return [KeyPress(key=keys[0])] if len(keys) == 1 else [Hotkey(keys=keys)]
    if name == "type":
        content = args.get("content", "")
        enter = content.endswith("\n")
        text = content[:-1] if enter else content
        if not text and not enter:
            raise ParseError("type: content is empty")
        return [*([TypeText(text=text)] if text else []), *([KeyPress(key="enter")] if enter else [])]
    if name == "scroll":
        direction = args.get("direction", "").strip().lower()
        if direction not in ("up", "down", "left", "right"):
            raise ParseError(f"scroll: direction must be up, down, left or right, got {direction!r}")
        return [Scroll(point=_one_point(name, args, _START, False), direction=direction)]
    if name == "wait":
        return [Wait(seconds=WAIT_S)]
    if name == "finished":
        return [Done(status="success", answer=args.get("content") or None)]
    return [Done(status="failure", answer="call_user(): the model asked for a person's help")]


def _split_reply(text: str) -> tuple[str, str]:
    """(thought, action text): the text after the last line starting ``Action:``, and the
    ``Thought:`` (or ``Reflection:`` ...) text before it."""
    thought: list[str] = []
    action: list[str] | None = None
    current: list[str] | None = None
    for line in text.split("\n"):
        m = _LABEL.match(line)
        if m:
            label, rest = m.group(1).lower(), line[m.end() :].lstrip()
            if label == "action":
                action = current = [rest]
                continue
            current = thought if label in ("thought", "reflection") else None
            if current is not None:
                current.append(rest)
            continue
        if current is not None:
            current.append(line)
    return "\n".join(thought).strip(), "\n".join(action).strip() if action is not None else ""


def parse_reply(text: str, finish_reason: str = "stop") -> ParsedReply:
    out, text = start_reply(text, MAX_REPLY_CHARS)
    if out.error:
        return out
    cut = cut_note(finish_reason)
    out.thought, out.action_text = _split_reply(text)
    if not out.action_text:
        out.error = f"no Action: line{cut}"
        return out
    calls = [c for c in re.split(r"\n[ \t]*\n", out.action_text) if c.strip()]
    if len(calls) > MAX_ACTIONS:
        out.error = f"too many actions ({len(calls)} > {MAX_ACTIONS}) after Action:"
        return out
    name = ""
    try:
        for call in calls:
            name, args = read_call(call)
            out.actions.extend(to_actions(name, args))
    except ParseError as e:
        out.error, out.actions = f"{e}{cut}", []
    except ValidationError as e:
        out.error, out.actions = f"{name}: {brief_error(e)}{cut}", []
    out.action_text = _BARE_BOX.sub(r"\1='<|box_start|>(\2,\3)<|box_end|>'", out.action_text)
    return out
