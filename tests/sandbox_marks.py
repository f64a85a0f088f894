"""Which processes still belong to sandboxes: each carries its sandbox's marker in its environment."""

from __future__ import annotations

from pathlib import Path

from env.sandbox import MARKER_VAR


def marked(parent: Path) -> list[int]:
    """The pids of processes carrying the marker of a sandbox made under ``parent``."""
    prefix = f"{MARKER_VAR}={parent}/".encode()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            environ = (d / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if any(v.startswith(prefix) for v in environ.split(b"\0")):
            found.append(int(d.name))
    return found
