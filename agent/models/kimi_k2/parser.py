"""Kimi K2.5 / K2.6 replies -> typed actions, in the grammar of OSWorld's ``mm_agents/kimi`` agent.

The grammar (/work/wt/i21-facts.md 1.1 and 1.4; the agent's prompt and parser as they read in the forks
YangYzzzz/OSSymphony-Selfuse ``mm_agents/kimi/kimi_agent.py`` @ 2f96870592cf44d31a0436204bb91574414ea00f
and ljxpython/OSWorldUse @ 4c8127b50bdfed671e51bb9ddd434e448ad17e07, which agree):

    (thinking: in the server's reasoning_content / reasoning field, not in the text)
    [## Thought:            only when thinking is off
    text]
    ## Action:
    one sentence in the model's words
    ## Code:
    ```python               or ```code, or a bare ```
    pyautogui.click(x=0.412, y=0.087)
    ```

The last fenced block is the code; ``computer.wait()`` and ``computer.terminate(status=..., answer=...)``
stand alone in it. Points whose values are both <= 1 are fractions of the screenshot, else pixels of
it (the agent's rule); agent/models/pyautogui_code.py reads the code against its allow-list, never
executing it.

Stricter than the reference where it would guess: a block fenced as another language, a code block
missing, pyautogui code without an ``## Action`` section, a thought cut off by max_tokens are
one-line errors (the model is asked again), never a guess. When K2 is served without a reasoning
parser its thinking arrives inline as ``<think>...</think>``; the ``◁think▷`` markers the agent's
history replays are taken the same way if the model echoes them.

Linear in the reply's length: one pass over its lines, no regex that backtracks across lines.
"""

from __future__ import annotations

import re

from agent.models.pyautogui_code import ParseError, read_code, reading_code
from agent.models.reply import ParsedReply, start_reply
from env.actions import Done, Wait

MAX_REPLY_CHARS = 250_000
THINK_MARKERS = (("<think>", "</think>"), ("◁think▷", "◁/think▷"))
CODE_TAGS = {"", "python", "py", "python3", "code"}  # ```code is how OSWorld's Kimi agent fences
# "## Action:", "##Action", "# Code" at a line's start; the rest of the line may hold the section's text.
_HEADER = re.compile(r"[ \t]*#{1,3}[ \t]*(thought|action|code)\b[ \t]*:?(.*)", re.I)
_TAG = re.compile(r"[\w+.-]{0,20}")


def split_thinking(text: str) -> tuple[str | None, str, bool]:
    """(inline thinking, answer, cut off inside the thinking)."""
    for open_, close in THINK_MARKERS:
        if close in text:
            thinking, _, answer = text.partition(close)
            return thinking.replace(open_, "").strip(), answer.strip(), False
        if text.lstrip().startswith(open_):
            return text.split(open_, 1)[1].strip(), "", True
    return None, text.strip(), False


class _Reply:
    """The reply's sections and fenced blocks, from one pass over its lines."""

    def __init__(self, answer: str) -> None:
        self.sections: dict[str, list[str]] = {}
        self.before: list[str] = []  # text before the first header or fence
        self.blocks: list[tuple[str, list[str], bool]] = []  # (tag, lines, closed)
        section: str | None = None
        fence: tuple[str, list[str]] | None = None
        for line in answer.split("\n"):
            if fence is not None:
                stripped = line.rstrip()
                if stripped.endswith("```"):  # a closing fence, or code ending in ``` on its line
                    last = stripped[:-3].rstrip("`")
                    if last.strip():
                        fence[1].append(last)
                    self.blocks.append((fence[0], fence[1], True))
                    fence = None
                else:
                    fence[1].append(line)
                continue
            stripped = line.strip()
            if stripped.startswith("```"):
                section = None
                info = stripped[3:].lstrip("`")
                if info.endswith("```") and len(info) > 3:  # ```python pyautogui.click(0.5, 0.5)```
                    tag, _, code = info[:-3].strip().partition(" ")
                    tag, code = (tag, code) if tag.lower() in CODE_TAGS and code else ("", info[:-3])
                    self.blocks.append((tag.lower(), [code], True))
                elif _TAG.fullmatch(info.strip()):
                    fence = (info.strip().lower(), [])
                else:  # ```pyautogui.click(...) : code right after the backticks
                    fence = ("", [info])
                continue
            m = _HEADER.match(line)
            if m:
                section = m.group(1).lower()
                lines = self.sections.setdefault(section, [])
                if m.group(2).strip():
                    lines.append(m.group(2))
                continue
            if section is not None:
                self.sections[section].append(line)
            elif not self.sections and not self.blocks:
                self.before.append(line)
        if fence is not None:
            self.blocks.append((fence[0], fence[1], False))

    def text(self, section: str) -> str:
        return "\n".join(self.sections.get(section, [])).strip()


def parse_reply(text: str, finish_reason: str = "stop") -> ParsedReply:
    """The reply's thought, action sentence and actions; ``error`` (one line) where it cannot be used."""
    out, text = start_reply(text, MAX_REPLY_CHARS)
    if out.error:
        return out
    thinking, answer, cut_off = split_thinking(text)
    out.thinking = thinking
    if cut_off:
        out.error = "reply cut off inside its thinking (no </think>); no action was given"
        return out
    with reading_code(out):
        reply = _Reply(answer)
        out.thought = reply.text("thought") or "\n".join(reply.before).strip()
        out.action_text = " ".join(reply.text("action").split())
        out.code = _code(reply, finish_reason)
        out.actions, out.notes = read_code(out.code)
        alone = len(out.actions) == 1 and isinstance(out.actions[0], (Wait, Done))
        if not out.action_text and not alone:
            raise ParseError("no ## Action: section saying what the code does")
    return out


def _code(reply: _Reply, finish_reason: str) -> str:
    if not reply.blocks:
        cut = " (the reply hit max_tokens)" if finish_reason == "length" else ""
        raise ParseError(f"no ```python code block after ## Code:{cut}")
    tag, lines, closed = reply.blocks[-1]  # the last block, as the reference agent takes it
    if not closed and finish_reason == "length":
        raise ParseError("the code block was cut off (the reply hit max_tokens)")
    if tag not in CODE_TAGS:
        raise ParseError(
            f"the code is fenced as ```{tag}; write pyautogui or computer.* calls in a ```python block"
        )
    code = "\n".join(lines).strip()
    if not code:
        raise ParseError("the code block is empty")
    return code
