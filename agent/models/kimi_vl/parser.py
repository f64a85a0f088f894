"""Kimi-VL replies -> typed actions: ``◁think▷`` thinking, then ``## Thought`` / ``## Action`` /
``## Code`` sections (or OpenCUA's bare ``Thought:`` / ``Action:`` labels) and a fenced code block,
whose pyautogui calls agent.models.pyautogui_code reads.

Every failure is returned as a one-line error (it goes back to the model), never raised. Every step is
linear in the reply's length (no backtracking regex over the reply), and replies longer than
``MAX_REPLY_CHARS`` are not scanned.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from agent.models.pyautogui_code import ParseError, first_inline_point, read_code, reading_code
from agent.models.reply import ParsedReply, cut_note, start_reply
from env.actions import Point

THINK_OPEN, THINK_CLOSE = "◁think▷", "◁/think▷"
# 8192 tokens (Thinking's max_new_tokens) are ~40k characters of prose; whitespace runs pack more
# characters per token, so the cap is generous. Beyond it a reply is refused, not scanned.
MAX_REPLY_CHARS = 250_000
CODE_TAGS = {"", "python", "py", "python3", "code"}  # ```code is how OSWorld's Kimi/OpenCUA agents fence


def split_thinking(text: str) -> tuple[str | None, str, bool]:
    """(thinking, answer, cut_off). ``cut_off``: the reply ended inside the thinking."""
    if THINK_CLOSE in text:
        thinking, _, answer = text.partition(THINK_CLOSE)
        return thinking.replace(THINK_OPEN, "").strip(), answer.strip(), False
    if THINK_OPEN in text:
        return text.split(THINK_OPEN, 1)[1].strip(), "", True
    return None, text.strip(), False


# --- the reply's layout: fences and section headers, both found in one linear pass ---------------------


@dataclass(frozen=True)
class _Fence:
    tag: str  # the info word after ``` (lower case), "" if none
    code: str
    start: int
    end: int  # index after the closing ``` (len(text) if unclosed)
    closed: bool


_WORD = re.compile(r"[\w+.-]{1,20}")  # an info string such as python, py, code, bash


def _fences(text: str) -> list[_Fence]:
    """Fenced blocks, left to right, with str.find only (each character is looked at a bounded number of
    times). The closing ``` may end a line of code, as models often write it."""
    out: list[_Fence] = []
    pos = 0
    while (start := text.find("```", pos)) >= 0:
        body = start + 3
        while body < len(text) and text[body] == "`":  # ```` opens a fence too
            body += 1
        close = text.find("```", body)
        eol = text.find("\n", body)
        eol = len(text) if eol < 0 else eol
        if 0 <= close < eol:  # ```python pyautogui.click(0.5, 0.5)``` on one line
            tag, _, rest = text[body:close].strip().partition(" ")
            tag, code = (tag.lower(), rest) if tag.lower() in CODE_TAGS and rest else ("", text[body:close])
        else:
            info = text[body:eol].strip()
            if not info or _WORD.fullmatch(info):
                tag, code = info.lower(), text[eol + 1 : close if close >= 0 else len(text)]
            else:  # ```pyautogui.click(...) : code right after the backticks
                tag, code = "", text[body : close if close >= 0 else len(text)]
        if close < 0:
            out.append(_Fence(tag, code.rstrip("`"), start, len(text), closed=False))
            break
        end = close + 3
        while end < len(text) and text[end] == "`":
            end += 1
        out.append(_Fence(tag, code, start, end, closed=True))
        pos = end
    return out


# "## Thought", "## Action:", "# Code" (alone on the line or followed by a colon) and OpenCUA's bare
# "Thought:" / "Action:" labels. Linear by construction: every [ \t]* is followed by a character it
# cannot match ('#', a letter, ':' or the line end), so a failed attempt backtracks only over its own
# line's run of blanks, never across lines (the old ``^\s*`` crossed newlines: quadratic).
_SECTION_NAMES = "thought|action|code|observation"
_HEADER = re.compile(
    rf"^[ \t]*(?:#{{1,3}}[ \t]*({_SECTION_NAMES})[ \t]*(?::|\r?$)|({_SECTION_NAMES})[ \t]*:)", re.I | re.M
)
MAX_FENCE_MARKS = 100  # a real reply has a few ``` ; thousands are noise, refused before any scan
MAX_HEADERS = 200


