"""The grounding runner end to end: a real dataset directory, a real loopback OpenAI server (or the
tiny random Kimi-VL in-process), `kimi-agent bench screenspot run|score`, and what lands in OUT."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_openai_server import FakeOpenAI, Reply
from PIL import Image

from prompts import load_prompt
from tasks.screenspot.cli import main
from tasks.screenspot.runner import read_log

ROOT = Path(__file__).resolve().parents[1]
SIZE = (200, 100)


def code(x: float, y: float) -> str:
    return f"## Action:\nClick it.\n## Code:\n```python\npyautogui.click(x={x}, y={y})\n```"


def write_pro(root: Path, records: list[dict[str, Any]], mode: str = "RGB") -> Path:
    """A ScreenSpot-Pro layout: annotations/app_os.json and one PNG per record (of SIZE)."""
    (root / "annotations").mkdir(parents=True)
    (root / "images" / "app_os").mkdir(parents=True)
    full = []
    for i, r in enumerate(records):
        name = f"app_os/shot{i}.png"
        Image.new(mode, SIZE, (30 * i % 255, 120, 200)).save(root / "images" / name)
        full.append(
            {
                "id": f"s{i}",
                "img_filename": name,
                "bbox": [40, 20, 80, 60],
                "instruction": f"target {i}",
                "instruction_cn": f"目标 {i}",
                "application": "app",
                "platform": "windows",
                "img_size": list(SIZE),
                "ui_type": "text",
                "group": "Dev",
                **r,
            }
        )
    (root / "annotations" / "app_os.json").write_text(json.dumps(full), encoding="utf-8")
    return root


def answer_by_instruction(fake: FakeOpenAI, answer: Callable[[str], Reply]) -> None:
    """Replies chosen by the request's instruction: with requests in flight at once, arrival order
    is not sample order. The server stays FakeOpenAI (it still records and counts in flight)."""
    base: Any = fake.httpd.RequestHandlerClass

    class ByInstruction(base):  # type: ignore[misc, valid-type]
        def _answer(self, body: dict[str, Any], reply: Reply | None) -> None:
            text = body["messages"][-1]["content"][-1]["text"]
            super()._answer(body, answer(text.split("## Task Instruction:\n", 1)[1]))

    fake.httpd.RequestHandlerClass = ByInstruction


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(models=("kimi-vl",), roots={"kimi-vl": "moonshotai/Kimi-VL-A3B-Instruct"})
    yield server
    server.close()


def run_args(data: Path, out: Path, *urls: str, extra: tuple[str, ...] = ()) -> list[str]:
    flags = [a for u in urls for a in ("--base-url", u)]
    return ["run", str(data), "--out", str(out), "--model", "kimi-vl", *flags, "--no-progress", *extra]


# Six samples with known outcomes (box x 40..80, y 20..60 of a 200x100 image).
REPLIES = {
    "target 0": code(0.3, 0.4),  # (60, 40): inside
    "target 1": code(80, 60),  # pixels, exactly on the bottom-right corner: borders count
    "target 2": code(0.9, 0.9),  # (180, 90): outside
    "target 3": "I cannot find it.",  # no click: wrong_format
    "target 4": "◁think▷It is the blue one.◁/think▷" + code(0.25, 0.25),  # (50, 25) after the thinking
    "target 5": code(0.5, 0.5),  # (100, 50): outside; this record has a null group and is an icon
}


def test_end_to_end_exact_metrics_details_and_requests(tmp_path: Path, fake: FakeOpenAI) -> None:
    data = write_pro(tmp_path / "pro", [{}, {}, {}, {}, {}, {"group": None, "ui_type": "icon"}])
    answer_by_instruction(fake, lambda instruction: Reply(text=REPLIES[instruction]))
    out = tmp_path / "out"
    assert main(run_args(data, out, fake.url)) == 0

    results = json.loads((out / "results.json").read_text())
    details = {d["id"]: d for d in results["details"]}
    assert [details[f"s{i}"]["correctness"] for i in range(6)] == [
        "correct", "correct", "wrong", "wrong_format", "correct", "wrong"
    ]  # fmt: skip
    assert [details[f"s{i}"]["pred"] for i in range(6)] == [
        [60.0, 40.0], [80.0, 60.0], [180.0, 90.0], None, [50.0, 25.0], [100.0, 50.0]
    ]  # fmt: skip
    overall = results["metrics"]["overall"]
    assert overall == {
        "num_correct_action": 3,
        "num_total": 6,
        "wrong_format_num": 1,
        "action_acc": 0.5,
        "text_acc": 3 / 5,
        "icon_acc": 0.0,
    }
    # The official quirk: group:None holds every record.
    assert results["metrics"]["leaderboard_simple_style"]["group:Dev"]["num_total"] == 5
    assert results["metrics"]["leaderboard_simple_style"]["group:None"]["num_total"] == 6

    # What the server got: the packaged system prompt, the image as the file's own bytes, then the
    # instruction as ScreenSpot-Pro's Kimi-VL wrapper words it; greedy.
    assert len(fake.requests) == 6
    req = next(r for r in fake.requests if r["messages"][1]["content"][1]["text"].endswith("target 2"))
    assert req["temperature"] == 0.0 and req["max_tokens"] == 1024  # Instruct, from the server's root
    assert req["messages"][0] == {"role": "system", "content": load_prompt("grounding_system")}
    image, text = req["messages"][1]["content"]
    sent = base64.b64decode(image["image_url"]["url"].removeprefix("data:image/png;base64,"))
    assert sent == (data / "images" / "app_os" / "shot2.png").read_bytes()
    assert text == {"type": "text", "text": "## Task Instruction:\ntarget 2"}

    log = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in log) == [f"s{i}" for i in range(6)]
    assert all(p["image_size"] == list(SIZE) for p in log)  # as read from the file, for the scorer
    page = (out / "report.html").read_text()
    assert page.count("<svg") >= 2 and page.count("data:image/webp;base64,") == 3  # 3 misses
    run = json.loads((out / "run.json").read_text())
    assert run["variant"] == "instruct" and run["checkpoint"] == "moonshotai/Kimi-VL-A3B-Instruct"

    # Re-scoring the written results offline gives the same metrics.
    assert main(["score", str(out / "results.json"), "--out", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text())["metrics"] == results["metrics"]


def test_requests_in_flight_reach_n_spread_over_servers(tmp_path: Path, fake: FakeOpenAI) -> None:
    other = FakeOpenAI(models=("kimi-vl",), roots={"kimi-vl": "moonshotai/Kimi-VL-A3B-Instruct"})
    try:
        data = write_pro(tmp_path / "pro", [{} for _ in range(16)])
        for server in (fake, other):
            answer_by_instruction(server, lambda instruction: Reply(text=code(0.3, 0.4), delay_s=0.3))
        out = tmp_path / "out"
        assert main(run_args(data, out, fake.url, other.url, extra=("--concurrency", "6"))) == 0
        assert fake.max_in_flight == 3 and other.max_in_flight == 3  # 6 slots, alternating servers
        assert len(fake.requests) + len(other.requests) == 16
        assert (
            json.loads((out / "results.json").read_text())["metrics"]["overall"]["num_correct_action"] == 16
        )
    finally:
        other.close()


def test_failed_samples_are_recorded_then_retried_on_resume(tmp_path: Path, fake: FakeOpenAI) -> None:
    data = write_pro(tmp_path / "pro", [{} for _ in range(5)])
    broken = {"target 1", "target 3"}
    answer_by_instruction(fake, lambda i: Reply(status=500) if i in broken else Reply(text=code(0.3, 0.4)))
    out = tmp_path / "out"
    extra = ("--retries", "1", "--concurrency", "2")
    assert main(run_args(data, out, fake.url, extra=extra)) == 1  # some samples could not be asked
    log = read_log(out / "predictions.jsonl")
    assert {i for i, p in log.items() if p.error} == {"s1", "s3"}
    assert "500" in (log["s1"].error or "")
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["overall"]["num_total"] == 3  # errors are not scored...
    assert results["not_scored"]["num_errors"] == 2  # ...but listed

    broken.clear()  # the server recovers: a rerun asks only for the two that failed
    asked = len(fake.requests)
    assert main(run_args(data, out, fake.url, extra=extra)) == 0
    assert len(fake.requests) - asked == 2
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["overall"]["num_correct_action"] == 5


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path: Path, fake: FakeOpenAI) -> None:
    n = 24
    data = write_pro(tmp_path / "pro", [{"bbox": [40, 20, 80, 60 + i % 3]} for i in range(n)])
    answer_by_instruction(
        fake, lambda i: Reply(text=code(0.3, 0.4 + 0.1 * (int(i.split()[1]) % 4)), delay_s=0.1)
    )
    reference = tmp_path / "reference"
    assert main(run_args(data, reference, fake.url, extra=("--concurrency", "3"))) == 0

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tasks.screenspot.cli", *run_args(data, out, fake.url), "--concurrency", "3"]
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = out / "predictions.jsonl"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not log.exists() or log.read_text().count("\n") < 6):
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    written = log.read_text().count("\n")
    assert 6 <= written < n, "the kill should land mid-run"
    assert not (out / "results.json").exists()

    asked = len(fake.requests)
    assert main(run_args(data, out, fake.url, extra=("--concurrency", "3"))) == 0
    assert len(fake.requests) - asked <= n - written + 3  # at most the ones in flight at the kill again
    ids = [json.loads(line)["id"] for line in log.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == n  # none lost, none twice
    assert _results(out) == _results(reference)


@pytest.mark.slow
def test_ctrl_c_stops_at_once_and_says_how_to_resume(tmp_path: Path, fake: FakeOpenAI) -> None:
    data = write_pro(tmp_path / "pro", [{} for _ in range(8)])
    slow = {"delay_s": 60.0}  # the requests in flight at Ctrl-C would take a minute
    answer_by_instruction(
        fake, lambda i: Reply(text=code(0.3, 0.4), delay_s=slow["delay_s"] if i != "target 0" else 0)
    )
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tasks.screenspot.cli", *run_args(data, out, fake.url), "--concurrency", "2"]
    child = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    log = out / "predictions.jsonl"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not log.exists() or not log.read_text()):
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    output, _ = child.communicate(timeout=50)
    # Not waiting for those in flight; the bound is loose for a loaded machine, far below their 60 s.
    assert child.returncode == 130 and time.monotonic() - t0 < 30
    assert "rerun the same command" in output
    slow["delay_s"] = 0
    assert main(run_args(data, out, fake.url)) == 0
    assert len(read_log(log)) == 8


def _results(out: Path) -> dict[str, Any]:
    results = json.loads((out / "results.json").read_text())
    return {"metrics": results["metrics"], "details": results["details"]}


def test_a_torn_last_line_is_cut_and_its_sample_asked_again(tmp_path: Path, fake: FakeOpenAI) -> None:
    data = write_pro(tmp_path / "pro", [{} for _ in range(3)])
    answer_by_instruction(fake, lambda i: Reply(text=code(0.3, 0.4)))
    out = tmp_path / "out"
    assert main(run_args(data, out, fake.url, extra=("--limit", "1"))) == 0
    log = out / "predictions.jsonl"
    log.write_text(log.read_text() + '{"id": "s1", "point": [1')  # a kill mid-write
    assert main(run_args(data, out, fake.url)) == 0
    lines = log.read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == ["s0", "s1", "s2"]


def test_filter_limit_language_and_a_resume_that_would_mix_runs(tmp_path: Path, fake: FakeOpenAI) -> None:
    data = write_pro(
        tmp_path / "pro",
        [{"group": "CAD"}, {"group": "Dev"}, {"group": "CAD", "platform": "macos"}, {"group": "CAD"}],
    )
    answer_by_instruction(fake, lambda i: Reply(text=code(0.3, 0.4)))
    out = tmp_path / "out"
    args = run_args(data, out, fake.url, extra=("--filter", "group=cad", "--limit", "2", "--language", "cn"))
    assert main(args) == 0
    asked = [r["messages"][1]["content"][1]["text"] for r in fake.requests]
    assert sorted(asked) == ["## Task Instruction:\n目标 0", "## Task Instruction:\n目标 2"]
    details = json.loads((out / "results.json").read_text())["details"]
    assert {d["lang"] for d in details} == {"cn"}

    with pytest.raises(ValueError, match="language='cn', not 'en'"):
        main(run_args(data, out, fake.url))
    with pytest.raises(ValueError, match="unknown key 'colour'"):
        main(run_args(data, tmp_path / "other", fake.url, extra=("--filter", "colour=red")))


def test_an_rgba_image_is_sent_as_the_model_sees_it(tmp_path: Path, fake: FakeOpenAI) -> None:
    """The server would composite alpha on white where the official processor drops it: an image
    that is not plain RGB goes out converted (agent.models.kimi_vl.vision.wire_image), not as the file's bytes."""
    data = write_pro(tmp_path / "pro", [{}], mode="RGBA")
    answer_by_instruction(fake, lambda i: Reply(text=code(0.3, 0.4)))
    assert main(run_args(data, tmp_path / "out", fake.url)) == 0
    url = fake.requests[0]["messages"][1]["content"][0]["image_url"]["url"]
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.mode == "RGB" and sent.size == SIZE


