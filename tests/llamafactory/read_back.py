"""Reads an export back with the real LLaMA-Factory (0.9.5), as its SFT training would see it.

Run with the LLaMA-Factory venv's python (``.cache/llamafactory/bin/python``, built by .ci/setup
from tests/llamafactory/requirements.txt), never with kimi-agent's own:

    python tests/llamafactory/read_back.py EXPORT_DIR MODEL_DIR OUT_JSON

- EXPORT_DIR holds ``manifest.json`` whose ``llamafactory`` block is a set of LLaMA-Factory settings
  (template, dataset, dataset_dir, tokenized_path, image_max_pixels, cutoff_len, ...). The block is
  given to LLaMA-Factory unchanged, from EXPORT_DIR as the working directory (so relative paths in
  it mean what they mean to a user who trains from the export folder). Only what any training needs
  is added where the block does not set it: model_name_or_path (MODEL_DIR), stage sft, do_train,
  finetuning_type lora, output_dir (a temporary folder), trust_remote_code.
- MODEL_DIR is a Kimi-VL checkpoint (the tests' tiny one, or a real one).
- OUT_JSON receives::

      {"llamafactory": "0.9.5",
       "samples": [{"input_ids": [int, ...], "labels": [int, ...],
                    "images": [{"size": [width, height], "grid_hw": [h, w], "tokens": int}, ...]}, ...]}

  one entry per sample of the train split, in order. ``input_ids`` / ``labels`` are what the SFT
  collator returns for that sample alone, with the padding (where attention_mask is 0) dropped;
  labels hold -100 where LLaMA-Factory does not train. ``size`` is each image after
  LLaMA-Factory's own regularization (``_regularize_images`` with the image_max_pixels /
  image_min_pixels it was given), ``grid_hw`` the patch grid the processor gave it, ``tokens`` the
  ``<|media_pad|>`` count that grid stands for (grid_h * grid_w / 4, one per 2x2 merged patches).

Exit 0 on success; otherwise a single line on stderr and exit 1.

What runs for real (LLaMA-Factory's own code, in the order its SFT workflow runs it,
train/sft/workflow.py): ``hparams.get_train_args`` on the settings; ``model.load_tokenizer`` (which
also tries ``AutoProcessor``); ``data.get_template_and_fix_tokenizer`` (template ``kimi_vl`` and its
``KimiVLPlugin``); ``data.get_dataset(stage="sft")`` (with ``tokenized_path`` set and filled it loads
that dataset with ``load_from_disk``; otherwise it converts, renders and tokenizes the dataset itself
and saves it there); ``data.SFTDataCollatorWith4DAttentionMask`` built with the workflow's arguments,
called on each sample, which runs ``KimiVLPlugin.get_mm_inputs`` and so ``_regularize_images`` on the
sample's images.

What stands in, and only where the checkpoint lacks it:
- the processor: the tiny checkpoint has no ``processing_kimi_vl.py``, so ``load_tokenizer`` finds
  none. ``KimiVLGridProcessor`` below takes its place in the tokenizer module (where load_tokenizer
  puts the real one), set up by LLaMA-Factory's own ``patch_processor``. Its image processor computes
  Kimi-VL's patch grid from the documented math (shared docs, kimi-vl.md: scale down to at most
  ``in_token_limit`` patches, pad to the merge kernel, grid = padded size / patch), with the patch
  size, merge kernel and ``in_token_limit`` of the checkpoint's preprocessor_config.json (14, 2x2,
  4096 or 16384). It returns ``image_grid_hws`` only, no ``pixel_values`` (no vision tower runs here).
- the tokenizer: without ``tokenization_moonshot.py`` (no ``auto_map`` in tokenizer_config.json),
  transformers' generic tiktoken loading gives the special tokens wrong ids (``<|im_end|>`` lands on
  163584, the id of ``[BOS]``) and the wrong pre-tokenizer. kimi-agent's own rebuild of Kimi's
  tokenizer (agent/models/kimi_vl/tokenizer.py, which reproduces the official ids) takes its place, passed through
  LLaMA-Factory's ``patch_tokenizer`` as load_tokenizer does.
- the model: no weights are loaded. The workflow hands the loaded model to the collator only for
  Qwen-style M-RoPE position ids and model-type checks, none of which apply to Kimi-VL; the
  collator gets ``model=None`` and no attention implementation.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


class ReadBackError(RuntimeError):
    """Why the export cannot be read back; one line."""


@dataclass
class KimiVLGridImageProcessor:
    """Kimi-VL's image processor, reduced to the patch grid (shared docs, kimi-vl.md, "Image
    preprocessing"): scale down (never up) to at most ``in_token_limit`` patches of 14 px, pad to
    multiples of 28, grid = padded size / 14. Records each image it is handed, i.e. LLaMA-Factory's
    regularized images."""

    in_token_limit: int
    patch_size: int = 14
    merge_kernel_size: tuple[int, int] = (2, 2)
    seen: list[tuple[int, int]] = field(default_factory=list)

    def grid(self, width: int, height: int) -> tuple[int, int]:
        p = self.patch_size
        patches = (width // p) * (height // p)
        if patches > self.in_token_limit:
            scale = math.sqrt(self.in_token_limit / patches)
            width, height = int(width * scale), int(height * scale)
        kh, kw = self.merge_kernel_size
        return math.ceil(height / (p * kh)) * kh, math.ceil(width / (p * kw)) * kw

    def __call__(self, images: list[Any], return_tensors: str = "pt", **_: Any) -> dict[str, Any]:
        import torch

        grids = []
        for image in images:
            self.seen.append((image.width, image.height))
            grids.append(self.grid(image.width, image.height))
        return {"image_grid_hws": torch.tensor(grids, dtype=torch.long).reshape(-1, 2)}


class KimiVLGridProcessor:
    """Stands in for Kimi-VL's processor (the name must contain "Processor": load_tokenizer drops
    anything else). LLaMA-Factory's patch_processor sets its tokenizer and image_max_pixels etc."""

    def __init__(self, image_processor: KimiVLGridImageProcessor) -> None:
        self.image_processor = image_processor


