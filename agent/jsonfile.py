"""Reading a JSON file that a user, a tool or an earlier run wrote, with every failure one line that
names the file: unreadable, not UTF-8, not JSON (with line and column), or nested too deeply.

Python's json module recurses once per ``[`` or ``{``: a file of 100,000 ``[`` raises RecursionError,
which is neither a ValueError nor a message that says which file. Every reader of task, split,
results and run files goes through ``read_json`` so that such a file is a ``JSONFileError`` like
any other bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class JSONFileError(ValueError):
    """A JSON file that cannot be used; the message is one line starting with the file's path."""


def loads_json(text: str | bytes, source: Path | str) -> Any:
    """``text`` parsed as JSON, or a JSONFileError naming ``source``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise JSONFileError(f"{source} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise JSONFileError(f"{source} is not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        # The C decoder gives up cleanly (it checks the depth before each nested value).
        raise JSONFileError(f"{source} is not usable JSON: nested too deeply (arrays or objects)") from None


def read_json(path: Path | str) -> Any:
    """The JSON value in ``path``, or a JSONFileError naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise JSONFileError(f"{path}: cannot read: {e.strerror or e}") from None
    return loads_json(data, path)


def validation_line(source: Path | str, what: str, e: ValidationError) -> str:
    """A pydantic error as one line: the file, what it should have been, the first wrong field."""
    errors = e.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source} is not {what}: {where}: {first['msg']}{more}"


def read_model(path: Path | str, model: type[M], what: str) -> M:
    """``path`` read as JSON and validated as ``model``; any problem is one JSONFileError line.
    ``what`` says what the file should be ("a run record")."""
    data = read_json(path)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise JSONFileError(validation_line(path, what, e)) from None
