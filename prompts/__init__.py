"""Prompt templates, shipped as package data. Placeholders are ``{name}`` (str.format)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def load_prompt(name: str) -> str:
    path = files(__name__) / f"{name}.md"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt template named {name!r}")
    return path.read_text(encoding="utf-8").strip()
