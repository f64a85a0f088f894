"""Model replies -> typed actions, by reading the code with ``ast`` against an allow-list.

Nothing in a reply is ever evaluated: only literal arguments of allow-listed calls are read.
Every failure is returned as a one-line error (it goes back to the model), never raised.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field

from pydantic import ValidationError

from env.actions import (
    Action,
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
    brief_error,
)

THINK_OPEN, THINK_CLOSE = "◁think▷", "◁/think▷"
MAX_CODE_CHARS = 20_000
MAX_CALLS = 30
MAX_NUMBER = 100_000  # no screen is wider; anything larger is nonsense, not a coordinate
DEFAULT_WAIT_S = 2.0

# name -> positional parameter names, as pyautogui / OSWorld's `computer` define them
SIGNATURES: dict[str, tuple[str, ...]] = {
    "pyautogui.click": ("x", "y", "clicks", "interval", "button", "duration"),
    "pyautogui.doubleClick": ("x", "y", "interval", "button", "duration"),
    "pyautogui.tripleClick": ("x", "y", "interval", "button", "duration"),
    "pyautogui.rightClick": ("x", "y", "duration"),
    "pyautogui.middleClick": ("x", "y", "duration"),
    "pyautogui.moveTo": ("x", "y", "duration"),
    "pyautogui.dragTo": ("x", "y", "duration", "button"),
    "pyautogui.scroll": ("clicks", "x", "y"),
    "pyautogui.hscroll": ("clicks", "x", "y"),
    "pyautogui.write": ("message", "interval"),
    "pyautogui.typewrite": ("message", "interval"),
    "pyautogui.press": ("keys", "presses", "interval"),
    "pyautogui.hotkey": (),  # variadic keys
    "pyautogui.keyDown": ("key",),
    "pyautogui.keyUp": ("key",),
    "computer.wait": ("seconds",),
    "computer.terminate": ("status", "answer"),
    "time.sleep": ("seconds",),
}
_IGNORED_IMPORTS = {"pyautogui", "time"}


class ParseError(ValueError):
    pass


@dataclass
class ParsedReply:
    thought: str = ""
    action_text: str = ""
    thinking: str | None = None
    code: str = ""
    actions: list[Action] = field(default_factory=list)
    error: str | None = None


def split_thinking(text: str) -> tuple[str | None, str, bool]:
    """(thinking, answer, cut_off). ``cut_off``: the reply ended inside the thinking."""
    if THINK_CLOSE in text:
        thinking, _, answer = text.partition(THINK_CLOSE)
        return thinking.replace(THINK_OPEN, "").strip(), answer.strip(), False
    if THINK_OPEN in text:
        return text.split(THINK_OPEN, 1)[1].strip(), "", True
    return None, text.strip(), False


_FENCE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n?(.*?)```", re.S | re.I)
_SECTION = re.compile(r"^\s*#{1,3}\s*(thought|action|code)\s*:?\s*$", re.I | re.M)


def _sections(answer: str) -> dict[str, str]:
    found: dict[str, str] = {}
    marks = list(_SECTION.finditer(answer))
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(answer)
        found.setdefault(m.group(1).lower(), answer[m.end() : end].strip())
    return found


def extract_code(answer: str) -> str:
    """The last fenced block; else the ``## Code:`` section; else lines that are calls."""
    blocks = _FENCE.findall(answer)
    if blocks:
        return blocks[-1].strip()
    code = _sections(answer).get("code")
    if code:
        return code.strip("`").strip()
    lines = [ln.strip() for ln in answer.splitlines() if ln.strip().startswith(("pyautogui.", "computer."))]
    return "\n".join(lines)


def parse_reply(text: str, finish_reason: str = "stop") -> ParsedReply:
    out = ParsedReply()
    try:
        thinking, answer, cut_off = split_thinking(text if isinstance(text, str) else "")
        out.thinking = thinking
        if cut_off:
            out.error = "reply cut off inside thinking (no ◁/think▷); no action was given"
            return out
        sections = _sections(answer)
        out.code = extract_code(answer)
        out.action_text = " ".join(sections.get("action", "").split())
        thought = sections.get("thought")
        if thought is None:  # no headers: whatever precedes the code is the thought
            first = answer.find("```")
            thought = answer[: first if first >= 0 else len(answer)]
        out.thought = thought.strip()
        if not out.code:
            cut = " (the reply hit max_new_tokens)" if finish_reason == "length" else ""
            out.error = f"no ## Code block with an action{cut}"
            return out
        out.actions = parse_code(out.code)
    except ParseError as e:
        out.error = str(e)
    except (RecursionError, MemoryError, ValueError, TypeError) as e:  # pathological input
        out.error = f"cannot read the code: {type(e).__name__}"
    return out


