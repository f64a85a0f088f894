"""``python -m env.osworld_server [--title-alias NAME=SHOWN]... SOCKET TOKEN_FILE [EXECUTE_TIMEOUT_S]``:
the server as a sandbox starts it inside itself (env/served_sandbox.py), on a unix socket in the
sandbox's control directory, for the display and environment it inherits. Users run ``kimi-agent serve``.
``--title-alias``: window lookups naming NAME also find windows titled SHOWN in its place.

SOCKET ``-``: the listening socket is stdin (inetd-style), made and bound by the host in a directory
the sandbox cannot change, so the host only ever connects to a socket it made itself."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from env.osworld_server.app import ServerConfig
from env.osworld_server.auth import check_token
from env.osworld_server.runner import serve_forever


def main(argv: list[str]) -> int:
    aliases: dict[str, str] = {}
    while len(argv) >= 2 and argv[0] == "--title-alias" and "=" in argv[1]:
        name, shown = argv[1].split("=", 1)
        aliases[name] = shown
        argv = argv[2:]
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    socket_path, token_file = Path(argv[0]), Path(argv[1])
    # The import path the host gave this server is its own: the programs it starts meet the
    # desktop's Python as OSWorld's image has it (python and python3 with pyautogui, app.py).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    config = ServerConfig(
        display=os.environ["DISPLAY"],
        env=env,
        token=check_token(token_file.read_text()),
        execute_timeout_s=float(argv[2]) if len(argv) == 3 else 120.0,
        title_aliases=aliases,
    )
    if argv[0] == "-":
        listening = os.dup(0)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # what it runs gets /dev/null, not the socket, as stdin
        os.close(null)
        serve_forever(config, fd=listening)
    else:
        serve_forever(config, socket_path=socket_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
