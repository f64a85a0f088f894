"""What `kimi-agent mcp`'s flags decided, handed to every tool group's ``register``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServerOptions:
    allow: frozenset[str]
    max_sandboxes: int = 4
    isolated: bool = True
    sleep_after_s: float | None = None
    # Groups added later (kimi) read their own flags from here (--backend, --model, ...).
    args: argparse.Namespace = field(default_factory=argparse.Namespace)
