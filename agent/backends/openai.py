"""Backend B: an OpenAI-compatible chat server (vLLM `serve`), spoken to over plain HTTP/1.1.

Images go out as PNG data URLs of agent.models.kimi_vl.vision.wire_image: the server runs MoonViT's rule itself,
so we send the shrunk screenshot only where the rule would leave it as it is, else the original; what
the server ends up with is then exactly what the official processor makes of the screenshot, and its
token count is vision.image_tokens of the screenshot.

No ``stop`` is sent: Kimi-VL's checkpoint declares ``<|im_end|>`` as its generation EOS, which vLLM
stops at already, and a stop *string* would not match it (special tokens are dropped from the text).

Why httpcore2 and not the openai SDK: the SDK's timeout is per socket read (a server dribbling a byte
every 0.5 s holds a 2 s-timeout call for as long as it likes), it raises JSONDecodeError,
AttributeError or multi-line pydantic text on a malformed 200, and we used none of its types. Here
``timeout_s`` bounds one attempt end to end: every connect, write and read is clamped to the calling
thread's deadline, and reads wait in slices of at most ``SLICE_S`` so that a KeyboardInterrupt (the
loop raises it from its SIGINT handler, or it is set on the thread) surfaces within a slice; httpcore
then closes the connection. All I/O runs in the calling thread, so nothing is left behind.

Retries are deterministic (``backoff_s * 2**attempt``, capped by ``max_backoff_s``), announced through
``on_retry`` before each sleep, and the final error names the server, the cause and the tries, on one
line. Retried: connection errors, deadlines, a connection cut mid-reply, 429 (``Retry-After`` in seconds
or as an HTTP date, capped), 5xx and a malformed 200 to a chat request. Other 4xx fail at once.

Thread safety: a call keeps its state in locals and its deadline in a thread-local; the instance holds
settings and a connection pool, which is safe to share between threads.

Environment proxies (HTTP_PROXY, ...) are not used: the server is normally on this machine or a LAN.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpcore2
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.backends.base import BackendError, Completion, GenerationParams
from agent.history import utf8_upper_bound
from agent.messages import ImagePart, Message, TextPart
from agent.models.kimi_vl.vision import wire_image

SERVE_HINT = (
    "vllm serve moonshotai/Kimi-VL-A3B-Instruct --served-model-name {model} --trust-remote-code "
    "--max-model-len 32768 --max-num-batched-tokens 32768 --limit-mm-per-prompt '{{\"image\":64}}'"
)
SLICE_S = 0.25  # the longest a read waits before Python code (signal handlers) runs again
MAX_REPLY_BYTES = 64 << 20  # a reply of 8192 tokens is well under 1 MiB
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


# Moonshot's own API (platform.moonshot.ai / .cn docs): its keys are read from these variables, and
# only for its hosts, so that a Moonshot key never goes to another server.
MOONSHOT_HOSTS = ("api.moonshot.ai", "api.moonshot.cn")
MOONSHOT_KEY_VARS = ("MOONSHOT_API_KEY", "KIMI_API_KEY")


def env_api_key(host: str) -> str | None:
    """The key the environment holds for ``host``: for Moonshot's API MOONSHOT_API_KEY, else
    KIMI_API_KEY (OSWorld's Kimi agent), else OPENAI_API_KEY; for any other server OPENAI_API_KEY."""
    names = (*MOONSHOT_KEY_VARS, "OPENAI_API_KEY") if host.lower() in MOONSHOT_HOSTS else ("OPENAI_API_KEY",)
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def thinking_switch(host: str, on: bool) -> dict[str, Any]:
    """The request field that turns a Kimi K2.x model's thinking on or off: Moonshot's API takes
    ``thinking: {"type": "enabled" | "disabled"}`` (platform.kimi.ai/docs/api/models-overview);
    vLLM and SGLang pass ``chat_template_kwargs`` to the K2.x chat template (sgl-project/sgl-cookbook
    docs/autoregressive/Moonshotai/Kimi-K2.5.md @ 26a01fc; SGLang's Kimi-K2.5 usage page)."""
    if host.lower() in MOONSHOT_HOSTS:
        return {"thinking": {"type": "enabled" if on else "disabled"}}
    return {"chat_template_kwargs": {"thinking": on}}


def data_url(image: Image.Image, in_token_limit: int) -> str:
    """The image the server should get (agent.models.kimi_vl.vision.wire_image) as a PNG data URL."""
    buf = io.BytesIO()
    wire_image(image, in_token_limit).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def to_openai(messages: list[Message], in_token_limit: int) -> list[dict[str, Any]]:
    """Messages in the OpenAI chat format. System and assistant turns, and user turns without an
    image, are plain strings (the chat template puts nothing between parts); a user turn with an
    image is a list of content parts in the original order."""
    out: list[dict[str, Any]] = []
    for m in messages:
        has_image = any(isinstance(p, ImagePart) for p in m.parts)
        if has_image and m.role != "user":
            raise ValueError(f"only user messages can hold images, not {m.role} messages")
        if not has_image:
            text = "".join(p.text for p in m.parts if isinstance(p, TextPart))
            out.append({"role": m.role, "content": _unicode(text)})
            continue
        content = [
            {"type": "image_url", "image_url": {"url": data_url(p.image, in_token_limit)}}
            if isinstance(p, ImagePart)
            else {"type": "text", "text": _unicode(p.text)}
            for p in m.parts
        ]
        out.append({"role": m.role, "content": content})
    return out


@dataclass(frozen=True)
class ServerInfo:
    """What GET /v1/models says about the server (vLLM's ModelCard fields)."""

    models: tuple[str, ...]  # every served model id
    root: str | None  # the checkpoint our model was loaded from (hub id or path), when reported
    max_model_len: int | None  # our model's context length on that server, when reported


class OpenAIBackend:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        in_token_limit: int = 4096,
        timeout_s: float = 300.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[str], None] | None = None,
        probe_timeout_s: float = 5.0,
        return_token_ids: bool = False,
    ) -> None:
        if (
            max_retries < 0
            or backoff_s < 0
            or max_backoff_s < 0
            or not timeout_s > 0
            or not probe_timeout_s > 0
        ):
            raise ValueError(
                "max_retries, backoff_s and max_backoff_s must be >= 0, timeout_s and probe_timeout_s > 0"
            )
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise BackendError(f"the model server URL {base_url!r} is not an http:// or https:// URL")
        key = api_key or env_api_key(url.hostname) or "EMPTY"
        if not key.isascii() or not key.isprintable():
            raise BackendError("the API key holds characters an HTTP header cannot carry")
        self.base_url, self.model, self.in_token_limit = base_url.rstrip("/"), model, in_token_limit
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.probe_timeout_s = min(timeout_s, probe_timeout_s)
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.sleep, self.on_retry = sleep, on_retry
        # Ask for the sampled ids (vLLM's ``return_token_ids``: ``token_ids`` per choice). Off by
        # default: OpenAI's own API refuses parameters it does not know.
        self.return_token_ids = return_token_ids
        self._headers = [
            ("Authorization", f"Bearer {key}"),
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
            ("User-Agent", "kimi-agent"),
        ]
        # Idle connections are dropped before uvicorn's (vLLM's) 5 s keep-alive would drop them under us.
        self._pool = httpcore2.ConnectionPool(
            max_connections=None, keepalive_expiry=4.0, network_backend=_DeadlineBackend()
        )

    def generate(self, messages: list[Message], params: GenerationParams) -> Completion:
        return self.chat(to_openai(messages, self.in_token_limit), params)

    def chat(self, messages: list[dict[str, Any]], params: GenerationParams) -> Completion:
        """One chat completion for messages already in the OpenAI format (e.g. an image as its
        file's own bytes), with the retries and the deadline of ``generate``."""
        payload = {
            "model": self.model,
            "messages": messages,
            "temperature": params.temperature,
            "max_tokens": params.max_new_tokens,
        }
        if params.top_p is not None:  # only when a profile asks: Kimi-VL's requests stay as they were
            payload["top_p"] = params.top_p
        if params.frequency_penalty is not None:  # likewise (UI-TARS-1.5)
            payload["frequency_penalty"] = params.frequency_penalty
        if params.thinking is not None:
            payload.update(thinking_switch(urlsplit(self.base_url).hostname or "", params.thinking))
        if self.return_token_ids:
            payload["return_token_ids"] = True
        body = json.dumps(payload).encode("ascii")  # ASCII: any str the runtime holds is encodable
        t0 = time.perf_counter()
        c = self._call("POST", "/chat/completions", body, _completion, retry_malformed=True)
        return c.model_copy(update={"latency_s": time.perf_counter() - t0})  # retries included

    def probe(self) -> ServerInfo:
        """Ask the server what it serves (GET /models), before anything else starts. Raises
        BackendError, one line naming the server and the cause, when it cannot be reached, does not
        speak the OpenAI API or does not serve ``model`` (then the line lists what it serves).

        At start-up nobody has waited on the server yet: a refused connection or a server that does
        not answer GET /models within ``probe_timeout_s`` is reported at once, without the retries
        and back-off that keep a long run going through a server's hiccup (a mistyped --base-url
        took 16.6 s to report). An overloaded server (429, 5xx) is still retried."""
        cards = self._call("GET", "/models", None, _model_cards, retry_malformed=False, at_start=True)
        ours = next((c for c in cards if c.id == self.model), None)
        if ours is None:
            raise BackendError(self._no_such_model([c.id for c in cards]))
        return ServerInfo(tuple(c.id for c in cards), ours.root, ours.max_model_len)

    def text_counter(self, notice: Callable[[str], None] | None = None) -> Callable[[str], int] | None:
        """Exact token counts of text from the server's tokenizer (vLLM's POST /tokenize at the
        server root, completion form, no special tokens added), or None when the server has no such
        endpoint (then the history counts UTF-8 bytes, an upper bound). Asked once here; if the
        endpoint fails later, that text and every later one fall back to the upper bound (so a
        budget is never under-counted) and ``notice`` says so once."""
        root = self.base_url.removesuffix("/v1")
        if self._count(root, "image", self.probe_timeout_s) is None:  # at start-up: not minutes
            return None
        failed = False

        def count(text: str) -> int:
            nonlocal failed
            n = None if failed or not text else self._count(root, text)
            if n is None and text and not failed:
                failed = True
                if notice is not None:
                    notice(f"{root}/tokenize stopped answering: token counts are now UTF-8 upper bounds")
            return n if n is not None else utf8_upper_bound(text)

        return count

    def _count(self, root: str, text: str, timeout_s: float | None = None) -> int | None:
        """One POST /tokenize (no retries: a failure only makes the count an upper bound)."""
        body = {"model": self.model, "prompt": _unicode(text), "add_special_tokens": False}
        try:
            answer = self._exchange("POST", "/tokenize", json.dumps(body).encode("ascii"), root, timeout_s)
            return _shaped(_Tokenized, answer, "sent").count if answer.status == 200 else None
        except (httpcore2.TimeoutException, httpcore2.NetworkError, httpcore2.ProtocolError, _Malformed):
            return None

    def close(self) -> None:
        self._pool.close()

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry ``attempt + 1``: exponential backoff, or longer when the server
        asks for it with Retry-After; never more than ``max_backoff_s``."""
        delay = self.backoff_s * 2**attempt
        asked = _retry_after_s(retry_after)
        if asked is not None:
            delay = max(delay, asked)
        return min(self.max_backoff_s, delay)

    def _call(
        self,
        method: str,
        path: str,
        body: bytes | None,
        parse: Callable[[_Answer], T],
        *,
        retry_malformed: bool,
        at_start: bool = False,
    ) -> T:
        """``at_start``: the probe's short timeout, and an unreachable server is not retried."""
        timeout_s = self.probe_timeout_s if at_start else self.timeout_s
        for attempt in range(self.max_retries + 1):
            try:
                answer = self._exchange(method, path, body, timeout_s=timeout_s)
                if answer.status == 200:
                    return parse(answer)
                fault = self._status_fault(answer, path)
            except _Malformed as e:
                fault = _Fault(
                    f"the model server at {self.base_url} {e}", short=str(e), retry=retry_malformed
                )
            except httpcore2.TimeoutException:
                fault = _Fault(
                    f"the model server at {self.base_url} did not answer within {timeout_s:g} s",
                    "; is it overloaded, or is the timeout too short?",
                    short=f"no answer within {timeout_s:g} s",
                    retry=not at_start,
                )
            except httpcore2.ConnectError as e:
                hint = f"start one with `{SERVE_HINT.format(model=self.model)}` or pass --base-url"
                head = f"cannot reach the model server at {self.base_url}"
                fault = _Fault(head, f": {_cause(e)} — {hint}", short=_cause(e), retry=not at_start)
            except (httpcore2.NetworkError, httpcore2.ProtocolError) as e:  # cut mid-exchange
                head = f"the model server at {self.base_url} broke off the exchange"
                fault = _Fault(head, f": {_cause(e)}", short=f"connection broken: {_cause(e)}")
            if not fault.retry or attempt == self.max_retries:
                raise BackendError(fault.line(attempt + 1)) from None
            wait = self.delay(attempt, fault.retry_after)
            if self.on_retry is not None:
                self.on_retry(
                    f"model server {self.base_url}: {fault.short}; retry {attempt + 1}/{self.max_retries} "
                    f"in {wait:.1f} s"
                )
            self.sleep(wait)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _exchange(
        self,
        method: str,
        path: str,
        body: bytes | None,
        base: str | None = None,
        timeout_s: float | None = None,
    ) -> _Answer:
        """One request and its whole reply, within ``timeout_s`` (default: the backend's) from now."""
        _deadline.at = time.monotonic() + (timeout_s or self.timeout_s)
        url = (base or self.base_url) + path
        try:
            with self._pool.stream(method, url, headers=self._headers, content=body) as r:
                data = bytearray()
                for chunk in r.iter_stream():
                    data += chunk
                    if len(data) > MAX_REPLY_BYTES:  # leaving the block closes the connection
                        raise _Malformed(f"sent a reply larger than {MAX_REPLY_BYTES >> 20} MiB")
                reason = _clean(r.extensions.get("reason_phrase", b"").decode("latin-1"), 60)
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in r.headers}
                return _Answer(r.status, reason, headers, bytes(data))
        finally:
            _deadline.at = math.inf

    def _status_fault(self, a: _Answer, path: str) -> _Fault:
        status = f"{a.status} {a.reason}".strip()
        head = f"the model server at {self.base_url} answered {status}"
        brief = _brief(a)
        said = "" if brief.lower() == a.reason.lower() else f": {brief}"
        if a.status == 429 or a.status >= 500:
            return _Fault(head, said, short=status, retry_after=a.headers.get("retry-after"))
        if a.status == 404:
            return _Fault(self._not_found(a) if path == "/chat/completions" else self._no_api(), retry=False)
        hint = " (pass the server's key: --api-key or OPENAI_API_KEY)" if a.status in (401, 403) else ""
        if hint and urlsplit(self.base_url).hostname in MOONSHOT_HOSTS:
            hint = " (pass Moonshot's key: --api-key, MOONSHOT_API_KEY or KIMI_API_KEY)"
        return _Fault(head, said + hint, retry=False)

    def _not_found(self, a: _Answer) -> str:
        """A 404 from /chat/completions: an unknown model name (vLLM's answer) or a base URL without
        the API (then /models is missing too)."""
        try:
            models = self._exchange("GET", "/models", None)
            served = [c.id for c in _model_cards(models)] if models.status == 200 else None
        except (httpcore2.TimeoutException, httpcore2.NetworkError, httpcore2.ProtocolError, _Malformed):
            served = None
        if served is None:
            return self._no_api()
        if self.model in served:
            return f"the model server at {self.base_url} answered 404 {a.reason}: {_brief(a)}"
        return self._no_such_model(served)

    def _no_api(self) -> str:
        return (
            f"the server at {self.base_url} has no /chat/completions or /models endpoint; "
            "check --base-url (vLLM serves them under /v1)"
        )

    def _no_such_model(self, served: list[str]) -> str:
        names = ", ".join(_clean(s, 100) for s in served) if served else "none"
        return f"the model server at {self.base_url} has no model {self.model!r}; it serves: {names} (pass --model NAME)"


