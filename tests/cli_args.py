"""The command line of a ``kimi-agent t`` run against an OpenAI-compatible server (the tests' loopback
one), written once for the tests that start such runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def openai_task(base_url: str, *flags: str) -> list[str]:
    """``t --backend openai --base-url base_url`` and then ``flags``."""
    return ["t", "--backend", "openai", "--base-url", base_url, *flags]


CLICKPAD = Path(__file__).with_name("clickpad.py")


def clickpad_app(log: str = "pad.jsonl") -> str:
    """tests/clickpad.py as a sandbox's ``--app`` (a managed window, which the sandbox waits for)."""
    return f"{sys.executable} {CLICKPAD} {log} --managed"


def clickpad_task(base_url: str, model: str, out: Path, size: tuple[int, int] = (1280, 800)) -> list[str]:
    """``click`` on a sandbox of ``size`` (width, height) kept after the run, tests/clickpad.py open
    full screen and recording where each press landed (into pad.jsonl in the sandbox's home)."""
    return ["click", "--backend", "openai", "--base-url", base_url, "--model", model, "--size", f"{size[0]}x{size[1]}",
            "--out", str(out), "--app", clickpad_app(), "--keep"]  # fmt: skip


def pad_downs(home: Path) -> list[tuple[int, int]]:
    """Where the clickpad saw each press, in order."""
    events = [json.loads(line) for line in (home / "pad.jsonl").read_text().splitlines()]
    return [(e["x"], e["y"]) for e in events if e["kind"] == "down"]
