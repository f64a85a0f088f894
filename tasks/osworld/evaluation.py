"""Scoring an OSWorld task with OSWorld's own evaluators, the way OSWorld's ``DesktopEnv.evaluate``
scores it (desktop-env 1.0.2):

1. the evaluator's ``postconfig`` steps run against the task's server;
2. ``func == "infeasible"`` scores 1 only if the agent's last action was FAIL; any other task scores 0
   when it was;
3. each metric is ``metric(result_state, expected_state, **options)``, the states fetched by the
   official getters (worker side, in the evaluator venv: tasks/osworld/evalworker/worker.py);
4. a list of metrics combines by ``conj``: "and" stops at the first 0 (else the mean), "or" at the
   first 1 (else the max).

Where OSWorld would crash or lose the task (a getter that raises, a metric that raises, a worker that
dies) the score is 0 with the reason kept: ``evaluate`` never raises for a task's fault.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from env.osworld_client import OSWorldClient
from tasks.osworld.evalenv import WORKER_DIR, EvalEnvError, default_venv, ready_python
from tasks.osworld.evallimits import EvalLimits, Usage, usage_of
from tasks.osworld.setup import (
    CDP_PORTS,
    VM_HOME,
    VM_HOME_RE,
    SetupContext,
    SetupReport,
    StepFailed,
    run_postconfig,
)
from tasks.osworld.task import Getter, Metric, Task

FAIL = "FAIL"
START_TIMEOUT_S = 120.0  # a worker's start: Python plus desktop_env's imports (~2 s idle)
WATCH_S = 0.05  # how often a busy worker's memory and CPU time are read


@dataclass(frozen=True)
class Server:
    """Where a task's machine answers OSWorld's protocol: ours (with a token) or an OSWorld VM."""

    host: str
    port: int
    token: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @classmethod
    def from_url(cls, url: str, token: str | None = None) -> Server:
        """``http://[TOKEN:@]HOST[:PORT]`` (``--vm`` URLs; the port defaults to OSWorld's 5000)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"server URL must be http://HOST:PORT, got {url!r}")
        if token is None and parts.username:
            token = urllib.parse.unquote(parts.username)
        return cls(parts.hostname, parts.port or 5000, token)


@dataclass(frozen=True)
class MetricScore:
    func: str
    score: float
    reason: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Evaluation:
    score: float
    reason: str | None = None
    metrics: list[MetricScore] = field(default_factory=list)
    postconfig: SetupReport | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "reason": self.reason,
            "metrics": [vars(m) for m in self.metrics],
            "postconfig": [o.line() for o in self.postconfig.outcomes] if self.postconfig else [],
            "seconds": round(self.seconds, 3),
        }


class WorkerError(RuntimeError):
    """The worker could not answer (absent venv, crash, timeout); the message is one line."""


