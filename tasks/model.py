"""The CLI's model flags -> a ready model policy, checked before any desktop starts.

The model profile (``--model-profile``, else recognised: agent/models/registry.py) and its variant
(and so the prompt, the sampling defaults and the image patch limit) are taken from what is actually
loaded: the checkpoint the server reports (GET /v1/models ``root``) or the checkpoint directory, its
config.json and preprocessor_config.json; the served name is only a last hint.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.backends.base import Backend
from agent.model_policy import ModelPolicy
from agent.models.profile import ResolvedSettings
from agent.models.registry import AUTO, ChosenProfile, choose_profile

if TYPE_CHECKING:
    from agent.backends.openai import OpenAIBackend, ServerInfo
    from agent.backends.transformers import TransformersBackend

Notice = Callable[[str], None]
Confirm = Callable[[str], bool]


@dataclass(frozen=True)
class LoadedModel:
    """A local model loaded elsewhere (a Ray model actor, tasks/osworld/ray_model.py), as a policy
    needs it: the backend that reaches it, what it resolved, its tokenizer's text counter."""

    backend: Backend
    resolved: ResolvedSettings
    count_text_tokens: Callable[[str], int]
    label: str
    where: dict[str, Any]  # run.json's "model" entries: checkpoint, device, ...


@dataclass
class ModelSetup:
    policy: ModelPolicy
    label: str  # for the run header and run.json's "policy"
    settings: dict[str, Any]  # run.json's "model": what the run used and where it came from


def build_policy(
    args: argparse.Namespace, notice: Notice, confirm: Confirm | None, loaded: LoadedModel | None = None
) -> ModelSetup:
    """``loaded``: for ``--backend transformers``, a model already loaded elsewhere, used instead of
    loading one here."""
    from agent.history import PROFILES as PROMPT_LAYOUTS
    from agent.history import load_templates

    # A bad --prompt-dir is reported before minutes of loading weights, not after.
    load_templates(args.prompt_profile or PROMPT_LAYOUTS[0], args.prompt_dir)
    max_context = args.max_context  # None: the chosen profile's (known once the model is)
    if args.backend == "openai":
        from agent.backends.openai import OpenAIBackend

        backend: Backend
        ob = OpenAIBackend(
            args.base_url,
            args.model,
            api_key=args.api_key,
            timeout_s=args.timeout,
            max_retries=args.retries,
            on_retry=notice,
            # `kimi-agent rollout` asks for the sampled ids (vLLM's return_token_ids)
            return_token_ids=getattr(args, "return_token_ids", False),
        )
        info, chosen, resolved = probe_served(args, ob)
        max_context = max_context or chosen.profile.max_context
        if info.max_model_len and max_context > info.max_model_len:
            notice(f"the server takes at most {info.max_model_len} tokens: --max-context lowered to that")
            max_context = info.max_model_len
        # The history's token counts: exact where the server tokenizes for us, else UTF-8 bytes.
        counter = ob.text_counter(notice)
        backend = ob
        label = f"{args.model} via {args.base_url}"
        where: dict[str, Any] = {
            "base_url": args.base_url,
            "checkpoint": info.root,
            "token_counts": "server /tokenize" if counter else "UTF-8 upper bound",
        }
    elif loaded is not None:
        backend, counter, resolved = loaded.backend, loaded.count_text_tokens, loaded.resolved
        label, where = loaded.label, loaded.where
        checkpoint = where.get("checkpoint")
        chosen = checkpoint_profile(args, Path(checkpoint)) if checkpoint else server_profile(args, None)
    else:
        tb, resolved, path = load_local(args, notice, confirm)
        chosen = checkpoint_profile(args, path)
        backend, counter = tb, tb.count_text_tokens
        label = f"{args.model} (transformers, {tb.device})"
        where = {"checkpoint": str(path), "device": tb.device, "kv_reuse": tb.kv_reuse}
    max_context = max_context or chosen.profile.max_context
    max_new_tokens = args.max_new_tokens
    if max_new_tokens is None and resolved.variant.max_new_tokens > max_context // 2:
        # A variant's output budget made for a long context (K2.6: 32768 of 262144) would leave a
        # smaller server's context no room for the prompt: a quarter of it instead, said aloud.
        max_new_tokens = max_context // 4
        notice(f"--max-new-tokens lowered to {max_new_tokens}, a quarter of the {max_context}-token context")
    policy = ModelPolicy(
        backend,
        resolved.variant,
        profile=chosen.profile,
        count_text_tokens=counter,
        history_images=args.history_images,
        max_context=max_context,
        temperature=args.temperature,
        max_new_tokens=max_new_tokens,
        # No --prompt-profile: the model profile's own first layout (Kimi-VL: append, as always).
        prompt_profile=args.prompt_profile or chosen.profile.layouts[0],
        prompt_dir=args.prompt_dir,
    )
    _check_budget(args, policy)
    return ModelSetup(policy, label, _settings(args, chosen, resolved, policy, max_context, where))


