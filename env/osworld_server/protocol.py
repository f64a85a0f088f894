"""OSWorld's VM server endpoints, with its request and response shapes.

Shapes follow desktop_env/server/main.py of OSWorld (read in the samuellin01/SelfPlayOSWorld fork):
status codes, JSON keys and the text bodies its controllers and getters read. Where its Linux code
cannot fail the way the protocol table says (activate_window with wmctrl answers 200 for a window
that is not there), we answer what the table says: 404.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO

from flask import Blueprint, Response, current_app, jsonify, request, send_file

from env.osworld_server import accessibility
from env.osworld_server.body import request_json
from env.osworld_server.procs import TimedOut, argv_of, run
from env.osworld_server.recording import RecordingError
from env.osworld_server.screen import Window
from env.osworld_server.state import ServerState
from env.osworld_server.whole_file import TargetRefused, write_whole

bp = Blueprint("osworld", __name__)
ABSENT_HEADER = "X-Kimi-File"  # on /file's 404; tasks/osworld/evalworker/worker.py reads it
Reply = Response | tuple[Any, int] | str


def _state() -> ServerState:
    return current_app.extensions["kimi"]


# -- commands ----------------------------------------------------------------------------------------
def _command(data: dict[str, Any]) -> tuple[str | list[str], bool]:
    """{command, shell} as OSWorld's server reads them (any truthy shell, "true" included)."""
    shell = bool(data.get("shell", False))
    command = data.get("command", "" if shell else [])
    if not isinstance(command, (str, list)) or not all(isinstance(a, str) for a in command):
        raise ValueError("command must be a string or a list of strings")
    argv = argv_of(command, shell, _state().config.home)
    if not argv:
        raise ValueError("command is empty")
    return argv, shell


@bp.post("/execute")
@bp.post("/setup/execute")
def execute() -> Reply:
    s = _state()
    try:
        argv, shell = _command(request_json())
        done = run(argv, shell, s.config.env or {}, s.config.home, s.config.execute_timeout_s)
    except (OSError, ValueError, TimedOut) as e:
        return jsonify({"status": "error", "message": str(e)}), 500
    return jsonify(
        {"status": "success", "output": done.stdout, "error": done.stderr, "returncode": done.returncode}
    )


@bp.post("/setup/launch")
def launch() -> Reply:
    s = _state()
    try:
        argv, shell = _command(request_json())
        s.launched.start(argv, shell, s.config.env or {}, s.config.home)
    except (OSError, ValueError) as e:
        return jsonify({"status": "error", "message": str(e)}), 500
    return f"{argv if shell else ' '.join(argv)} launched successfully"


@bp.post("/run_python")
def run_python() -> Reply:
    s = _state()
    code = request_json().get("code")
    if not code or not isinstance(code, str):
        return jsonify({"status": "error", "message": "Code not supplied!"}), 400
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(code)
    try:
        done = run(
            [s.config.python, f.name], False, s.config.env or {}, s.config.home, s.config.run_python_timeout_s
        )
    except TimedOut:
        return jsonify(
            {
                "status": "error",
                "message": "Execution timeout: Code took too long to execute",
                "error": "TimeoutExpired",
                "need_more": False,
                "output": None,
            }
        ), 500
    finally:
        os.unlink(f.name)
    error = done.stderr or (f"Process exited with code {done.returncode}" if done.returncode else "")
    message = "\n".join(x for x in (done.stdout, error) if x)
    return jsonify(
        {
            "status": "success" if done.returncode == 0 else "error",
            "message": message,
            "need_more": False,
            "output": done.stdout,
            "error": error,
            "return_code": done.returncode,
        }
    )


@bp.post("/run_bash_script")
def run_bash_script() -> Reply:
    s = _state()
    data = request_json()
    script = data.get("script")

    def fail(output: str, status: int) -> Reply:
        return jsonify({"status": "error", "output": output, "error": "", "returncode": -1}), status

    if not script or not isinstance(script, str):
        return fail("Script not supplied!", 400)
    timeout = data.get("timeout", s.config.bash_default_timeout_s)
    # Finite already (the body's decoding refuses NaN and infinities); min() before float(): an
    # integer too large for a float is still just over the cap.
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        return fail(f"timeout must be a positive number of seconds, got {str(timeout)[:40]}", 400)
    timeout = float(min(timeout, s.config.bash_max_timeout_s))
    cwd = s.config.home
    if data.get("working_dir"):
        cwd = s.config.expand(str(data["working_dir"]))
        if not os.path.isdir(cwd):
            return fail(f"Working directory does not exist: {cwd}", 400)
    if "#!/bin/bash" not in script:
        script = "#!/bin/bash\n\n" + script
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write(script)
    try:
        done = run(["bash", f.name], False, s.config.env or {}, cwd, timeout, merge_stderr=True)
    except TimedOut:
        return fail(f"Script execution timed out after {timeout:g} seconds", 500)
    except OSError as e:
        return fail(f"Failed to execute script: {e}", 500)
    finally:
        os.unlink(f.name)
    return jsonify(
        {
            "status": "success" if done.returncode == 0 else "error",
            "output": done.stdout,
            "error": "",
            "returncode": done.returncode,
        }
    )


