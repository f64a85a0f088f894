"""pyautogui / OSWorld ``computer.*`` code -> typed actions, by reading it with ``ast`` against an allow-list.

Shared by every model family whose replies act through pyautogui-style calls (Kimi-VL, OpenCUA, ...);
how a family lays its reply out (sections, fences, thinking) is its own parser's business.
Nothing is ever evaluated: only literal arguments of allow-listed calls are read, and names bound to
literals (``x, y = 0.42, 0.17``) are looked up, never computed. Failures raise ParseError with a
one-line message (it goes back to the model).
"""

from __future__ import annotations

import ast
import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from agent.models.reply import ParsedReply
from env.actions import (
    MAX_PIXEL,
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

MAX_CODE_CHARS = 20_000
MAX_CALLS = 30
MAX_STATEMENTS = 2 * MAX_CALLS
MAX_ACTIONS = 100  # after press(['a', 'b'], presses=n) and typewrite([...]) expand
MAX_LIST = 16
MAX_NUMBER = MAX_PIXEL  # no screen is wider; anything larger is nonsense, not a coordinate
DEFAULT_WAIT_S = 2.0
# How the numbers of a point are read. "auto": both <= 1 are fractions of the screenshot, else pixels of
# it (Kimi-VL); "relative": fractions only, anything above 1 is an error (OpenCUA-A3B); "pixels": always
# pixels, of the image as the model saw it (OpenCUA-7B/32B/72B: the profile maps them to the screenshot).
PointRule = Literal["auto", "relative", "pixels"]


@dataclass(frozen=True)
class _Sig:
    """A callable's parameters as its real signature has them (pyautogui 0.9.54; OSWorld's computer.*)."""

    params: tuple[str, ...] = ()  # positional-or-keyword, in order
    variadic: bool = False  # hotkey(*keys, **kwargs)
    keyword_only: tuple[str, ...] = ()
    positional_only: bool = False  # time.sleep(secs, /)
    # real parameters we cannot honour (dragTo's 4th positional is tween, not the button): an error
    unsupported: frozenset[str] = frozenset({"tween", "mouseDownUp"})


_LOG = ("logScreenshot", "_pause")  # pyautogui bookkeeping; no effect here
_CLICK_LIKE = ("x", "y", "interval", "duration", "tween", *_LOG)
_MULTI_CLICK = ("x", "y", "interval", "button", "duration", "tween", *_LOG)
_SCROLL = _Sig(("clicks", "x", "y", *_LOG))
_WRITE = _Sig(("message", "interval", *_LOG))
SIGNATURES: dict[str, _Sig] = {
    "pyautogui.click": _Sig(("x", "y", "clicks", "interval", "button", "duration", "tween", *_LOG)),
    "pyautogui.leftClick": _Sig(_CLICK_LIKE),
    "pyautogui.rightClick": _Sig(_CLICK_LIKE),
    "pyautogui.middleClick": _Sig(_CLICK_LIKE),
    "pyautogui.doubleClick": _Sig(_MULTI_CLICK),
    "pyautogui.tripleClick": _Sig(_MULTI_CLICK),
    "pyautogui.moveTo": _Sig(("x", "y", "duration", "tween", *_LOG)),
    "pyautogui.dragTo": _Sig(("x", "y", "duration", "tween", "button", *_LOG, "mouseDownUp")),
    "pyautogui.scroll": _SCROLL,
    "pyautogui.vscroll": _SCROLL,
    "pyautogui.hscroll": _SCROLL,
    "pyautogui.write": _WRITE,
    "pyautogui.typewrite": _WRITE,
    "pyautogui.press": _Sig(("keys", "presses", "interval", *_LOG)),
    "pyautogui.hotkey": _Sig(variadic=True, keyword_only=("interval", *_LOG)),  # reads only these kwargs
    "pyautogui.keyDown": _Sig(("key", *_LOG)),
    "pyautogui.keyUp": _Sig(("key", *_LOG)),
    "computer.wait": _Sig(("seconds",)),
    "computer.terminate": _Sig(("status", "answer")),
    # OpenCUA's V1 prompts offer it (x and y required); it is pyautogui.tripleClick(x, y).
    "computer.triple_click": _Sig(("x", "y")),
    "time.sleep": _Sig(("secs",), positional_only=True),
}
_IGNORED_IMPORTS = {"pyautogui", "time"}
_TIMING = {"interval", "duration"}  # accepted (a number >= 0) but not reproduced: actions run at once
_STATUS = {"success": "success", "fail": "failure", "failure": "failure"}  # OSWorld's Kimi agent reads "fail"
_BUTTONS = {"primary": "left", "secondary": "right"}  # pyautogui's aliases


class ParseError(ValueError):
    pass


@contextmanager
def reading_code(out: ParsedReply, *, pathological: bool = True) -> Iterator[None]:
    """Turns a failure to read the reply's code into ``out.error`` (one line, for the model) with no
    actions or notes: a ParseError's message; the parser's own nesting limits; and, where
    ``pathological``, any other ValueError or TypeError that odd input raises."""
    others: tuple[type[Exception], ...] = (ValueError, TypeError) if pathological else ()
    try:
        yield
    except ParseError as e:
        out.error, out.actions, out.notes = str(e), [], []
    except (RecursionError, MemoryError):
        out.error, out.actions, out.notes = "code is nested too deeply to read", [], []
    except others as e:
        out.error, out.actions, out.notes = f"cannot read the code: {type(e).__name__}", [], []


def parse_code(code: str, points: PointRule = "auto") -> list[Action]:
    """Allow-listed pyautogui/computer calls -> actions; raises ParseError naming the problem."""
    return read_code(code, points)[0]


def read_code(code: str, points: PointRule = "auto") -> tuple[list[Action], list[str]]:
    """(actions, notes). Literal assignments bind names for later calls; calls become actions."""
    if len(code) > MAX_CODE_CHARS:
        raise ParseError(f"code block too long ({len(code)} characters > {MAX_CODE_CHARS})")
    if "\0" in code:
        raise ParseError("code contains a NUL character")
    try:
        with warnings.catch_warnings():  # a SyntaxWarning about model text must not reach the terminal
            warnings.simplefilter("ignore")
            tree = ast.parse(code, mode="exec")
    except SyntaxError as e:
        raise ParseError(f"code is not valid Python: {e.msg} (line {e.lineno})") from None
    body = [s for s in tree.body if not _is_ignorable(s)]
    calls = [s for s in body if _is_call(s)]
    if not calls:
        raise ParseError("code block has no call")
    if len(calls) > MAX_CALLS:
        raise ParseError(f"too many calls in one step ({len(calls)} > {MAX_CALLS})")
    if len(body) > MAX_STATEMENTS:
        raise ParseError(f"too many statements in one step ({len(body)} > {MAX_STATEMENTS})")
    env: dict[str, object] = {}
    actions: list[Action] = []
    last_point: Point | None = None
    for i, stmt in enumerate(body):
        line = f"line {stmt.lineno}"
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            _assign(stmt, env, line)
            continue
        if not _is_call(stmt):
            raise ParseError(
                f"{line}: only calls like pyautogui.click(x=0.5, y=0.5) and literal assignments "
                "like x, y = 0.5, 0.5 are allowed"
            )
        name, args = _read_call(stmt.value, env, line)  # type: ignore[attr-defined]
        try:
            produced = _to_action(name, args, last_point, points)
        except ValidationError as e:
            raise ParseError(f"{line}: {name}(): {brief_error(e)}") from None
        except ParseError as e:
            raise ParseError(f"{line}: {name}(): {e}") from None
        actions.extend(produced)
        if len(actions) > MAX_ACTIONS:
            raise ParseError(f"too many actions in one step (more than {MAX_ACTIONS})")
        for act in produced:
            last_point = _end_point(act) or last_point
        if produced and isinstance(produced[-1], Done):  # nothing after terminate runs; say so
            n = sum(_is_call(s) for s in body[i + 1 :])
            many = n > 1
            note = f"{n} call{'s' if many else ''} after computer.terminate() {'were' if many else 'was'} ignored"
            return actions, [note] if n else []
    return actions, []


def _is_call(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)


def _is_ignorable(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Import):
        return all(a.name in _IGNORED_IMPORTS and a.asname is None for a in stmt.names)
    if isinstance(stmt, ast.Pass):
        return True
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _assign(stmt: ast.Assign | ast.AnnAssign, env: dict[str, object], line: str) -> None:
    """``x, y = 0.42, 0.17`` / ``x = 0.42`` / ``p = (0.4, 0.6)``: bind names to literal values."""
    if stmt.value is None:
        raise ParseError(f"{line}: a bare annotation binds nothing")
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    try:
        value = _literal(stmt.value, env)
    except ParseError as e:
        names = ", ".join(ast.unparse(t)[:20] for t in targets)
        raise ParseError(f"{line}: {names} = ...: {e}") from None
    for target in targets:
        _bind(target, value, env, line)


def _bind(target: ast.expr, value: object, env: dict[str, object], line: str) -> None:
    if isinstance(target, ast.Name):
        env[target.id] = value
        return
    if isinstance(target, (ast.Tuple, ast.List)):
        if any(isinstance(t, ast.Starred) for t in target.elts):
            raise ParseError(f"{line}: starred assignment is not allowed")
        if not isinstance(value, list) or len(value) != len(target.elts):
            got = f"{len(value)} values" if isinstance(value, list) else repr(value)[:20]
            raise ParseError(f"{line}: cannot unpack {got} into {len(target.elts)} names")
        for t, v in zip(target.elts, value, strict=True):
            _bind(t, v, env, line)
        return
    raise ParseError(f"{line}: only plain names can be assigned, not {ast.unparse(target)[:40]!r}")


def _read_call(call: ast.Call, env: dict[str, object], line: str) -> tuple[str, dict[str, object]]:
    f = call.func
    if not (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)):
        raise ParseError(f"{line}: only pyautogui.* and computer.* calls are allowed")
    name = f"{f.value.id}.{f.attr}"
    sig = SIGNATURES.get(name)
    if sig is None:
        raise ParseError(f"{line}: {name}() is not an allowed call")
    try:
        return name, _bind_args(name, sig, call, env)
    except ParseError as e:
        raise ParseError(f"{line}: {name}(): {e}") from None


