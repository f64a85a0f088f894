"""The OSWorld evaluator venv for tests: the product's own (tasks/osworld/evalenv.py, what
`kimi-agent bench osworld setup` builds), at a repo-local path so tests never touch the user's cache.
Built by .ci/setup; a test that cannot build it (no registry) skips.
"""

from __future__ import annotations

from pathlib import Path

from tasks.osworld import evalenv

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".cache" / "osworld-eval"


class VenvUnavailable(RuntimeError):
    pass


def osworld_python() -> Path:
    """The interpreter of the venv, built on first use."""
    try:
        return evalenv.build(VENV)
    except evalenv.EvalEnvError as e:
        raise VenvUnavailable(str(e)) from None