# --- the reply's shape -----------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True)  # "12" is not a token count, true is not 1


class _ChatMessage(_Strict):
    content: str | None = None
    # Thinking apart from the content: Moonshot's API, SGLang and vLLM <= 0.16 say reasoning_content,
    # newer vLLM says reasoning (vLLM PR #27752 renamed it, #33402 dropped the old name).
    reasoning_content: str | None = None
    reasoning: str | None = None


class _Choice(_Strict):
    message: _ChatMessage
    finish_reason: str | None = None
    token_ids: list[int] | None = None  # vLLM's, when the request asked with return_token_ids


class _Usage(_Strict):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _ChatReply(_Strict):
    choices: list[_Choice] = Field(min_length=1)
    usage: _Usage | None = None


class _ModelCard(_Strict):
    id: str
    root: str | None = None
    max_model_len: int | None = None


class _Tokenized(_Strict):
    count: int = Field(ge=0)


class _ModelList(_Strict):
    data: list[_ModelCard]


def _completion(a: _Answer) -> Completion:
    r = _shaped(_ChatReply, a, "sent")
    choice, usage = r.choices[0], r.usage or _Usage()
    return Completion(
        text=choice.message.content or "",
        tokens_in=usage.prompt_tokens,
        tokens_out=usage.completion_tokens,
        finish_reason="length" if choice.finish_reason == "length" else "stop",
        token_ids=choice.token_ids,
        reasoning=choice.message.reasoning_content or choice.message.reasoning or None,
    )