# -- files -------------------------------------------------------------------------------------------
@bp.post("/file")
def get_file() -> Reply:
    if "file_path" not in request.form:
        return jsonify({"error": "file_path is required"}), 400
    path = _state().config.expand(request.form["file_path"])
    if not os.path.isfile(path):
        # Checked on the machine itself, so final: the header tells kimi-agent's evaluator worker not
        # to pay OSWorld's retries (3 tries 5 s apart, for an unreachable VM) for a missing result file.
        return jsonify({"error": "File not found"}), 404, {ABSENT_HEADER: "absent"}
    try:
        return send_file(path, as_attachment=True)
    except OSError as e:
        return jsonify({"error": f"Failed to serve file: {e}"}), 500


@bp.post("/setup/upload")
def upload() -> Reply:
    if "file_path" not in request.form or "file_data" not in request.files:
        return jsonify({"error": "file_path and file_data are required"}), 400
    raw = request.form["file_path"]
    try:
        size = write_whole(_state().config.expand(raw), request.files["file_data"].save)
    except TargetRefused as e:
        return jsonify({"error": f"Failed to upload file to {raw!r}: {e}"}), 400
    except OSError as e:
        return jsonify({"error": f"Failed to upload file to {raw!r}: {e.strerror or e}"}), 500
    return f"File Uploaded: {size} bytes"


@bp.post("/setup/download_file")
def download_file() -> Reply:
    s = _state()
    data = request_json()
    url, path = data.get("url"), data.get("path")
    if not url or not path:
        return "Path or URL not supplied!", 400
    target = s.config.expand(str(path))
    limit = s.config.max_upload_bytes  # the same bound as an upload: a URL must not fill the disk

    def fetch(f: BinaryIO) -> None:
        with urllib.request.urlopen(str(url), timeout=s.config.download_timeout_s) as r:
            while chunk := r.read(1 << 20):
                if f.tell() + len(chunk) > limit:
                    raise ValueError(f"the file is larger than the {limit} byte limit")
                f.write(chunk)

    try:
        size = write_whole(target, fetch)
    except (OSError, ValueError, urllib.error.URLError) as e:  # TargetRefused included
        return f"Failed to download {url}. Error: {e}", 500
    return f"File downloaded successfully: {size} bytes"


class _TooBig(Exception):
    pass


MAX_TREE_ENTRIES = 100_000


def _tree(directory: str, budget: list[int]) -> dict[str, Any]:
    """OSWorld's nested {type, name, children} tree; an unreadable directory is {"error": ...}."""
    tree: dict[str, Any] = {"type": "directory", "name": os.path.basename(directory), "children": []}
    try:
        entries = os.listdir(directory)
    except OSError as e:
        return {"error": str(e)}
    budget[0] -= len(entries)
    if budget[0] < 0:
        raise _TooBig
    for entry in entries:
        full = os.path.join(directory, entry)
        if os.path.isdir(full) and not os.path.islink(full):  # a link loop would never end
            tree["children"].append(_tree(full, budget))
        else:
            tree["children"].append({"type": "file", "name": entry})
    return tree


@bp.post("/list_directory")
def list_directory() -> Reply:
    data = request_json()
    if "path" not in data:
        return jsonify(error="Missing 'path' parameter"), 400
    path = _state().config.expand(str(data["path"]))
    if not os.path.isdir(path):
        return jsonify(error="The provided path is not a directory"), 400
    try:
        return jsonify(directory_tree=_tree(path, [MAX_TREE_ENTRIES]))
    except (_TooBig, RecursionError):
        return jsonify(error=f"the tree under {path} has more than {MAX_TREE_ENTRIES} entries or levels"), 400


@bp.post("/desktop_path")
def desktop_path() -> Reply:
    path = os.path.join(_state().config.home, "Desktop")
    if os.path.exists(path):
        return jsonify(desktop_path=path)
    return jsonify(error="Unsupported operating system or desktop path not found"), 404


