"""kimi-agent's OSWorld evaluator worker. Runs in the evaluator venv (tasks/osworld/evalenv.py) with
OSWorld's official ``desktop_env.evaluators``; imports only the standard library, desktop_env and its
dependencies (kimi-agent's own are not in that venv).

Protocol: one JSON object per line on stdin, one answer per line on stdout.
  {"op": "ping"}                      -> {"ok": true, "pid", "import_s", "python"}
  {"op": "metric", "server": {"host", "port", "token"}, "cache_dir", "func", "result", "expected",
   "options", "chromium_port", "vlc_port"}
                                      -> {"ok": true, "score": float, "reason": str | null, "seconds",
                                          "restart": bool}
  {"op": "quit"}                      -> exits
Anything the request itself gets wrong answers {"ok": false, "error": "..."}. A task's fault (a getter
that raises, a missing file, a metric that raises) is a score of 0 with its reason, never an error.
The getters print freely, so stdout is kept for the protocol alone: fd 1 is pointed at stderr.

Limits (tasks/osworld/evallimits.py; the host watches memory and CPU time): from the environment,
KIMI_EVAL_ADDRESS_SPACE caps this process's address space (a MemoryError then scores 0 and asks the
host for a fresh worker: "restart"), and KIMI_EVAL_FILE_BYTES the size of a file a getter fetches
(checked while it downloads and again before a metric opens it).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
import traceback
from typing import Any

_PROTOCOL = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr


def _stand_in_easyocr() -> None:
    """metrics/docs.py imports easyocr at the top, for one metric (compare_image_text). It is not in
    the evaluator venv (see requirements.txt): a stand-in lets every other metric load, and that one
    scores 0 with this reason."""
    try:
        import easyocr  # noqa: F401
    except ImportError:
        import types

        module = types.ModuleType("easyocr")

        class Reader:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                raise RuntimeError(
                    "easyocr is not installed in the evaluator environment (its torchvision has no CPU "
                    "build on PyPI and its models come from the internet)"
                )

        module.Reader = Reader  # type: ignore[attr-defined]
        sys.modules["easyocr"] = module


_t0 = time.monotonic()
_stand_in_easyocr()
import ours_getters  # noqa: E402
import ours_metrics  # noqa: E402
import requests  # noqa: E402
from desktop_env.controllers.python import PythonController  # noqa: E402
from desktop_env.evaluators import getters, metrics  # noqa: E402

IMPORT_S = time.monotonic() - _t0


def _limit(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


ADDRESS_SPACE = _limit("KIMI_EVAL_ADDRESS_SPACE")
FILE_CAP = _limit("KIMI_EVAL_FILE_BYTES")
if ADDRESS_SPACE is not None:
    # After the imports, which map more than they use; children (Playwright's driver) inherit it.
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


class LimitHit(BaseException):
    """A limit crossed. A BaseException, so that the getters' and metrics' own ``except Exception``
    (get_vm_file turns any error into a missing file) cannot hide it."""


def _mb(n: int) -> str:
    return f"{n / 1e6:.4g} MB"


def _too_large(what: str, size: int | None, cap: int) -> LimitHit:
    actual = f"is {_mb(size)}" if size is not None else "is larger"
    return LimitHit(f"{what} {actual}, over the {_mb(cap)} cap")


# kimi-agent's server marks a /file 404 with this header: it looked on the machine itself, so the file
# is not there and trying again cannot find it (env/osworld_server/protocol.py; the worker cannot
# import it, hence the copy). OSWorld's own server sends no such header.
ABSENT_HEADER, ABSENT = "X-Kimi-File", "absent"


class Controller(PythonController):
    """OSWorld's PythonController with get_file as upstream's (3 tries ``retry_interval`` apart; None
    when the server will not give the file), except that:

    - a 404 that kimi-agent's server marks absent answers None at once: its retries are for a VM or
      a connection that fails for a moment, and a missing result file is neither (an idle agent's
      run paid 15 s per missing file);
    - there is no sleep after the last try, which only delayed the None;
    - with ``cap``, the file is streamed and refused before it is held when it is over the cap: by
      its Content-Length, or when it grows past it.

    Each try writes one line to stderr (the worker's log): ``get_file PATH: try N: ...``."""

    def __init__(self, *args: Any, cap: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cap = cap

    def get_file(self, file_path: str) -> bytes | None:
        for attempt in range(1, self.retry_times + 1):
            if attempt > 1:
                time.sleep(self.retry_interval)
            try:
                with requests.post(
                    self.http_server + "/file", data={"file_path": file_path}, stream=True
                ) as r:
                    if r.status_code == 200:
                        print(f"get_file {file_path}: try {attempt}: status 200", file=sys.stderr)
                        return self._body(r)
                    if r.status_code == 404 and r.headers.get(ABSENT_HEADER) == ABSENT:
                        print(f"get_file {file_path}: try {attempt}: absent, no retry", file=sys.stderr)
                        return None
                    print(f"get_file {file_path}: try {attempt}: status {r.status_code}", file=sys.stderr)
            except requests.RequestException as e:
                print(f"get_file {file_path}: try {attempt}: {e}", file=sys.stderr)
        return None

    def _body(self, r: requests.Response) -> bytes:
        cap = self.cap
        if cap is None:
            return r.content
        declared = r.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise _too_large("file", int(declared), cap)
        data = bytearray()
        for chunk in r.iter_content(1 << 16):
            data += chunk
            if len(data) > cap:
                raise _too_large("file", None, cap)
        return bytes(data)


# Getters whose value is a path to a fetched file (None where the file is missing on the machine).
FILE_GETTERS = {"vm_file", "cache_file", "cloud_file", "vlc_config", "content_from_vm_file"}


class Env:
    """What the official getters read from OSWorld's DesktopEnv (``env.vm_ip``, ``env.controller``, ...).

    ``vm_ip`` is ``TOKEN:@HOST`` when the server wants a token: the getters that post to
    ``http://{vm_ip}:{server_port}/execute`` themselves then send it as HTTP basic auth (requests takes
    the URL's user part), which kimi-agent's server accepts; OSWorld's VMs want none.
    """

    def __init__(self, req: dict[str, Any]) -> None:
        server = req["server"]
        token = server.get("token")
        self.vm_ip = f"{token}:@{server['host']}" if token else server["host"]
        self.server_port = int(server["port"])
        self.chromium_port = int(req.get("chromium_port", 9222))
        self.vlc_port = int(req.get("vlc_port", 8080))
        self.cache_dir = req["cache_dir"]
        os.makedirs(self.cache_dir, exist_ok=True)
        self.vm_platform = req.get("platform", "Linux")
        self.vm_machine = req.get("machine", platform.machine())
        self.current_use_proxy = False
        self.controller = Controller(vm_ip=self.vm_ip, server_port=self.server_port, cap=FILE_CAP)


# Getters desktop-env 1.0.2 has in an older form than the corpus needs (a list of date formats, the
# focused address bar): ours, written to upstream's current semantics, are used instead.
OVERRIDES = {"active_url_from_accessTree", "url_dashPart", "rule_relativeTime"}


def _find(kind: str, name: str) -> Any:
    official = metrics if kind == "metric" else getters
    ours = ours_metrics if kind == "metric" else ours_getters
    attr = name if kind == "metric" else f"get_{name}"
    if kind == "getter" and name in OVERRIDES:
        return getattr(ours, attr)
    return getattr(official, attr, None) or getattr(ours, attr, None)


def _error(what: str, e: BaseException) -> str:
    text = " ".join(str(e).split())[:300]
    return f"{what}: {type(e).__name__}" + (f": {text}" if text else "")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, list) and any(v is None for v in value))


