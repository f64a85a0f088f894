"""Prompt templates, shipped as package data.

Layout: templates shared by every prompt profile lie here (``prompts/NAME.md``); a profile's own
templates lie in its sub-directory (``prompts/PROFILE/NAME.md``) and take precedence. A user's
directory (``--prompt-dir``) takes precedence over both, template by template, so a published
setup can be reproduced with its exact text.

Placeholders are ``{name}`` (``str.format`` syntax, bare names only; write ``{{`` / ``}}`` for a
literal brace). Values are inserted verbatim: braces inside a task or a thought need no escaping.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


@cache
def load_prompt(name: str) -> str:
    """A shared packaged template (``prompts/NAME.md``)."""
    path = files(__name__) / f"{name}.md"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt template named {name!r}")
    return path.read_text(encoding="utf-8").strip()


def packaged_profiles() -> list[str]:
    return sorted(p.name for p in files(__name__).iterdir() if p.is_dir() and _templates(p))


def _templates(folder: Traversable) -> dict[str, Traversable]:
    return {p.name[:-3]: p for p in folder.iterdir() if p.is_file() and p.name.endswith(".md")}


def packaged_names() -> set[str]:
    """Every template name the package ships, in any profile."""
    root = files(__name__)
    names = set(_templates(root))
    for profile in packaged_profiles():
        names |= set(_templates(root / profile))
    return names


def placeholders(text: str, where: str) -> set[str]:
    """The ``{names}`` in a template; ValueError (one line, naming ``where``) for anything else."""
    try:
        fields = [(f, conv, spec) for _, f, spec, conv in string.Formatter().parse(text) if f is not None]
    except ValueError as e:
        raise ValueError(f"prompt template {where}: {e} (write {{{{ or }}}} for a literal brace)") from None
    for f, conv, spec in fields:
        if not f.isidentifier() or conv or spec:
            shown = "{" + f + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"prompt template {where}: {shown} is not a placeholder (use a bare {{name}})")
    return {f for f, _, _ in fields}


def load_profile(
    profile: str, names: Iterable[str], user_dir: Path | None = None, family: str | None = None
) -> dict[str, tuple[str, str]]:
    """name -> (text, where it came from) for ``names``: the user's directory first, then a model
    family's own templates (``prompts/models/FAMILY/``, where the model profile names one), then the
    profile's packaged templates, then the shared ones. ValueError (one line) when a template is
    missing or the user's directory holds a file that is no template."""
    root = files(__name__)
    if not (root / profile).is_dir():
        raise ValueError(f"unknown prompt profile {profile!r} (packaged: {', '.join(packaged_profiles())})")
    layers: list[tuple[str, dict[str, Traversable]]] = []
    if user_dir is not None:
        if not user_dir.is_dir():
            raise ValueError(f"prompt directory {user_dir} does not exist or is not a directory")
        # The directory may mirror the package: its <profile>/ folder first, then its own files.
        for folder in (user_dir / profile, user_dir):
            if not folder.is_dir():
                continue
            mine = {p.name[:-3]: p for p in folder.iterdir() if p.is_file() and p.suffix == ".md"}
            unknown = sorted(set(mine) - packaged_names())
            if unknown:
                raise ValueError(
                    f"prompt directory {folder}: {unknown[0]}.md is not a template name "
                    f"(known: {', '.join(sorted(packaged_names()))})"
                )
            layers.append((str(folder), mine))
    if family is not None:
        folder = root / "models" / family
        if not folder.is_dir():
            raise ValueError(f"no packaged prompts for the model family {family!r}")
        layers.append((f"prompts/models/{family}", _templates(folder)))
    layers.append((f"prompts/{profile}", _templates(root / profile)))
    layers.append(("prompts", _templates(root)))
    out: dict[str, tuple[str, str]] = {}
    for name in names:
        for where, found in layers:
            if name in found:
                out[name] = (_read(found[name], f"{where}/{name}.md"), f"{where}/{name}.md")
                break
        else:
            raise ValueError(f"prompt profile {profile!r} has no template {name}.md")
    return out


def _read(path: Traversable, where: str) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as e:
        raise ValueError(f"prompt template {where} is not UTF-8 text (byte {e.start})") from None
    if not text:
        raise ValueError(f"prompt template {where} is empty")
    return text
