"""Running a task's setup steps (``config``, later ``postconfig``) against any server of OSWorld's
protocol (OSWorld's own in its VMs, or ``kimi-agent serve``), through ``OSWorldClient``.

``REGISTRY`` is the one list of what is supported: each step type maps to a handler, or to the reason
it cannot run. Every step ends in a typed ``Outcome`` (ok / error with the reason / unsupported).
Semantics follow OSWorld's SetupController (desktop_env/controllers/setup.py): placeholders are filled
in execute and command only; a failed launch, execute or window step is logged there and setup goes
on, while a failed download or open stops it; we do the same, and stop at an unsupported step.

Chrome's tabs and history are reached from inside the machine: a short Python program we generate
(data passed as JSON, never model text) runs through ``/run_python`` and talks to Chrome's DevTools
HTTP endpoints on localhost (``/json/new``, ``/json/list``, ``/json/close``). That needs no port
forwarded to the host, so it works the same on a sandbox and on a VM (OSWorld instead connects
Playwright to port 9222 of the VM from the host).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from env.osworld_client import NotFound, OSWorldClient, OSWorldError
from tasks.osworld import windows
from tasks.osworld.task import (
    CloseTabsParams,
    CommandParams,
    DownloadParams,
    HistoryParams,
    OpenParams,
    OpenTabsParams,
    SleepParams,
    Step,
    Task,
    WindowParams,
)

Status = Literal["ok", "error", "unsupported"]
PLACEHOLDERS = (
    "{CLIENT_PASSWORD}",
    "{SCREEN_WIDTH_HALF}",
    "{SCREEN_HEIGHT_HALF}",
    "{SCREEN_WIDTH}",
    "{SCREEN_HEIGHT}",
)
# OSWorld's Chrome listens on 1337 and socat forwards 9222 to it; a sandbox may have no socat.
CDP_PORTS = (9222, 1337)
UNTIL_MAX_S = 60.0
VM_HOME = "/home/user"  # the OSWorld image's user; task files name it in absolute paths
VM_HOME_RE = re.compile(
    re.escape(VM_HOME) + r"(?![\w.-])"
)  # OSWorld repeats an `until` command without end while it answers 200


class StepFailed(Exception):
    """A step that ran and failed; the message is the reason."""


@dataclass(frozen=True)
class Outcome:
    index: int
    type: str
    status: Status
    detail: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def line(self) -> str:
        return f"step {self.index + 1} {self.type}: {self.status}" + (
            f": {self.detail}" if self.detail else ""
        )


@dataclass(frozen=True)
class SetupReport:
    outcomes: list[Outcome]
    not_run: int  # steps after the one that stopped setup

    @property
    def ok(self) -> bool:
        return self.not_run == 0 and all(o.ok for o in self.outcomes)

    @property
    def unsupported(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "unsupported"]

    def first_problem(self) -> Outcome | None:
        return next((o for o in self.outcomes if not o.ok), None)


@dataclass
class SetupContext:
    """What steps need besides their parameters."""

    client: OSWorldClient
    cache_dir: Path
    client_password: str = "password"  # the OSWorld VM image's user password
    screen_size: tuple[int, int] | None = None  # default: asked from the server on first use
    download_timeout_s: float = 300.0
    cdp_wait_s: float = 20.0
    # activate_window / close_window wait this long for a window that is not up yet. OSWorld's task
    # files launch an app, sleep a fixed time (tuned for their VM) and then activate it; a sandbox on
    # a loaded machine may start the app later, and activating nothing sends the agent's first keys
    # nowhere. Waiting only turns a failure into the step OSWorld meant; a window that is up is
    # handled at once, as on OSWorld's server.
    window_wait_s: float = 10.0
    window_poll_s: float = 0.25
    server_finds_windows: bool | None = None  # learned on first need: see _server_finds_windows
    sleep: Callable[[float], None] = time.sleep
    # The machine's HOME; default: asked from the server when a step needs it.
    home: str | None = None
    # Where relative local paths of downloads are found: the task file's directory (run_config sets
    # it), so a suite ships its input files beside its task files.
    task_dir: Path | None = None

    def machine_home(self) -> str:
        if self.home is None:
            try:
                r = self.client.execute(["sh", "-c", 'printf %s "$HOME"'])
            except OSWorldError as e:
                raise StepFailed(f"cannot learn the machine's HOME: {e}") from None
            self.home = r.output.strip() or VM_HOME
        return self.home

    def size(self) -> tuple[int, int]:
        if self.screen_size is None:
            self.screen_size = self.client.screen_size()
        return self.screen_size


@dataclass(frozen=True)
class StepHandler:
    """``run`` returns a short detail line or raises StepFailed; ``run`` None means unsupported,
    for ``why``. ``fatal``: a failure stops setup (as in OSWorld's SetupController)."""

    run: Callable[[SetupContext, Any], str] | None
    fatal: bool = True
    why: str = ""


# -- commands ------------------------------------------------------------------------------------------
def fill_placeholders(command: str | list[str], ctx: SetupContext) -> str | list[str]:
    w, h = ctx.size() if any(p in json.dumps(command) for p in PLACEHOLDERS[1:]) else (0, 0)
    values = {
        "{CLIENT_PASSWORD}": ctx.client_password,
        "{SCREEN_WIDTH_HALF}": str(w // 2),
        "{SCREEN_HEIGHT_HALF}": str(h // 2),
        "{SCREEN_WIDTH}": str(w),
        "{SCREEN_HEIGHT}": str(h),
    }

    def fill(s: str) -> str:
        for k in PLACEHOLDERS:
            s = s.replace(k, values[k])
        return s

    return fill(command) if isinstance(command, str) else [fill(a) for a in command]


def _launch(ctx: SetupContext, p: CommandParams) -> str:
    try:
        return ctx.client.launch(p.command, shell=p.shell)
    except OSWorldError as e:
        raise StepFailed(str(e)) from None


def _execute(ctx: SetupContext, p: CommandParams) -> str:
    command = fill_placeholders(p.command, ctx)
    until = p.until or {}
    deadline = time.monotonic() + UNTIL_MAX_S
    while True:
        try:
            r = ctx.client.execute(command, shell=p.shell)
        except OSWorldError as e:
            raise StepFailed(str(e)) from None
        if r.status != "success":
            raise StepFailed(r.error or "the server could not run the command")
        for name, text in ((p.stdout, r.output), (p.stderr, r.error)):
            if name:  # OSWorld keeps them in its cache dir for the evaluator to read
                (ctx.cache_dir / Path(name).name).write_text(text)
        matched = (
            ("returncode" in until and r.returncode == until["returncode"])
            or ("stdout" in until and str(until["stdout"]) in r.output)
            or ("stderr" in until and str(until["stderr"]) in r.error)
        )
        if not until or matched:
            return f"exit status {r.returncode}"
        if time.monotonic() > deadline:
            raise StepFailed(f"the command never met {until} within {UNTIL_MAX_S:g} s")
        ctx.sleep(0.3)


# -- files ---------------------------------------------------------------------------------------------
def cache_path(cache_dir: Path, url: str, vm_path: str) -> Path:
    # OSWorld's cache naming (uuid5 of the URL + the file's name), so that its caches can be reused.
    return cache_dir / f"{uuid.uuid5(uuid.NAMESPACE_URL, url)}_{os.path.basename(vm_path)}"


def local_source(url: str, task_dir: Path | None) -> Path | None:
    """The file a download's ``url`` reads on this machine (file:// URLs and paths; a relative one
    lies beside the task file), or None for a URL that is downloaded."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("file", ""):
        return None
    local = Path(urllib.request.url2pathname(parts.path)) if parts.scheme else Path(url).expanduser()
    if not local.is_absolute() and task_dir is not None:
        local = task_dir / local  # `file:files/a.csv` or `files/a.csv`: beside the task file
    return local


def fetch_to_cache(url: str, vm_path: str, ctx: SetupContext) -> Path:
    """A local copy of ``url``: file:// URLs and local paths are read in place of a download;
    http(s) is downloaded once into the cache dir (atomically: no partial file stays)."""
    target = cache_path(ctx.cache_dir, url, vm_path)
    if target.is_file():
        return target
    local = local_source(url, ctx.task_dir)
    if local is not None:
        if not local.is_file():
            raise StepFailed(f"no such local file {local} (for {url})")
        return local
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise StepFailed(f"cannot download {url}: only http(s), file:// URLs and local paths are supported")
    ctx.cache_dir.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=ctx.download_timeout_s) as r, open(part, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
        part.replace(target)
    except urllib.error.HTTPError as e:
        part.unlink(missing_ok=True)
        raise StepFailed(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    except (OSError, urllib.error.URLError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise StepFailed(f"cannot download {url}: {reason} (offline? put the file at {target})") from None
    return target


def _download(ctx: SetupContext, p: DownloadParams) -> str:
    sizes = []
    for f in p.files:
        local = fetch_to_cache(f.url, f.path, ctx)
        try:
            ctx.client.upload(f.path, local.read_bytes())
        except OSWorldError as e:
            raise StepFailed(f"upload of {f.path}: {e}") from None
        sizes.append(f"{f.path} ({local.stat().st_size} bytes)")
    return ", ".join(sizes)


def _open(ctx: SetupContext, p: OpenParams) -> str:
    try:
        return ctx.client.open_file(p.path)
    except NotFound:
        raise StepFailed(f"no file or program {p.path} on the machine") from None
    except OSWorldError as e:
        raise StepFailed(str(e)) from None


# -- windows, time ---------------------------------------------------------------------------------------
def _window(action: str) -> Callable[[SetupContext, WindowParams], str]:
    def run(ctx: SetupContext, p: WindowParams) -> str:
        call = ctx.client.activate_window if action == "activate" else ctx.client.close_window
        t0 = time.monotonic()
        while True:
            # Find it first: OSWorld's server answers 200 when nothing matched. Ours answers 404 and
            # knows its sandbox's title aliases, so there an unlisted name still goes to the server.
            if _window_listed(ctx, p) or _server_finds_windows(ctx):
                try:
                    said = call(p.window_name, strict=p.strict, by_class=p.by_class)
                except NotFound:
                    pass  # not up (ours), or gone since it was listed
                except OSWorldError as e:
                    raise StepFailed(str(e)) from None
                else:
                    waited = time.monotonic() - t0
                    return said if waited < 1 else f"{said} (after {waited:.1f} s)"
            if time.monotonic() - t0 >= ctx.window_wait_s:
                break
            ctx.sleep(ctx.window_poll_s)
        found = windows.describe(p.window_name, p.strict, p.by_class)
        raise StepFailed(f"no window matching {found} within {ctx.window_wait_s:g} s")

    return run


def _window_listed(ctx: SetupContext, p: WindowParams) -> bool:
    """Whether a window the step names is up. A machine that cannot list its windows counts as
    not showing it where the server looks itself, and fails the step where it does not."""
    try:
        return any(
            windows.matches(w, p.window_name, p.strict, p.by_class) for w in windows.list_windows(ctx.client)
        )
    except windows.CannotList as e:
        if _server_finds_windows(ctx):
            return False
        raise StepFailed(f"cannot list the machine's windows to find {p.window_name!r}: {e}") from None
    except OSWorldError as e:
        raise StepFailed(str(e)) from None


def _server_finds_windows(ctx: SetupContext) -> bool:
    """Whether the server answers 404 for a window that is not there (ours) rather than 200
    (OSWorld's): asked once, with a name no window has (acting on nothing changes nothing)."""
    if ctx.server_finds_windows is None:
        try:
            ctx.client.activate_window(f"kimi-agent probe {uuid.uuid4().hex}", strict=True)
        except NotFound:
            ctx.server_finds_windows = True
        except OSWorldError as e:
            raise StepFailed(str(e)) from None
        else:
            ctx.server_finds_windows = False
    return ctx.server_finds_windows


def _sleep(ctx: SetupContext, p: SleepParams) -> str:
    ctx.sleep(p.seconds)
    return f"{p.seconds:g} s"


# -- Chrome, from inside the machine ---------------------------------------------------------------------
# The program run by /run_python. It prints one JSON line: {"ok": ...} or {"error": "..."}.
_CDP_PRELUDE = """
import json, sqlite3, time, urllib.parse, urllib.request
ARGS = json.loads(%r)

def cdp(port, path, method="GET"):
    req = urllib.request.Request("http://127.0.0.1:%%d%%s" %% (port, path), method=method)
    with urllib.request.urlopen(req, timeout=15) as r:
        body = r.read().decode("utf-8", "replace")
    try:
        return json.loads(body)
    except ValueError:
        return body

def find_port():
    deadline = time.time() + ARGS["wait_s"]
    while True:
        for port in ARGS["ports"]:
            try:
                cdp(port, "/json/version")
                return port
            except OSError:
                pass
        if time.time() > deadline:
            return None
        time.sleep(0.5)

def pages(port):
    return [t for t in cdp(port, "/json/list") if t.get("type") == "page"]

def norm(url):
    # Like OSWorld's compare_urls: scheme optional, host case and a leading www. ignored,
    # a trailing slash ignored.
    if "://" not in url:
        url = "http://" + url
    u = urllib.parse.urlsplit(url)
    host = u.netloc.lower()
    host = host[4:] if host.startswith("www.") else host
    return (host, u.path.rstrip("/"), u.query)

def close(port, ids):
    # /json/close only starts closing: wait until the tabs are gone, so setup ends settled.
    for i in ids:
        cdp(port, "/json/close/" + i)
    deadline = time.time() + 5
    while set(ids) & {t["id"] for t in pages(port)} and time.time() < deadline:
        time.sleep(0.1)

def done(**kw):
    print(json.dumps(kw))
    raise SystemExit(0)

port = find_port() if ARGS.get("ports") else None
if ARGS.get("ports") and port is None:
    done(error="no Chrome DevTools endpoint on localhost port(s) %%s within %%g s (is Chrome running "
         "with --remote-debugging-port?)" %% (", ".join(map(str, ARGS["ports"])), ARGS["wait_s"]))
"""

_OPEN_TABS = """
# Wait for the tab Chrome starts with; /json/list lists the newest first, so it is the last one.
deadline = time.time() + 5
while not pages(port) and time.time() < deadline:
    time.sleep(0.2)
first = pages(port)[-1:]
for url in ARGS["urls"]:
    # Chrome unescapes the query: quoted, a URL keeps its own query and fragment.
    cdp(port, "/json/new?" + urllib.parse.quote(url, safe=""), "PUT")
close(port, [t["id"] for t in first])  # OSWorld closes the tab Chrome started with
done(ok="opened %d tab(s) through port %d" % (len(ARGS["urls"]), port))
"""

_CLOSE_TABS = """
closing = []
for url in ARGS["urls"]:
    for t in pages(port):
        if norm(t.get("url", "")) == norm(url) and t["id"] not in closing:
            closing.append(t["id"])
            break
close(port, closing)
done(ok="closed %d of %d tab(s)" % (len(closing), len(ARGS["urls"])))
"""

# Chrome's History database: times are microseconds since 1601-01-01 (UTC), and each visit row
# points at its urls row (OSWorld's update_browse_history writes the same rows, transition
# 805306368 = a link, chain start and end).
_HISTORY = """
import os, shutil, subprocess
home = os.path.expanduser("~")
root = os.path.join(home, ".config", "google-chrome")
db = os.path.join(root, "Default", "History")
if not os.path.isfile(db):
    # A fresh profile: Chrome itself creates the database with its current schema (a
    # hand-made one would be discarded when Chrome starts), in a short headless run.
    browser = shutil.which("google-chrome")
    if browser is None:
        done(error="no Chrome History database, and no google-chrome to create one")
    argv = [browser, "--headless=new", "--no-first-run", "--user-data-dir=" + root, "about:blank"]
    if os.geteuid() == 0:
        argv.insert(1, "--no-sandbox")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while p.poll() is None and time.time() < deadline and not (os.path.isfile(db) and os.path.getsize(db)):
        time.sleep(0.2)
    time.sleep(1)
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
    if not os.path.isfile(db):
        done(error="%s did not create its History database %s" % (browser, db))
epoch_1601 = 11644473600  # seconds from 1601-01-01 to 1970-01-01
try:
    con = sqlite3.connect(db, timeout=5)
    for item in ARGS["history"]:
        t = int((time.time() - item["visit_time_from_now_in_seconds"] + epoch_1601) * 1000000)
        cur = con.execute("INSERT INTO urls (url, title, visit_count, typed_count, last_visit_time, hidden) "
                          "VALUES (?, ?, 1, 0, ?, 0)", (item["url"], item["title"], t))
        con.execute("INSERT INTO visits (url, visit_time, from_visit, transition, segment_id, visit_duration) "
                    "VALUES (?, ?, 0, 805306368, 0, 0)", (cur.lastrowid, t))
    con.commit()
    con.close()
except sqlite3.Error as e:
    done(error="cannot write %s: %s (Chrome holds it while it runs)" % (db, e))
done(ok="%d visit(s) added to %s" % (len(ARGS["history"]), db))
"""


def chrome_program(body: str, args: dict[str, Any]) -> str:
    """The program for ``/run_python``: the prelude with ``args`` as JSON, then ``body``."""
    return _CDP_PRELUDE % json.dumps(args) + body


def _run_inside(ctx: SetupContext, body: str, args: dict[str, Any]) -> str:
    try:
        r = ctx.client.run_python(chrome_program(body, args))
    except OSWorldError as e:
        raise StepFailed(str(e)) from None
    lines = (r.get("output") or "").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if "ok" in answer:
        return str(answer["ok"])
    if "error" in answer:
        raise StepFailed(str(answer["error"]))
    error = (r.get("error") or r.get("message") or "no answer").strip().splitlines()
    raise StepFailed(f"the program inside the machine failed: {error[-1] if error else 'no answer'}")


def _open_tabs(ctx: SetupContext, p: OpenTabsParams) -> str:
    return _run_inside(
        ctx, _OPEN_TABS, {"ports": list(CDP_PORTS), "wait_s": ctx.cdp_wait_s, "urls": p.urls_to_open}
    )


def _close_tabs(ctx: SetupContext, p: CloseTabsParams) -> str:
    return _run_inside(
        ctx, _CLOSE_TABS, {"ports": list(CDP_PORTS), "wait_s": ctx.cdp_wait_s, "urls": p.urls_to_close}
    )


def _history(ctx: SetupContext, p: HistoryParams) -> str:
    # No DevTools port: the database is written before Chrome starts (as the corpus's task does).
    return _run_inside(ctx, _HISTORY, {"history": [h.model_dump() for h in p.history]})


CLOUD = "needs a Google account and OAuth credentials (cloud setup), which kimi-agent does not handle"
REGISTRY: dict[str, StepHandler] = {
    "download": StepHandler(_download),
    "launch": StepHandler(_launch, fatal=False),
    "execute": StepHandler(_execute, fatal=False),
    "command": StepHandler(_execute, fatal=False),
    "open": StepHandler(_open),
    "activate_window": StepHandler(_window("activate"), fatal=False),
    "close_window": StepHandler(_window("close"), fatal=False),
    "sleep": StepHandler(_sleep),
    "chrome_open_tabs": StepHandler(_open_tabs),
    "chrome_close_tabs": StepHandler(_close_tabs),
    "update_browse_history": StepHandler(_history),
    "googledrive": StepHandler(None, why=CLOUD),
    "login": StepHandler(None, why=CLOUD),
}


def is_supported(step_type: str) -> bool:
    handler = REGISTRY.get(step_type)
    return handler is not None and handler.run is not None


def why_unsupported(step_type: str) -> str:
    handler = REGISTRY.get(step_type)
    if handler is None:
        return f"setup step type {step_type!r} is not known to kimi-agent"
    return handler.why


def rehome(step: Step, ctx: SetupContext) -> Step:
    """The step for a machine whose HOME is not OSWorld's /home/user (a sandbox): /home/user in any
    parameter becomes that HOME, and a relative download path is made relative to it (OSWorld's
    server runs in /home/user; ours resolves an upload path against its own directory)."""
    text = json.dumps(step.model_dump(mode="json"))
    relative = step.type == "download" and any(
        not f.path.startswith(("/", "~")) for f in step.parameters.files
    )
    if not relative and not VM_HOME_RE.search(text):
        return step
    home = ctx.machine_home()
    escaped = json.dumps(home)[1:-1]  # home inside a JSON string
    data = json.loads(VM_HOME_RE.sub(lambda _: escaped, text))
    if relative:
        for f in data["parameters"]["files"]:
            if not f["path"].startswith(("/", "~")):
                f["path"] = f"{home}/{f['path']}"
    return Step.model_validate(data)


def run_step(step: Step, ctx: SetupContext, index: int = 0) -> Outcome:
    handler = REGISTRY.get(step.type)
    if handler is None or handler.run is None:
        return Outcome(index, step.type, "unsupported", why_unsupported(step.type))
    t0 = time.monotonic()
    try:
        detail = handler.run(ctx, rehome(step, ctx).parameters)
        status: Status = "ok"
    except (StepFailed, OSWorldError) as e:
        detail, status = str(e), "error"
    except (OSError, ValueError) as e:  # a cache dir that cannot be written, a bad parameter
        detail, status = f"{type(e).__name__}: {e}", "error"
    return Outcome(index, step.type, status, " ".join(detail.split()), time.monotonic() - t0)


def run_steps(steps: Sequence[Step], ctx: SetupContext) -> SetupReport:
    """Run ``steps`` in order; stop after an unsupported step or a failed fatal one."""
    ctx.cache_dir.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    for i, step in enumerate(steps):
        outcome = run_step(step, ctx, i)
        outcomes.append(outcome)
        handler = REGISTRY.get(step.type)
        stops = outcome.status == "unsupported" or (
            outcome.status == "error" and (handler is None or handler.fatal)
        )
        if stops:
            return SetupReport(outcomes, len(steps) - i - 1)
    return SetupReport(outcomes, 0)


def _for_task(task: Task, ctx: SetupContext) -> SetupContext:
    if task.path is not None:
        ctx.task_dir = task.path.parent
    return ctx


def run_config(task: Task, ctx: SetupContext) -> SetupReport:
    return run_steps(task.config, _for_task(task, ctx))


def run_postconfig(task: Task, ctx: SetupContext) -> SetupReport:
    return run_steps(task.evaluator.postconfig, _for_task(task, ctx))
