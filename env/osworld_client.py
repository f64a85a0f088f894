"""A client of OSWorld's VM server protocol: OSWorld's own server (port 5000 in its VMs) or ours.

``base_url`` is ``http://HOST:PORT``, ``https://...``, or ``unix:/path/to.sock`` for a server on a
unix socket; a token in the URL's user part (``http://TOKEN@HOST:PORT``) is used like ``token=``.
Every failure is one of the typed errors below, with a one-line message naming the server.
"""

from __future__ import annotations

import json
import re
import secrets
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httpcore2

DEFAULT_TIMEOUT_S = 30.0
EXECUTE_TIMEOUT_S = 130.0  # OSWorld's server gives a command 120 s
LONG_TIMEOUT_S = 1900.0  # open_file waits up to 1800 s on OSWorld's server
RUN_BASH_MAX_S = 600.0  # what our server allows a script; OSWorld's allows any
# OSWorld's server answers str(TimeoutExpired): "Command '[...the whole argv...]' timed out after 120
# seconds"; the argv (a whole generated program) would hide what happened.
ECHOED_COMMAND = re.compile(r"Command '.*' ((?:timed out|returned|died)\b.*)", re.S)


class OSWorldError(Exception):
    """Anything that went wrong talking to the server."""


class Unreachable(OSWorldError):
    """No connection, or no answer in time."""


class Unauthorized(OSWorldError):
    """401 or 403: the token is missing or wrong."""


class NotFound(OSWorldError):
    """404: no such file, window or program (or the server lacks the endpoint)."""


