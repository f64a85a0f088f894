"""Which kimi-agent made a record: the package version, and the git commit when the code runs from a
checkout (a researcher comparing two runs needs to know the code differed). A copy that pip installed
from a local checkout (`pip install .`, as .ci/setup does) names that checkout's commit too, and counts
as modified when its files differ from the checkout's: pip records where it installed from
(direct_url.json) and each file's hash (RECORD). Any other installed copy has no commit; a checkout
without git, or with a broken one, has none either.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import subprocess
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from pydantic import BaseModel

DISTRIBUTION = "kimi-agent"
# The checkout this module would belong to: agent/version.py -> the repository root.
_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "env", "prompts", "tasks")


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


def _from_git(root: Path, version: str, differs: bool = False) -> VersionRecord:
    commit = _git(root, "rev-parse", "--verify", "HEAD")
    if commit is None or not re.fullmatch(r"[0-9a-f]{40,64}", commit):
        return VersionRecord(version=version)
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return VersionRecord(
        version=version, commit=commit, dirty=None if status is None else bool(status) or differs
    )


def _installed_from(root: Path) -> tuple[metadata.Distribution, Path] | None:
    """The distribution this code belongs to and the local git checkout pip installed it from (not
    editable), or None."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
        if Path(str(dist.locate_file("agent/version.py"))).resolve() != (root / "agent" / "version.py"):
            return None  # this copy is not the one the metadata describes
        info = json.loads(dist.read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, OSError, ValueError):
        return None
    url = urlparse(str(info.get("url", "")))
    if url.scheme != "file" or (info.get("dir_info") or {}).get("editable") or "dir_info" not in info:
        return None
    source = Path(unquote(url.path))
    return (dist, source) if (source / ".git").exists() else None


def _same_files(dist: metadata.Distribution, source: Path) -> bool:
    """Whether every installed file of the packages equals the checkout's (RECORD's sha256)."""
    for f in dist.files or []:
        if f.parts[0] not in PACKAGES or f.hash is None or f.hash.mode != "sha256":
            continue
        try:
            digest = hashlib.sha256((source / f).read_bytes()).digest()
        except OSError:
            return False
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != f.hash.value:
            return False
    return True


@functools.cache
def version_record(root: Path = _ROOT) -> VersionRecord:
    """This kimi-agent's version; from a checkout (a ``.git`` beside the packages), or installed from
    one, its commit too."""
    if (root / ".git").exists() and (root / "pyproject.toml").is_file():
        return _from_git(root, _checkout_version(root) or _installed_version())
    found = _installed_from(root)
    if found is not None:
        dist, source = found
        return _from_git(source, dist.version, differs=not _same_files(dist, source))
    return VersionRecord(version=_installed_version())


def _installed_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def kimi_agent_version() -> str:
    """One line for ``--version`` and the records: the version, and the commit from a checkout."""
    return version_record().line()