def parse_code(code: str) -> list[Action]:
    """Allow-listed pyautogui/computer calls -> actions; raises ParseError naming the problem."""
    if len(code) > MAX_CODE_CHARS:
        raise ParseError(f"code block too long ({len(code)} characters)")
    try:
        tree = ast.parse(code, mode="exec")
    except SyntaxError as e:
        raise ParseError(f"code is not valid Python: {e.msg} (line {e.lineno})") from None
    calls = [s for s in tree.body if not _is_ignorable(s)]
    if not calls:
        raise ParseError("code block has no call")
    if len(calls) > MAX_CALLS:
        raise ParseError(f"too many calls in one step ({len(calls)} > {MAX_CALLS})")
    actions: list[Action] = []
    last_point: Point | None = None
    for stmt in calls:
        name, args = _read_call(stmt)
        try:
            action = _to_action(name, args, last_point)
        except ValidationError as e:
            raise ParseError(f"{name}: {brief_error(e)}") from None
        produced = action if isinstance(action, list) else [action] if action is not None else []
        actions.extend(produced)
        for act in produced:
            last_point = _end_point(act) or last_point
        if actions and isinstance(actions[-1], Done):
            break  # nothing after terminate runs
    return actions


def _is_ignorable(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Import):
        return all(a.name in _IGNORED_IMPORTS for a in stmt.names)
    if isinstance(stmt, ast.Pass):
        return True
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _read_call(stmt: ast.stmt) -> tuple[str, dict[str, object]]:
    line = f"line {getattr(stmt, 'lineno', '?')}"
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
        raise ParseError(f"{line}: only calls like pyautogui.click(x=0.5, y=0.5) are allowed")
    call = stmt.value
    f = call.func
    if not (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)):
        raise ParseError(f"{line}: only pyautogui.* and computer.* calls are allowed")
    name = f"{f.value.id}.{f.attr}"
    if name not in SIGNATURES:
        raise ParseError(f"{line}: {name}() is not an allowed call")
    params = SIGNATURES[name]
    args: dict[str, object] = {}
    if name == "pyautogui.hotkey":
        args["keys"] = [_literal(a) for a in call.args]
    else:
        if len(call.args) > len(params):
            raise ParseError(f"{line}: {name}() takes at most {len(params)} positional arguments")
        args.update(zip(params, (_literal(a) for a in call.args), strict=False))
    for kw in call.keywords:
        if kw.arg is None:
            raise ParseError(f"{line}: **kwargs are not allowed")
        key = "seconds" if name in ("computer.wait", "time.sleep") and kw.arg == "secs" else kw.arg
        if name != "pyautogui.hotkey" and key not in params:
            raise ParseError(f"{line}: {name}() has no argument {kw.arg!r}")
        args[key] = _literal(kw.value)
    return name, args