def _bind_args(name: str, sig: _Sig, call: ast.Call, env: dict[str, object]) -> dict[str, object]:
    """Arguments -> {parameter: value} as Python binds them for the real signature: a duplicate keyword,
    a keyword repeating a positional, an unknown or unsupported parameter is an error."""
    if any(isinstance(a, ast.Starred) for a in call.args):
        raise ParseError("*args are not allowed")
    bound: dict[str, object] = {}
    if sig.variadic:
        bound["*"] = [_arg(a, env, f"argument {i + 1}") for i, a in enumerate(call.args)]
    elif len(call.args) > len(sig.params):
        raise ParseError(f"takes at most {len(sig.params)} positional arguments ({len(call.args)} given)")
    else:
        for p, a in zip(sig.params, call.args, strict=False):
            bound[p] = _arg(a, env, p)
    for kw in call.keywords:
        if kw.arg is None:
            raise ParseError("**kwargs are not allowed")
        if sig.positional_only:
            raise ParseError("takes no keyword arguments")
        if kw.arg not in sig.params and kw.arg not in sig.keyword_only:
            raise ParseError(f"has no argument {kw.arg!r}")
        if kw.arg in bound:
            how = "twice" if kw.arg not in sig.params[: len(call.args)] else "by position and by keyword"
            raise ParseError(f"argument {kw.arg!r} is given {how}")
        bound[kw.arg] = _arg(kw.value, env, kw.arg)
    for p in sig.unsupported & bound.keys():
        pos = sig.params.index(p) + 1 if p in sig.params else 0
        how = f" (the positional argument {pos} is {p})" if pos and pos <= len(call.args) else ""
        raise ParseError(f"{p} is not supported{how}")
    return bound


