"""Backend B against a real HTTP server on loopback."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time

import pytest
from fake_openai_server import FakeOpenAI, Reply
from PIL import Image

from agent.backend import BackendError, GenerationParams
from agent.messages import ImagePart, Message, TextPart
from agent.openai_backend import OpenAIBackend
from agent.vision import model_size


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    s = FakeOpenAI()
    yield s
    s.close()


def _backend(server: FakeOpenAI, **kw: object) -> OpenAIBackend:
    opts = {"timeout_s": 2.0, "max_retries": 2, "backoff_s": 0.01, **kw}
    return OpenAIBackend(server.url, "kimi-vl", **opts)  # type: ignore[arg-type]


def test_message_layout_image_size_and_usage(server: FakeOpenAI) -> None:
    server.replies.append(Reply("## Action:\nclick\n## Code:\n```python\npyautogui.click(0.5, 0.5)\n```"))
    shot = Image.new("RGB", (1920, 1080), (200, 10, 10))
    messages = [
        Message.text("system", "SYS"),
        Message.text("user", "# Task\nx"),
        Message.text("assistant", "# Step 1: ..."),
        Message("user", (ImagePart(shot), TextPart("what next?"))),
    ]
    c = _backend(server).generate(messages, GenerationParams(max_new_tokens=77, temperature=0.2))
    assert c.text.startswith("## Action:") and (c.tokens_in, c.tokens_out, c.finish_reason) == (
        1234,
        56,
        "stop",
    )
    [req] = server.requests
    assert req["model"] == "kimi-vl" and req["max_tokens"] == 77 and req["temperature"] == 0.2
    assert [m["role"] for m in req["messages"]] == ["system", "user", "assistant", "user"]
    assert req["messages"][0]["content"] == "SYS"
    img, txt = req["messages"][3]["content"]
    assert txt == {"type": "text", "text": "what next?"}
    head, b64 = img["image_url"]["url"].split(",", 1)
    assert head == "data:image/png;base64"
    sent = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert sent.size == model_size(1920, 1080, 4096) == (1196, 672)


def test_retries_500_then_succeeds(server: FakeOpenAI) -> None:
    server.replies.extend([Reply(status=500), Reply(status=503), Reply("ok")])
    assert _backend(server).generate([Message.text("user", "hi")], GenerationParams()).text == "ok"
    assert len(server.requests) == 3


def test_429_honours_retry_after(server: FakeOpenAI) -> None:
    server.replies.extend([Reply(status=429, headers={"Retry-After": "0.3"}), Reply("ok")])
    t0 = time.perf_counter()
    assert _backend(server).generate([Message.text("user", "hi")], GenerationParams()).text == "ok"
    assert time.perf_counter() - t0 >= 0.3 and len(server.requests) == 2


def test_400_is_not_retried(server: FakeOpenAI) -> None:
    server.replies.append(Reply(status=400, body={"error": {"message": "too many images: at most 1"}}))
    with pytest.raises(BackendError, match="answered 400: too many images"):
        _backend(server).generate([Message.text("user", "hi")], GenerationParams())
    assert len(server.requests) == 1


def test_5xx_until_retries_run_out(server: FakeOpenAI) -> None:
    server.default = Reply(status=502)
    with pytest.raises(BackendError, match="answered 502"):
        _backend(server).generate([Message.text("user", "hi")], GenerationParams())
    assert len(server.requests) == 3  # one try and two retries


def test_timeout_is_retried_then_reported(server: FakeOpenAI) -> None:
    server.default = Reply("late", delay_s=1.0)
    with pytest.raises(BackendError, match="timed out after 2 tries"):
        _backend(server, timeout_s=0.3, max_retries=1).generate(
            [Message.text("user", "hi")], GenerationParams()
        )


def test_unreachable_server_is_one_clear_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    b = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "kimi-vl", max_retries=1, backoff_s=0.01, timeout_s=1)
    with pytest.raises(BackendError, match=r"is unreachable after 2 tries; start one with `vllm serve"):
        b.generate([Message.text("user", "hi")], GenerationParams())


def test_wrong_model_name_lists_the_served_models(server: FakeOpenAI) -> None:
    server.default = Reply("never")
    b = OpenAIBackend(server.url, "Kimi-VL-A3B", max_retries=0)
    with pytest.raises(BackendError, match=r"has no model 'Kimi-VL-A3B'; it serves: kimi-vl"):
        b.generate([Message.text("user", "hi")], GenerationParams())


def test_concurrent_calls_get_their_own_replies(server: FakeOpenAI) -> None:
    server.default = Reply("echo {echo}", delay_s=0.05)
    b = _backend(server)
    results: dict[int, str] = {}

    def call(i: int) -> None:
        results[i] = b.generate([Message.text("user", f"n{i}")], GenerationParams()).text

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: f"echo n{i}" for i in range(8)}
