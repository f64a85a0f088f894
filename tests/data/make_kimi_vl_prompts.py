"""Writes tests/data/kimi_vl_prompts.json: the prompts the Kimi-VL policy renders for a fixed
multi-step history, per variant and prompt layout, as text and as the tiny tokenizer's ids.

Recorded once from the code before the model-profile refactor (issue 21); test_kimi_vl_profile.py
renders the same history through the profile and compares byte for byte, so the refactor is
proven to change nothing a model sees. Run from the repository root:

    .venv/bin/python tests/data/make_kimi_vl_prompts.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tiny_kimi, prompt_fixture
sys.path.insert(0, str(HERE.parents[1]))

from prompt_fixture import CASES, render_case  # noqa: E402
from tiny_kimi import write_tiny_kimi  # noqa: E402

OUT = HERE / "kimi_vl_prompts.json"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = write_tiny_kimi(Path(tmp) / "tiny")
        cases: dict[str, Any] = {f"{v}/{p}": render_case(root, v, p) for v, p in CASES}
    # One line per case: the ids are long, the diff of a change should still say which case moved.
    lines = [f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in cases.items()]
    OUT.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
