"""`kimi-agent doctor` against a loopback server imitating vLLM (tests/fake_vllm.py), with the tiny
Kimi-VL checkpoint as the local tokenizer and checkpoint: all OK once, then each misconfiguration
the doctor exists for, caught with the right status and fix."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_vllm import FakeVllm, VllmSetup
from rich.console import Console
from tiny_kimi import CHAT_TEMPLATE

from agent.models.kimi_vl.profile import KIMI_VL
from tasks.doctor import build_parser, cmd_doctor, collect
from tasks.doctor_checks.facts import KIMI_VL_FACTS
from tasks.doctor_checks.local import Gpu, check_checkpoint, check_gpu, check_package
from tasks.doctor_checks.probe import read_checkpoint
from tasks.doctor_checks.result import CheckResult, Status
from tasks.doctor_checks.serve_cmd import recommend
from tasks.doctor_checks.server import check_context, check_version

# A reply in Kimi-VL's grammar (## Thought / ## Action / ## Code, relative coordinates).
KIMI_REPLY = (
    "## Thought:\nThe blue button is in the middle.\n## Action:\nClick the blue button.\n"
    "## Code:\n```python\npyautogui.click(x=0.5, y=0.5)\n```"
)
# UI-TARS-1.5's grammar (its start_box form), which the Kimi-VL parser must refuse.
UI_TARS_REPLY = "Thought: I click the button.\nAction: click(start_box='(683,384)')"
SERVER_CHECKS = [
    "server reachable",
    "server version",
    "served model",
    "context length",
    "/tokenize",
    "chat template",
    "image tokens",
    "images per prompt",
    "reply length",
    "reply grammar",
]


@pytest.fixture
def serve(tiny_kimi: Path) -> Iterator[Any]:
    servers: list[FakeVllm] = []

    def start(**changes: Any) -> FakeVllm:
        servers.append(FakeVllm(VllmSetup(tiny_kimi, **{"reply": KIMI_REPLY, **changes})))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def argv(server: FakeVllm, tiny_kimi: Path, *more: str) -> list[str]:
    return ["--base-url", server.url, "--model", "kimi-vl", "--tokenizer", str(tiny_kimi), *more]


def by_name(server: FakeVllm, tiny_kimi: Path, *more: str) -> dict[str, CheckResult]:
    results, _ = collect(build_parser().parse_args(argv(server, tiny_kimi, *more)))
    return {r.name: r for r in results}


def test_a_correct_server_passes_every_check_and_exits_0(serve: Any, tiny_kimi: Path) -> None:
    server = serve()
    console = Console(record=True, width=200)
    rc = cmd_doctor(console, argv(server, tiny_kimi, "--checkpoint", str(tiny_kimi)))
    out = console.export_text()
    results = by_name(server, tiny_kimi, "--checkpoint", str(tiny_kimi))
    assert {n: results[n].status for n in SERVER_CHECKS} == dict.fromkeys(SERVER_CHECKS, Status.OK)
    assert results["checkpoint"].status is Status.OK
    assert rc == 0, out
    assert "1366x768 screenshot costs 1108 prompt tokens" in results["image tokens"].found
    # The recommended command, with its sources
    assert "vllm serve moonshotai/Kimi-VL-A3B-Instruct --served-model-name kimi-vl" in out
    assert "--limit-mm-per-prompt '{\"image\": 64}'" in out
    assert "https://github.com/MoonshotAI/Kimi-VL/issues/15" in out
    # The probes went to vLLM's endpoints: /tokenize in both forms, chat completions
    paths = [(p, "messages" in b) for p, b in server.requests]
    assert ("/tokenize", True) in paths and ("/tokenize", False) in paths
    assert ("/v1/chat/completions", True) in paths


@pytest.mark.parametrize(
    ("changes", "check", "status", "fix"),
    [
        ({"version": "0.8.4"}, "server version", Status.FAIL, "pip install 'vllm>=0.8.5'"),
        ({"root": "Qwen/Qwen2.5-VL-7B-Instruct"}, "served model", Status.FAIL, "--model-profile"),
        ({"max_model_len": 4096}, "context length", Status.FAIL, "--max-model-len 32768"),
        ({"tokenize": False}, "/tokenize", Status.WARN, "serve with vLLM"),
        (
            {"chat_template": CHAT_TEMPLATE.replace("<|im_end|>", "<|im_end|>{{ '\\n' }}")},
            "chat template",
            Status.FAIL,
            "chat_template.jinja",
        ),
        ({"double_resize": True}, "image tokens", Status.FAIL, "don't resize images before the server"),
        ({"image_limit": 1}, "images per prompt", Status.FAIL, "--limit-mm-per-prompt '{\"image\": 64}'"),
        ({"default_max_tokens": 16}, "reply length", Status.WARN, "--generation-config vllm"),
        ({"reply": UI_TARS_REPLY}, "reply grammar", Status.FAIL, "--model-profile"),
    ],
    ids=["old-vllm", "wrong-root", "small-context", "no-tokenize", "template-drift", "double-resize",
         "image-limit", "cut-at-16", "other-grammar"],
)  # fmt: skip
def test_each_misconfiguration_is_caught_with_its_fix(
    serve: Any, tiny_kimi: Path, changes: dict[str, Any], check: str, status: Status, fix: str
) -> None:
    results = by_name(serve(**changes), tiny_kimi)
    assert results[check].status is status, results[check]
    assert fix in results[check].fix
    others = [
        r for n, r in results.items() if n in SERVER_CHECKS and n != check and r.status is not Status.OK
    ]
    if check == "/tokenize":  # without /tokenize the template cannot be compared either
        assert [(r.name, r.status) for r in others] == [("chat template", Status.WARN)]
    else:
        assert others == []


def test_details_of_the_failures(serve: Any, tiny_kimi: Path) -> None:
    cut = by_name(serve(default_max_tokens=16), tiny_kimi)["reply length"]
    assert "cut (length) at 16 tokens" in cut.found
    drift = by_name(serve(double_resize=True), tiny_kimi)["image tokens"]
    # 1100 pads (1207x679) here, 1075 (1202x676) after a second resize, plus the same wrapper
    assert "costs 1083 prompt tokens on the server, 1108 here" in drift.found
    limit = by_name(serve(image_limit=1), tiny_kimi)["images per prompt"]
    assert "At most 1 image(s) may be provided in one request." in limit.found


def test_a_failure_exits_1_and_an_unreachable_server_is_one_fail(serve: Any, tiny_kimi: Path) -> None:
    console = Console(record=True, width=200)
    assert cmd_doctor(console, argv(serve(version="0.8.4"), tiny_kimi)) == 1
    assert "FAIL: fix the lines marked FAIL" in console.export_text()
    results, served = collect(build_parser().parse_args(["--base-url", "http://127.0.0.1:9/v1"]))
    assert served is None
    assert (results[0].name, results[0].status) == ("server reachable", Status.FAIL)
    assert "--base-url" in results[0].fix


def test_without_a_local_tokenizer_the_template_check_is_a_warning(serve: Any) -> None:
    server = serve(root="/nowhere/Kimi-VL-A3B-Instruct")
    results, _ = collect(build_parser().parse_args(["--base-url", server.url]))
    template = {r.name: r for r in results}["chat template"]
    assert template.status is Status.WARN
    assert "no local tokenizer" in template.found and "--tokenizer" in template.fix


def test_package_versions_against_the_declared_range_and_the_tested_pin() -> None:
    assert check_package("transformers", "5.25.0", ">=5.20,<5.26", "5.25.0").status is Status.OK
    assert check_package("torch", "2.13.0+cpu", ">=2.5", "2.13.0").status is Status.OK  # a local build tag
    newer = check_package("transformers", "5.21.0", ">=5.20,<5.26", "5.25.0")
    assert newer.status is Status.WARN and "pip install 'transformers==5.25.0'" in newer.fix
    outside = check_package("transformers", "5.26.1", ">=5.20,<5.26", "5.25.0")
    assert outside.status is Status.FAIL and outside.fix == "pip install 'transformers>=5.20,<5.26'"
    assert check_package("torch", None, ">=2.5", "2.13.0").status is Status.FAIL
    untested = check_package("torch", "2.11.0", ">=2.5", None)  # installed: no constraints.txt
    assert untested.status is Status.OK and untested.found == "torch 2.11.0 (within >=2.5)"


def test_the_checkpoint_check_reads_the_tiny_checkpoint(tiny_kimi: Path, tmp_path: Path) -> None:
    assert check_checkpoint(read_checkpoint(tiny_kimi), KIMI_VL).status is Status.OK
    broken = tmp_path / "broken"
    broken.mkdir()
    config = json.loads((tiny_kimi / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "model_type": "qwen2_5_vl"}))
    (broken / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}})
    )
    result = check_checkpoint(read_checkpoint(broken), KIMI_VL)
    assert result.status is Status.FAIL
    for problem in ("'qwen2_5_vl' is not Kimi-VL's", "no tiktoken.model", "model-00001-of-00002.safetensors"):
        assert problem in result.found
    assert check_checkpoint(read_checkpoint(tmp_path / "nowhere"), KIMI_VL).status is Status.FAIL


def test_gpu_memory_and_the_serve_command_for_it() -> None:
    small = [Gpu("RTX 4090", 24.0, 23.5)] * 2
    assert check_gpu([], KIMI_VL_FACTS, "no CUDA").status is Status.WARN
    assert check_gpu(small[:1], KIMI_VL_FACTS).status is Status.WARN  # 32.8 GB of weights
    assert check_gpu([Gpu("H100", 80.0, 79.0)], KIMI_VL_FACTS).status is Status.OK
    advice = recommend(KIMI_VL_FACTS, "kimi-vl", 32768, 3, small)
    assert "--tensor-parallel-size 2" in advice.command and "--max-num-seqs 8" in advice.command
    assert "--limit-mm-per-prompt '{\"image\": 64}'" in advice.command
    assert "--reasoning-parser" not in advice.command
    big = recommend(KIMI_VL_FACTS, "kimi-vl", 65536, 100, [Gpu("H100", 80.0, 79.0)])
    assert "--tensor-parallel-size 1" in big.command and "--max-num-seqs 512" in big.command
    assert "--max-model-len 65536" in big.command and '{"image": 100}' in big.command
    assert all(n.source for n in advice.notes[:3])


def test_the_checks_that_cannot_judge_say_so() -> None:
    # A server that is not vLLM (no /version), a profile without serving facts, an unreadable version
    assert check_version(None, KIMI_VL_FACTS).status is Status.WARN
    assert check_version("0.11.0", None).status is Status.WARN
    assert check_version("nightly", KIMI_VL_FACTS).status is Status.WARN
    assert check_version("0.8.5", KIMI_VL_FACTS).status is Status.OK
    # Room for the history but less than the budget asked for: the run lowers it (a warning)
    between = check_context(8192, 32768, 5412)
    assert between.status is Status.WARN and "lowers its budget" in between.found
    assert check_context(None, 32768, 5412).status is Status.WARN


K2_REPLY = "## Action:\nClick the button.\n## Code:\n```python\npyautogui.click(x=0.5, y=0.5)\n```"
OPENCUA_REPLY = "## Action:\nClick the button.\n## Code:\n```python\npyautogui.click(x=960, y=540)\n```"


@pytest.mark.parametrize(
    ("root", "served", "rule", "reply", "profile", "command", "sources"),
    [
        (
            "moonshotai/Kimi-K2.6",
            "kimi-k2.6",
            "agent.models.kimi_k2.vision",
            K2_REPLY,
            "profile kimi-k2",
            [
                "vllm serve moonshotai/Kimi-K2.6 --served-model-name kimi-k2.6 --trust-remote-code",
                "--tensor-parallel-size 8",
                "--reasoning-parser kimi_k2 --mm-encoder-tp-mode data --tool-call-parser kimi_k2",
            ],
            [
                "https://recipes.vllm.ai/moonshotai/Kimi-K2.6",
                "vLLM >= 0.19.1",
                "UNKNOWN: the GB of the weights",
            ],
        ),
        (
            "xlangai/OpenCUA-32B",
            "opencua-32b",
            "opencua",
            OPENCUA_REPLY,
            "profile opencua",
            [
                "vllm serve xlangai/OpenCUA-32B --served-model-name opencua-32b --trust-remote-code",
                "--tensor-parallel-size 4",
            ],
            ["https://github.com/xlang-ai/OpenCUA", "vLLM >= 0.12.0", "UNKNOWN: the GB of the weights"],
        ),
        (
            "moonshotai/Kimi-K2.5",
            "kimi-k2.5",
            "agent.models.kimi_k2.vision",
            K2_REPLY,
            "profile kimi-k2",
            ["vllm serve moonshotai/Kimi-K2.5 --served-model-name kimi-k2.5", "--reasoning-parser kimi_k2"],
            ["vLLM >= 0.15.0", "https://recipes.vllm.ai/moonshotai/Kimi-K2.5", "docs/deploy_guidance.md"],
        ),
        (
            "xlangai/OpenCUA-A3B",
            "opencua-a3b",
            "agent.models.kimi_vl.vision",
            K2_REPLY,
            "profile opencua-a3b",
            ["vllm serve xlangai/OpenCUA-A3B --served-model-name opencua-a3b --trust-remote-code"],
            ["vLLM >= 0.8.5", "UNKNOWN: an OpenCUA-A3B-specific serve command"],
        ),
        (
            "ByteDance-Seed/UI-TARS-1.5-7B",
            "ui-tars-1.5-7b",
            "ui-tars",
            UI_TARS_REPLY,
            "profile ui-tars-1.5",
            [
                "vllm serve ByteDance-Seed/UI-TARS-1.5-7B --served-model-name ui-tars-1.5-7b --tensor-parallel-size 1",
                """--limit-mm-per-prompt '{"image": 5}'""",
                "a prompt with 5 screenshots (the history's cap) is accepted",
            ],
            [
                "the first vLLM release serving this model: UNKNOWN",
                "README_deploy.md (inferred: Qwen2.5-VL support, vLLM >= 0.7.3)",
                "UNKNOWN: an official vLLM serve command for UI-TARS-1.5",
                "no --reasoning-parser",
            ],
        ),
    ],
    ids=["kimi-k2.6", "opencua-32b", "kimi-k2.5", "opencua-a3b", "ui-tars-1.5-7b"],
)
def test_other_profiles_get_their_facts_and_no_false_fail(
    serve: Any,
    root: str,
    served: str,
    rule: str,
    reply: str,
    profile: str,
    command: list[str],
    sources: list[str],
) -> None:
    from agent.models.kimi_k2.vision import image_tokens as k2_tokens
    from tasks.doctor_checks.serving_facts import OPENCUA_FACTS, UI_TARS_FACTS

    # The server's processor at the checkpoint's own limit (K2.x: in_patch_limit 16384; OpenCUA's max_pixels;
    # OpenCUA-A3B: Kimi-VL's MoonViT at 4096; UI-TARS-1.5: Qwen2.5-VL's at min_pixels 78400).
    rules = {
        "agent.models.kimi_k2.vision": (k2_tokens, 16384),
        "opencua": (OPENCUA_FACTS["32b"].image_tokens, 65536),
        "agent.models.kimi_vl.vision": (KIMI_VL_FACTS.image_tokens, 4096),
        "ui-tars": (UI_TARS_FACTS.image_tokens, 65536),
    }
    image_rule, limit = rules[rule]
    # The tiny tokenizer splits the word "image" into several tokens; the real K2.x one has it as one. The
    # server's image block is the family's: 4 tokens around the pads (K2.x), 2 (Qwen2.5-VL's vision markers).
    block = "<|media_start|>image<|media_content|><|media_pad|><|media_end|>"
    wrapped = "<|media_start|><|im_middle|><|media_content|><|media_pad|><|media_end|>"
    if rule in ("opencua", "ui-tars"):
        wrapped = "<|media_start|><|media_pad|><|media_end|>"
    server = serve(
        root=root,
        served=served,
        reply=reply,
        image_rule=image_rule,
        image_limit=5 if rule == "ui-tars" else 64,  # as the recommended command starts it
        version="0.19.1",
        in_token_limit=limit,
        chat_template=CHAT_TEMPLATE.replace(block, wrapped),
    )
    console = Console(record=True, width=300)
    args = ["--base-url", server.url, "--model", served]
    rc = cmd_doctor(console, args)
    out = console.export_text()
    results, _ = collect(build_parser().parse_args(args))
    found = {r.name: r for r in results}
    assert profile in found["served model"].found
    assert not [r for r in results if r.status is Status.FAIL], out
    assert rc == 0, out
    # Our renderer is Kimi-VL's: the template check says it cannot compare, rather than failing.
    assert found["chat template"].status is Status.WARN
    assert "cannot render" in found["chat template"].found
    assert "--tokenizer" not in found["chat template"].fix
    assert found["image tokens"].status is Status.OK, out
    for part in [*command, *sources]:
        assert part in out, part


def test_an_unknown_first_release_is_a_warning_that_says_so() -> None:
    from tasks.doctor_checks.serving_facts import UI_TARS_FACTS

    r = check_version("0.15.0", UI_TARS_FACTS)
    assert r.status is Status.WARN and "UNKNOWN" in r.found
