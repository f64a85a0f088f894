"""The Kimi-VL profile is today's behaviour exactly: a fixed multi-step history renders, per variant
and layout, to the very text and token ids recorded before the model-profile refactor
(tests/data/kimi_vl_prompts.json, made by tests/data/make_kimi_vl_prompts.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prompt_fixture import CASES, render_case

EXPECTED = Path(__file__).resolve().parent / "data" / "kimi_vl_prompts.json"


@pytest.fixture(scope="module")
def expected() -> dict[str, dict]:
    return json.loads(EXPECTED.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("variant", "layout"), CASES)
def test_prompts_match_the_recorded_ones(tiny_kimi: Path, expected: dict, variant: str, layout: str) -> None:
    got = render_case(tiny_kimi, variant, layout)  # type: ignore[arg-type]
    want = expected[f"{variant}/{layout}"]
    assert got["params"] == want["params"]
    assert got["prompt_record"] == want["prompt_record"]
    assert got["resolved"] == want["resolved"]
    assert len(got["steps"]) == len(want["steps"]) == 5
    for n, (g, w) in enumerate(zip(got["steps"], want["steps"], strict=True), 1):
        assert g["messages"] == w["messages"], f"step {n}: the prompt's text changed"
        assert g["ids"] == w["ids"], f"step {n}: the prompt's token ids changed"
        assert (g["tokens"], g["length"], g["cutoffs"]) == (w["tokens"], w["length"], w["cutoffs"])
    assert got["retry"] == want["retry"]
