"""Backend B against a real HTTP server on loopback (tests/fake_openai_server.py); nothing is mocked."""

from __future__ import annotations

import base64
import ctypes
import io
import json
import math
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_openai_server import FakeOpenAI, Reply
from PIL import Image

from agent.backends.base import BackendError, GenerationParams
from agent.backends.openai import OpenAIBackend, ServerInfo
from agent.messages import ImagePart, Message, TextPart
from agent.models.kimi_vl.vision import default_in_token_limit, image_tokens, model_size

HI = [Message.text("user", "hi")]


class Sleeps:
    """Records each backoff, then really sleeps it."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        time.sleep(seconds)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    s = FakeOpenAI(models=("kimi-vl", "kimi-vl-thinking"))
    yield s
    s.close()


def _backend(url: str, sleeps: Sleeps | None = None, **kw: Any) -> OpenAIBackend:
    model = kw.pop("model", "kimi-vl")
    opts: dict[str, Any] = {"timeout_s": 2.0, "max_retries": 2, "backoff_s": 0.01, **kw}
    return OpenAIBackend(url, model, sleep=sleeps or Sleeps(), **opts)


def _decode(part: dict[str, Any]) -> Image.Image:
    head, b64 = part["image_url"]["url"].split(",", 1)
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_message_layout_and_image_sizes(server: FakeOpenAI) -> None:
    server.replies.append(Reply("## Action:\nclick"))
    big = Image.new("RGB", (1920, 1080), (200, 10, 10))
    small = Image.new("RGBA", (640, 480), (0, 0, 255, 255))  # under the budget: sent as is, RGB
    messages = [
        Message.text("system", "SYS"),
        Message.text("user", "# Task\nx"),
        Message.text("assistant", "# Step 1: ..."),
        Message("user", (TextPart("before "), ImagePart(big, key="s1"), TextPart("mid"), ImagePart(small))),
    ]
    c = _backend(server.url).generate(messages, GenerationParams(max_new_tokens=77, temperature=0.2))
    assert c.text == "## Action:\nclick"
    [req] = server.requests
    assert req["model"] == "kimi-vl" and req["max_tokens"] == 77 and req["temperature"] == 0.2
    assert "stop" not in req  # vLLM stops at the checkpoint's <|im_end|> EOS
    assert [m["role"] for m in req["messages"]] == ["system", "user", "assistant", "user"]
    assert [m["content"] for m in req["messages"][:3]] == ["SYS", "# Task\nx", "# Step 1: ..."]
    t1, i1, t2, i2 = req["messages"][3]["content"]
    assert t1 == {"type": "text", "text": "before "} and t2 == {"type": "text", "text": "mid"}
    assert i1["type"] == i2["type"] == "image_url"
    sent_big, sent_small = _decode(i1), _decode(i2)
    assert sent_big.size == model_size(1920, 1080, 4096) == (1196, 672)
    assert sent_big.getpixel((600, 300)) == (200, 10, 10)
    assert sent_small.size == (640, 480) and sent_small.mode == "RGB"


def test_the_sampled_ids_are_asked_for_only_when_wanted_and_kept_when_sent(server: FakeOpenAI) -> None:
    """vLLM answers ``return_token_ids`` with the choice's ``token_ids``; OpenAI's own API refuses
    parameters it does not know, so only `kimi-agent rollout` asks (return_token_ids=True)."""
    server.default = Reply("ok", token_ids=[11, 22, 33])
    plain = _backend(server.url).generate(HI, GenerationParams())
    assert "return_token_ids" not in server.requests[-1] and plain.token_ids is None
    asked = _backend(server.url, return_token_ids=True).generate(HI, GenerationParams())
    assert server.requests[-1]["return_token_ids"] is True and asked.token_ids == [11, 22, 33]
    server.default = Reply("ok")  # a server that ignores the parameter: the ids stay unknown
    assert _backend(server.url, return_token_ids=True).generate(HI, GenerationParams()).token_ids is None


def test_in_token_limit_sets_the_resolution(server: FakeOpenAI) -> None:
    server.default = Reply("ok")
    shot = Image.new("RGB", (2560, 1440))
    # 4096: the rule's 1202x676 (4080 patches) stays as it is on the server: sent shrunk.
    # 16384: the rule's 2404x1352 has 16416 patches, which the server would shrink again: the original.
    for limit, sent in ((4096, (1202, 676)), (16384, (2560, 1440))):
        _backend(server.url, in_token_limit=limit).generate(
            [Message("user", (ImagePart(shot),))], GenerationParams()
        )
        [part] = server.requests[-1]["messages"][0]["content"]
        assert _decode(part).size == sent


def test_usage_latency_and_finish_reason(server: FakeOpenAI) -> None:
    server.replies.extend([Reply("a", usage=(4321, 7), delay_s=0.1), Reply("b", finish_reason="length")])
    b = _backend(server.url)
    c = b.generate(HI, GenerationParams())
    assert (c.tokens_in, c.tokens_out, c.finish_reason) == (4321, 7, "stop") and c.latency_s >= 0.1
    assert b.generate(HI, GenerationParams()).finish_reason == "length"


def test_api_key_from_argument_env_or_empty(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    server.default = Reply("ok")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    _backend(server.url).generate(HI, GenerationParams())
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    _backend(server.url).generate(HI, GenerationParams())
    _backend(server.url, api_key="sk-arg").generate(HI, GenerationParams())
    auth = [h["authorization"] for h in server.headers]
    assert auth == ["Bearer EMPTY", "Bearer sk-env", "Bearer sk-arg"]


def test_5xx_is_retried_with_exponential_backoff(server: FakeOpenAI) -> None:
    server.replies.extend([Reply(status=500), Reply(status=503), Reply("ok")])
    sleeps = Sleeps()
    assert _backend(server.url, sleeps, backoff_s=0.02).generate(HI, GenerationParams()).text == "ok"
    assert len(server.requests) == 3 and sleeps.delays == [0.02, 0.04]
    assert server.requests[0] == server.requests[2]  # the same request each time


def test_5xx_until_retries_run_out(server: FakeOpenAI) -> None:
    server.default = Reply(status=502)
    sleeps = Sleeps()
    with pytest.raises(BackendError, match=r"answered 502 Bad Gateway after 3 tries: scripted 502$"):
        _backend(server.url, sleeps).generate(HI, GenerationParams())
    assert len(server.requests) == 3 and len(sleeps.delays) == 2  # one try and two retries


def test_429_honours_retry_after(server: FakeOpenAI) -> None:
    server.replies.extend([Reply(status=429, headers={"Retry-After": "0.3"}), Reply("ok")])
    sleeps = Sleeps()
    t0 = time.perf_counter()
    assert _backend(server.url, sleeps).generate(HI, GenerationParams()).text == "ok"
    assert time.perf_counter() - t0 >= 0.3 and sleeps.delays == [0.3] and len(server.requests) == 2


def test_retry_after_is_bounded(server: FakeOpenAI) -> None:
    server.replies.extend([Reply(status=429, headers={"Retry-After": "3600"}), Reply("ok")])
    sleeps = Sleeps()
    b = _backend(server.url, sleeps, max_backoff_s=0.05)
    assert b.generate(HI, GenerationParams()).text == "ok" and sleeps.delays == [0.05]


def test_backoff_schedule() -> None:
    b = OpenAIBackend("http://127.0.0.1:9/v1", "m", backoff_s=1.0, max_backoff_s=30.0)
    assert [b.delay(a) for a in range(6)] == [1, 2, 4, 8, 16, 30]
    assert b.delay(0, "5") == 5 and b.delay(3, "5") == 8  # the longer of the two
    assert b.delay(0, "later") == 1 and b.delay(0, "nan") == 1 and b.delay(0, "-3") == 1
    assert 8 <= b.delay(0, formatdate(time.time() + 10, usegmt=True)) <= 10  # an HTTP date
    assert b.delay(0, formatdate(time.time() + 3600, usegmt=True)) == 30


def test_other_4xx_is_not_retried(server: FakeOpenAI) -> None:
    server.replies.append(Reply(status=400, body={"error": {"message": "too many images: at most 1"}}))
    sleeps = Sleeps()
    with pytest.raises(BackendError, match=r"answered 400 Bad Request: too many images: at most 1$"):
        _backend(server.url, sleeps).generate(HI, GenerationParams())
    assert len(server.requests) == 1 and sleeps.delays == []


def test_401_says_which_key_to_set(server: FakeOpenAI) -> None:
    server.replies.append(Reply(status=401, body={"error": "Unauthorized"}))
    with pytest.raises(
        BackendError,
        match=r"answered 401 Unauthorized \(pass the server's key: --api-key or OPENAI_API_KEY\)$",
    ):
        _backend(server.url).generate(HI, GenerationParams())
    assert len(server.requests) == 1


def test_timeout_is_retried_then_reported(server: FakeOpenAI) -> None:
    server.default = Reply("late", delay_s=1.5)
    sleeps = Sleeps()
    t0 = time.perf_counter()
    with pytest.raises(BackendError, match=r"did not answer within 0.15 s after 2 tries; is it overloaded"):
        _backend(server.url, sleeps, timeout_s=0.15, max_retries=1).generate(HI, GenerationParams())
    assert len(server.requests) == 2 and len(sleeps.delays) == 1
    assert time.perf_counter() - t0 < 1.2  # gave up at the timeout, not when the server answered


def test_slow_answer_within_the_timeout_is_not_retried(server: FakeOpenAI) -> None:
    server.replies.extend([Reply("late", delay_s=0.6), Reply("fast")])
    b = _backend(server.url, timeout_s=0.2, max_retries=1)
    assert b.generate(HI, GenerationParams()).text == "fast"  # the late reply timed out, then a retry
    server.default = Reply("slow but in time", delay_s=0.1)
    assert b.generate(HI, GenerationParams()).text == "slow but in time"
    assert len(server.requests) == 3


def test_unreachable_server_is_one_clear_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{port}/v1"
        sleeps = Sleeps()
        with pytest.raises(BackendError) as e:
            _backend(url, sleeps, max_retries=2).generate(HI, GenerationParams())
    msg = str(e.value)
    assert "\n" not in msg and len(sleeps.delays) == 2
    assert msg.startswith(f"cannot reach the model server at {url} after 3 tries: ")
    assert "Connection refused — start one with `vllm serve moonshotai/Kimi-VL-A3B-Instruct" in msg
    assert "--served-model-name kimi-vl" in msg and msg.endswith("or pass --base-url")


def test_wrong_model_name_lists_the_served_models(server: FakeOpenAI) -> None:
    server.default = Reply("never")
    sleeps = Sleeps()
    with pytest.raises(BackendError) as e:
        _backend(server.url, sleeps, model="Kimi-VL-A3B").generate(HI, GenerationParams())
    assert str(e.value) == (
        f"the model server at {server.url} has no model 'Kimi-VL-A3B'; "
        "it serves: kimi-vl, kimi-vl-thinking (pass --model NAME)"
    )
    assert len(server.requests) == 1 and sleeps.delays == []


def test_base_url_without_the_api_is_reported(server: FakeOpenAI) -> None:
    root = server.url.removesuffix("/v1")
    with pytest.raises(BackendError, match=r"has no /chat/completions or /models endpoint; check --base-url"):
        _backend(root).generate(HI, GenerationParams())


def test_images_only_in_user_messages(server: FakeOpenAI) -> None:
    bad = [Message("assistant", (ImagePart(Image.new("RGB", (28, 28))),))]
    with pytest.raises(ValueError, match="only user messages can hold images"):
        _backend(server.url).generate(bad, GenerationParams())
    assert server.requests == []


def test_concurrent_calls_get_their_own_replies(server: FakeOpenAI) -> None:
    server.default = Reply("echo {echo}", delay_s=0.2)
    server.replies.extend([Reply(status=503), Reply(status=503)])  # two callers also retry
    b = _backend(server.url)
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            img = Image.new("RGB", (100 + i, 80))
            msg = Message("user", (ImagePart(img), TextPart(f"n{i}")))
            c = b.generate([msg], GenerationParams(max_new_tokens=10 + i))
            results[i] = c.text
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    assert errors == []
    assert results == {i: f"echo n{i}" for i in range(8)}
    assert len(server.requests) == 10 and server.max_in_flight >= 4
    assert elapsed < 8 * 0.2  # they ran side by side, not one after another
    by_tokens = {r["max_tokens"]: r for r in server.requests}
    for i in range(8):  # each request carries its own caller's image and settings
        img_part, text_part = by_tokens[10 + i]["messages"][0]["content"]
        assert _decode(img_part).size == (100 + i, 80) and text_part["text"] == f"n{i}"


# --- issue 6.1: the server sees exactly the official pixels ------------------------------------------


def _moonvit(image: Image.Image, limit: int) -> Image.Image:
    """The official processor's resize (image_processing_kimi_vl.py, shared/docs/kimi-vl.md step 1),
    written out independently: the server applies it to whatever it receives."""
    w, h = image.size
    patches = (w // 14) * (h // 14)
    if patches > limit:
        s = math.sqrt(limit / patches)
        image = image.resize((int(w * s), int(h * s)), Image.Resampling.BICUBIC)
    return image


def _screen(w: int, h: int) -> Image.Image:
    """Detail at every pixel (a second resize changes it), cheap to make and to encode."""
    x, y = np.arange(w, dtype=np.uint8)[None, :], np.arange(h, dtype=np.uint8)[:, None]
    rgb = np.stack(np.broadcast_arrays(x * 7 + y * 13, x * x + 3 * y, x ^ y), axis=-1)  # wraps mod 256
    return Image.fromarray(np.ascontiguousarray(rgb))


def _server_sees(server: FakeOpenAI, shots: list[Image.Image], limit: int) -> list[Image.Image]:
    """Send the screenshots in one user turn; what the server's processor makes of each."""
    server.replies.append(Reply("ok"))
    msg = Message("user", tuple(ImagePart(s) for s in shots))
    _backend(server.url, in_token_limit=limit).generate([msg], GenerationParams())
    return [_moonvit(_decode(p).convert("RGB"), limit) for p in server.requests[-1]["messages"][0]["content"]]