class EvaluatorWorker:
    """A long-lived worker process in the evaluator venv (importing the metrics takes seconds, so one
    serves every task). Started on first use; restarted on the next request after a crash or a
    timeout. Thread-safe: requests are serialised.

    It parses files the sandbox made, so it runs under ``limits`` (default: ``EvalLimits.from_env()``):
    a request over one scores 0 with the limit in its reason and costs a restart, never the host."""

    def __init__(
        self,
        venv: Path | None = None,
        timeout_s: float = 300.0,
        log: Path | None = None,
        limits: EvalLimits | None = None,
    ) -> None:
        self.venv = (venv or default_venv()).absolute()  # the worker runs in WORKER_DIR
        self.timeout_s = timeout_s
        self.log = log  # where the worker's stderr goes (the getters' and metrics' own logging)
        self.limits = limits or EvalLimits.from_env()
        self.last_usage: Usage | None = None  # the worker's, as the last request ended (for benches)
        self.last_cpu_s = 0.0  # CPU time the last request used
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._next_id = 0
        self.starts = 0

    def __enter__(self) -> EvaluatorWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> subprocess.Popen[str]:
        try:
            python = ready_python(self.venv)
        except EvalEnvError as e:
            raise WorkerError(str(e)) from None
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        for name, value in (
            ("KIMI_EVAL_ADDRESS_SPACE", self.limits.address_space),
            ("KIMI_EVAL_FILE_BYTES", self.limits.file_bytes),
        ):
            env.pop(name, None)
            if value is not None:
                env[name] = str(value)
        stderr: Any = subprocess.DEVNULL
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            stderr = self.log.open("ab")
        try:
            proc = subprocess.Popen(
                [str(python), str(WORKER_DIR / "worker.py")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                cwd=WORKER_DIR,
                env=env,
                start_new_session=True,
            )
        except OSError as e:
            raise WorkerError(f"cannot start the evaluator worker with {python}: {e}") from None
        finally:
            if stderr is not subprocess.DEVNULL:
                stderr.close()  # the child has its own copy
        self._lines = queue.Queue()
        lines = self._lines
        out = proc.stdout
        assert out is not None

        def pump() -> None:
            with contextlib.suppress(OSError, ValueError):  # ValueError: closed by _stop meanwhile
                for line in out:
                    lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        self.starts += 1
        return proc

    def _stop(self, kill: bool = False) -> None:
        """Ask the worker to quit (``kill``: kill its process group at once, as over a limit)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if kill and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert proc.stdin is not None
                proc.stdin.write('{"op": "quit"}\n')
                proc.stdin.flush()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                # Stuck in a getter: end it with what it started (its own session, e.g. Playwright's driver).
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()

    def close(self) -> None:
        with self._lock:
            self._stop()

    def request(self, req: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        """One request, one answer. WorkerError when the worker dies, hangs or answers an error.
        ``timeout_s`` (default: the worker's) counts from the request, not from a (re)start, which
        has its own limit: importing the evaluators takes seconds, more on a busy machine."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._stop()
                self._proc = self._start()
                self._exchange({"op": "ping"}, START_TIMEOUT_S, cpu_limit=False)  # imports: seconds of CPU
            return self._exchange(req, timeout_s or self.timeout_s)

    def _exchange(self, req: dict[str, Any], timeout_s: float, cpu_limit: bool = True) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        self._next_id += 1
        rid = self._next_id
        try:
            proc.stdin.write(json.dumps({**req, "id": rid}) + "\n")
            proc.stdin.flush()
        except OSError as e:
            self._stop()
            raise WorkerError(f"the evaluator worker died: {e}") from None
        deadline = time.monotonic() + timeout_s
        start = usage_of(proc.pid)
        cpu0 = start.cpu_s if start else 0.0
        limits = self.limits if cpu_limit else dataclasses.replace(self.limits, cpu_s=None)
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.0, min(left, WATCH_S)))
            except queue.Empty:
                line = ""
            usage = usage_of(proc.pid)
            if usage is not None:
                self.last_usage, self.last_cpu_s = usage, usage.cpu_s - cpu0
                over = limits.exceeded(usage, cpu0)
                if over:
                    self._stop(kill=True)
                    raise WorkerError(over)
            if line == "" and left <= 0:
                self._stop()  # it may be stuck in a getter; a fresh one answers the next request
                raise WorkerError(
                    f"the evaluator worker did not answer {req.get('op')} within {timeout_s:.0f} s"
                ) from None
            if line == "":
                continue
            if line is None:
                code = proc.wait()
                self._stop()
                raise WorkerError(f"the evaluator worker exited (status {code}) during {req.get('op')}")
            try:
                answer = json.loads(line)
            except ValueError:
                continue  # not ours: a library that wrote to the real stdout
            if answer.get("id") != rid:
                continue  # a late answer to a request that timed out
            if answer.get("restart"):
                self._stop()  # it ran out of address space: what it holds now is suspect
            if not answer.get("ok"):
                raise WorkerError(f"the evaluator worker refused the request: {answer.get('error')}")
            return answer

    def ping(self) -> dict[str, Any]:
        return self.request({"op": "ping"}, timeout_s=START_TIMEOUT_S)

    def metric(
        self,
        metric: Metric,
        server: Server,
        cache_dir: Path,
        *,
        chromium_port: int = 9222,
        vlc_port: int = 8080,
        timeout_s: float | None = None,
    ) -> MetricScore:
        """One metric with its getters; a worker failure is a score of 0 with its reason."""
        req = {
            "op": "metric",
            "server": {"host": server.host, "port": server.port, "token": server.token},
            "cache_dir": str(cache_dir),
            "func": metric.func,
            "result": metric.result.model_dump() if metric.result else None,
            "expected": metric.expected.model_dump() if metric.expected else None,
            "options": metric.options,
            "chromium_port": chromium_port,
            "vlc_port": vlc_port,
        }
        t0 = time.monotonic()
        try:
            answer = self.request(req, timeout_s)
        except WorkerError as e:
            return MetricScore(metric.func, 0.0, str(e), time.monotonic() - t0)
        return MetricScore(metric.func, float(answer["score"]), answer.get("reason"), answer["seconds"])


