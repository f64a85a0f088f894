"""Which kimi-agent made a record: the package version, and the git commit when the code runs from a
checkout (a researcher comparing two runs needs to know the code differed). An installed copy
(pip, site-packages) has no commit; a checkout without git, or with a broken one, has none either.
"""

from __future__ import annotations

import functools
import re
import subprocess
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel

DISTRIBUTION = "kimi-agent"
# The checkout this module would belong to: agent/version.py -> the repository root.
_ROOT = Path(__file__).resolve().parent.parent


class VersionRecord(BaseModel):
    version: str
    commit: str | None = None  # the full hash of HEAD, from a checkout only
    dirty: bool | None = None  # tracked files differ from that commit (None: not a checkout)

    def line(self) -> str:
        """``0.1.0``, ``0.1.0 (git 1a2b3c4d5e6f)``, ``0.1.0 (git 1a2b3c4d5e6f, modified)``."""
        if self.commit is None:
            return self.version
        return f"{self.version} (git {self.commit[:12]}{', modified' if self.dirty else ''})"


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):  # no git installed, or it hung
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _checkout_version(root: Path) -> str | None:
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return m.group(1) if m else None


@functools.cache
def version_record(root: Path = _ROOT) -> VersionRecord:
    """This kimi-agent's version; from a checkout (a ``.git`` beside the packages) its commit too."""
    if (root / ".git").exists() and (root / "pyproject.toml").is_file():
        version = _checkout_version(root) or _installed_version()
        commit = _git(root, "rev-parse", "--verify", "HEAD")
        if commit is not None and re.fullmatch(r"[0-9a-f]{40,64}", commit):
            status = _git(root, "status", "--porcelain", "--untracked-files=no")
            return VersionRecord(
                version=version, commit=commit, dirty=None if status is None else bool(status)
            )
        return VersionRecord(version=version)
    return VersionRecord(version=_installed_version())


def _installed_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def kimi_agent_version() -> str:
    """One line for ``--version`` and the records: the version, and the commit from a checkout."""
    return version_record().line()