def _assert_official(server: FakeOpenAI, sizes: list[tuple[int, int]], limit: int) -> None:
    shots = [_screen(w, h) for w, h in sizes]
    for shot, seen in zip(shots, _server_sees(server, shots, limit), strict=True):
        official = _moonvit(shot, limit).convert("RGB")
        assert seen.size == official.size, (shot.size, limit)
        assert seen.tobytes() == official.tobytes(), (shot.size, limit)
        w, h = seen.size  # the server's token count: ceil(h/28) * ceil(w/28)
        assert math.ceil(h / 28) * math.ceil(w / 28) == image_tokens(*shot.size, limit), (shot.size, limit)


def test_1366x768_reaches_the_server_as_the_official_1207x679() -> None:
    """Issue 6.1's reproduction: sending the rule's 1207x679 (4128 patches > 4096) made vLLM shrink it
    again to 1202x676, 1075 tokens instead of 1100."""
    server = FakeOpenAI()
    try:
        [seen] = _server_sees(server, [_screen(1366, 768)], 4096)
        assert seen.size == (1207, 679) and image_tokens(1366, 768, 4096) == 1100
        _assert_official(server, [(1366, 768)], 4096)
    finally:
        server.close()


SWEEP = [
    (1920, 1080), (1280, 800), (1440, 900), (1600, 900), (1680, 1050), (1080, 1920), (1999, 1001),
    (2047, 1153), (1793, 1791), (1125, 2436), (640, 480), (1024, 768), (2560, 1080), (1920, 1200),
]  # fmt: skip


