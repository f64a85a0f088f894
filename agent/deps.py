"""The transformers releases this install was tested with, and a one-line refusal of others.

The local backend builds Kimi-VL on transformers' Kimi-K2.5 classes, whose internals change between
releases (5.25 changed a vision helper's return type). The range is declared once, in pyproject.toml's
dependencies, and read back from the installed package's metadata; the versions CI tested are locked
in constraints.txt.
"""

from __future__ import annotations

import os
from importlib import metadata

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

from agent.backends.base import BackendError

DIST = "kimi-agent"
# Set to 1 to try a transformers release outside the tested range (the drift check does).
ANY_VERSION_VAR = "KIMI_AGENT_ANY_TRANSFORMERS"


def declared_range(package: str = "transformers", dist: str = DIST) -> str | None:
    """The version range kimi-agent's metadata declares for ``package`` (e.g. ">=5.20,<5.26"), or None
    when kimi-agent is not installed (run from a bare checkout) or declares none."""
    try:
        requires = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return None
    for line in requires:
        req = Requirement(line)
        if req.name == package and req.marker is None:
            return str(req.specifier)
    return None


def check_transformers(installed: str | None = None, supported: str | None = None) -> None:
    """Raise BackendError naming the supported range when the installed transformers is outside it."""
    if os.environ.get(ANY_VERSION_VAR) == "1":
        return
    if installed is None:
        import transformers

        installed = transformers.__version__
    supported = supported if supported is not None else declared_range()
    if not supported:
        return
    req = Requirement(f"transformers{supported}")
    try:
        ok = req.specifier.contains(Version(installed), prereleases=True)
    except InvalidVersion:
        ok = False
    if not ok:
        raise BackendError(
            f"kimi-agent's local backend supports transformers {supported}, found {installed}: "
            f"pip install 'transformers{supported}' (or set {ANY_VERSION_VAR}=1 to try anyway)"
        )
