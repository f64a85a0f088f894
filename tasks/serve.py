"""`kimi-agent serve`: OSWorld's VM server protocol on an X display of this machine."""

from __future__ import annotations

import argparse
import ipaddress
import os
import shlex
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.text import Text

from tasks.cli_common import ArgumentParser, HelpFormatter
from tasks.sandbox_args import add_sandbox_flags, isolation


class ServeUsageError(Exception):
    pass


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        formatter_class=HelpFormatter,
        prog="kimi-agent serve",
        description="Serve OSWorld's VM protocol (port 5000 in OSWorld's VMs) for an X display, so "
        "OSWorld's code and `kimi-agent --vm URL` can drive it. Every request needs the token.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=5000, help="TCP port (default 5000, OSWorld's)")
    p.add_argument("--socket", type=Path, help="listen on this unix socket path instead of TCP")
    p.add_argument(
        "--display", default=os.environ.get("DISPLAY"), help="X display to serve (default $DISPLAY)"
    )
    tok = p.add_mutually_exclusive_group()
    tok.add_argument("--token", help="the token clients must send (default: a new random one, printed)")
    tok.add_argument("--token-file", type=Path, help="read the token from this file")
    p.add_argument("--max-upload-mb", type=int, default=512, help="largest upload accepted (default 512)")
    p.add_argument(
        "--execute-timeout",
        type=float,
        default=120.0,
        help="seconds before /execute kills a command (default 120)",
    )
    p.add_argument(
        "--osworld-only",
        action="store_true",
        help="serve OSWorld's endpoints only, without our faster /kimi/*",
    )
    p.add_argument(
        "--sandbox",
        action="store_true",
        help="serve a fresh isolated sandbox, the server running inside it (a light local OSWorld VM); "
        "the sandbox flags below apply",
    )
    add_sandbox_flags(p)
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    return p


def _token(args: argparse.Namespace) -> str | None:
    from env.osworld_server.auth import check_token

    raw = args.token
    if args.token_file is not None:
        try:
            raw = args.token_file.read_text()
        except OSError as e:
            raise ServeUsageError(f"cannot read --token-file {args.token_file}: {e.strerror}") from None
    if raw is None:
        return None
    try:
        return check_token(raw)
    except ValueError as e:
        raise ServeUsageError(str(e)) from None


def cmd_serve(console: Console, argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if args.sandbox:
        return _serve_sandbox(console, args)
    if not args.display:
        raise ServeUsageError("no X display to serve: pass --display :N or set DISPLAY")
    if not 0 < args.port < 65536:
        raise ServeUsageError(f"--port must be in 1..65535, got {args.port}")
    if args.max_upload_mb < 1 or args.execute_timeout <= 0:
        raise ServeUsageError("--max-upload-mb and --execute-timeout must be positive")
    from env.osworld_server import ServerConfig, serve_forever
    from env.osworld_server.screen import XScreen

    token = _token(args)
    try:  # a display that is not there is a one-line error now, not a 500 on every request later
        XScreen(args.display).close()
    except Exception as e:
        raise ServeUsageError(f"cannot open X display {args.display}: {e}") from None
    config = ServerConfig(
        display=args.display,
        max_upload_bytes=args.max_upload_mb * 1024 * 1024,
        execute_timeout_s=args.execute_timeout,
        fast_endpoints=not args.osworld_only,
        **({"token": token} if token else {}),
    )
    where = f"unix:{args.socket}" if args.socket else f"http://{args.host}:{args.port}"
    try:  # from the first line on: a client may press Ctrl-C as soon as it reads it
        console.print(Text(f"serving DISPLAY={args.display} at {where}; Ctrl-C stops it"))
        if token is None:
            console.print(Text(f"token: {config.token}"))
        if args.socket is None and not _is_loopback(args.host):
            console.print(Text(f"warning: {args.host} is reachable from other machines", style="yellow"))
        serve_forever(config, args.host, args.port, args.socket)
    except KeyboardInterrupt:
        console.print("stopped")
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve_sandbox(console: Console, args: argparse.Namespace) -> int:
    """A sandbox with the server inside it, reachable on --host/--port as an OSWorld VM is."""
    from env.sandbox import SandboxError
    from env.served_sandbox import ServedSandbox

    if args.socket is not None or args.token or args.token_file or args.osworld_only:
        raise ServeUsageError("--sandbox takes no --socket, --token, --token-file or --osworld-only")
    if not _is_loopback(args.host):
        raise ServeUsageError("--sandbox serves on loopback only; put a tunnel in front for other machines")
    w, h = args.size
    try:
        served = ServedSandbox(
            w,
            h,
            [shlex.split(a) for a in args.app],
            desktop=args.desktop_env,
            isolation=isolation(args),
            keep=args.keep,
            execute_timeout_s=args.execute_timeout,
            port=args.port,
        )
    except (SandboxError, OSError) as e:
        raise ServeUsageError(f"cannot start the sandbox: {e}") from None
    with served:
        try:  # from the first line on: a client may press Ctrl-C as soon as it reads it
            console.print(
                Text(f"serving sandbox DISPLAY={served.sandbox.display} at {served.url}; Ctrl-C stops it")
            )
            console.print(Text(f"token: {served.token}"))
            console.print(Text(f"OSWorld's controllers: vm_ip={served.vm_ip!r}, server_port={served.port}"))
            if args.keep:
                console.print(Text(f"kept: {served.sandbox.root}"))
            while served.server_process.poll() is None:
                time.sleep(0.5)
            console.print(
                Text(f"the server inside exited: {served.sandbox.last_log_line(served.server_process)}")
            )
            return 1
        except KeyboardInterrupt:
            console.print("stopped")
    return 0
