"""The `vllm serve` command recommended for a profile's model on the GPUs present, with sources."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from tasks.doctor_checks.facts import UNKNOWN, Cited, ServingFacts
from tasks.doctor_checks.local import Gpu

# --max-num-seqs: 512 is vLLM PR #16387's example (80 GB cards); on 24 GB cards vLLM's profiling of
# the vision encoder runs out of memory unless it is lowered (MoonshotAI/Kimi-VL#57). 8 and 32 are
# our choices: one agent needs one sequence at a time, a few parallel OSWorld workers a few.
SEQS_SOURCE = "https://github.com/MoonshotAI/Kimi-VL/issues/57"
SMALL_GPU_GB = 24.5
MID_GPU_GB = 48.5
HEADROOM = 1.3  # weights x this: room for the KV cache and the vision encoder's activations (our rule)


@dataclass(frozen=True)
class ServeAdvice:
    command: str
    notes: list[Cited]


def max_num_seqs(gpu_gb: float | None) -> int:
    if gpu_gb is not None and gpu_gb <= SMALL_GPU_GB:
        return 8
    if gpu_gb is not None and gpu_gb <= MID_GPU_GB:
        return 32
    return 512


def recommend(
    facts: ServingFacts, served_name: str, max_context: int, history_images: int, gpus: list[Gpu]
) -> ServeAdvice:
    per_gpu = min((g.total_gb for g in gpus), default=None)
    weights = float(facts.weights_gb.value) if facts.weights_gb else None
    tp = 1
    if facts.tensor_parallel is not None:  # the published command's GPUs
        tp = int(facts.tensor_parallel.value)
    elif per_gpu is not None and weights is not None:
        while tp * per_gpu < weights * HEADROOM and tp < 8:
            tp *= 2
    images = max(history_images, int(facts.image_limit.value))
    args = ["vllm", "serve", facts.hub_id, "--served-model-name", served_name]
    if facts.trust_remote_code:
        args.append("--trust-remote-code")
    args += ["--tensor-parallel-size", str(tp), "--max-model-len", str(max_context)]
    args += ["--max-num-batched-tokens", str(max_context), "--max-num-seqs", str(max_num_seqs(per_gpu))]
    args += ["--limit-mm-per-prompt", json.dumps({"image": images})]
    if facts.reasoning_parser is not None:
        args += ["--reasoning-parser", facts.reasoning_parser.value]
    if facts.extra_args is not None:
        args += shlex.split(facts.extra_args.value)
    notes = [
        Cited(f"vLLM >= {facts.min_vllm.value}", facts.min_vllm.source)
        if facts.min_vllm.value != UNKNOWN
        else Cited("the first vLLM release serving this model: UNKNOWN", facts.min_vllm.source),
        Cited(
            f"--limit-mm-per-prompt takes JSON; at least {history_images} images (--history-images)",
            facts.image_limit.source,
        ),
        Cited("--max-num-seqs: lower on small cards", SEQS_SOURCE),
    ]
    if facts.tensor_parallel is not None:
        notes.append(
            Cited(f"--tensor-parallel-size {tp}: the published command's", facts.tensor_parallel.source)
        )
    if facts.extra_args is not None:
        notes.append(Cited(f"{facts.extra_args.value}: the published command's", facts.extra_args.source))
    if facts.reasoning_parser is not None:
        notes.append(
            Cited(f"--reasoning-parser {facts.reasoning_parser.value}", facts.reasoning_parser.source)
        )
    else:
        notes.append(
            Cited(
                "no --reasoning-parser: vLLM has none for this model's thinking markers",
                "vllm-project/vllm vllm/reasoning/__init__.py @ 0064cc9cb1ae",
            )
        )
    if per_gpu is None and facts.tensor_parallel is None:
        notes.append(
            Cited("no GPU here: --tensor-parallel-size is for one GPU of 80 GB; set it for the server's", "")
        )
    elif per_gpu is not None and weights is not None and facts.weights_gb and tp > len(gpus):
        notes.append(
            Cited(
                f"the weights ({weights:g} GB) need {tp} GPUs of {per_gpu:.0f} GB; this machine has {len(gpus)}",
                facts.weights_gb.source,
            )
        )
    unknown = [Cited(f"UNKNOWN: {u.value}", u.source) for u in facts.unknowns]
    return ServeAdvice(shlex.join(args), [*notes, *facts.notes, *unknown])