def _check_sizes(role: str, value: Any) -> None:
    """LimitHit when a fetched file (a cloud file too, which upstream downloads uncapped) is over the cap."""
    if FILE_CAP is None:
        return
    for path in value if isinstance(value, list) else [value]:
        if isinstance(path, str) and os.path.isfile(path) and os.path.getsize(path) > FILE_CAP:
            raise _too_large(f"{role} file", os.path.getsize(path), FILE_CAP)


def metric(req: dict[str, Any]) -> tuple[float, str | None]:
    func = req["func"]
    fn = _find("metric", func)
    if fn is None:
        return 0.0, f"unknown metric {func}"
    result_cfg, expected_cfg = req.get("result"), req.get("expected")
    if not result_cfg:
        return 0.0, f"metric {func} has no result getter"
    env = Env(req)
    states = []
    for role, cfg in (("result", result_cfg), ("expected", expected_cfg)):
        if not cfg:
            continue
        getter = _find("getter", cfg["type"])
        if getter is None:
            return 0.0, f"unknown getter {cfg['type']}"
        try:
            state = getter(env, cfg)
        except LimitHit as e:
            return 0.0, f"{role} {e}" if str(e).startswith("file ") else str(e)
        except MemoryError:
            raise
        except FileNotFoundError as e:
            return 0.0, _error(f"{role} file not found ({cfg['type']})", e)
        except Exception as e:
            traceback.print_exc()
            return 0.0, _error(f"{role} getter {cfg['type']} failed", e)
        if cfg["type"] in FILE_GETTERS and _missing(state):
            where = cfg.get("path") or cfg.get("dest") or cfg["type"]
            return 0.0, f"{role} file missing: {where}"
        if cfg["type"] in FILE_GETTERS:
            try:
                _check_sizes(role, state)
            except LimitHit as e:
                return 0.0, str(e)
        states.append((role, cfg["type"], state))
    try:
        value = fn(*(s for _, _, s in states), **(req.get("options") or {}))
        score = float(value)
    except MemoryError:
        raise
    except Exception as e:
        traceback.print_exc()
        return 0.0, _error(f"metric {func} raised", e)
    empty = [f"the {role} getter {kind} returned nothing" for role, kind, s in states if s is None]
    if score == 0.0 and empty:
        return 0.0, f"metric {func} scored 0; " + ", ".join(empty)
    return score, None


def handle(req: dict[str, Any]) -> dict[str, Any]:
    op = req.get("op")
    if op == "ping":
        return {"ok": True, "pid": os.getpid(), "import_s": IMPORT_S, "python": sys.executable}
    if op == "metric":
        t0 = time.monotonic()
        restart = False
        try:
            score, reason = metric(req)
        except KeyError as e:
            return {"ok": False, "error": f"metric request lacks {e}"}
        except MemoryError:
            # Only the address-space backstop raises it (the host kills a worker over its memory limit
            # first, unless an allocation outran its watch); what this process holds is now suspect.
            size = f" of {ADDRESS_SPACE / 2**30:.3g} GiB" if ADDRESS_SPACE else ""
            score, reason, restart = 0.0, f"evaluator exceeded its address-space limit{size}", True
        return {
            "ok": True,
            "score": score,
            "reason": reason,
            "seconds": time.monotonic() - t0,
            "restart": restart,
        }
    if op == "crash":  # for the tests: a worker that dies mid-request must be restarted
        os._exit(3)
    return {"ok": False, "error": f"unknown op {op!r}"}


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except ValueError as e:
            answer: dict[str, Any] = {"ok": False, "error": f"not JSON: {e}"}
        else:
            if req.get("op") == "quit":
                return
            answer = handle(req)
            answer["id"] = req.get("id")
        _PROTOCOL.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