def _model_cards(a: _Answer) -> list[_ModelCard]:
    return _shaped(_ModelList, a, "is not an OpenAI-compatible server: GET /models sent").data


def _shaped(model: type[M], a: _Answer, verb: str) -> M:
    """The reply's JSON read as ``model``; _Malformed saying what was wrong otherwise."""
    try:
        data = json.loads(a.body)  # a lone surrogate ("\\ud800") comes through as it is
    except (ValueError, RecursionError):  # also bad UTF-8 and absurd nesting or numbers
        raise _Malformed(f"{verb} a reply that is not JSON ({a.content_type}: {_excerpt(a.body)})") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise _Malformed(f"{verb} a malformed reply ({_shape_error(e)})") from None


_EXPECTED = {
    "model_type": "an object",
    "list_type": "a list",
    "string_type": "a string",
    "int_type": "an integer",
}


def _shape_error(e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "the reply"
    if err["type"] == "missing":
        return f"{where} is missing"
    if err["type"] == "too_short":
        return f"{where} is empty"
    return f"{where} is {_kind(err['input'])}, not {_EXPECTED.get(err['type'], 'valid')}"


def _kind(value: Any) -> str:
    """A JSON value's kind, as a reader of the error would name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


# --- transport: every attempt within its deadline ------------------------------------------------


class _Deadline(threading.local):
    at = math.inf  # time.monotonic() by which the calling thread's current exchange must end

    def left(self, expired: type[Exception]) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise expired("the call's deadline has passed")
        return left


_deadline = _Deadline()


class _DeadlineStream(httpcore2.NetworkStream):
    def __init__(self, inner: httpcore2.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        while True:
            wait = min(SLICE_S, _deadline.left(httpcore2.ReadTimeout))
            try:
                return self._inner.read(max_bytes, wait)
            except httpcore2.ReadTimeout:
                pass  # a slice passed: back in Python, a pending KeyboardInterrupt is raised here

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # Not sliced: a send that times out may have sent part of the buffer.
        self._inner.write(buffer, _deadline.left(httpcore2.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> Any:
        left = _deadline.left(httpcore2.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, left))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore2.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore2.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        left = _deadline.left(httpcore2.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_tcp(host, port, left, local_address, socket_options))

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass
class _Answer:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def content_type(self) -> str:
        return _clean(self.headers.get("content-type", "").split(";")[0], 60) or "no content type"


class _Malformed(Exception):
    """A reply that is not what the API says; the text follows "the model server at URL "."""


@dataclass
class _Fault:
    """Why an attempt failed: ``head`` + (" after N tries") + ``tail`` is the final error."""

    head: str
    tail: str = ""
    short: str = ""  # the cause, for the retry line
    retry: bool = True
    retry_after: str | None = None

    def line(self, tries: int) -> str:
        return self.head + (f" after {tries} tries" if tries > 1 else "") + self.tail


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _cause(e: BaseException) -> str:
    """The innermost reason for a network error ("Connection refused")."""
    for _ in range(10):  # bounded: a chain could loop
        inner = e.__cause__ or e.__context__
        if inner is None:
            break
        e = inner
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)  # without "[Errno 111]"
    return _clean(text, 200) or type(e).__name__


def _brief(a: _Answer) -> str:
    """The server's own words for an error: {"error": {"message"}} (OpenAI), {"message"} (vLLM),
    {"detail"} (FastAPI), {"error": "Unauthorized"}, or the start of the body."""
    try:
        body = json.loads(a.body)
    except (ValueError, RecursionError):
        body = a.body.decode("utf-8", "replace")
    if isinstance(body, dict):
        err = body.get("error")
        body = (
            body.get("message")
            or (err.get("message") if isinstance(err, dict) else err)
            or body.get("detail")
        )
    return _clean(str(body or "(no body)"), 300)


def _excerpt(body: bytes, limit: int = 40) -> str:
    if not body:
        return "empty"
    more = "…" if len(body) > limit else ""
    return f'"{_clean(body[:limit].decode("utf-8", "replace"), limit)}{more}"'


def _clean(text: str, limit: int) -> str:
    """Server text fit for one line of a terminal: whitespace runs become one space, other control
    and format characters (escape sequences, bidi overrides) are shown escaped."""
    text = " ".join(text.split())
    if not text.isprintable():
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text[:limit]


def _unicode(text: str) -> str:
    """Lone surrogates (a server may send "\\ud800", and it lands in the history) become U+FFFD: the
    server would reject the request otherwise."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text
