"""The transformers range the local backend supports is the one pyproject.toml declares, and another
release is refused in one line that names both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import transformers
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from agent.backends.base import BackendError
from agent.deps import ANY_VERSION_VAR, check_transformers, declared_range

ROOT = Path(__file__).resolve().parents[1]


def pyproject_range() -> SpecifierSet:
    line = re.search(r'^\s*"(transformers[^"]*)",', (ROOT / "pyproject.toml").read_text(), re.M)
    assert line, "pyproject.toml declares no transformers dependency"
    return Requirement(line.group(1)).specifier


def test_the_installed_metadata_declares_pyproject_range_and_the_installed_release_is_in_it() -> None:
    declared = declared_range()
    assert declared is not None and SpecifierSet(declared) == pyproject_range()
    check_transformers()  # the release the tests run on is a supported one
    assert transformers.__version__ in pyproject_range()


def test_a_release_outside_the_range_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ANY_VERSION_VAR, raising=False)
    with pytest.raises(BackendError) as e:
        check_transformers("5.30.0", ">=5.20,<5.26")
    msg = str(e.value)
    assert "\n" not in msg and "found 5.30.0" in msg and ">=5.20,<5.26" in msg and ANY_VERSION_VAR in msg
    with pytest.raises(BackendError):
        check_transformers("4.57.1", ">=5.20,<5.26")
    check_transformers("5.20.0", ">=5.20,<5.26")
    monkeypatch.setenv(ANY_VERSION_VAR, "1")
    check_transformers("5.30.0", ">=5.20,<5.26")  # the drift check tries newer releases on purpose
