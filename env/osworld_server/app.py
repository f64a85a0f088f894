"""The Flask application: configuration, the token check and size limits in front of every route.

Why Flask: it is what OSWorld's own server is written in, so request parsing (``request.json``,
form fields, multipart uploads saved in streams) and responses (``send_file``, ``jsonify``) behave
the same for OSWorld's clients, down to status codes and content types; werkzeug underneath is a
maintained WSGI stack with request size limits and unix socket serving built in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask, Response, abort, g, request
from werkzeug.exceptions import HTTPException

from env.osworld_server.auth import new_token, token_matches
from env.osworld_server.body import decode_object

MIB = 1024 * 1024


@dataclass
class ServerConfig:
    """``env`` is the environment of every program the server starts (DISPLAY, HOME, PATH); by default
    ours with DISPLAY set. Paths with ``~`` mean that HOME."""

    display: str
    token: str = field(default_factory=new_token)
    env: dict[str, str] | None = None
    max_upload_bytes: int = 512 * MIB
    max_json_bytes: int = 1 * MIB
    execute_timeout_s: float = 120.0  # OSWorld's /execute limit
    run_python_timeout_s: float = 30.0  # OSWorld's /run_python limit
    bash_default_timeout_s: float = 100.0  # OSWorld's /run_bash_script default
    bash_max_timeout_s: float = 600.0
    open_timeout_s: float = 60.0  # OSWorld waits up to 1800 s for the window of an opened file
    download_timeout_s: float = 300.0
    python: str = sys.executable  # runs /run_python code (OSWorld: the VM's /usr/bin/python3)
    # A connection must send a request head with the token within this many seconds of its accept,
    # and at most this many connections may be without it at once (env/osworld_server/gate.py).
    header_timeout_s: float = 10.0
    max_unauthenticated: int = 64
    fast_endpoints: bool = True  # /kimi/*; off, the server answers like OSWorld's own (tests, --osworld-only)
    # Window titles to match in place of those OSWorld's tasks name (env/image.py: a sandbox's Chromium)
    title_aliases: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        base = dict(os.environ if self.env is None else self.env)
        base["DISPLAY"] = self.display
        base.setdefault("HOME", str(Path.home()))
        self.env = _with_python(base)

    @property
    def xauthority(self) -> Path | None:
        """The display's cookie file, for the server's own X connections (the programs it starts
        get it in their environment)."""
        assert self.env is not None
        path = self.env.get("XAUTHORITY")
        return Path(path) if path else None

    @property
    def home(self) -> str:
        assert self.env is not None
        return self.env["HOME"]

    def expand(self, path: str) -> str:
        """``~`` and ``$VARS`` as the served desktop's user would read them."""
        assert self.env is not None
        if path == "~" or path.startswith("~/"):
            path = self.home + path[1:]
        env = self.env
        # os.path.expandvars' rule, over the served environment: unknown variables stay as written.
        return re.sub(r"\$(\w+)|\$\{([^}]*)\}", lambda m: env.get(m[1] or m[2], m[0]), path)


def _with_python(env: dict[str, str]) -> dict[str, str]:
    """OSWorld's controller runs its actions as ``python -c "import pyautogui; ..."``, and tasks run
    ``python3 -c "import pyautogui; ..."`` (GIMP's postconfig quits it so it writes its settings),
    relying on the VM's Python having pyautogui. Ours has it, so served commands find it first under
    both names (Debian has no ``python`` at all; its ``python3`` lacks pyautogui)."""
    tag = hashlib.sha256(sys.executable.encode()).hexdigest()[:12]  # one per interpreter
    shim = Path(tempfile.gettempdir()) / f"kimi-serve-python-{os.getuid()}-{tag}"
    shim.mkdir(mode=0o700, exist_ok=True)
    # A script, not a symlink: a virtual environment's interpreter finds its packages only when
    # started under its own path.
    script = f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n'
    for name in ("python", "python3"):  # OSWorld's image: both have pyautogui (tasks use both)
        link = shim / name
        if link.is_symlink() or not link.exists() or link.read_bytes() != script.encode():
            tmp = shim / f"{name}.{os.getpid()}"
            tmp.write_text(script)
            tmp.chmod(0o755)
            tmp.replace(link)
    return {**env, "PATH": f"{shim}{os.pathsep}{env.get('PATH', os.defpath)}"}


# Routes whose body is a form, not JSON; the upload's has its own, larger limit.
UPLOAD_ROUTES = {"/setup/upload"}
FORM_ROUTES = {*UPLOAD_ROUTES, "/file", "/window_size"}
log = logging.getLogger(__name__)


def error_json(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    """The body of every error the server makes itself (not the protocol's own text answers)."""
    return Response(
        json.dumps({"status": "error", "message": message}) + "\n",
        status,
        headers,
        mimetype="application/json",
    )


def create_app(config: ServerConfig) -> Flask:
    from env.osworld_server import kimi, protocol
    from env.osworld_server.state import ServerState

    app = Flask("kimi-agent-serve")
    app.config["MAX_CONTENT_LENGTH"] = config.max_upload_bytes
    # Text fields of a form; werkzeug also applies it to each chunk it reads, so never below 1 MiB.
    app.config["MAX_FORM_MEMORY_SIZE"] = max(config.max_json_bytes, MIB)
    app.extensions["kimi"] = ServerState(config)

    @app.before_request
    def _guard() -> Response | None:
        if not token_matches(config.token, request.headers.get("Authorization")):
            return error_json(
                "missing or wrong token: send Authorization: Bearer TOKEN, or TOKEN as the basic-auth user",
                401,
                {"WWW-Authenticate": 'Basic realm="kimi-agent serve"'},
            )
        if request.path in UPLOAD_ROUTES:
            return None
        size = request.content_length
        if size is not None and size > config.max_json_bytes:
            abort(413, f"request body of {size} bytes is over the {config.max_json_bytes} byte limit")
        request.max_content_length = config.max_json_bytes  # also bounds a chunked body as it is read
        if request.path not in FORM_ROUTES:
            raw = request.get_data(cache=True)
            if len(raw) >= config.max_json_bytes:  # werkzeug cuts a chunked body at the limit
                abort(413, f"request body is over the {config.max_json_bytes} byte limit")
            g.kimi_body = decode_object(raw)  # once, strictly, for every route (body.request_json)
        return None

    # Every error the server makes itself is JSON, never werkzeug's HTML page: HTTP errors (404, 405,
    # 413, a bad body) keep their status and headers, anything unforeseen is a 500 with its reason.
    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> Response:
        response = e.get_response()
        response.set_data(json.dumps({"status": "error", "message": e.description}) + "\n")
        response.mimetype = "application/json"
        return response

    @app.errorhandler(Exception)
    def _crash(e: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.path)
        reason = " ".join(str(e).split())[:500]  # one line, whatever the exception held
        return error_json(f"internal error in {request.path}: {type(e).__name__}: {reason}", 500)

    app.register_blueprint(protocol.bp)
    if config.fast_endpoints:
        app.register_blueprint(kimi.bp)
    return app