def combine(scores: list[MetricScore], conj: str) -> tuple[float, str | None]:
    """OSWorld's rule for a list of metrics (already cut short as ``evaluate`` does)."""
    last = scores[-1]
    if conj == "and" and last.score == 0.0:
        return 0.0, last.reason or f"metric {last.func} scored 0"
    if conj == "or" and last.score == 1.0:
        return 1.0, None
    values = [s.score for s in scores]
    if conj == "and":
        return sum(values) / len(values), None
    return max(values), next((s.reason for s in scores if s.reason), None) if max(values) == 0 else None


def rehome(metric: Metric, home: str) -> Metric:
    """The metric for a machine whose HOME is not OSWorld's /home/user (a sandbox): /home/user in its
    getters' parameters (paths, commands) becomes that HOME, as setup steps are rehomed; ``dest``, a
    file name in the local cache, stays."""
    if home == VM_HOME:
        return metric
    escaped = json.dumps(home)[1:-1]

    def fix(g: Getter | None) -> Getter | None:
        if g is None:
            return None
        data = g.model_dump()
        for k, v in data.items():
            if k != "dest":
                data[k] = json.loads(VM_HOME_RE.sub(lambda _: escaped, json.dumps(v)))
        return Getter.model_validate(data)

    return metric.model_copy(update={"result": fix(metric.result), "expected": fix(metric.expected)})


# The getters that read the browser over its DevTools port (desktop-env 1.0.2's getters/chrome.py, and
# ours): they connect from the scoring host to http://{vm_ip}:{chromium_port}.
DEVTOOLS_GETTERS = frozenset(
    {
        "active_tab_html_parse",
        "active_tab_info",
        "chrome_appearance_mode_ui",
        "chrome_saved_address",
        "gotoRecreationPage_and_get_html_content",
        "info_from_website",
        "number_of_search_results",
        "open_tabs_info",
        "page_info",
        "pdf_from_url",
    }
)


def devtools_port(host: str, timeout_s: float = 0.5) -> int:
    """9222, OSWorld's port (socat forwards it to Chrome's 1337 in its image), unless only 1337
    answers: a sandbox without socat, where Chrome listens on the port its task launched it with."""
    for port in CDP_PORTS:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return port
        except OSError:
            continue
    return CDP_PORTS[0]


def evaluate(
    task: Task,
    server: Server,
    *,
    last_action: str | None,
    cache_dir: Path,
    worker: EvaluatorWorker,
    setup: SetupContext | None = None,
    chromium_port: int | None = None,
    vlc_port: int = 8080,
) -> Evaluation:
    """Score ``task`` on ``server`` after the agent's run (``last_action``: its final action, e.g.
    "DONE" or "FAIL", None when it took none). ``setup`` is the context postconfig runs in: pass the one
    the task's config ran in; default: a plain client for ``server``, as for an OSWorld VM.
    ``chromium_port``: where the DevTools getters reach the browser (default: see ``devtools_port``).
    Never raises for the task's fault."""
    t0 = time.monotonic()
    ev = task.evaluator
    cache_dir.mkdir(parents=True, exist_ok=True)
    own = setup is None
    ctx = setup or SetupContext(client=OSWorldClient(server.url, server.token), cache_dir=cache_dir)
    try:
        report = run_postconfig(task, ctx) if ev.postconfig else None

        def done(score: float, reason: str | None, metrics: list[MetricScore] | None = None) -> Evaluation:
            if report is not None and not report.ok and reason is None and score == 0.0:
                problem = report.first_problem()
                reason = f"postconfig {problem.line()}" if problem else None
            return Evaluation(score, reason, metrics or [], report, time.monotonic() - t0)

        if ev.func == "infeasible":
            if last_action == FAIL:
                return done(1.0, None)
            return done(0.0, "infeasible task: the last action was not FAIL")
        if last_action == FAIL:
            return done(0.0, "the agent gave up (FAIL) on a feasible task")

        metrics = ev.metrics()
        if any(VM_HOME_RE.search(m.model_dump_json()) for m in metrics):
            try:
                home = ctx.machine_home()
            except StepFailed:
                home = VM_HOME  # unreachable: the getters will say so
            metrics = [rehome(m, home) for m in metrics]
        if chromium_port is None:
            uses = {g.type for m in metrics for g in (m.result, m.expected) if g is not None}
            chromium_port = devtools_port(server.host) if uses & DEVTOOLS_GETTERS else CDP_PORTS[0]
        scores: list[MetricScore] = []
        for metric in metrics:
            scores.append(
                worker.metric(metric, server, cache_dir, chromium_port=chromium_port, vlc_port=vlc_port)
            )
            s = scores[-1].score
            if (ev.conj == "and" and s == 0.0) or (ev.conj == "or" and s == 1.0):
                break
        score, reason = combine(scores, ev.conj)
        return done(score, reason, scores)
    finally:
        if own:
            ctx.client.close()