@pytest.mark.slow
def test_tiny_kimi_through_the_transformers_backend(tmp_path: Path, tiny_kimi: Path) -> None:
    data = write_pro(tmp_path / "pro", [{}, {"ui_type": "icon"}])
    out = tmp_path / "out"
    args = ["run", str(data), "--out", str(out), "--backend", "transformers", "--model", str(tiny_kimi)]
    assert main([*args, "--offline", "--max-new-tokens", "6", "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["overall"]["num_total"] == 2
    log = read_log(out / "predictions.jsonl")
    assert set(log) == {"s0", "s1"} and all(p.error is None and p.tokens_in > 0 for p in log.values())
    # A random model clicks nowhere: wrong_format, scored as a miss.
    assert {d["correctness"] for d in results["details"]} <= {"wrong_format", "wrong", "correct"}


def centre_of(sample: Any) -> tuple[float, float]:
    t = sample.target
    if t.kind == "polygon":
        return sum(x for x, _ in t.polygon) / len(t.polygon), sum(y for _, y in t.polygon) / len(t.polygon)
    if t.kind == "bbox":
        return (t.box[0] + t.box[2]) / 2, (t.box[1] + t.box[3]) / 2
    return -1.0, -1.0  # a refusal: answered with terminate(status="failure") below


@pytest.mark.parametrize("layout", ["screenspot-v2", "osworld-g"])
def test_other_layouts_end_to_end(tmp_path: Path, fake: FakeOpenAI, layout: str) -> None:
    from screenspot_data import write_osworld_g, write_screenspot_v2

    written = (write_screenspot_v2 if layout == "screenspot-v2" else write_osworld_g)(tmp_path / "data")
    by_instruction = {s.instruction: s for s in written.samples}
    assert len(by_instruction) == len(written.samples)

    def answer(instruction: str) -> Reply:
        s = by_instruction[instruction]
        with Image.open(s.image) as im:
            w, h = im.size
        x, y = centre_of(s)
        if x < 0:
            return Reply(
                text='## Action:\nnot there\n## Code:\n```python\ncomputer.terminate(status="failure")\n```'
            )
        return Reply(text=code(round(x / w, 6), round(y / h, 6)))

    answer_by_instruction(fake, answer)
    out = tmp_path / "out"
    assert main(run_args(written.root, out, fake.url)) == 0
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    if layout == "screenspot-v2":
        assert metrics["average"] == 1.0 and metrics["cells_averaged"] == 6
        assert metrics["overall"]["num_total"] == len(written.samples)
    else:  # every box and polygon hit, and the declined refusal is correct too
        assert metrics["overall"]["num_correct_action"] == len(written.samples)
        assert metrics["by_category"]["refusal"]["action_acc"] == 1.0
        system = fake.requests[0]["messages"][0]["content"]
        assert 'computer.terminate(status="failure")' in system  # the prompt says how to decline
    from tasks.screenspot.scoring import rescore_file

    assert rescore_file(out / "results.json")["metrics"] == metrics  # offline re-scoring agrees
    if layout == "osworld-g":  # charted as results.json counts it
        assert ">unclassified<" in (out / "report.html").read_text()
    assert "<svg" in (out / "report.html").read_text()


def test_kimi_agent_bench_reaches_the_harness(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from tasks.cli import main as kimi_agent

    assert kimi_agent(["bench"]) == 2
    assert "name a benchmark (screenspot, osworld)" in capsys.readouterr().out
    assert (
        kimi_agent(["bench", "screenspot", "run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
        == 2
    )
    printed = capsys.readouterr().out
    assert (
        printed.startswith("kimi-agent: error:") and "nowhere" in printed and len(printed.splitlines()) == 1
    )


def test_a_declined_grounding_is_marked_and_only_osworld_g_asks_for_it() -> None:
    from tasks.screenspot.prompt import declined, read_point, system_prompt

    decline = '## Action:\nnone\n## Code:\n```python\ncomputer.terminate(status="failure")\n```'
    assert read_point(decline, (100, 50)) is None and declined(
        decline
    )  # no point: wrong_format off OSWorld-G
    assert read_point("no code at all", (100, 50)) is None and not declined("no code at all")
    assert not declined(code(0.5, 0.5))
    assert read_point(code(0.5, 0.5), (100, 50)) == (50.0, 25.0)
    assert "terminate" not in system_prompt() and "terminate" in system_prompt(refusals=True)


def test_a_resume_must_share_every_setting_and_skips_are_kept(
    tmp_path: Path, fake: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    from screenspot_data import write_screenspot_v1

    written = write_screenspot_v1(tmp_path / "v1", bad_records=True, missing_images=True)
    fake.default = Reply(code(0.5, 0.5))
    out = tmp_path / "out"
    assert main(run_args(written.root, out, fake.url, extra=("--limit", "2"))) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["skipped"]["count"] == len(written.problems) > 0
    assert all("#" in r for r in results["skipped"]["records"])  # each with its file and index
    assert "Kimi-VL (published)" not in capsys.readouterr().out  # --limit: not comparable
    for changed in (("--in-token-limit", "1024"), ("--send", "resized")):
        with pytest.raises(ValueError, match="resume"):
            main(run_args(written.root, out, fake.url, extra=("--limit", "2", *changed)))
    rescored = tmp_path / "no" / "such" / "dir" / "r.json"
    assert main(["score", str(out / "results.json"), "--out", str(rescored)]) == 0
    assert json.loads(rescored.read_text())["metrics"] == results["metrics"]


@pytest.mark.parametrize(
    "reply, point",
    [
        ("Click the button: pyautogui.click(x=0.3, y=0.4)", (60.0, 40.0)),
        (
            "## Action:\nClick it.\n## Code:\nHere it is: pyautogui.click(x=0.3, y=0.4) (the OK button)",
            (60.0, 40.0),
        ),
        ("## Code:\n```python\nclick on it -> pyautogui.click(0.25, 0.5)\n```", (50.0, 50.0)),
        (
            "◁think▷maybe pyautogui.click(x=0.9, y=0.9)◁/think▷I will pyautogui.click(x=0.1, y=0.2)",
            (20.0, 20.0),
        ),
        ("The answer is pyautogui.click(x=120, y=30)", (120.0, 30.0)),  # pixels, as any code
        ("Use pyautogui.click(x=0.5, y=0.5", None),  # never closed on its line
        ("I would call pyautogui.click(x=os.system('x'), y=1)", None),  # not a literal: refused
        ("I cannot find it.", None),
    ],
)
def test_a_call_after_text_on_its_line_gives_the_point(reply: str, point: tuple[float, float] | None) -> None:
    from agent.models.kimi_vl.parser import parse_reply
    from tasks.screenspot.prompt import read_point

    assert read_point(reply, SIZE) == point
    if point is not None and "```" not in reply:
        assert parse_reply(reply).error is not None  # the agent loop still reads code strictly


def test_the_published_figure_only_beside_a_run_over_the_published_set(
    tmp_path: Path, fake: FakeOpenAI, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ScreenSpot-Pro run over 6 samples is not the published set of 1581: no published column, no
    dashed line. Were 6 the published set's size, the figure shows, with its line on every chart."""
    from tasks.screenspot import report

    assert report.PUBLISHED_SAMPLES == {"screenspot-pro": 1581, "screenspot-v2": 1272, "osworld-g": 564}
    data = write_pro(tmp_path / "pro", [{}, {}, {}, {}, {}, {"group": "CAD", "ui_type": "icon"}])
    answer_by_instruction(fake, lambda instruction: Reply(text=REPLIES[instruction]))

    def run(out: str, *extra: str) -> tuple[str, str]:
        assert main(run_args(data, tmp_path / out, fake.url, extra=extra)) == 0
        return " ".join(capsys.readouterr().out.split()), (tmp_path / out / "report.html").read_text()

    printed, page = run("subset")
    assert "Kimi-VL (published)" not in printed
    assert (
        "published 34.5 (instruct) is over the whole set in English; not shown beside this run: " in printed
    )
    assert "not shown beside this run: 6 of the 1581 samples scored" in printed
    assert 'class="ref"' not in page and "published" not in page
    monkeypatch.setitem(report.PUBLISHED_SAMPLES, "screenspot-pro", 6)
    printed, page = run("whole")
    assert "Kimi-VL (published)" in printed and "34.5" in printed
    charts = page.count("<svg")
    assert charts >= 3 and page.count('class="ref"') == charts and "Kimi-VL published: 34.5%" in page
    printed, page = run("limited", "--limit", "5")
    assert "Kimi-VL (published)" not in printed and 'class="ref"' not in page
    assert "not shown beside this run: --limit; 5 of the 6 samples scored" in printed