def _twice(sizes: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """The sizes whose rule result the server would shrink again, had we sent it."""
    return [s for s in sizes if model_size(*model_size(*s, limit), limit) != model_size(*s, limit)]


@pytest.mark.parametrize("limit", [4096, 16384])
def test_the_server_sees_the_official_pixels_at_odd_sizes(server: FakeOpenAI, limit: int) -> None:
    sizes = [(1366, 768), (768, 1366), (1536, 864), (1001, 999), (1279, 719), (2560, 1440), (27, 29)]
    assert _twice(sizes, limit)  # or the test proves nothing
    _assert_official(server, sizes, limit)


@pytest.mark.slow
@pytest.mark.parametrize("limit", [4096, 16384])
def test_the_server_sees_the_official_pixels_in_a_sweep_up_to_8k(server: FakeOpenAI, limit: int) -> None:
    rng = random.Random(limit)
    big = [(3840, 2160), (2160, 3840), (2880, 1800), (3024, 1964), (3440, 1440), (5120, 2880), (7680, 4320)]
    sizes = SWEEP + big + [(rng.randrange(300, 2600), rng.randrange(300, 2000)) for _ in range(20)]
    assert _twice(sizes, limit)
    for i in range(0, len(sizes), 6):  # a few screenshots per request, as the history sends them
        _assert_official(server, sizes[i : i + 6], limit)


# --- issue 6.4: what the server serves ---------------------------------------------------------------


def test_probe_reports_the_served_checkpoint_like_vllm() -> None:
    """Thinking-2506 served as `kimi`: the name says nothing, vLLM's `root` says which checkpoint."""
    root = "moonshotai/Kimi-VL-A3B-Thinking-2506"
    server = FakeOpenAI(models=("kimi", "other"), roots={"kimi": root}, max_model_len=65536)
    try:
        info = _backend(server.url, model="kimi").probe()
        assert info == ServerInfo(models=("kimi", "other"), root=root, max_model_len=65536)
        assert default_in_token_limit(info.root or "") == 16384 and default_in_token_limit("kimi") == 4096
        assert server.requests == []  # asking costs no generation
    finally:
        server.close()


def test_probe_of_a_server_that_does_not_say_its_checkpoint(server: FakeOpenAI) -> None:
    server.model_replies.append(
        Reply.json({"object": "list", "data": [{"id": "kimi-vl", "object": "model"}]})
    )
    assert _backend(server.url).probe() == ServerInfo(models=("kimi-vl",), root=None, max_model_len=None)


def test_probe_of_a_server_without_our_model_lists_what_it_serves(server: FakeOpenAI) -> None:
    with pytest.raises(BackendError) as e:
        _backend(server.url, model="kimi").probe()
    assert str(e.value) == (
        f"the model server at {server.url} has no model 'kimi'; "
        "it serves: kimi-vl, kimi-vl-thinking (pass --model NAME)"
    )


PROBE_FAULTS: dict[str, tuple[Reply | None, str]] = {
    "html page": (
        Reply(raw=b"<!doctype html><title>Grafana</title>", content_type="text/html; charset=utf-8"),
        r"is not an OpenAI-compatible server: GET /models sent a reply that is not JSON "
        r'\(text/html: "<!doctype html><title>Grafana</title>"\)$',
    ),
    "no model list": (
        Reply.json({"models": ["kimi-vl"]}),
        r"is not an OpenAI-compatible server: GET /models sent a malformed reply \(data is missing\)$",
    ),
    "ids of the wrong type": (
        Reply.json({"data": [{"id": 7}]}),
        r"GET /models sent a malformed reply \(data.0.id is a number, not a string\)$",
    ),
    "no API under this URL": (None, r"has no /chat/completions or /models endpoint; check --base-url"),
    "overloaded": (Reply(status=503), r"answered 503 Service Unavailable after 3 tries: scripted 503$"),
}


@pytest.mark.parametrize("case", PROBE_FAULTS)
def test_probe_faults_are_one_line(server: FakeOpenAI, case: str) -> None:
    reply, expected = PROBE_FAULTS[case]
    url = server.url
    if reply is None:
        url = url.removesuffix("/v1")
    else:
        server.model_replies.extend([reply] * 3)
    sleeps = Sleeps()
    with pytest.raises(BackendError, match=expected) as e:
        _backend(url, sleeps).probe()
    assert "\n" not in str(e.value) and url in str(e.value)
    assert len(sleeps.delays) == (2 if case == "overloaded" else 0)  # a web page will not turn into an API


def test_probe_of_an_unreachable_server_is_one_line_at_once() -> None:
    """Issue 18: a refused connection at start-up took 16.6 s of retries and back-off to report."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        sleeps = Sleeps()
        b = OpenAIBackend(url, "kimi-vl", max_retries=4, backoff_s=1.0, sleep=sleeps)  # the CLI's defaults
        t0 = time.perf_counter()
        with pytest.raises(BackendError) as e:
            b.probe()
        took = time.perf_counter() - t0
    msg = str(e.value)
    assert msg.startswith(f"cannot reach the model server at {url}: Connection refused — start one with")
    assert "\n" not in msg and "tries" not in msg and sleeps.delays == []
    assert took < 5.0, took  # generous for a loaded machine: the back-off alone was 15 s


def test_probe_of_a_server_that_never_answers_is_one_line_at_its_timeout() -> None:
    """A listener that accepts and never answers: one try, ended by the probe's own timeout, not the
    timeout of a model call (minutes) times the retries."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        sleeps = Sleeps()
        b = OpenAIBackend(url, "kimi-vl", timeout_s=300, max_retries=4, sleep=sleeps, probe_timeout_s=0.5)
        t0 = time.perf_counter()
        with pytest.raises(BackendError) as e:
            b.probe()
        took = time.perf_counter() - t0
        conn, _ = listener.accept()  # the probe did connect: it was the answer that never came
        conn.close()
    msg = str(e.value)
    assert (
        msg
        == f"the model server at {url} did not answer within 0.5 s; is it overloaded, or is the timeout too short?"
    )
    assert sleeps.delays == [] and 0.5 <= took < 5.0, took


# --- issue 6.12: retries visible as they happen -------------------------------------------------------


def test_retries_are_announced_before_each_sleep(server: FakeOpenAI) -> None:
    server.replies.extend([Reply(status=503), Reply(status=500), Reply("ok")])
    events: list[tuple[str, object]] = []
    b = OpenAIBackend(
        server.url,
        "kimi-vl",
        max_retries=4,
        backoff_s=1.0,
        sleep=lambda s: events.append(("sleep", s)),  # recorded, not slept: the schedule is the point
        on_retry=lambda line: events.append(("line", line)),
    )
    assert b.generate(HI, GenerationParams()).text == "ok"
    assert events == [
        ("line", f"model server {server.url}: 503 Service Unavailable; retry 1/4 in 1.0 s"),
        ("sleep", 1.0),
        ("line", f"model server {server.url}: 500 Internal Server Error; retry 2/4 in 2.0 s"),
        ("sleep", 2.0),
    ]


def test_retries_of_an_unreachable_server_are_announced() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        lines: list[str] = []
        with pytest.raises(BackendError):
            _backend(url, max_retries=2, on_retry=lines.append).generate(HI, GenerationParams())
    assert lines == [
        f"model server {url}: Connection refused; retry 1/2 in 0.0 s",
        f"model server {url}: Connection refused; retry 2/2 in 0.0 s",
    ]


# --- issue 7.7: an overall deadline per attempt; Ctrl-C stops a call at once ----------------------


def test_a_dribbling_server_cannot_stretch_a_call_past_its_deadline(server: FakeOpenAI) -> None:
    """Issue 7.7's reproduction: a byte every 0.5 s never trips a 2 s per-read timeout and held a
    2 s-timeout call for 20 s and more. Here: a byte every 0.25 s against a 1 s deadline."""
    server.default = Reply("x" * 40, dribble_s=0.25)  # about 270 bytes: over a minute in all
    t0 = time.perf_counter()
    with pytest.raises(BackendError, match=r"did not answer within 1 s; is it overloaded"):
        _backend(server.url, timeout_s=1.0, max_retries=0).generate(HI, GenerationParams())
    assert time.perf_counter() - t0 < 1.6


def _wait(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < end:
        time.sleep(0.01)


def test_ctrl_c_during_a_call_propagates_at_once_and_closes_the_connection(server: FakeOpenAI) -> None:
    """The loop raises KeyboardInterrupt from its SIGINT handler in the main thread."""
    assert threading.current_thread() is threading.main_thread()
    server.default = Reply(hang=True)
    b = _backend(server.url, timeout_s=60, max_retries=3)
    sent: list[float] = []

    def ctrl_c() -> None:
        sent.append(time.monotonic())
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, ctrl_c)
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            b.generate(HI, GenerationParams())
        raised = time.monotonic()
    finally:
        timer.join()
        signal.signal(signal.SIGINT, previous)
    assert raised - sent[0] < 0.5 and len(server.requests) == 1  # not retried
    _wait(lambda: bool(server.hangups))
    assert server.hangups and server.hangups[0] - sent[0] < 0.5  # the connection was closed


def test_an_interrupt_in_a_worker_thread_lands_within_half_a_second(server: FakeOpenAI) -> None:
    """A KeyboardInterrupt set on a thread (no signal to wake its socket) still lands within a read
    slice, and nothing of the call stays behind: the connection is closed, no thread lingers."""
    server.default = Reply(hang=True)
    b = _backend(server.url, timeout_s=60)
    outcome: list[tuple[type[BaseException], float]] = []

    def call() -> None:
        try:
            b.generate(HI, GenerationParams())
        except BaseException as e:
            outcome.append((type(e), time.monotonic()))

    before = threading.active_count()
    worker = threading.Thread(target=call)
    worker.start()
    _wait(lambda: server.in_flight == 1)
    time.sleep(0.2)
    t0 = time.monotonic()
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(worker.ident or 0), ctypes.py_object(KeyboardInterrupt)
    )
    worker.join(timeout=2)
    assert not worker.is_alive() and outcome and outcome[0][0] is KeyboardInterrupt
    assert outcome[0][1] - t0 < 0.5
    _wait(lambda: bool(server.hangups))
    assert server.hangups and server.hangups[0] - t0 < 0.6
    _wait(lambda: threading.active_count() == before)  # the server's handler thread ends too
    assert threading.active_count() == before