def _arg(node: ast.expr, env: dict[str, object], what: str) -> object:
    try:
        return _literal(node, env)
    except ParseError as e:
        raise ParseError(f"{what}: {e}") from None


def _literal(node: ast.expr, env: dict[str, object], inner: bool = False) -> object:
    """Numbers, strings, booleans, None, flat lists/tuples of them, and names bound to such values."""
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise ParseError(f"name {node.id!r} is used before it is bound to a literal value")
        v = env[node.id]
        if inner and isinstance(v, list):
            raise ParseError("nested lists are not allowed")
        return v
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        v = node.value
    elif (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, (ast.USub, ast.UAdd))
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) in (int, float)
    ):
        v = -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    elif isinstance(node, (ast.List, ast.Tuple)) and not inner:
        if len(node.elts) > MAX_LIST:
            raise ParseError(f"a list of {len(node.elts)} items is too long (at most {MAX_LIST})")
        return [_literal(e, env, inner=True) for e in node.elts]
    elif isinstance(node, (ast.List, ast.Tuple)):
        raise ParseError("nested lists are not allowed")
    else:
        raise ParseError(f"{ast.unparse(node)[:40]!r} is not a literal value")
    if isinstance(v, float) and not math.isfinite(v):
        raise ParseError("numbers must be finite")
    if type(v) in (int, float) and abs(v) > MAX_NUMBER:  # type: ignore[arg-type]
        raise ParseError(f"number {v!r:.20} is out of range (at most {MAX_NUMBER})")
    return v