@dataclass
class _Layout:
    fences: list[_Fence]
    sections: dict[str, str]  # first occurrence of each header -> its text
    first_mark: int  # where the first header or fence starts (len(text) if none)


def _layout(text: str) -> _Layout:
    n = text.count("```")
    if n > MAX_FENCE_MARKS:
        raise ParseError(f"too many ``` fences ({n}); give one ```python block")
    fences = _fences(text)
    starts = [f.start for f in fences]
    marks: list[tuple[str, int, int]] = []  # (name, header start, content start)
    fi = 0
    for m in _HEADER.finditer(text):
        while fi < len(fences) and fences[fi].end <= m.start():
            fi += 1
        if fi < len(fences) and fences[fi].start <= m.start():
            continue  # a "# code" comment inside a fence is not a header
        marks.append(((m.group(1) or m.group(2)).lower(), m.start(), m.end()))
        if len(marks) >= MAX_HEADERS:
            break
    sections: dict[str, str] = {}
    for i, (name, _, content) in enumerate(marks):
        if name in sections:
            continue
        end = marks[i + 1][1] if i + 1 < len(marks) else len(text)
        j = bisect.bisect_left(starts, content)  # a section also ends where a fence begins
        end = min(end, starts[j]) if j < len(starts) else end
        sections[name] = text[content:end].strip()
    first = [m[1] for m in marks[:1]] + starts[:1]
    return _Layout(fences, sections, min(first, default=len(text)))


# With neither fence nor header, the lines that are calls (linear for the same reason as _HEADER).
_CALL_LINE = re.compile(r"^[ \t]*((?:pyautogui|computer)\.[^\n]*)", re.M)


def _code(layout: _Layout, answer: str, finish_reason: str) -> tuple[str, list[str]]:
    blocks = [f for f in layout.fences if f.tag in CODE_TAGS]
    notes: list[str] = []
    if blocks:
        last = blocks[-1]
        if not last.closed and finish_reason == "length":
            raise ParseError("the code block was cut off (the reply hit max_new_tokens)")
        if len(blocks) > 1:
            n = len(blocks) - 1
            notes.append(
                f"{n} earlier code block{'s were' if n > 1 else ' was'} ignored; only the last one runs"
            )
        return last.code.strip(), notes
    if layout.fences:
        tag = layout.fences[-1].tag
        raise ParseError(f"the code is fenced as ```{tag}; write pyautogui calls in a ```python block")
    code = layout.sections.get("code")
    if code:
        return code.strip("`").strip(), notes
    return "\n".join(m.group(1).rstrip() for m in _CALL_LINE.finditer(answer)), notes


def parse_reply(text: str, finish_reason: str = "stop") -> ParsedReply:
    out, text = start_reply(text, MAX_REPLY_CHARS)
    if out.error:
        return out
    with reading_code(out):
        thinking, answer, cut_off = split_thinking(text)
        out.thinking = thinking
        if cut_off:
            out.error = "reply cut off inside thinking (no ◁/think▷); no action was given"
            return out
        layout = _layout(answer)
        out.action_text = " ".join(layout.sections.get("action", "").split())
        thought = layout.sections.get("thought")
        out.thought = (answer[: layout.first_mark] if thought is None else thought).strip()
        out.code, notes = _code(layout, answer, finish_reason)
        if not out.code:
            cut = cut_note(finish_reason)
            out.error = f"no ## Code block with an action{cut}"
            return out
        out.actions, more = read_code(out.code)
        out.notes = notes + more
    return out


def parse_grounding(text: str) -> Point | None:
    """The first click of a grounding reply, or None (ScreenSpot's ``wrong_format``).

    A grounding answer is judged by its point alone, so a reply whose code does not read as a
    block (``Click the button: pyautogui.click(x=0.2, y=0.1)``, a call after prose on its line)
    still gives its first call with a point. The agent loop keeps the strict reading: there the
    model is told what was wrong and asked again."""
    reply = parse_reply(text)
    for action in reply.actions:
        point = getattr(action, "point", None)
        if point is not None:
            return point
    if reply.error is None or len(text) > MAX_REPLY_CHARS:
        return None  # the code read, and holds no click (a decline)
    _, answer, cut_off = split_thinking(text)
    return None if cut_off else first_inline_point(answer)
