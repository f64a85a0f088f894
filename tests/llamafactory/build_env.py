"""Builds LLaMA-Factory's venv for the tests (``.cache/llamafactory``): real LLaMA-Factory 0.9.5 with
only what its SFT data path imports, pinned by requirements.txt and constraints.txt beside this file.

LLaMA-Factory's pins (transformers <=5.6.0, datasets <=4.0.0, ...) clash with kimi-agent's, so it never
shares our interpreter: tests run tests/llamafactory/read_back.py with this venv's python. A ready
marker holds the hash of both files: a second build is a no-op, a changed list rebuilds.

    python tests/llamafactory/build_env.py [VENV]    # prints the venv's python (.ci/setup runs it)
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from tasks.osworld.evalenv import run_step  # one pip step, one line on failure: as for OSWorld's venv

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
CONSTRAINTS = HERE / "constraints.txt"
DEFAULT_VENV = HERE.parent.parent / ".cache" / "llamafactory"
READY = ".kimi-ready"
# Installed alone, before the rest, each without its dependencies (requirements.txt says why).
TORCH, NO_DEPS = "torch", ("llamafactory", "torchaudio")
# An unreachable index fails in seconds, not after pip's default 5 retries of a long timeout.
PIP_NETWORK = ["--timeout", "15", "--retries", "1"]


class BuildError(RuntimeError):
    """The venv cannot be built; the message is one line."""


def pins(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def name_of(pin: str) -> str:
    return pin.split("==", 1)[0].strip().lower()


def pins_hash() -> str:
    text = "\n".join([*pins(REQUIREMENTS), "--", *pins(CONSTRAINTS)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def is_ready(venv: Path) -> bool:
    marker = venv / READY
    return marker.exists() and marker.read_text().strip() == pins_hash() and python_of(venv).exists()


def build(venv: Path = DEFAULT_VENV) -> Path:
    """Build (or update) the venv; a no-op when it is ready. Returns its interpreter."""
    if is_ready(venv):
        return python_of(venv)
    reqs = pins(REQUIREMENTS)
    by_name = {name_of(r): r for r in reqs}
    missing = [n for n in (TORCH, *NO_DEPS) if n not in by_name]
    if missing:
        raise BuildError(f"{REQUIREMENTS} pins no {', '.join(missing)}")
    (venv / READY).unlink(missing_ok=True)
    python = python_of(venv)
    if not python.exists():
        run([sys.executable, "-m", "venv", str(venv)], "create the venv")
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PIP_NETWORK]
    constrained = [*pip, "-c", str(CONSTRAINTS)]
    # The marker is written last: a build that stops halfway leaves a venv that is not ready.
    run([*constrained, by_name[TORCH]], "install torch (CPU)")
    run([*pip, "--no-deps", *(by_name[n] for n in NO_DEPS)], "install llamafactory and torchaudio")
    strip_torchaudio_extension(python)
    rest = [r for r in reqs if name_of(r) not in (TORCH, *NO_DEPS)]
    run([*constrained, *rest], "install what LLaMA-Factory's data path imports")
    probe = "import llamafactory.data, llamafactory.hparams, llamafactory.model"
    run([str(python), "-c", probe], "import LLaMA-Factory's data path")
    (venv / READY).write_text(pins_hash() + "\n")
    return python


def strip_torchaudio_extension(python: Path) -> None:
    """PyPI's torchaudio is a CUDA build whose .so files fail to load beside a CPU torch; without them
    torchaudio's loader reports its extension absent and the package imports (audio I/O is unused)."""
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util as u; print(u.find_spec('torchaudio').submodule_search_locations[0])",
        ],
        capture_output=True,
        text=True,
    )
    if where.returncode != 0:
        raise BuildError("cannot find the installed torchaudio")
    for lib in (Path(where.stdout.strip()) / "lib").glob("*.so"):
        lib.unlink()


def run(cmd: list[str], what: str) -> None:
    run_step(cmd, what, error=BuildError)


def main() -> None:
    venv = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_VENV
    try:
        print(build(venv.resolve()))
    except BuildError as e:
        sys.exit(f"llamafactory venv: {e}")


if __name__ == "__main__":
    main()