def test_https_keeps_the_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A remote server behind TLS: the deadline wraps the TLS stream as well."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    args = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1"
    args += " -addext subjectAltName=IP:127.0.0.1"
    subprocess.run([openssl, *args.split(), "-keyout", key, "-out", cert], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = FakeOpenAI(ssl_context=ctx)
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trusted as the hub client's would be
        server.replies.extend([Reply("over TLS"), Reply("x" * 40, dribble_s=0.25)])
        b = _backend(server.url, timeout_s=1.0, max_retries=0)
        assert server.url.startswith("https://") and b.generate(HI, GenerationParams()).text == "over TLS"
        t0 = time.perf_counter()
        with pytest.raises(BackendError, match=r"did not answer within 1 s"):
            b.generate(HI, GenerationParams())
        assert time.perf_counter() - t0 < 1.6
    finally:
        server.close()


# --- issue 7.8: faults end in one line naming the server and the cause --------------------------------

GOOD: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
}


def _with(path: str, value: Any) -> dict[str, Any]:
    """GOOD with the field at ``path`` (dotted, list indices as numbers) set to ``value``."""
    doc = json.loads(json.dumps(GOOD))
    *parents, last = path.split(".")
    node: Any = doc
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[int(last) if isinstance(node, list) else last] = value
    return doc