def train_settings(block: dict[str, Any], model_dir: Path, output_dir: Path) -> dict[str, Any]:
    """The block unchanged, plus what any SFT run needs where the block does not say it."""
    needed = {
        "model_name_or_path": str(model_dir),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "output_dir": str(output_dir),
        "trust_remote_code": True,
    }
    return {**needed, **block}


def has_tokenizer_code(model_dir: Path) -> bool:
    config = model_dir / "tokenizer_config.json"
    if not config.is_file():
        return False
    return "AutoTokenizer" in json.loads(config.read_text(encoding="utf-8")).get("auto_map", {})


def kimi_tokenizer(model_dir: Path) -> Any:
    """kimi-agent's rebuild of Kimi's tokenizer, loaded from its file (kimi-agent's package and its
    dependencies are not in this venv; that module needs only transformers and tokenizers)."""
    source = REPO / "agent" / "models" / "kimi_vl" / "tokenizer.py"
    spec = importlib.util.spec_from_file_location("kimi_tokenizer", source)
    if spec is None or spec.loader is None:
        raise ReadBackError(f"cannot load {source}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_tokenizer(model_dir)


def grid_image_processor(model_dir: Path) -> KimiVLGridImageProcessor:
    """The stand-in set up from the checkpoint's preprocessor_config.json, as Kimi-VL's own is."""
    config_file = model_dir / "preprocessor_config.json"
    if not config_file.is_file():
        raise ReadBackError(f"{model_dir} has no preprocessor_config.json")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if "in_token_limit" not in config:
        raise ReadBackError(f"{config_file} has no in_token_limit")
    kh, kw = config.get("merge_kernel_size", [2, 2])
    return KimiVLGridImageProcessor(
        in_token_limit=int(config["in_token_limit"]),
        patch_size=int(config.get("patch_size", 14)),
        merge_kernel_size=(int(kh), int(kw)),
    )


def read_back(export_dir: Path, model_dir: Path) -> dict[str, Any]:
    from llamafactory.data import (
        SFTDataCollatorWith4DAttentionMask,
        get_dataset,
        get_template_and_fix_tokenizer,
    )
    from llamafactory.extras.constants import IGNORE_INDEX
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer
    from llamafactory.model.patcher import patch_processor, patch_tokenizer

    manifest_file = export_dir / "manifest.json"
    if not manifest_file.is_file():
        raise ReadBackError(f"{export_dir} has no manifest.json")
    block = json.loads(manifest_file.read_text(encoding="utf-8")).get("llamafactory")
    if not isinstance(block, dict):
        raise ReadBackError(f"{manifest_file} has no llamafactory block")

    with tempfile.TemporaryDirectory(prefix="lf-read-back-") as output_dir:
        os.chdir(export_dir)
        model_args, data_args, training_args, _, _ = get_train_args(
            train_settings(block, model_dir, Path(output_dir))
        )
        tokenizer_module = load_tokenizer(model_args)
        if not has_tokenizer_code(model_dir):
            tokenizer_module["tokenizer"] = kimi_tokenizer(model_dir)
            tokenizer_module["tokenizer"].padding_side = "right"  # as load_tokenizer asks
            patch_tokenizer(tokenizer_module["tokenizer"], model_args)
        tokenizer = tokenizer_module["tokenizer"]
        image_processor: KimiVLGridImageProcessor | None = None
        if tokenizer_module["processor"] is None:
            image_processor = grid_image_processor(model_dir)
            processor = KimiVLGridProcessor(image_processor)
            patch_processor(processor, tokenizer, model_args)  # type: ignore[arg-type]
            tokenizer_module["processor"] = processor  # type: ignore[typeddict-item]

        template = get_template_and_fix_tokenizer(tokenizer, data_args)
        dataset_module = get_dataset(
            template, model_args, data_args, training_args, stage="sft", **tokenizer_module
        )
        if "train_dataset" not in dataset_module:
            raise ReadBackError(
                f"LLaMA-Factory found no train split in {data_args.tokenized_path or data_args.dataset}"
            )
        # As train/sft/workflow.py builds it, less the model (see the docstring).
        collator = SFTDataCollatorWith4DAttentionMask(
            template=template,
            model=None,
            pad_to_multiple_of=8 if training_args.do_train else None,
            label_pad_token_id=IGNORE_INDEX
            if data_args.ignore_pad_token_for_loss
            else tokenizer.pad_token_id,
            block_diag_attn=model_args.block_diag_attn,
            neat_packing=data_args.neat_packing,
            attn_implementation=None,
            compute_dtype=model_args.compute_dtype,
            **tokenizer_module,
        )
        samples = []
        for sample in dataset_module["train_dataset"]:
            seen_before = len(image_processor.seen) if image_processor else 0
            batch = collator([dict(sample)])
            keep = batch["attention_mask"][0] != 0
            grids = batch.get("image_grid_hws")
            # A sample without images gets a dummy one from the collator: not the sample's, not kept.
            own = len(sample.get("images") or [])
            sizes = image_processor.seen[seen_before : seen_before + own] if image_processor else []
            images = []
            for i, (w, h) in enumerate(sizes):
                gh, gw = (int(x) for x in grids[i]) if grids is not None else (0, 0)
                merged = math.prod(image_processor.merge_kernel_size) if image_processor else 4
                images.append({"size": [w, h], "grid_hw": [gh, gw], "tokens": gh * gw // merged})
            samples.append(
                {
                    "input_ids": batch["input_ids"][0][keep].tolist(),
                    "labels": batch["labels"][0][keep].tolist(),
                    "images": images,
                }
            )
    return {"llamafactory": version("llamafactory"), "samples": samples}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: read_back.py EXPORT_DIR MODEL_DIR OUT_JSON", file=sys.stderr)
        return 2
    export_dir, model_dir, out = (Path(a).resolve() for a in argv)
    try:
        result = read_back(export_dir, model_dir)
    except Exception as e:  # one clear line, whatever LLaMA-Factory raised
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"read_back: {type(e).__name__}: {message}", file=sys.stderr)
        return 1
    out.write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
