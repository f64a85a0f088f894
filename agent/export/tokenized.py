"""The export's samples as token ids: a dataset LLaMA-Factory loads as it is (its ``tokenized_path``).

Its kimi_vl template cannot render our samples as they were sent: it is a reasoning template, so an
Instruct reply gets an empty ``◁think▷◁/think▷`` (labelled, or moved into the prompt), and its
``cutoff_len`` counts differently and cuts silently. Loaded from ``tokenized_path``, LLaMA-Factory
uses the ids and labels here unchanged: no template, no cut. Its collator reads each sample's
``images`` (paths) and turns them into pixel values with the checkpoint's processor.

The layout is what the ``datasets`` library's ``load_from_disk`` reads (which LLaMA-Factory calls):
one Arrow IPC stream file, ``state.json`` naming it, ``dataset_info.json``. The column types are left
for the reader to infer from the Arrow schema, so every ``datasets`` release LLaMA-Factory allows
(2.16 to 4.0) reads them alike.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

IGNORE = -100  # the label of a position that is not learned (LLaMA-Factory's IGNORE_INDEX, torch's default)
DATA_FILE = "data-00000-of-00001.arrow"


@dataclass(frozen=True)
class TokenizedSample:
    input_ids: list[int]
    labels: list[int]  # IGNORE where the prompt is, the id where the reply is
    images: list[str]  # the files of the prompt's images, in the order their tokens appear

    @classmethod
    def of(cls, prompt_ids: Sequence[int], reply_ids: Sequence[int], images: list[str]) -> TokenizedSample:
        """The prompt (ending with the assistant's opening) followed by the reply, which alone is learned."""
        return cls([*prompt_ids, *reply_ids], [IGNORE] * len(prompt_ids) + list(reply_ids), images)


def write(out: Path, samples: Iterable[TokenizedSample]) -> int:
    """Write ``samples`` to the directory ``out`` (created); returns how many were written."""
    import pyarrow as pa  # only an export needs it

    rows = list(samples)
    table = pa.table(
        {
            "input_ids": pa.array([s.input_ids for s in rows], pa.list_(pa.int64())),
            "attention_mask": pa.array([[1] * len(s.input_ids) for s in rows], pa.list_(pa.int64())),
            "labels": pa.array([s.labels for s in rows], pa.list_(pa.int64())),
            "images": pa.array([s.images for s in rows], pa.list_(pa.string())),
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with pa.OSFile(str(out / DATA_FILE), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=1000):
            writer.write_batch(batch)
    with (out / DATA_FILE).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    state = {
        "_data_files": [{"filename": DATA_FILE}],
        "_fingerprint": digest.hexdigest()[:16],
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    info = {"description": "kimi-agent export: token ids as the agent sent them, labels on its replies"}
    for name, data in (("state.json", state), ("dataset_info.json", info)):
        tmp = out / f".{name}.tmp"
        tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
        os.replace(tmp, out / name)
    return len(rows)