# name -> (the reply, what the error line must say after "the model server at URL ")
MALFORMED: dict[str, tuple[Reply, str]] = {
    "truncated JSON": (
        Reply(raw=json.dumps(GOOD).encode()[:30]),
        r'sent a reply that is not JSON \(application/json: "\{"id": "chatcmpl-1", "object":"\)',
    ),
    "garbage": (
        Reply(raw=b"\x00\x1b[2J garbage"),
        r'not JSON \(application/json: "\\x00\\x1b\[2J garbage"\)',
    ),
    "html": (
        Reply(raw=b"<html><body>502 Bad Gateway</body></html>", content_type="text/html"),
        r'not JSON \(text/html: "<html><body>502 Bad Gateway</body></html…"\)',
    ),
    "an SSE stream": (
        Reply(raw=b'data: {"choices": []}\n\ndata: [DONE]\n\n', content_type="text/event-stream"),
        r'not JSON \(text/event-stream: "data: \{"choices": \[\]\} data: \[DONE\]"\)',
    ),
    "empty body": (Reply(raw=b""), r"not JSON \(application/json: empty\)"),
    "no content type": (Reply(raw=b"ok", content_type=""), r'not JSON \(no content type: "ok"\)'),
    "not UTF-8": (Reply(raw=b'{"choices": "\xff\xfe"}'), r"not JSON \(application/json: "),
    "absurd nesting": (Reply(raw=b"[" * 200_000), r'not JSON \(application/json: "\[\[\['),
    "message null": (
        Reply.json(_with("choices.0.message", None)),
        r"\(choices.0.message is null, not an object\)",
    ),
    "a JSON list": (Reply.json([GOOD]), r"sent a malformed reply \(the reply is a list, not an object\)"),
    "a JSON string": (Reply.json("ok"), r"\(the reply is a string, not an object\)"),
    "choices empty": (Reply.json(_with("choices", [])), r"\(choices is empty\)"),
    "choices missing": (Reply.json({"id": "x"}), r"\(choices is missing\)"),
    "choices an object": (Reply.json(_with("choices", {"0": {}})), r"\(choices is an object, not a list\)"),
    "content a number": (
        Reply.json(_with("choices.0.message.content", 7)),
        r"\(choices.0.message.content is a number, not a string\)",
    ),
    "tokens a string": (
        Reply.json(_with("usage.prompt_tokens", "10")),
        r"\(usage.prompt_tokens is a string, not an integer\)",
    ),
    "tokens a boolean": (
        Reply.json(_with("usage.completion_tokens", True)),
        r"\(usage.completion_tokens is a boolean, not an integer\)",
    ),
    "finish reason a number": (
        Reply.json(_with("choices.0.finish_reason", 1)),
        r"\(choices.0.finish_reason is a number, not a string\)",
    ),
}

