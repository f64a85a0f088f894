"""The grounding runner's own cost and its concurrency, against a real loopback OpenAI server.

1. Client cost per 3840x2160 sample, the server answering at once: load (read the file), prepare
   (data URL and request JSON), send (the HTTP exchange), parse (the reply to a pixel point), score
   (correctness), and the whole ask; beside a plain PNG decode of the same image in the same run, and
   beside ``--send resized`` (decode, MoonViT resize, PNG encode on the client).
2. Requests in flight with a server of fixed latency: the share of the run's time at N in flight,
   and samples/s against the ideal N / latency.

Run: .venv/bin/python tests/bench/bench_screenspot.py [--quick]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fake_openai_server import FakeOpenAI, Reply
from PIL import Image, ImageDraw

from agent.backends.base import GenerationParams
from agent.backends.openai import OpenAIBackend
from prompts import load_prompt
from tasks.screenspot import prompt
from tasks.screenspot.runner import AskSettings, image_url, openai_ask, run_samples
from tasks.screenspot.sample import Prediction, Sample, Target
from tasks.screenspot.scoring import correctness

REPLY = "## Action:\nClick the Save button.\n## Code:\n```python\npyautogui.click(x=0.512, y=0.204)\n```"
QUICK = "--quick" in sys.argv


def screenshot(path: Path, size: tuple[int, int]) -> Path:
    """A busy UI-like PNG (panels, text, icons): compresses like a real screenshot, not like a flat
    colour."""
    w, h = size
    im = Image.new("RGB", size, (236, 236, 236))
    d = ImageDraw.Draw(im)
    for i in range(0, h, 22):  # lines of text in three columns
        for col in range(3):
            x = 40 + col * (w // 3)
            d.text(
                (x, i + 4),
                f"item {i // 22:04d} · src/module_{col}/file_{i % 97}.py  {i * 37 % 1000}",
                fill=(30, 30, 30),
            )
    for k in range(400):  # icons
        x, y = (k * 97) % (w - 24), (k * 53) % (h - 24)
        d.rectangle((x, y, x + 20, y + 20), fill=((k * 40) % 255, (k * 90) % 255, (k * 150) % 255))
    # A photo-like panel (a canvas, a video frame): what makes real 4K screenshots 2-5 MB as PNG.
    photo = Image.merge(
        "RGB",
        [Image.effect_noise((w // 3, h // 3), 24).point(lambda v, c=c: (v + c) % 256) for c in (0, 60, 120)],
    )
    im.paste(photo, (w // 2, h // 2))
    im.save(path)
    return path


def sample(path: Path, i: int, size: tuple[int, int]) -> Sample:
    return Sample(
        dataset="screenspot-pro",
        id=f"s{i}",
        source=f"bench#{i}",
        image=path,
        image_size=size,
        instruction=f"Click the Save button {i}",
        target=Target(kind="bbox", box=(1900.0, 400.0, 2100.0, 480.0)),
    )


def ms(xs: list[float]) -> str:
    return f"{1000 * statistics.median(xs):7.1f} ms"


def client_cost(tmp: Path) -> None:
    size = (3840, 2160)
    path = screenshot(tmp / "4k.png", size)
    server = Server(0.0)
    backend = OpenAIBackend(server.url, "kimi-vl", in_token_limit=4096)
    params = GenerationParams(temperature=0.0, max_new_tokens=1024)
    system = load_prompt("grounding_system")
    s = sample(path, 0, size)
    rounds = 5 if QUICK else 15
    t: dict[str, list[float]] = {
        k: [] for k in ("load", "prepare", "send", "parse", "score", "ask", "decode", "resized")
    }
    for _ in range(rounds):
        t0 = time.perf_counter()
        url, _ = image_url(path, 4096, "original")
        t1 = time.perf_counter()
        msgs = prompt.openai_messages(system, url, s.instruction)
        t2 = time.perf_counter()
        c = backend.chat(msgs, params)
        t3 = time.perf_counter()
        point = prompt.read_point(c.text, size)
        t4 = time.perf_counter()
        correctness(s, Prediction(id=s.id, point=point))
        t5 = time.perf_counter()
        t["load"].append(t1 - t0)
        t["prepare"].append(t2 - t1)
        t["send"].append(t3 - t2)
        t["parse"].append(t4 - t3)
        t["score"].append(t5 - t4)
        a0 = time.perf_counter()
        openai_ask(backend, AskSettings(system, params, 4096))(s)
        t["ask"].append(time.perf_counter() - a0)
        d0 = time.perf_counter()
        with Image.open(path) as im:
            im.load()
        t["decode"].append(time.perf_counter() - d0)
        r0 = time.perf_counter()
        openai_ask(backend, AskSettings(system, params, 4096, send="resized"))(s)
        t["resized"].append(time.perf_counter() - r0)
    server.close()
    kib = path.stat().st_size / 1024
    print(
        f"1. client cost per 3840x2160 sample (PNG {kib:.0f} KiB), median of {rounds}, loopback server answering at once"
    )
    for k, label in (
        ("load", "load (header, file bytes, base64)"),
        ("prepare", "prepare (the messages)"),
        ("send", "send (JSON, HTTP exchange)"),
        ("parse", "parse (reply -> pixel point)"),
        ("score", "score (correctness)"),
        ("ask", "whole ask, --send original"),
        ("decode", "plain PNG decode of the same image"),
        ("resized", "whole ask, --send resized"),
    ):
        print(f"   {label:40s} {ms(t[k])}")
    ratio = statistics.median(t["ask"]) / statistics.median(t["decode"])
    print(f"   whole ask / PNG decode = {ratio:.2f}x")


class Server:
    """The loopback server in its own process (``--serve LATENCY``), so that its request parsing does
    not share the client's GIL; it samples its own count of requests in flight every 2 ms between
    ``start`` and ``stop``."""

    def __init__(self, latency: float) -> None:
        cmd = [sys.executable, __file__, "--serve", str(latency)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self._ask("url")

    def _ask(self, command: str) -> str:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def start(self) -> None:
        self._ask("start")

    def stop(self) -> dict[int, int]:
        return {int(k): v for k, v in json.loads(self._ask("stop")).items()}

    def close(self) -> None:
        self._ask("quit")
        self.proc.wait()


def serve(latency: float) -> None:
    fake = FakeOpenAI()
    fake.default = Reply(text=REPLY, delay_s=latency)
    seen: list[int] = []
    done = threading.Event()
    watcher: threading.Thread | None = None

    def watch() -> None:
        while not done.is_set():
            seen.append(fake.in_flight)
            time.sleep(0.002)

    for line in sys.stdin:
        command = line.strip()
        if command == "url":
            print(fake.url, flush=True)
        elif command == "start":
            seen.clear()
            done.clear()
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            print("ok", flush=True)
        elif command == "stop":
            done.set()
            if watcher is not None:
                watcher.join()
            print(json.dumps(Counter(seen)), flush=True)
        else:
            break
    fake.close()
    print("bye", flush=True)


def in_flight(tmp: Path) -> None:
    latency = 0.2
    path = screenshot(tmp / "hd.png", (1280, 720))
    print(f"\n2. requests in flight, server latency {latency * 1000:.0f} ms, 1280x720 PNG, 8 rounds of N")
    print("   N   samples  time at N  mean in flight  samples/s  ideal N/latency")
    server = Server(latency)
    for n in (1, 4, 16, 32) if not QUICK else (1, 8):
        backend = OpenAIBackend(server.url, "kimi-vl", in_token_limit=4096, timeout_s=60)
        ask = openai_ask(backend, AskSettings(load_prompt("grounding_system"), GenerationParams(), 4096))
        count = 8 * n
        samples = [sample(path, i, (1280, 720)) for i in range(count)]
        server.start()
        t0 = time.perf_counter()
        run_samples(samples, [ask] * n, tmp / f"log{n}.jsonl", show_progress=False)
        wall = time.perf_counter() - t0
        hist = server.stop()
        total = sum(hist.values()) or 1
        mean = sum(k * v for k, v in hist.items()) / total
        print(
            f"  {n:3d}  {count:7d}  {100 * hist.get(n, 0) / total:8.1f}%  {mean:14.1f}  {count / wall:9.1f}"
            f"  {n / latency:15.1f}"
        )
        backend.close()
    server.close()


if __name__ == "__main__":
    if "--serve" in sys.argv:
        serve(float(sys.argv[sys.argv.index("--serve") + 1]))
    else:
        with tempfile.TemporaryDirectory() as d:
            client_cost(Path(d))
            in_flight(Path(d))