class ServerError(OSWorldError):
    def __init__(self, message: str, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(frozen=True)
class ExecResult:
    """/execute's answer. A command the server could not run (not found, timed out) has status
    "error", the server's message in ``error`` and no ``returncode``."""

    status: str
    output: str
    error: str
    returncode: int | None

    @property
    def ok(self) -> bool:
        return self.status == "success" and self.returncode == 0

    def why(self, limit: int = 300) -> str:
        """Why it failed, in one line, cause first: the server's message without the command it
        echoes, or the last line of stderr (a traceback's exception), or the exit status."""
        if self.status != "success":
            echoed = ECHOED_COMMAND.fullmatch(self.error.strip())
            why = f"the command {echoed[1]} on the server" if echoed else self.error
            why = " ".join(why.split()) or f"the server could not run the command ({self.status})"
        else:
            why = (self.error.strip().splitlines() or [f"exit status {self.returncode}"])[-1].strip()
        return why if len(why) <= limit else why[:limit] + "..."


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def _excerpt(body: bytes, limit: int = 300) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    return text if len(text) <= limit else text[:limit] + "..."


class OSWorldClient:
    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        uds = None
        if base_url.startswith("unix:"):
            uds = base_url.removeprefix("unix:").removeprefix("//")
            self._origin = "http://localhost"
            self.base_url = base_url
        else:
            parts = urllib.parse.urlsplit(base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"server URL must be http://HOST:PORT or unix:/PATH, got {base_url!r}")
            if parts.username and token is None:
                token = urllib.parse.unquote(parts.username)
            netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
            if parts.port:
                netloc += f":{parts.port}"
            self._origin = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
            self.base_url = self._origin
        self.token = token
        self._headers = [("User-Agent", "kimi-agent")]
        if token:
            self._headers.append(("Authorization", f"Bearer {token}"))
        self._pool = httpcore2.ConnectionPool(max_connections=8, keepalive_expiry=4.0, uds=uds)

    # -- transport -------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        form: dict[str, str] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        timeout_s: float | None = None,
    ) -> Reply:
        """One exchange; any status comes back (see ``call`` for the one that raises)."""
        headers = list(self._headers)
        if json_body is not None:
            content, content_type = json.dumps(json_body).encode(), "application/json"
        elif form is not None:
            content = urllib.parse.urlencode(form).encode()
            content_type = "application/x-www-form-urlencoded"
        if content_type:
            headers.append(("Content-Type", content_type))
        t = timeout_s or self.timeout_s
        timeout = {"connect": min(t, 10.0), "read": t, "write": t, "pool": t}
        try:
            r = self._pool.request(
                method,
                self._origin + path,
                headers=headers,
                content=content or b"",
                extensions={"timeout": timeout},
            )
        except httpcore2.TimeoutException:
            raise Unreachable(f"{self.base_url}{path}: no answer within {t:g} s") from None
        except (httpcore2.ConnectError, httpcore2.NetworkError, httpcore2.ProtocolError) as e:
            raise Unreachable(
                f"cannot reach the server at {self.base_url}: {e or type(e).__name__}"
            ) from None
        except httpcore2.UnsupportedProtocol as e:
            raise ValueError(f"bad server URL {self.base_url}: {e}") from None
        hdrs = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in r.headers}
        return Reply(r.status, r.content, hdrs)

    def call(self, method: str, path: str, **kw: Any) -> Reply:
        """``request``, raising the typed error for anything but 200."""
        return self._check(self.request(method, path, **kw), method, path)

    def _check(self, r: Reply, method: str, path: str) -> Reply:
        if r.status == 200:
            return r
        where = f"{method} {path} on {self.base_url}"
        if r.status in (401, 403):
            raise Unauthorized(
                f"{where} answered {r.status}: the server refused "
                + (
                    "the request without a token: pass --vm-token or set $KIMI_VM_TOKEN"
                    if not self.token
                    else "the token given: pass the right one with --vm-token or $KIMI_VM_TOKEN"
                )
            )
        if r.status == 404:
            raise NotFound(f"{where}: {_excerpt(r.body) or 'not found'}")
        raise ServerError(
            f"{where} answered {r.status}: {_excerpt(r.body)}", r.status, _excerpt(r.body, 2000)
        )

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> OSWorldClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the protocol ----------------------------------------------------------------------------
    def screenshot(self) -> bytes:
        r = self.call("GET", "/screenshot")
        if not r.body.startswith(b"\x89PNG"):
            raise ServerError(f"/screenshot on {self.base_url} sent no PNG", 200, _excerpt(r.body))
        return r.body

    def screen_size(self) -> tuple[int, int]:
        d = self.call("POST", "/screen_size").json() or {}
        return int(d["width"]), int(d["height"])

    def cursor_position(self) -> tuple[int, int]:
        x, y = self.call("GET", "/cursor_position").json()
        return int(x), int(y)

    def platform(self) -> str:
        return self.call("GET", "/platform").text

    def desktop_path(self) -> str:
        return str(self.call("POST", "/desktop_path").json()["desktop_path"])

    def execute(
        self, command: str | list[str], shell: bool = False, timeout_s: float | None = None
    ) -> ExecResult:
        r = self.request(
            "POST",
            "/execute",
            json_body={"command": command, "shell": shell},
            timeout_s=timeout_s or EXECUTE_TIMEOUT_S,
        )
        d = r.json()
        if r.status == 500 and isinstance(d, dict) and d.get("status") == "error":
            return ExecResult("error", "", str(d.get("message", "")), None)
        self._check(r, "POST", "/execute")
        if not isinstance(d, dict) or "status" not in d:
            raise ServerError(
                f"/execute on {self.base_url} answered no JSON result", r.status, _excerpt(r.body)
            )
        return ExecResult(str(d["status"]), d.get("output") or "", d.get("error") or "", d.get("returncode"))

    def launch(self, command: str | list[str], shell: bool = False) -> str:
        return self.call("POST", "/setup/launch", json_body={"command": command, "shell": shell}).text

    def open_file(self, path: str, timeout_s: float = LONG_TIMEOUT_S) -> str:
        return self.call("POST", "/setup/open_file", json_body={"path": path}, timeout_s=timeout_s).text

    def upload(self, path: str, data: bytes, timeout_s: float = 600.0) -> str:
        body, ctype = upload_form(path, data)
        return self.call("POST", "/setup/upload", content=body, content_type=ctype, timeout_s=timeout_s).text

    def download_file(self, url: str, path: str, timeout_s: float = 600.0) -> str:
        """The server fetches ``url`` itself (it needs the network; ours in a sandbox may not)."""
        return self.call(
            "POST", "/setup/download_file", json_body={"url": url, "path": path}, timeout_s=timeout_s
        ).text

    def _window(self, endpoint: str, name: str, strict: bool, by_class: bool) -> str:
        body = {"window_name": name, "strict": strict, "by_class": by_class}
        return self.call("POST", endpoint, json_body=body).text

    def activate_window(self, name: str, strict: bool = False, by_class: bool = False) -> str:
        return self._window("/setup/activate_window", name, strict, by_class)

    def close_window(self, name: str, strict: bool = False, by_class: bool = False) -> str:
        return self._window("/setup/close_window", name, strict, by_class)

    def window_size(self, app_class_name: str) -> tuple[int, int]:
        d = self.call("POST", "/window_size", form={"app_class_name": app_class_name}).json() or {}
        return int(d["width"]), int(d["height"])

    def file(self, path: str, timeout_s: float = 600.0) -> bytes:
        return self.call("POST", "/file", form={"file_path": path}, timeout_s=timeout_s).body

    def list_directory(self, path: str) -> dict[str, Any]:
        return dict(self.call("POST", "/list_directory", json_body={"path": path}).json()["directory_tree"])

    def terminal(self) -> str | None:
        return self.call("GET", "/terminal").json().get("output")

    def accessibility(self, timeout_s: float = 120.0) -> str:
        return str(self.call("GET", "/accessibility", timeout_s=timeout_s).json()["AT"])

    def run_python(self, code: str) -> dict[str, Any]:
        """/run_python's JSON (status, output, error, return_code, ...); a timeout is a ServerError."""
        return dict(self.call("POST", "/run_python", json_body={"code": code}, timeout_s=60.0).json())

    def run_bash_script(
        self, script: str, timeout: float = 30, working_dir: str | None = None
    ) -> dict[str, Any]:
        body = {"script": script, "timeout": timeout, "working_dir": working_dir}
        r = self.request(
            "POST", "/run_bash_script", json_body=body, timeout_s=min(timeout, RUN_BASH_MAX_S) + 30
        )
        d = r.json()
        # A script that ran past its time is an answer (status error, returncode -1), not a fault.
        if r.status in (200, 500) and isinstance(d, dict) and "returncode" in d:
            return dict(d)
        return dict(self._check(r, "POST", "/run_bash_script").json())

    def start_recording(self) -> None:
        self.call("POST", "/start_recording")

    def end_recording(self) -> bytes:
        return self.call("POST", "/end_recording", timeout_s=60.0).body


def upload_form(path: str, data: bytes) -> tuple[bytes, str]:
    """The multipart body and content type of OSWorld's ``/setup/upload`` (``file_path``, ``file_data``)."""
    boundary = "kimi-" + secrets.token_hex(16)
    body = b"".join(
        [
            f'--{boundary}\r\nContent-Disposition: form-data; name="file_path"\r\n\r\n'.encode(),
            path.encode(),
            f"\r\n--{boundary}\r\n".encode(),
            b'Content-Disposition: form-data; name="file_data"; filename="upload"\r\n',
            b"Content-Type: application/octet-stream\r\n\r\n",
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    return body, f"multipart/form-data; boundary={boundary}"
