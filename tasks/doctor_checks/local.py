"""The checks of this machine: the tested packages, the GPU, a local checkpoint. Pure functions of
what probe.py gathered."""

from __future__ import annotations

from dataclasses import dataclass, field

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from agent.models.profile import ModelProfile
from tasks.doctor_checks.facts import ServingFacts
from tasks.doctor_checks.result import CheckResult


@dataclass(frozen=True)
class Gpu:
    name: str
    total_gb: float
    free_gb: float


@dataclass(frozen=True)
class CheckpointInfo:
    path: str
    config: dict | None  # config.json, None when missing or unreadable
    has_tokenizer: bool  # tiktoken.model
    shards_missing: list[str] = field(default_factory=list)  # named by the index, absent
    has_weights: bool = False  # at least one *.safetensors
    in_token_limit: int | None = None  # preprocessor_config.json's


def check_package(name: str, installed: str | None, declared: str | None, tested: str | None) -> CheckResult:
    """``declared``: kimi-agent's range (pyproject.toml); ``tested``: the pin CI ran (constraints.txt)."""
    check = f"{name} version"
    if installed is None:
        return CheckResult.fail(check, f"{name} is not installed", f"pip install '{name}{declared or ''}'")
    try:
        v = Version(installed)
        inside = declared is None or SpecifierSet(declared).contains(v, prereleases=True)
    except InvalidVersion:
        return CheckResult.warn(check, f"unreadable version {installed!r}", f"pip install '{name}=={tested}'")
    if not inside:
        return CheckResult.fail(
            check,
            f"{name} {installed}, outside kimi-agent's range {declared}",
            f"pip install '{name}{declared}'",
        )
    # A local build tag (2.13.0+cpu) is the same release as the pin.
    if tested is not None and Version(Version(installed).public) != Version(tested):
        return CheckResult.warn(
            check,
            f"{name} {installed}: within {declared or 'the range'}, but CI tested {tested}",
            f"pip install '{name}=={tested}' for the tested set (constraints.txt)",
        )
    if tested is None:  # an installed kimi-agent has no constraints.txt: only the range is known
        return CheckResult.ok(check, f"{name} {installed} (within {declared or 'any range'})")
    return CheckResult.ok(check, f"{name} {installed} (tested)")


def check_gpu(gpus: list[Gpu], facts: ServingFacts | None, why: str = "") -> CheckResult:
    """The local (transformers) backend's needs: the weights in GPU memory, plus room for
    activations. A vLLM server elsewhere needs none of this here."""
    name = "GPU"
    if not gpus:
        return CheckResult.warn(
            name,
            f"no CUDA GPU here{f' ({why})' if why else ''}",
            "use --backend openai with a vLLM server on a GPU machine (the local backend would be CPU-only)",
        )
    free = sum(g.free_gb for g in gpus)
    found = ", ".join(f"{g.name} {g.free_gb:.1f}/{g.total_gb:.1f} GB free" for g in gpus)
    if facts is None or facts.weights_gb is None:  # no facts, or the weights' size is UNKNOWN
        return CheckResult.ok(name, found)
    need = float(facts.weights_gb.value)
    if free < need:
        return CheckResult.warn(
            name,
            f"{found}; the weights alone take {need:g} GB ({facts.weights_gb.source})",
            "serve with vLLM on more GPU memory (--tensor-parallel-size) and use --backend openai",
        )
    return CheckResult.ok(name, f"{found}; the weights take {need:g} GB")


def check_checkpoint(info: CheckpointInfo, profile: ModelProfile) -> CheckResult:
    name = "checkpoint"
    if info.config is None:
        return CheckResult.fail(name, f"{info.path}: no readable config.json", "pass a checkpoint directory")
    problems = []
    if not profile.matches("", info.config):
        problems.append(
            f"config.json's model_type {info.config.get('model_type')!r} is not {profile.title}'s"
        )
    if not info.has_tokenizer:
        problems.append("no tiktoken.model")
    if not info.has_weights:
        problems.append("no *.safetensors")
    if info.shards_missing:
        problems.append(f"shards named by the index are missing: {', '.join(info.shards_missing[:3])}")
    if problems:
        return CheckResult.fail(
            name,
            f"{info.path}: {'; '.join(problems)}",
            "download it again: hf download HUB_ID --local-dir DIR",
        )
    limit = f", in_token_limit {info.in_token_limit}" if info.in_token_limit else ""
    return CheckResult.ok(name, f"{info.path}: config, tokenizer and weights present{limit}")
