"""`kimi-agent bench osworld setup` with no reachable package index: a prompt one-line failure, and a
venv that does not look ready afterwards. The index is a closed loopback port (real pip, real HTTP)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.osworld import evalenv

ROOT = Path(__file__).resolve().parent.parent


def test_setup_without_an_index_fails_in_one_line_and_leaves_nothing_ready(tmp_path: Path) -> None:
    venv = tmp_path / "eval-venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {
        "PIP_CONFIG_FILE": os.devnull,  # no find-links or extra index from this machine's pip.conf
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",  # nothing listens: refused at once
        "PIP_FIND_LINKS": "",
        "NO_PROXY": "127.0.0.1",
    }
    cmd = [sys.executable, "-m", "tasks.cli", "bench", "osworld", "setup", "--venv", str(venv)]
    # The bound is generous: pip's default (5 retries, $PIP_DEFAULT_TIMEOUT) would take far longer.
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 1, done.stdout + done.stderr
    error = lines[-1]
    assert error.startswith("kimi-agent: error: cannot install desktop-env: "), lines
    assert f"${evalenv.VENV_VAR}" in error and evalenv.OFFLINE_DOC in error
    assert not evalenv.is_ready(venv)
    with pytest.raises(evalenv.EvalEnvError, match="is not built: run kimi-agent bench osworld setup"):
        evalenv.ready_python(venv)
