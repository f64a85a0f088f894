"""The real LLaMA-Factory 0.9.5 venv and tests/llamafactory/read_back.py, end to end.

LLaMA-Factory itself converts, renders (template ``kimi_vl``) and tokenizes a one-sample ShareGPT
dataset and saves it through its own ``tokenized_path``; a second run loads that saved dataset (as a
training run on an export does) and read_back.py returns what the SFT collator yields for it. Real:
LLaMA-Factory's get_train_args, load_tokenizer, get_template_and_fix_tokenizer, KimiVLPlugin,
get_dataset, SFTDataCollatorWith4DAttentionMask. Standing in (the tiny checkpoint has no remote code):
the processor (Kimi-VL's documented patch-grid math) and the tokenizer (kimi-agent's rebuild with the
official ids); see read_back.py's docstring.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from agent.models.kimi_vl.tokenizer import load_tokenizer

HERE = Path(__file__).resolve().parent
READ_BACK = HERE / "llamafactory" / "read_back.py"
MEDIA_PAD = 163605
IM_SYSTEM = 163594  # the official id; transformers' generic tiktoken loading would put it on 163590

pytestmark = pytest.mark.slow


def write_export(root: Path) -> Path:
    """A folder laid out as an export: a ShareGPT dataset and a manifest whose ``llamafactory`` block
    names it and a tokenized_path that does not exist yet (so LLaMA-Factory writes it)."""
    data = root / "data"
    data.mkdir(parents=True)
    Image.new("RGB", (1920, 1080), (200, 30, 30)).save(data / "shot.png")
    sample = {
        "conversations": [
            {"from": "human", "value": "<image>What is on the screen?"},
            {"from": "gpt", "value": "A red screen."},
        ],
        "images": ["shot.png"],
    }
    (data / "tiny.json").write_text(json.dumps([sample]), encoding="utf-8")
    info = {
        "tiny": {
            "file_name": "tiny.json",
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "images": "images"},
        }
    }
    (data / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    block = {
        "template": "kimi_vl",
        "dataset": "tiny",
        "dataset_dir": "data",
        "tokenized_path": "tokenized",
        "image_max_pixels": 1920 * 1080,
        "cutoff_len": 4096,
    }
    (root / "manifest.json").write_text(json.dumps({"llamafactory": block}), encoding="utf-8")
    return root


def read_back(python: Path, export: Path, model: Path, out: Path) -> tuple[dict[str, Any], str]:
    done = subprocess.run(
        [str(python), str(READ_BACK), str(export), str(model), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text(encoding="utf-8")), done.stdout + done.stderr  # its log: either


def saved_rows(python: Path, tokenized: Path) -> list[dict[str, Any]]:
    """The rows LLaMA-Factory saved, read straight from the Arrow file with pyarrow (not through
    LLaMA-Factory or datasets)."""
    script = (
        "import json, sys, pyarrow as pa; "
        "t = pa.ipc.open_stream(sys.argv[1]).read_all(); "
        "print(json.dumps(t.select(['input_ids', 'labels']).to_pylist()))"
    )
    [arrow] = sorted((tokenized / "train").glob("*.arrow"))
    done = subprocess.run(
        [str(python), "-c", script, str(arrow)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_llamafactory_saves_and_reads_back_its_tokenized_dataset(
    llamafactory_python: Path, tiny_kimi: Path, tmp_path: Path
) -> None:
    export = write_export(tmp_path / "export")
    tokenized = export / "tokenized"

    first, first_log = read_back(llamafactory_python, export, tiny_kimi, tmp_path / "first.json")
    assert (tokenized / "dataset_dict.json").is_file(), "LLaMA-Factory did not save its tokenized dataset"
    assert "Tokenized dataset is saved" in first_log
    second, second_log = read_back(llamafactory_python, export, tiny_kimi, tmp_path / "second.json")
    assert "Loaded tokenized dataset from" in second_log

    assert second["llamafactory"] == "0.9.5"
    saved = saved_rows(llamafactory_python, tokenized)
    assert len(saved) == len(second["samples"]) == 1
    for row, sample in zip(saved, second["samples"], strict=True):
        assert sample["input_ids"] == row["input_ids"]
        assert sample["labels"] == row["labels"]
    assert second["samples"] == first["samples"]

    [sample] = second["samples"]
    assert sample["input_ids"][0] == IM_SYSTEM
    # A whole 1920x1080 image (image_max_pixels holds it), Kimi-VL's documented 48x86 grid for
    # in_token_limit 4096 (1196x672 after its own scaling), one <|media_pad|> per 2x2 merged patch.
    assert sample["images"] == [{"size": [1920, 1080], "grid_hw": [48, 86], "tokens": 1032}]
    assert sample["input_ids"].count(MEDIA_PAD) == sum(image["tokens"] for image in sample["images"])

    # The labels are the reply as LLaMA-Factory's kimi_vl template renders it: with the empty thought
    # it puts before every reply (why exports hand it pre-tokenized data instead).
    tokenizer = load_tokenizer(tiny_kimi)
    trained = [t for t in sample["labels"] if t != -100]
    assert tokenizer.decode(trained) == "◁think▷◁/think▷A red screen.<|im_end|>"
    start = sample["labels"].index(trained[0])
    assert sample["input_ids"][start:] == trained


def test_read_back_fails_in_one_line(llamafactory_python: Path, tiny_kimi: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(llamafactory_python), str(READ_BACK), str(tmp_path), str(tiny_kimi), str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"read_back: ReadBackError: {tmp_path} has no manifest.json"]
    assert not (tmp_path / "out.json").exists()


def test_training_docs_yaml_uses_only_llamafactory_settings(llamafactory_python: Path) -> None:
    """Every key of docs/training.md's YAML blocks is a field of LLaMA-Factory 0.9.5's own argument
    classes (what get_train_args parses), read from the installed package, and both blocks set the
    manifest's data settings."""
    page = (HERE.parent / "docs" / "training.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", page, flags=re.DOTALL)
    assert len(blocks) == 2, "expected the LoRA and the full fine-tuning YAML"
    script = (
        "import dataclasses, json, sys, yaml; "
        "from llamafactory import hparams as h; "
        "known = {f.name for c in (h.ModelArguments, h.DataArguments, h.TrainingArguments, "
        "h.FinetuningArguments, h.GeneratingArguments) for f in dataclasses.fields(c)}; "
        "blocks = [yaml.safe_load(b) for b in json.load(sys.stdin)]; "
        "print(json.dumps([{'keys': sorted(b), 'unknown': sorted(set(b) - known)} for b in blocks]))"
    )
    done = subprocess.run(
        [str(llamafactory_python), "-c", script],
        input=json.dumps(blocks),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    manifest_keys = {"dataset", "dataset_dir", "tokenized_path", "template", "image_max_pixels", "cutoff_len"}
    for block in json.loads(done.stdout):
        assert block["unknown"] == []
        assert manifest_keys <= set(block["keys"])