# name -> (the reply, backend options, what the line must say)
FAULTS: dict[str, tuple[Reply, dict[str, Any], str]] = {
    **{f"malformed: {k}": (r, {}, f"{exp}.* after 3 tries$") for k, (r, exp) in MALFORMED.items()},
    "endless body": (
        Reply(raw=b" " * ((64 << 20) + 1)),
        {},
        r"sent a reply larger than 64 MiB after 3 tries$",
    ),
    "cut mid-body": (
        Reply("a long reply", cut_after=25),
        {},
        r"broke off the exchange after 3 tries: peer closed connection without sending complete message body",
    ),
    "500": (Reply(status=500), {}, r"answered 500 Internal Server Error after 3 tries: scripted 500$"),
    "503 with vLLM's error body": (
        Reply(status=503, body={"object": "error", "message": "engine dead", "type": "InternalServerError"}),
        {},
        r"answered 503 Service Unavailable after 3 tries: engine dead$",
    ),
    "429": (Reply(status=429), {}, r"answered 429 Too Many Requests after 3 tries: scripted 429$"),
    "400": (Reply(status=400, body={"message": "too long"}), {}, r"answered 400 Bad Request: too long$"),
    "401": (
        Reply(status=401, body={"error": "Unauthorized"}),
        {},
        r"\(pass the server's key: --api-key or OPENAI_API_KEY\)$",
    ),
    "403": (
        Reply(status=403),
        {},
        r"answered 403 Forbidden: scripted 403 \(pass the server's key: --api-key",
    ),
    "error text with escapes": (
        Reply(status=400, body={"message": "bad\n\x1b[2J\x1b]0;title\x07\u202eevil"}),
        {},
        r"answered 400 Bad Request: bad \\x1b\[2J\\x1b\]0;title\\x07\\u202eevil$",
    ),
    "slow": (Reply("late", delay_s=1.0), {"timeout_s": 0.2}, r"did not answer within 0.2 s after 3 tries"),
    "dribbling": (
        Reply("late", dribble_s=0.05),
        {"timeout_s": 0.3},
        r"did not answer within 0.3 s after 3 tries",
    ),
    "hanging": (Reply(hang=True), {"timeout_s": 0.2}, r"did not answer within 0.2 s after 3 tries"),
    "unknown model": (
        Reply("never"),
        {"model": "kimi"},
        r"has no model 'kimi'; it serves: kimi-vl, kimi-vl-thinking",
    ),
}


