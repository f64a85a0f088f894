"""The evaluator environment: a virtual environment of its own with OSWorld's official evaluators
(desktop-env 1.0.2 and what its metrics and getters import), built by ``kimi-agent bench osworld setup``.

desktop-env pins torch 2.5, numpy<2, transformers 4.35, ... which clash with kimi-agent's own
dependencies (and the evaluators need none of torch), so it never shares our interpreter: ``tasks/osworld/evaluation.py`` talks to a worker
process running this venv's python. The requirement list is package data
(``evalworker/requirements.txt``); a ready marker holds its hash, so a second build is a no-op and a
changed list rebuilds.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

WORKER_DIR = Path(__file__).resolve().parent / "evalworker"
REQUIREMENTS = WORKER_DIR / "requirements.txt"
VENV_VAR = "KIMI_OSWORLD_EVAL_VENV"
READY = ".kimi-ready"
SETUP_HINT = "run kimi-agent bench osworld setup"
OFFLINE_DOC = "docs/troubleshooting.md#no-internet-for-the-evaluator-venv"
# An unreachable index fails in seconds, not after pip's default 5 retries of a long timeout.
PIP_NETWORK = ["--timeout", "15", "--retries", "1"]


class EvalEnvError(RuntimeError):
    """The evaluator environment is absent or cannot be built; the message is one line."""


def default_venv() -> Path:
    """``$KIMI_OSWORLD_EVAL_VENV``, else ``$XDG_CACHE_HOME/kimi-agent/osworld-eval`` (~/.cache)."""
    if os.environ.get(VENV_VAR):
        return Path(os.environ[VENV_VAR]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "kimi-agent" / "osworld-eval"


def requirements() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [line for line in lines if line]


def requirements_hash() -> str:
    return hashlib.sha256("\n".join(requirements()).encode()).hexdigest()[:16]


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def is_ready(venv: Path) -> bool:
    marker = venv / READY
    return marker.exists() and marker.read_text().strip() == requirements_hash() and python_of(venv).exists()


def ready_python(venv: Path | None = None) -> Path:
    """The venv's interpreter; EvalEnvError (saying how to build it) when it is not built."""
    where = "" if venv is not None or not os.environ.get(VENV_VAR) else f" (${VENV_VAR})"
    venv = venv or default_venv()
    if not is_ready(venv):
        state = "out of date" if (venv / READY).exists() else "not built"
        raise EvalEnvError(
            f"the OSWorld evaluator environment {venv}{where} is {state}: {SETUP_HINT}, "
            f"or set ${VENV_VAR} to one that is built"
        )
    return python_of(venv)


def build(venv: Path | None = None, log: Callable[[str], None] = lambda _: None) -> Path:
    """Build (or update) the venv; a no-op when it is ready. Returns its interpreter."""
    venv = venv or default_venv()
    if is_ready(venv):
        return python_of(venv)
    reqs = requirements()
    # desktop-env without its dependencies (they pin torch 2.5, numpy<2, ...), then what its
    # evaluators import, from our own pinned list.
    desktop_env = [r for r in reqs if r.startswith("desktop-env")]
    rest = [r for r in reqs if r not in desktop_env]
    (venv / READY).unlink(missing_ok=True)
    python = python_of(venv)
    if not python.exists():
        log(f"creating {venv}")
        run_step([sys.executable, "-m", "venv", str(venv)], "create the venv")
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PIP_NETWORK]
    # The marker is written last: a build that stops halfway leaves a venv that is not ready.
    log(f"installing {', '.join(desktop_env)} --no-deps")
    run_step([*pip, "--no-deps", *desktop_env], "install desktop-env", _pip_hint(venv))
    log(f"installing the {len(rest)} packages its evaluators import")
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write("\n".join(rest) + "\n")
        f.flush()
        run_step([*pip, "-r", f.name], "install the evaluators' dependencies", _pip_hint(venv))
    (venv / READY).write_text(requirements_hash() + "\n")
    return python


def _pip_hint(venv: Path) -> str:
    return (
        f"; {venv} is left unfinished (not ready). Without internet, build it from wheels fetched "
        f"elsewhere or set ${VENV_VAR} to a venv built elsewhere: see {OFFLINE_DOC}"
    )


def run_step(cmd: list[str], what: str, hint: str = "", error: type[Exception] = EvalEnvError) -> None:
    """One step of building a venv of its own (this one; the tests' LLaMA-Factory venv too): raise
    ``error`` with one line, the step and pip's last word, when it fails."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise error(f"cannot {what}: {e}{hint}") from None
    if done.returncode != 0:
        lines = [
            line
            for line in done.stderr.splitlines()
            if line.strip() and "is ignored: it is neither" not in line
        ]
        raise error(f"cannot {what}: {(lines or ['failed'])[-1].strip()}{hint}")


def main() -> None:
    """``python -m tasks.osworld.evalenv [VENV]``: build it, print its interpreter (for .ci/setup)."""
    venv = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    try:
        print(build(venv, log=lambda m: print(m, file=sys.stderr)))
    except EvalEnvError as e:
        sys.exit(f"kimi-agent: {e}")


if __name__ == "__main__":
    main()