def _literal(node: ast.expr) -> object:
    """Numbers, strings, booleans, None and lists/tuples of them; nothing computed."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        v = node.value
    elif (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, (ast.USub, ast.UAdd))
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) in (int, float)
    ):
        v = -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    elif isinstance(node, (ast.List, ast.Tuple)) and len(node.elts) <= 16:
        return [_literal(e) for e in node.elts]
    else:
        raise ParseError(f"argument {ast.unparse(node)[:40]!r} is not a literal value")
    if isinstance(v, float) and not math.isfinite(v):
        raise ParseError("numbers must be finite")
    if type(v) in (int, float) and abs(v) > MAX_NUMBER:  # type: ignore[arg-type]
        raise ParseError(f"number {v!r:.20} is out of range")
    return v


def _num(v: object, what: str) -> float:
    if type(v) not in (int, float):
        raise ParseError(f"{what} must be a number, got {v!r:.40}")
    return float(v)  # type: ignore[arg-type]


def _point(args: dict[str, object], fallback: Point | None, name: str) -> Point | None:
    x, y = args.get("x"), args.get("y")
    if isinstance(x, list) and y is None:  # click((x, y)) is legal pyautogui
        if len(x) != 2:
            raise ParseError(f"{name}: a point needs two coordinates")
        x, y = x
    if x is None and y is None:
        return fallback
    if x is None or y is None:
        raise ParseError(f"{name}: a point needs both x and y")
    fx, fy = _num(x, "x"), _num(y, "y")
    if fx < 0 or fy < 0:
        raise ParseError(f"{name}: coordinates must not be negative")
    if fx <= 1 and fy <= 1:
        return Point.norm(fx, fy)
    # A fractional value <= 1 beside a pixel value is a mix-up, not a pixel coordinate.
    if any(0 < v < 1 for v in (fx, fy)):
        raise ParseError(f"{name}: mixes a normalised and a pixel coordinate ({fx:g}, {fy:g})")
    return Point.px(fx, fy)


def _keys(v: object, what: str) -> list[str]:
    items = v if isinstance(v, list) else [v]
    if not items or not all(isinstance(k, str) for k in items):
        raise ParseError(f"{what} must be key names (strings)")
    return items  # type: ignore[return-value]


def _to_action(name: str, a: dict[str, object], last: Point | None) -> Action | list[Action] | None:
    short = name.split(".", 1)[1]
    if short in ("click", "doubleClick", "tripleClick", "rightClick", "middleClick", "moveTo", "dragTo"):
        point = _point(a, last if short != "dragTo" else None, name)
        if point is None:
            raise ParseError(f"{name}: needs x and y")
        if short == "moveTo":
            return Move(point=point)
        if short == "dragTo":
            if last is None:
                raise ParseError(
                    f"{name}: needs a start point: pyautogui.moveTo(x, y) before it in the same block"
                )
            return Drag(start=last, end=point, button=a.get("button", "left"))  # type: ignore[arg-type]
        clicks = {"doubleClick": 2, "tripleClick": 3}.get(short, a.get("clicks", 1))
        button = {"rightClick": "right", "middleClick": "middle"}.get(short, a.get("button", "left"))
        return Click(point=point, clicks=clicks, button=button)  # type: ignore[arg-type]
    if short in ("scroll", "hscroll"):
        clicks = int(_num(a.get("clicks"), "clicks"))
        if clicks == 0:
            return None
        up = clicks > 0
        direction = ("right" if up else "left") if short == "hscroll" else ("up" if up else "down")
        return Scroll(point=_point(a, None, name), direction=direction, amount=abs(clicks))
    if short in ("write", "typewrite"):
        msg = a.get("message")
        if isinstance(msg, list):  # typewrite(["a", "enter"]) presses keys
            return _press_sequence(msg, name)
        if not isinstance(msg, str):
            raise ParseError(f"{name}: needs the text to type")
        return TypeText(text=msg)
    if short == "press":
        keys = _keys(a.get("keys"), name)
        presses = int(_num(a.get("presses", 1), "presses"))
        if len(keys) == 1:
            return KeyPress(key=keys[0], presses=presses)
        return _press_sequence(keys, name)
    if short == "hotkey":
        return Hotkey(keys=_keys(a.get("keys"), name))
    if short == "keyDown":
        return KeyDown(key=_keys(a.get("key"), name)[0])
    if short == "keyUp":
        return KeyUp(key=_keys(a.get("key"), name)[0])
    if short in ("wait", "sleep"):
        return Wait(seconds=_num(a.get("seconds", DEFAULT_WAIT_S), "seconds"))
    if short == "terminate":
        status = a.get("status", "success")
        answer = a.get("answer")
        if answer is not None and not isinstance(answer, str):
            answer = str(answer)
        return Done(status=status, answer=answer)  # type: ignore[arg-type]
    raise ParseError(f"{name}() is not supported")


def _press_sequence(keys: list[object], name: str) -> list[Action]:
    """press(["tab", "tab", "enter"]) presses the keys one after another."""
    out: list[Action] = []
    for k in _keys(keys, name):
        kp = KeyPress(key=k)
        if out and isinstance(out[-1], KeyPress) and out[-1].key == kp.key:
            out[-1] = KeyPress(key=kp.key, presses=out[-1].presses + 1)
        else:
            out.append(kp)
    return out


def _end_point(action: Action) -> Point | None:
    if isinstance(action, Drag):
        return action.end
    return getattr(action, "point", None)


def parse_grounding(text: str) -> Point | None:
    """The first click of a grounding reply, or None (ScreenSpot's ``wrong_format``)."""
    reply = parse_reply(text)
    for action in reply.actions:
        point = getattr(action, "point", None)
        if point is not None:
            return point
    return None