@pytest.mark.parametrize("case", FAULTS)
def test_every_fault_ends_in_one_line_naming_the_server_and_the_cause(server: FakeOpenAI, case: str) -> None:
    reply, options, expected = FAULTS[case]
    server.default = reply
    lines: list[str] = []
    with pytest.raises(BackendError) as e:
        _backend(server.url, on_retry=lines.append, **options).generate(HI, GenerationParams())
    msg = str(e.value)
    assert msg.startswith(f"the model server at {server.url} "), msg
    assert msg.isprintable() and "\n" not in msg, msg
    assert len(msg) < 500
    assert re.search(expected, msg), msg
    retried = "after 3 tries" in expected
    assert len(lines) == (2 if retried else 0) and len(server.requests) == (3 if retried else 1)
    assert all(line.startswith(f"model server {server.url}: ") and line.isprintable() for line in lines)


def test_a_malformed_reply_then_a_good_one(server: FakeOpenAI) -> None:
    server.replies.extend(
        [Reply(raw=b"<html>", content_type="text/html"), Reply.json(_with("choices", [])), Reply("ok")]
    )
    lines: list[str] = []
    assert _backend(server.url, on_retry=lines.append).generate(HI, GenerationParams()).text == "ok"
    assert lines == [
        f'model server {server.url}: sent a reply that is not JSON (text/html: "<html>"); retry 1/2 in 0.0 s',
        f"model server {server.url}: sent a malformed reply (choices is empty); retry 2/2 in 0.0 s",
    ]


def test_null_content_and_no_usage_are_an_empty_reply(server: FakeOpenAI) -> None:
    reply = _with("choices.0.message.content", None)
    del reply["usage"]
    server.replies.append(Reply.json(reply))
    c = _backend(server.url).generate(HI, GenerationParams())
    assert (c.text, c.tokens_in, c.tokens_out) == ("", 0, 0)


