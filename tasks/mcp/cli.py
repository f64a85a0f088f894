"""`kimi-agent mcp`: flags, then the server over stdio (default) or streamable HTTP.

Over stdio nothing but the protocol may reach stdout: logs and start-up errors go to stderr (and
the SDK points fd 1 at stderr while it serves, so a child's stray output misses the wire too)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from tasks.cli_common import ArgumentParser, HelpFormatter, sleep_after_flag
from tasks.mcp.options import ServerOptions
from tasks.mcp.permissions import GROUPS, PermissionsError, parse_allow

TOKEN_VAR = "KIMI_MCP_TOKEN"
log = logging.getLogger("tasks.mcp")


class McpUsageError(ValueError):
    pass


def parser() -> argparse.ArgumentParser:
    groups = "; ".join(f"{k}: {v}" for k, v in GROUPS.items())
    p = ArgumentParser(
        formatter_class=HelpFormatter,
        prog="kimi-agent mcp",
        description="Serve our sandboxes as Model Context Protocol tools (docs/mcp.md): over stdio "
        "for a client that starts this command, or over streamable HTTP with --http.",
    )
    p.add_argument(
        "--allow",
        metavar="GROUPS",
        help=f"comma-separated tool groups to grant; required, nothing is granted by default ({groups})",
    )
    p.add_argument(
        "--max-sandboxes", type=int, default=4, help="sandboxes open at once, per server (default 4)"
    )
    p.add_argument(
        "--no-isolation",
        action="store_true",
        help="run the sandboxes' programs unisolated, as you (for machines without user namespaces)",
    )
    p.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio (a bearer token required)",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="let --http listen on an address other than loopback (anyone who reaches it and has "
        "the token can drive the sandboxes)",
    )
    p.add_argument(
        "--token",
        help=f"the bearer token HTTP clients must send (default: ${TOKEN_VAR}, else a new one, printed on stderr)",
    )
    sleep_after_flag(p)
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="warning",
        help="what the server logs on stderr (default warning)",
    )
    # The kimi group's: the main command's model flags (loaded on the first kimi_* call) and where
    # kimi_run records its runs.
    from tasks.cli import model_flags

    model_flags(p)
    p.add_argument(
        "--runs-dir", type=Path, default=Path("runs"), help="where kimi_run records each run (default ./runs)"
    )
    return p


def parse_http(text: str, allow_remote: bool) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise McpUsageError(f"--http: expected HOST:PORT (e.g. 127.0.0.1:8765), got {text!r}")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise McpUsageError(
            f"--http: {host} is not a loopback address; add --allow-remote to serve other machines"
        )
    return host, int(port_text)


def options_from(args: argparse.Namespace) -> ServerOptions:
    if args.max_sandboxes < 1:
        raise McpUsageError(f"--max-sandboxes: must be at least 1, got {args.max_sandboxes}")
    return ServerOptions(
        allow=parse_allow(args.allow),
        max_sandboxes=args.max_sandboxes,
        isolated=not args.no_isolation,
        sleep_after_s=args.sleep_after,
        args=args,
    )


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(list(argv))
    logging.basicConfig(
        stream=sys.stderr, level=args.log_level.upper(), format="kimi-agent mcp: %(levelname)s %(message)s"
    )
    from tasks.mcp.server import UnavailableGroup, build_server

    try:
        options = options_from(args)
        http = parse_http(args.http, args.allow_remote) if args.http else None
        server, registry = build_server(options)
    except (McpUsageError, PermissionsError, UnavailableGroup) as e:
        print(f"kimi-agent mcp: error: {e}", file=sys.stderr)
        return 2
    try:
        if http is None:
            import anyio

            anyio.run(server.run_stdio_async)  # returns at stdin's EOF: the client is gone
        else:
            from tasks.mcp.http import serve_http

            token = args.token or os.environ.get(TOKEN_VAR) or secrets.token_urlsafe(24)
            if not (args.token or os.environ.get(TOKEN_VAR)):
                print(f"kimi-agent mcp: bearer token: {token}", file=sys.stderr, flush=True)
            serve_http(server, registry, *http, token)
    except KeyboardInterrupt:
        pass
    finally:
        registry.close_all()
    return 0