def load_local(
    args: argparse.Namespace, notice: Notice, confirm: Confirm | None, device: str | None = None
) -> tuple[TransformersBackend, ResolvedSettings, Path]:
    """The checkpoint ``--model`` names (fetched on first use unless ``--offline``), its variant
    (``--variant`` / ``--in-token-limit`` override) and the backend loaded with it (on ``device``;
    None: CUDA when there is one)."""
    from agent.backends.transformers import TransformersBackend
    from agent.backends.weights import resolve_checkpoint

    named = choose_profile(_profile_flag(args), served_root=args.model).profile
    if named.coordinates == "pixels_resized":  # OpenCUA-7B/32B/72B: Qwen2.5-VL weights, not Kimi-VL's
        raise ValueError(
            f"{named.title} runs through --backend openai (vllm serve {args.model} --trust-remote-code, "
            "vLLM >= 0.12.0); the transformers backend loads Kimi-VL checkpoints"
        )
    path = resolve_checkpoint(args.model, offline=args.offline, confirm=confirm, notice=notice)
    chosen = checkpoint_profile(args, path)
    resolved = chosen.profile.resolve_variant(
        override=variant_flag(args, chosen),
        names=[("the checkpoint", str(path)), ("--model", args.model)],
        in_token_limit=checkpoint_limit(path),
        in_token_limit_source="the checkpoint's preprocessor_config.json",
        in_token_limit_override=args.in_token_limit,
    )
    backend = TransformersBackend.load(
        path, device=device, in_token_limit=resolved.variant.in_token_limit, kv_reuse=not args.no_kv_reuse
    )
    return backend, resolved, path


def _check_budget(args: argparse.Namespace, policy: ModelPolicy) -> None:
    """The first prompt (system, task, one screenshot) must fit the context budget: found out now,
    not after the desktop started. Only the sandbox's size is known before it starts."""
    if args.desktop != "sandbox":
        return
    from PIL import Image

    from agent.history import ContextBuilder

    try:
        ContextBuilder(policy.context.cfg).build(args.task, [], Image.new("RGB", args.size), 1)
    except ValueError as e:
        raise ValueError(f"--max-context is too small for this task: {e}") from None


def probe_served(
    args: argparse.Namespace, backend: OpenAIBackend
) -> tuple[ServerInfo, ChosenProfile, ResolvedSettings]:
    """Ask the server what it serves (one line naming the server and the cause when it is not
    usable), choose the profile and variant from its checkpoint and the flags, and set the backend's
    image limit to the variant's."""
    info = backend.probe()
    chosen = server_profile(args, info.root)
    resolved = chosen.profile.resolve_variant(
        override=variant_flag(args, chosen),
        names=[("the server's checkpoint", info.root or ""), ("the served model", args.model)],
        in_token_limit_override=args.in_token_limit,
    )
    backend.in_token_limit = resolved.variant.in_token_limit
    return info, chosen, resolved


def variant_flag(args: argparse.Namespace, chosen: ChosenProfile) -> str | None:
    """``--variant``, when it names one of the chosen family's checkpoints (the flag lists every
    family's): else one line saying which the family has."""
    name = getattr(args, "variant", None)
    if name is not None and name not in chosen.profile.variants:
        raise ValueError(
            f"--variant {name}: the {chosen.profile.title} checkpoints are {', '.join(chosen.profile.variants)}"
        )
    return name


def _profile_flag(args: argparse.Namespace) -> str:
    # A Namespace made by hand (a test, a caller of load_local) may predate the flag: auto, as the CLI.
    return getattr(args, "model_profile", AUTO)


def server_profile(args: argparse.Namespace, root: str | None) -> ChosenProfile:
    """The profile for a served model: ``--model-profile``, else recognised from the checkpoint the
    server reports (its ``root``), else from the served name."""
    return choose_profile(_profile_flag(args), served_root=root or args.model)


def checkpoint_profile(args: argparse.Namespace, path: Path) -> ChosenProfile:
    """The profile for a local checkpoint: ``--model-profile``, else recognised from its config.json
    or its name."""
    return choose_profile(
        _profile_flag(args), served_root=str(path), checkpoint_config=checkpoint_config(path)
    )


def checkpoint_config(path: Path) -> dict[str, Any] | None:
    """The checkpoint's config.json, or None where it has none that reads as a JSON object (loading
    the weights says what is wrong with it)."""
    f = path / "config.json"
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def checkpoint_limit(path: Path) -> int | None:
    """``in_token_limit`` from the checkpoint's preprocessor_config.json (the key the official
    KimiVLImageProcessor takes), or None when it does not say."""
    f = path / "preprocessor_config.json"
    if not f.is_file():
        return None
    value = json.loads(f.read_text(encoding="utf-8")).get("in_token_limit")
    return None if value is None else int(value)


def _settings(
    args: argparse.Namespace,
    chosen: ChosenProfile,
    resolved: ResolvedSettings,
    policy: ModelPolicy,
    max_context: int,
    where: dict,
) -> dict[str, Any]:
    return {
        "backend": args.backend,
        "model": args.model,
        **where,
        **chosen.record(),
        **resolved.record(),
        "temperature": policy.params.temperature,
        "max_new_tokens": policy.params.max_new_tokens,
        "max_context": max_context,
        "history_images": policy.context.cfg.max_images,  # the profile's unless --history-images
        "prompt_profile": policy.context.cfg.profile,
        "prompt_dir": str(args.prompt_dir) if args.prompt_dir else None,
        "parse_retries": policy.parse_retries,
        # Only where the profile resamples its retries (UI-TARS-1.5: 1): other runs' records stay as they were.
        **({"retry_temperature": t} if (t := chosen.profile.retry_temperature) is not None else {}),
        **({"timeout_s": args.timeout, "retries": args.retries} if args.backend == "openai" else {}),
    }
