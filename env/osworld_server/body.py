"""A request's JSON body, decoded once and strictly, for every route that reads one.

Python's decoder accepts ``NaN``, ``Infinity`` and ``-Infinity`` (and turns ``1e999`` into infinity),
and a NaN slips through every range check (``nan <= 0`` and ``nan > 600`` are both False): a
non-finite number anywhere in a body is refused here, naming where it was, so no endpoint sees one.
"""

from __future__ import annotations

import json
import math
from collections import deque
from typing import Any

from flask import g
from werkzeug.exceptions import BadRequest


class BadBody(BadRequest):
    """A 400 with a one-line reason. An HTTP error, not a ValueError, so that an endpoint's own
    ``except ValueError`` (its 500 for a command that failed) cannot swallow it."""


def decode_object(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw``; {} for an empty body (the endpoint then says what is missing)."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except RecursionError:
        raise BadBody("the body is not valid JSON: it is nested too deep") from None
    except ValueError as e:  # UnicodeDecodeError and over-long integers included
        raise BadBody(f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadBody(f"the body must be a JSON object, not {type(data).__name__}")
    where = non_finite_at(data)
    if where is not None:
        name, value = where
        raise BadBody(f"{name} must be a finite number, not {json.dumps(value)}")
    return data


def non_finite_at(data: dict[str, Any]) -> tuple[str, float] | None:
    """Where the first NaN or infinity in a decoded body is (``settle.timeout_s``, ``a[2]``), and it.
    A loop, not recursion: the decoder already allowed as deep a body as the stack can take."""
    todo: deque[tuple[str, str | int, Any]] = deque(("", k, v) for k, v in data.items())
    while todo:
        parent, key, value = todo.popleft()
        if isinstance(value, float):
            if not math.isfinite(value):
                return _name(parent, key), value
        elif isinstance(value, dict):
            name = _name(parent, key)
            todo.extend((name, k, v) for k, v in value.items())
        elif isinstance(value, list):
            name = _name(parent, key)
            todo.extend((name, i, v) for i, v in enumerate(value))
    return None


def _name(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def request_json() -> dict[str, Any]:
    """This request's body as the app's guard decoded it (before_request, for every route that takes
    JSON rather than a form)."""
    body: dict[str, Any] = g.get("kimi_body", {})
    return body
