"""OpenCUA replies -> typed actions. Strict: an ``Action`` section and a fenced code block are required.

The formats (read from these sources; no code taken from them):
- V2 prompts (OSWorld's default, OpenCUA-72B): ``# Step: n`` then ``## Observation:`` (L3),
  ``## Thought:`` (L2, L3), ``## Action:`` and ``## Code:`` with a fenced block (```python or ```code);
  fxsc03/OSWorld-main-nex mm_agents/opencua/prompts.py @ cfe2c9ba11f8294749f51d06b2c77553759cdc1e
  (``l1/l2/l3_format_instruction``).
- V1 prompts (the training data's, OpenCUA-7B/32B with ``--use_old_sys_prompt``): bare labels
  ``Observation:`` / ``Thought:`` / ``Action:`` and the code after them; same file (``SYSTEM_PROMPT_V1_*``).
- OSWorld's parser for both (karakuri-ai/OSWorld-JP mm_agents/opencua/opencua_agent.py
  @ 3301bf9fd54cef911c6788543fba9da99bd4bfcf, ``parse_response_to_cot_and_action``): the sections
  after their header lines, the last fenced block as the code, a missing action or code is an error.

Differences from OSWorld's reading, on purpose: the code is read by the shared allow-list reader
(agent.models.pyautogui_code), never run, so ``computer.terminate(status="failure")`` is read from
its argument, not found as a substring, and ``computer.triple_click`` becomes a triple click.

Linear: one pass over the lines (each header test is a match anchored at a line start over that line
alone) and str.find for the fences.
"""

from __future__ import annotations

import re

from agent.models.pyautogui_code import ParseError, PointRule, read_code, reading_code
from agent.models.reply import ParsedReply, cut_note, start_reply

MAX_REPLY_CHARS = 100_000  # 2048 tokens (max_new_tokens) are ~10k characters; beyond this, not read
MAX_FENCES = 40
CODE_TAGS = {"", "python", "code", "py"}  # OpenCUA fences ```python and ```code
# A header line: "## Action:", "## Thought", "Action:" (V1), with nothing else on the line.
# (linear: the blanks after the name are one run, a colon then one more)
_HEADER = re.compile(
    r"[ \t]{0,3}(?:#{1,3}[ \t]{0,3})?(observation|thought|action|code)[ \t]*(?::[ \t]*)?", re.I
)
_STEP = re.compile(r"[ \t]{0,3}#{1,3}[ \t]{0,3}step\b.{0,40}", re.I)  # "# Step: 3" / "# Step 3:"


def _fences(text: str) -> tuple[list[tuple[str, str, int]], bool]:
    """([(tag, body, start)], last fence closed). A fence's info word runs to its line's end."""
    out: list[tuple[str, str, int]] = []
    pos = 0
    while (start := text.find("```", pos)) >= 0:
        if len(out) >= MAX_FENCES:
            raise ParseError(f"too many ``` fences (more than {MAX_FENCES}); give one ```python block")
        eol = text.find("\n", start + 3)
        if eol < 0:
            return out, False
        tag = text[start + 3 : eol].strip().lower()
        close = text.find("```", eol + 1)
        if close < 0:
            out.append((tag, text[eol + 1 :], start))
            return out, False
        out.append((tag, text[eol + 1 : close], start))
        pos = close + 3
    return out, True


def _sections(text: str) -> dict[str, str]:
    """The first occurrence of each section -> its text (up to the next header, step line or fence)."""
    sections: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    in_fence = False

    def close() -> None:
        if current is not None and current not in sections:
            sections[current] = "\n".join(lines).strip()

    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            close()
            current, lines = None, []
            continue
        if in_fence:
            continue
        m = _HEADER.fullmatch(line)
        if m:
            close()
            current, lines = m.group(1).lower(), []
        elif _STEP.fullmatch(line):
            close()
            current, lines = None, []
        elif current is not None:
            lines.append(line)
    close()
    return sections


def parse_reply(text: str, finish_reason: str = "stop", points: PointRule = "auto") -> ParsedReply:
    """``points``: how the code's coordinates are read ("relative" for A3B, "pixels" for 7B/32B/72B:
    pixels of the image the model saw, which the profile maps to the screenshot)."""
    out, text = start_reply(text, MAX_REPLY_CHARS)
    if out.error:
        return out
    cut = cut_note(finish_reason)
    with reading_code(out, pathological=False):
        fences, closed = _fences(text)
        sections = _sections(text)
        out.thought = sections.get("thought", "")
        out.action_text = " ".join(sections.get("action", "").split())
        if not out.action_text:
            out.error = f"no ## Action: section{cut}"
            return out
        blocks = [f for f in fences if f[0] in CODE_TAGS]
        if not blocks:
            tags = sorted({f"```{t}" for t, _, _ in fences})
            why = f" (fenced as {', '.join(tags)})" if tags else ""
            out.error = f"no ```python code block{why}{cut}"
            return out
        if not closed and blocks[-1] is fences[-1]:
            out.error = f"the code block is not closed{cut}"
            return out
        out.code = blocks[-1][1].strip()
        out.actions, out.notes = read_code(out.code, points)
        if len(blocks) > 1:
            out.notes.insert(0, f"{len(blocks) - 1} earlier code block(s) ignored; only the last one runs")
    return out