# --- bound arguments -> actions ---------------------------------------------------------------------


def _num(v: object, what: str) -> float:
    if type(v) not in (int, float):  # bool is not a number here
        raise ParseError(f"{what} must be a number, got {v!r:.40}")
    return float(v)  # type: ignore[arg-type]


def _whole(v: object, what: str) -> int:
    f = _num(v, what)
    if f != int(f):
        raise ParseError(f"{what} must be a whole number, got {v!r}")
    return int(f)


def _point(a: dict[str, object], rule: PointRule = "auto") -> Point | None:
    """(x, y) as pyautogui reads them: both, neither (the current position), or a pair in x."""
    x, y = a.get("x"), a.get("y")
    if isinstance(x, list):  # click((x, y)) is legal pyautogui
        if len(x) != 2 or y is not None:
            raise ParseError("a point is two coordinates: (x, y)")
        x, y = x
    if x is None and y is None:
        return None
    if x is None or y is None:
        raise ParseError("a point needs both x and y")
    fx, fy = _num(x, "x"), _num(y, "y")
    if fx < 0 or fy < 0:
        raise ParseError("coordinates must not be negative")
    if rule == "pixels":
        return Point.px(fx, fy)
    if rule == "relative" and (fx > 1 or fy > 1):
        raise ParseError(f"coordinates are fractions of the screen from 0 to 1, got ({fx:g}, {fy:g})")
    if fx <= 1 and fy <= 1:
        return Point.norm(fx, fy)
    # A fractional value <= 1 beside a pixel value is a mix-up, not a pixel coordinate.
    if any(0 < v < 1 for v in (fx, fy)):
        raise ParseError(f"mixes a normalised and a pixel coordinate ({fx:g}, {fy:g})")
    return Point.px(fx, fy)


def _keys(v: object, what: str) -> list[str]:
    items = v if isinstance(v, list) else [v]
    if not items or not all(isinstance(k, str) for k in items):
        raise ParseError(f"{what} must be key names (strings), got {v!r:.40}")
    return items  # type: ignore[return-value]


def _check_timing(a: dict[str, object]) -> None:
    for p in _TIMING & a.keys():
        if a[p] is not None and _num(a[p], p) < 0:
            raise ParseError(f"{p} must not be negative")


_MOUSE = {"click", "leftClick", "rightClick", "middleClick", "doubleClick", "tripleClick", "moveTo", "dragTo"}


def _to_action(name: str, a: dict[str, object], last: Point | None, points: PointRule) -> list[Action]:
    _check_timing(a)
    short = name.split(".", 1)[1]
    if short == "triple_click":  # computer.triple_click(x, y): both required, as its spec says
        if a.get("x") is None or a.get("y") is None:
            raise ParseError("needs x and y")
        short = "tripleClick"
    if short in _MOUSE:
        return [_mouse(short, a, last, points)]
    if short in ("scroll", "vscroll", "hscroll"):
        clicks = _whole(a.get("clicks"), "clicks")
        if clicks == 0:
            raise ParseError(f"{short}(0) scrolls nothing")
        if abs(clicks) > 100:
            raise ParseError(f"clicks must be between -100 and 100, got {clicks}")
        up = clicks > 0
        direction = ("right" if up else "left") if short == "hscroll" else ("up" if up else "down")
        return [Scroll(point=_point(a, points), direction=direction, amount=abs(clicks))]
    if short in ("write", "typewrite"):
        msg = a.get("message")
        if isinstance(msg, list):  # typewrite(["a", "enter"]) presses keys
            return _press_sequence(_keys(msg, "message"), 1)
        if not isinstance(msg, str):
            raise ParseError(f"needs the text to type, got {msg!r:.40}")
        return [TypeText(text=msg)]
    if short == "press":
        presses = _whole(a.get("presses", 1), "presses")
        if presses < 1:
            raise ParseError(f"presses={presses} presses nothing")
        return _press_sequence(_keys(a.get("keys"), "keys"), presses)
    if short == "hotkey":
        keys = a["*"]
        if isinstance(keys, list) and len(keys) == 1 and isinstance(keys[0], list):
            keys = keys[0]  # hotkey(['ctrl', 'c']) is legal pyautogui
        if not keys:
            raise ParseError("needs at least one key")
        return [Hotkey(keys=_keys(keys, "keys"))]
    if short in ("keyDown", "keyUp"):
        key = a.get("key")
        if not isinstance(key, str):
            raise ParseError(f"key must be one key name (a string), got {key!r:.40}")
        return [KeyDown(key=key) if short == "keyDown" else KeyUp(key=key)]
    if short in ("wait", "sleep"):
        secs = a.get("seconds", a.get("secs", DEFAULT_WAIT_S))
        return [Wait(seconds=_num(secs, "seconds"))]
    if short == "terminate":
        return [_terminate(a)]
    raise ParseError("is not supported")


