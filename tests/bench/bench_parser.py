"""Hostile-reply figures for the parser: fuzzed replies, crashes, hangs, executions, worst parse time.

- fuzzed: real-shaped replies mutated at random, random call scripts and random text (seeded).
- crashes: exceptions that escape parse_reply (it must return every failure as ParsedReply.error).
- hangs: replies that took longer than 100 ms to parse.
- executions: canary replies whose code, if anything ran it, would create a file, spawn a process or
  exec code; an audit hook (sys.addaudithook) watches for those events and the canary directory must
  stay empty.
- worst parse time: adversarial layouts (long whitespace runs, many headers, deep nesting, unclosed
  fences) at up to 250,000 characters, each the best of 3 runs (a shared machine adds noise).

Run: .venv/bin/python tests/bench/bench_parser.py [--replies N] [--seed S]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.models.kimi_vl.parser import MAX_REPLY_CHARS, parse_reply

HANG_S = 0.100

SEEDS = [
    "## Thought\nThe Save dialog is open.\n\n## Action:\nType the name.\n\n## Code:\n```python\n"
    "pyautogui.click(x=0.412, y=0.305)\npyautogui.write('report.txt')\npyautogui.press('enter')\n```",
    "◁think▷The terminal icon is at the left.◁/think▷## Action:\nDouble-click it\n## Code:\n```python\n"
    "pyautogui.doubleClick(0.031, 0.402)\n```",
    "## Action:\nFinish.\n```code\ncomputer.terminate(status='fail', answer='no such file')\n```",
    "Thought:\nwait\nAction:\nWait.\n```code\ncomputer.wait()\n```",
    "```python\nx, y = 0.42, 0.17\npyautogui.click(x, y)\npyautogui.hotkey('ctrl', 'c')\n```",
    "```python\npyautogui.moveTo(0.1, 0.1)\npyautogui.dragTo(0.5, 0.6, duration=0.5)\npyautogui.scroll(-5)\n```",
    "```python\npyautogui.press(['tab', 'enter'], presses=2)\npyautogui.keyDown('shift')\n```",
]
ATOMS = [
    "pyautogui.click", "pyautogui.doubleClick", "pyautogui.rightClick", "pyautogui.moveTo", "pyautogui.dragTo",
    "pyautogui.scroll", "pyautogui.hscroll", "pyautogui.write", "pyautogui.press", "pyautogui.hotkey",
    "pyautogui.keyDown", "computer.terminate", "computer.wait", "time.sleep", "os.system", "__import__",
    "pyautogui.__class__", "eval", "x",
]  # fmt: skip
ARGS = [
    "0.5", "0.25", "960", "-1", "1e308", "10**9", "True", "None", "'enter'", "'ctrl'", "'\\u202e'", "'a\\x00'",
    "[0.1, 0.2]", "(1, 2)", "[[1]]", "x", "y", "x=0.5", "y=0.5", "x=0.9", "clicks=2", "clicks='3'",
    "button='right'", "presses=3", "keys='alt'", "status='fail'", "answer=42", "tween='linear'", "*a", "**k",
    "lambda: 1", "f'{x}'", "__import__('os')", "'" + "a" * 50 + "'",
]  # fmt: skip
NOISE = "`#\n \t()'\"=,.:;[]{}\\◁▷/think0123456789xyabc_-+*\r\u202e\x00"


def mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 6)):
        i = rng.randrange(len(text) + 1)
        op = rng.randrange(4)
        if op == 0:
            text = text[:i] + "".join(rng.choice(NOISE) for _ in range(rng.randint(1, 4))) + text[i:]
        elif op == 1:
            text = text[:i] + text[i + rng.randint(1, 8) :]
        elif op == 2:
            j = rng.randrange(len(text) + 1)
            a, b = min(i, j), max(i, j)
            text = text[:b] + text[a:b] * rng.randint(1, 3) + text[b:]
        else:
            text = text[:i] + rng.choice(ARGS) + text[i:]
    return text


def random_script(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(1, 6)):
        if rng.random() < 0.2:
            lines.append(f"{rng.choice(['x', 'y', 'x, y', 'p'])} = {rng.choice(ARGS)}")
        else:
            args = ", ".join(rng.choice(ARGS) for _ in range(rng.randint(0, 4)))
            lines.append(f"{rng.choice(ATOMS)}({args})")
    fence = rng.choice(["```python", "```code", "```", "```py", ""])
    return f"## Code:\n{fence}\n" + "\n".join(lines) + ("\n```" if fence else "")


def fuzzed(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            out.append(mutate(rng, rng.choice(SEEDS)))
        elif kind == 1:
            out.append(random_script(rng))
        else:
            out.append("".join(rng.choice(NOISE) for _ in range(rng.randint(0, 300))))
    return out


def canaries(d: Path) -> list[str]:
    """Replies whose code, if executed, would leave a file in ``d`` or start a process."""
    f = str(d / "canary")
    bodies = [
        f"open({f!r}, 'w').write('ran')",
        f"__import__('os').system('touch {f}')",
        f"import os\nos.system('touch {f}')",
        f"import subprocess\nsubprocess.run(['touch', {f!r}])",
        f"exec(\"open({f!r}, 'w')\")",
        f"eval(\"open({f!r}, 'w')\")",
        f"pyautogui.click(__import__('os').system('touch {f}'), 0.5)",
        f"pyautogui.write(open({f!r}, 'w').name)",
        f"x = open({f!r}, 'w')\npyautogui.click(0.5, 0.5)",
        f"x, y = __import__('os').system('touch {f}'), 1\npyautogui.click(x, y)",
        f"pyautogui.write(f\"{{open({f!r}, 'w')}}\")",
        f"(lambda: open({f!r}, 'w'))()",
        f"[open({f!r}, 'w') for _ in 'a']",
        f"(x := open({f!r}, 'w'))",
        f"def g(a=open({f!r}, 'w')):\n    pass\npyautogui.click(0.5, 0.5)",
        f"class C(metaclass=lambda *a: open({f!r}, 'w')):\n    pass",
        f"@open({f!r}, 'w')\ndef g():\n    pass",
        f"pyautogui.click.__globals__['os'].system('touch {f}')",
        f"pyautogui.__dict__['os'].system('touch {f}')",
        f"computer.terminate(answer=open({f!r}, 'w'))",
        f"pyautogui.hotkey(*open({f!r}, 'w'))",
        f"pyautogui.click(**{{'x': open({f!r}, 'w')}})",
        f"import pyautogui\npyautogui.write('ok')\n__import__('os').system('touch {f}')",
        f"try:\n    pass\nfinally:\n    open({f!r}, 'w')",
        f"with open({f!r}, 'w'):\n    pass",
        f"assert open({f!r}, 'w')",
        f"breakpoint()\nopen({f!r}, 'w')",
    ]
    fences = ["```python\n{}\n```", "```code\n{}\n```", "## Code:\n{}", "{}"]
    return [fence.format(body) for body in bodies for fence in fences]


def adversarial() -> dict[str, str]:
    ok = "```python\npyautogui.click(0.5, 0.5)\n```"
    n = MAX_REPLY_CHARS - 100
    return {
        "Thinking + 160k newlines + code": "Thinking" + "\n" * 160_000 + ok,
        "## Code + 20k spaces + x": "## Code" + " " * 20_000 + "x",
        "## Code + 250k spaces + x": "## Code" + " " * n + "x",
        "# + 250k spaces + x": "#" + " " * n + "x",
        "250k newlines + code": "\n" * n + ok,
        "'#\\n' x 125k": "#\n" * (n // 2),
        "'Action:' lines": "Action:\n" * (n // 8) + ok,
        "'## Action' + 100 spaces + x, lines": ("## Action" + " " * 100 + "x\n") * (n // 111),
        "\\r\\n headers": "## Code\r\n" * (n // 9) + ok,
        "tabs + code": "\t" * n + ok,
        "backticks": "`" * n,
        "``` per line": "```\n" * (n // 4),
        "50 fences": ("```python\npyautogui.click(0.5, 0.5)\n```\n" * 50)[:n],
        "unclosed fence + 250k": "```python\n" + "a" * n,
        "call-ish lines": ("pyautogui." + " " * 200 + "\n") * (n // 211),
        "thinking 250k": "◁think▷" + "a " * (n // 2) + "◁/think▷" + ok,
        "unclosed thinking": "◁think▷" * (n // 7),
        "deep unary (20k)": "```python\n" + "-" * 19_900 + "1\n```",
        "deep not (20k)": "```python\n" + "not " * 4_900 + "1\n```",
        "deep parens": "```python\n" + "(" * 5_000 + ")" * 5_000 + "\n```",
        "deep lists": "```python\n" + "[" * 5_000 + "]" * 5_000 + "\n```",
        "deep call chain": "```python\n" + "pyautogui.click(" * 1_000 + ")" * 1_000 + "\n```",
        "long attribute chain": "```python\n" + "a." * 9_000 + "b()\n```",
        "30 calls x 16-item lists": "```python\n" + ("pyautogui.press([" + "'a'," * 16 + "])\n") * 30 + "```",
        "over the cap": "x" * (MAX_REPLY_CHARS + 1),
    }


def timed(text: str) -> tuple[float, bool]:
    t0 = time.perf_counter()
    try:
        parse_reply(text)
        crashed = False
    except BaseException:  # a crash is what is counted here
        crashed = True
    return time.perf_counter() - t0, crashed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replies", type=int, default=30_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    for s in SEEDS:  # warm imports (pydantic, unicodedata) before the audit hook starts counting
        parse_reply(s)

    replies = fuzzed(args.replies, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        canary_dir = Path(tmp)
        hostile = canaries(canary_dir)
        events: list[str] = []

        def audit(event: str, a: tuple) -> None:
            if event in (
                "os.system",
                "subprocess.Popen",
                "os.posix_spawn",
                "os.fork",
                "os.exec",
                "pty.spawn",
            ):
                events.append(event)
            elif event == "open" and a and "canary" in str(a[0]):
                events.append(f"open {a[0]}")
            elif event == "exec" and a and not str(getattr(a[0], "co_filename", "")).endswith(".py"):
                events.append("exec of model code")

        sys.addaudithook(audit)
        exec(compile("pass", "<self-test>", "exec"))  # the hook must see what it is there to see
        with contextlib.suppress(FileNotFoundError):
            open(canary_dir / "canary-self-test")  # noqa: SIM115 - only the audit event matters
        assert events == ["exec of model code", f"open {canary_dir / 'canary-self-test'}"], events
        events.clear()
        crashes = hangs = 0
        worst_fuzz = 0.0
        for text in replies + hostile:
            dt, crashed = timed(text)
            crashes += crashed
            hangs += dt > HANG_S
            worst_fuzz = max(worst_fuzz, dt)
        left = list(canary_dir.iterdir())
        executions = len(events) + len(left)

    worst_name, worst = "", 0.0
    rows = []
    for name, text in adversarial().items():
        dt = min(timed(text)[0] for _ in range(3))
        crashed = timed(text)[1]
        crashes += crashed
        hangs += dt > HANG_S
        rows.append((name, len(text), dt, parse_reply(text).error))
        if dt > worst:
            worst_name, worst = name, dt

    print(f"fuzzed replies parsed : {len(replies)} (seed {args.seed})")
    print(f"canary replies        : {len(hostile)}")
    print(f"adversarial layouts   : {len(rows)}")
    print(f"crashes               : {crashes}  (exceptions out of parse_reply)")
    print(f"hangs (> 100 ms)      : {hangs}")
    print(f"executions            : {executions}  (audit events {events[:3]}, canary files {len(left)})")
    print(f"worst fuzzed parse    : {worst_fuzz * 1000:.2f} ms")
    print(f"worst adversarial     : {worst * 1000:.2f} ms  ({worst_name})")
    print()
    print(f"{'adversarial input':40s} {'chars':>8s} {'best of 3':>10s}  result")
    for name, n, dt, err in rows:
        print(f"{name:40s} {n:8d} {dt * 1000:8.2f}ms  {(err or 'ok')[:70]}")


if __name__ == "__main__":
    main()
