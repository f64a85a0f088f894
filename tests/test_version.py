"""kimi_agent_version(): the version, and the git commit when the code runs from a checkout; no
commit in an installed copy, none (and no crash) without git."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.version import kimi_agent_version, version_record

REPO = Path(__file__).resolve().parent.parent
PRINT = "import json; from agent.version import version_record as v; print(json.dumps(v().model_dump()))"


def record_in(site: Path) -> dict[str, object]:
    """version_record() as the copy of kimi-agent in ``site`` (first on the path) reports it."""
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {PRINT}"],
        cwd=site.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def pyproject_version() -> str:
    m = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    assert m
    return m.group(1)


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_a_checkout_records_its_commit() -> None:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    v = version_record()
    assert v.version == pyproject_version() and v.commit == head.stdout.strip()
    assert v.dirty is not None
    assert kimi_agent_version().startswith(f"{v.version} (git {head.stdout[:12]}")


def test_an_installed_copy_has_no_commit(tmp_path: Path) -> None:
    """The package as pip lays it out: no .git above it; the version comes from the metadata."""
    site = tmp_path / "site-packages"
    shutil.copytree(REPO / "agent", site / "agent", ignore=shutil.ignore_patterns("__pycache__"))
    from importlib import metadata

    assert record_in(site) == {
        "version": metadata.version("kimi-agent"),
        "commit": None,
        "dirty": None,
    }


def test_a_checkout_without_git_still_says_its_version(tmp_path: Path) -> None:
    bare = tmp_path / "bin"  # a PATH where no git can be found
    bare.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", PRINT],
        cwd=REPO,
        env={**os.environ, "PATH": str(bare)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"version": pyproject_version(), "commit": None, "dirty": None}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_copy_pip_installed_from_a_checkout_names_its_commit_and_whether_it_differs(tmp_path: Path) -> None:
    """`pip install .`, as .ci/setup does: the copy in site-packages names the checkout's commit, clean
    while its files are the checkout's, modified once the checkout moves on without a reinstall."""
    src, site = tmp_path / "src", tmp_path / "site"
    subprocess.run(["git", "clone", "-q", str(REPO), str(src)], check=True, timeout=120)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target"]
    subprocess.run([*pip, str(site), str(src)], check=True, capture_output=True, timeout=300)

    head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert record_in(site) == {"version": pyproject_version(), "commit": head.stdout.strip(), "dirty": False}
    (src / "agent" / "loop.py").write_text((src / "agent" / "loop.py").read_text() + "\n# changed\n")
    git = ["git", "-C", str(src), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "commit", "-qam", "later"], check=True, timeout=60)
    later = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    # the installed code is not that commit's: it says so
    assert record_in(site) == {"version": pyproject_version(), "commit": later.stdout.strip(), "dirty": True}