def test_a_lone_surrogate_comes_through_and_goes_back_as_a_replacement(server: FakeOpenAI) -> None:
    server.replies.append(Reply.json(_with("choices.0.message.content", "a\ud800b")))
    b = _backend(server.url)
    text = b.generate(HI, GenerationParams()).text
    assert text == "a\\ud800b"  # a visible escape from the Completion on (agent/backends/base.py)
    server.replies.append(Reply("ok"))
    history = [Message.text("assistant", text), Message("user", (TextPart("x\udfffy"),))]
    assert b.generate(history, GenerationParams()).text == "ok"
    sent = server.requests[-1]["messages"]
    assert (
        sent[0]["content"] == "a\\ud800b" and sent[1]["content"] == "x\ufffdy"
    )  # vLLM would refuse a lone one


def test_a_base_url_or_key_that_http_cannot_carry_is_refused_at_once() -> None:
    with pytest.raises(BackendError, match=r"URL '127.0.0.1:8000/v1' is not an http:// or https:// URL"):
        OpenAIBackend("127.0.0.1:8000/v1", "kimi-vl")
    with pytest.raises(BackendError, match=r"^the API key holds characters an HTTP header cannot carry$"):
        OpenAIBackend("http://127.0.0.1:8000/v1", "kimi-vl", api_key="sk-1\nX-Evil: 1")


@pytest.fixture(scope="module")
def tiny_chat(tiny_kimi: Path) -> Any:
    from agent.models.kimi_vl.chat import KimiChat
    from agent.models.kimi_vl.tokenizer import load_tokenizer

    return KimiChat(load_tokenizer(tiny_kimi), 4096)


def test_history_counts_are_exact_where_the_server_tokenizes(tiny_chat: Any) -> None:
    from agent.history import ContextBuilder, HistoryConfig

    server = FakeOpenAI(tokenizer=tiny_chat.text_ids)
    try:
        count = _backend(server.url).text_counter()
        assert count is not None
        assert server.tokenize_requests[0] == {
            "model": "kimi-vl",
            "prompt": "image",
            "add_special_tokens": False,
        }
        for text in ["rename every file", "héllo wörld ✓ 你好", "a\n\n  b", ""]:
            assert count(text) == tiny_chat.count_text_tokens(text)
        shot = Image.new("RGB", (1280, 800), (9, 9, 9))
        exact = ContextBuilder(HistoryConfig(count_text_tokens=count)).build("open the files", [], shot, 1)
        # What the history counts is what the model will see, to the token.
        assert exact.tokens == len(tiny_chat.render(exact.messages).ids)
        bound = ContextBuilder(HistoryConfig()).build("open the files", [], shot, 1)
        assert bound.tokens > exact.tokens
        assert server.requests == []  # counting sends no chat request
    finally:
        server.close()


def test_without_a_tokenize_endpoint_the_byte_bound_stays(server: FakeOpenAI) -> None:
    assert _backend(server.url).text_counter() is None
    assert len(server.tokenize_requests) == 1 and server.requests == []  # asked once


def test_a_tokenize_endpoint_that_goes_away_leaves_upper_bounds(tiny_chat: Any) -> None:
    server = FakeOpenAI(tokenizer=tiny_chat.text_ids)
    notices: list[str] = []
    count = _backend(server.url).text_counter(notices.append)
    try:
        assert count is not None and count("héllo") == tiny_chat.count_text_tokens("héllo")
        server.tokenizer = None  # the endpoint now answers 404
        assert count("héllo") == len("héllo".encode()) and count("wörld") == len("wörld".encode())
        assert len(notices) == 1 and "/tokenize stopped answering" in notices[0]
        assert len(server.tokenize_requests) == 3  # the probe, "héllo" twice; never "wörld"
    finally:
        server.close()


def test_the_agent_cli_budgets_with_the_servers_counts_and_records_it(tiny_chat: Any) -> None:
    from tasks.cli import parsers
    from tasks.model import build_policy

    server = FakeOpenAI(tokenizer=tiny_chat.text_ids)
    try:
        args = parsers()["kimi-agent"].parse_args(
            ["t", "--backend", "openai", "--base-url", server.url, "--model", "kimi-vl"]
        )
        setup = build_policy(args, print, None)
        assert setup.settings["token_counts"] == "server /tokenize"
        built = setup.policy.context.build("open the files", [], Image.new("RGB", (1920, 1080)), 1)
        assert built.tokens == len(tiny_chat.render(built.messages).ids)
    finally:
        server.close()


def test_serve_hint_is_the_documented_command() -> None:
    """The error's suggested command is the one docs/troubleshooting.md#vllm-flags explains."""
    from pathlib import Path

    from agent.backends.openai import SERVE_HINT

    doc = (Path(__file__).parent.parent / "docs" / "troubleshooting.md").read_text().replace("\\\n  ", "")
    assert SERVE_HINT.format(model="kimi-vl") in doc
