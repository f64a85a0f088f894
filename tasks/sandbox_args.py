"""The command-line flags of a sandbox (`kimi-agent run/sandbox/serve --sandbox`, the benchmark
runner) and the sandbox they describe."""

from __future__ import annotations

import argparse
import re
import shlex
from typing import TYPE_CHECKING

from env.desktops import DESKTOPS

if TYPE_CHECKING:
    from env.isolation import Isolation
    from env.sandbox import Sandbox


def size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if not m or not (64 <= int(m[1]) <= 8192 and 64 <= int(m[2]) <= 8192):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT between 64 and 8192, got {text!r}")
    return int(m[1]), int(m[2])


def add_sandbox_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sandbox")
    g.add_argument("--size", type=size, default=(1920, 1080), help="screen size (default 1920x1080)")
    g.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="CMD",
        help="start CMD in the sandbox first (repeatable)",
    )
    add_isolation_flags(g)
    g.add_argument("--keep", action="store_true", help="keep the sandbox's directory (its /home/user, /tmp)")


def add_isolation_flags(g: argparse._ActionsContainer) -> None:
    """Which desktop the sandbox shows and how it is walled off: shared by every command that makes one."""
    g.add_argument(
        "--desktop-env",
        choices=DESKTOPS,
        default="xfce",
        help="xfce: a full light desktop (panel, menu, icons, Ctrl+Alt+T; default); minimal: bare openbox",
    )
    g.add_argument("--no-network", action="store_true", help="no network inside the sandbox (default: on)")
    g.add_argument(
        "--no-isolation",
        action="store_true",
        help="run the sandbox's programs unisolated, as you (for machines without user namespaces)",
    )


def add_view_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("live view (sandboxes)")
    g.add_argument(
        "--view",
        action="store_true",
        help="serve a page on 127.0.0.1 showing the sandbox's screen live (noVNC); its URL, with a token, "
        "is printed (docs/live-view.md)",
    )
    g.add_argument(
        "--view-control",
        action="store_true",
        help="like --view, and the page can take the mouse and keyboard: the agent waits while you hold them",
    )
    g.add_argument(
        "--view-port", type=int, default=0, metavar="PORT", help="the page's port (default: a free one)"
    )


def wants_view(args: argparse.Namespace) -> bool:
    return bool(args.view or args.view_control)


def view_hint() -> str:
    """What the CLI says when no view was asked for."""
    return "watch it live in a browser: add --view (or --view-control to take over)"


def isolation(args: argparse.Namespace) -> Isolation | None:
    from env.isolation import Isolation

    return None if args.no_isolation else Isolation(network=not args.no_network)


def make_sandbox(args: argparse.Namespace) -> Sandbox:
    from env.sandbox import Sandbox

    w, h = args.size
    return Sandbox(
        width=w,
        height=h,
        apps=[shlex.split(a) for a in args.app],
        desktop=args.desktop_env,
        isolation=isolation(args),
        keep=args.keep,
    )
