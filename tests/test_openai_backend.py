"""Backend B against a real HTTP server on loopback (tests/fake_openai_server.py); nothing is mocked."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any

import pytest
from fake_openai_server import FakeOpenAI, Reply
from PIL import Image

from agent.backend import BackendError, GenerationParams
from agent.messages import ImagePart, Message, TextPart
from agent.openai_backend import OpenAIBackend
from agent.vision import model_size

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


def test_in_token_limit_sets_the_resolution(server: FakeOpenAI) -> None:
    server.default = Reply("ok")
    shot = Image.new("RGB", (2560, 1440))
    for limit in (4096, 16384):
        _backend(server.url, in_token_limit=limit).generate(
            [Message("user", (ImagePart(shot),))], GenerationParams()
        )
        [part] = server.requests[-1]["messages"][0]["content"]
        assert _decode(part).size == model_size(2560, 1440, limit)


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
    with pytest.raises(BackendError, match=r"answered 502 after 3 tries: scripted 502$"):
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
    with pytest.raises(BackendError, match=r"answered 400: too many images: at most 1$"):
        _backend(server.url, sleeps).generate(HI, GenerationParams())
    assert len(server.requests) == 1 and sleeps.delays == []


def test_401_says_which_key_to_set(server: FakeOpenAI) -> None:
    server.replies.append(Reply(status=401, body={"error": "Unauthorized"}))
    with pytest.raises(BackendError, match=r"answered 401: Unauthorized \(set OPENAI_API_KEY"):
        _backend(server.url).generate(HI, GenerationParams())
    assert len(server.requests) == 1


def test_timeout_is_retried_then_reported(server: FakeOpenAI) -> None:
    server.default = Reply("late", delay_s=1.5)
    sleeps = Sleeps()
    t0 = time.perf_counter()
    with pytest.raises(BackendError, match=r"did not answer within 0.15 s \(2 tries\)"):
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
    assert msg.startswith(f"cannot reach the model server at {url}: ")
    assert "(3 tries) — start one with `vllm serve moonshotai/Kimi-VL-A3B-Instruct" in msg
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