@bp.post("/setup/open_file")
def open_file() -> Reply:
    s = _state()
    raw = request_json().get("path")
    if not raw:
        return "Path not supplied!", 400
    path = Path(s.config.expand(str(raw)))
    env = s.config.env or {}
    if path.exists():
        opener = shutil.which("xdg-open", path=env.get("PATH"))
        if opener is None:
            return f"Failed to open {raw}. Error: xdg-open is not installed", 500
        argv, names = [opener, str(path)], (path.name, path.stem)
    elif shutil.which(str(raw), path=env.get("PATH")):
        argv, names = [str(raw)], (str(raw), str(raw))
    else:
        return f"Application/file not found: {raw}", 404
    try:
        s.launched.start(argv, False, env, s.config.home)
    except OSError as e:
        return f"Failed to open {raw}. Error: {e}", 500
    # Like OSWorld: wait for a window whose title names the file (or the program), then raise it.
    deadline = time.monotonic() + s.config.open_timeout_s
    while time.monotonic() < deadline:
        for w in s.screen.windows():
            if names[0] in w.title or names[1] in w.title:
                s.screen.activate(w)
                return "File opened and window activated successfully"
        time.sleep(0.1)
    return f"Failed to find window for {names[0]} within {s.config.open_timeout_s:g} seconds.", 500


# -- windows -----------------------------------------------------------------------------------------
def _find_window() -> tuple[Window | None, Reply]:
    """The window a {window_name, strict, by_class} request names, or None and the error reply."""
    data = request_json()
    name = data.get("window_name")
    if not name or not isinstance(name, str):
        return None, ("window_name required", 400)
    strict, by_class = bool(data.get("strict", False)), bool(data.get("by_class", False))
    window = _state().screen.find_window(name, strict=strict, by_class=by_class)
    if window is None:
        return None, (f"Window {name} not found ({'strict mode' if strict else 'empty results'}).", 404)
    return window, ""


@bp.post("/setup/activate_window")
def activate_window() -> Reply:
    window, error = _find_window()
    if window is None:
        return error
    _state().screen.activate(window)
    return "Window activated successfully", 200


@bp.post("/setup/close_window")
def close_window() -> Reply:
    window, error = _find_window()
    if window is None:
        return error
    _state().screen.close_window(window)
    return "Window closed successfully.", 200


@bp.post("/window_size")
def window_size() -> Reply:
    name = request.form.get("app_class_name")
    if not name:
        return jsonify({"error": "app_class_name is required"}), 400
    window = _state().screen.find_window(name, by_class=True)
    if window is None:
        return jsonify({"error": f"no window of class {name}"}), 404
    w, h = _state().screen.window_size(window)
    return jsonify({"width": w, "height": h})


# -- the screen --------------------------------------------------------------------------------------
@bp.get("/screenshot")
def screenshot() -> Reply:
    return Response(_state().screen.screenshot_png(), mimetype="image/png")


@bp.post("/screen_size")
def screen_size() -> Reply:
    w, h = _state().screen.size
    return jsonify({"width": w, "height": h})


@bp.get("/cursor_position")
def cursor_position() -> Reply:
    return jsonify(*_state().screen.cursor_position())


@bp.get("/platform")
def platform() -> Reply:
    return "Linux"


@bp.get("/accessibility")
def get_accessibility() -> Reply:
    s = _state()
    try:
        return jsonify({"AT": accessibility.tree_xml(s.config)})
    except accessibility.AccessibilityError as e:
        return jsonify({"status": "error", "message": str(e)}), 500


@bp.get("/terminal")
def terminal() -> Reply:
    # OSWorld's SetupController waits for this to answer below 500 before any setup step, so a
    # desktop without AT-SPI answers like one without a focused terminal: output null.
    try:
        output = accessibility.terminal_text(_state().config)
    except accessibility.AccessibilityError:
        output = None
    return jsonify({"output": output, "status": "success"})


# -- recording ---------------------------------------------------------------------------------------
@bp.post("/start_recording")
def start_recording() -> Reply:
    s = _state()
    try:
        s.recorder.start(*s.screen.size)
    except RecordingError as e:
        return jsonify({"status": "error", "message": str(e)}), e.status
    return jsonify({"status": "success", "message": "Started recording successfully."})


@bp.post("/end_recording")
def end_recording() -> Reply:
    try:
        path = _state().recorder.end()
    except RecordingError as e:
        return jsonify({"status": "error", "message": str(e)}), e.status
    return send_file(path, as_attachment=True)