def _mouse(short: str, a: dict[str, object], last: Point | None, points: PointRule) -> Action:
    point = _point(a, points)
    button = a.get("button", "left")
    button = _BUTTONS.get(button, button) if isinstance(button, str) else button
    if short == "moveTo":
        if point is None:
            raise ParseError("needs x and y")
        return Move(point=point)
    if short == "dragTo":
        if point is None:
            raise ParseError("needs x and y")
        if last is None:
            raise ParseError("needs a start point: pyautogui.moveTo(x, y) before it in the same block")
        return Drag(start=last, end=point, button=button)  # type: ignore[arg-type]
    point = point or last  # no point: where the previous action left the pointer
    if point is None:
        raise ParseError("needs x and y")
    clicks = {"doubleClick": 2, "tripleClick": 3}.get(short, a.get("clicks", 1))
    button = {"rightClick": "right", "middleClick": "middle", "leftClick": "left"}.get(short, button)
    return Click(point=point, clicks=clicks, button=button)  # type: ignore[arg-type]


def _terminate(a: dict[str, object]) -> Done:
    status = a.get("status", "success")
    norm = _STATUS.get(status.strip().lower()) if isinstance(status, str) else None
    if norm is None:
        raise ParseError(f"status must be 'success' or 'failure', got {status!r:.40}")
    answer = a.get("answer")
    if type(answer) in (int, float):
        answer = repr(answer)
    elif answer is not None and not isinstance(answer, str):
        raise ParseError(f"answer must be text, got {answer!r:.40}")
    return Done(status=norm, answer=answer)  # type: ignore[arg-type]


def _press_sequence(keys: list[str], presses: int) -> list[Action]:
    """pyautogui.press(keys, presses) presses the whole list ``presses`` times; repeats of one key in a
    row become one KeyPress with ``presses``."""
    if len(keys) * presses > MAX_ACTIONS:
        raise ParseError(
            f"{len(keys) * presses} key presses in one call are too many (at most {MAX_ACTIONS})"
        )
    if len(keys) == 1:
        return [KeyPress(key=keys[0], presses=presses)]
    out: list[KeyPress] = []
    for k in keys * presses:
        kp = KeyPress(key=k)
        if out and out[-1].key == kp.key and out[-1].presses < 50:
            out[-1] = KeyPress(key=kp.key, presses=out[-1].presses + 1)
        else:
            out.append(kp)
    return out  # type: ignore[return-value]


def _end_point(action: Action) -> Point | None:
    if isinstance(action, Drag):
        return action.end
    return getattr(action, "point", None)


INLINE_CALL = re.compile(r"\b(?:pyautogui|computer)\.[A-Za-z]\w{0,30}[ \t]*\(")


def first_inline_point(answer: str, points: PointRule = "auto") -> Point | None:
    """The first call with a point that stands anywhere on a line, read alone. Each call is cut at
    its closing parenthesis on the same line (depth counted outside quotes); at most MAX_CALLS
    candidates are tried, and each is read by the same allow-list as any code."""
    for tried, m in enumerate(INLINE_CALL.finditer(answer)):
        if tried >= MAX_CALLS:
            break
        end = _call_end(answer, m.end())
        if end is None:
            continue
        try:
            actions = parse_code(answer[m.start() : end], points)
        except (ParseError, RecursionError, ValueError, TypeError):
            continue
        for action in actions:
            point = getattr(action, "point", None)
            if point is not None:
                return point
    return None


def _call_end(text: str, start: int) -> int | None:
    """The index after the parenthesis closing the one before ``start``, on the same line."""
    depth, quote = 1, ""
    for i in range(start, min(len(text), start + 400)):
        c = text[i]
        if c == "\n":
            return None
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
    return None
