"""Every check of a served model, in order: probe, then judge (server.py). Later probes need what
earlier ones found (the served root names the profile, the profile its facts and its renderer)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.backends.openai import to_openai
from agent.history import ContextBuilder, HistoryConfig
from agent.messages import Message
from agent.models.profile import ModelProfile
from agent.models.registry import choose_profile
from tasks.doctor_checks import server
from tasks.doctor_checks.facts import Render, ServingFacts, facts_for
from tasks.doctor_checks.probe import (
    PROBE_SIZE,
    Http,
    choice,
    image_message,
    probe_conversation,
    probe_screenshot,
    prompt_tokens,
)
from tasks.doctor_checks.result import CheckResult

MARGIN = 256  # HistoryConfig's default margin
TEXT_ROOM = 1024  # system prompt, task and the steps' text, roughly (a full-history estimate)
PROBE_TASK = "Click the blue button in the middle of the screen."
LONG_REPLY = "Count from 1 to 40 in words, separated by commas, then say done."


@dataclass
class ServedModel:
    """What the later parts of the doctor need from the server checks."""

    profile: ModelProfile
    facts: ServingFacts | None
    served_name: str


def check_server(
    args: argparse.Namespace, find_tokenizer: Callable[[str], Path | None]
) -> tuple[list[CheckResult], ServedModel | None]:
    """``find_tokenizer``: a local tokenizer directory for a checkpoint name, or None."""
    http = Http(args.base_url, args.api_key, args.timeout)
    models = http.call("GET", f"{http.base_url}/models")
    cards = models.data.get("data") if models.status == 200 and isinstance(models.data, dict) else None
    if not isinstance(cards, list):
        error = models.message() if models.status is None else f"GET /models: {models.message()}"
        return [server.check_reachable(args.base_url, error, [])], None
    served = [str(c.get("id")) for c in cards if isinstance(c, dict)]
    results = [server.check_reachable(args.base_url, None, served)]
    model = args.model or (served[0] if served else "")
    card = next((c for c in cards if isinstance(c, dict) and c.get("id") == model), {})
    root = card.get("root")
    chosen = choose_profile(args.model_profile, served_root=root or model)
    profile, facts = chosen.profile, facts_for(chosen.profile.name, root or model)
    version = http.call("GET", f"{http.root}/version")
    results.append(
        server.check_version(
            version.data.get("version") if version.status == 200 and isinstance(version.data, dict) else None,
            facts,
        )
    )
    results.append(server.check_served_model(model, served, root, profile, chosen.source))
    if model not in served:
        return results, ServedModel(profile, facts, model)
    resolved = profile.resolve_variant(
        override=args.variant,
        names=[("the server's checkpoint", root or ""), ("the served model", model)],
        in_token_limit_override=args.in_token_limit,
    )
    variant = resolved.variant
    limit = variant.in_token_limit
    max_new = args.max_new_tokens or variant.max_new_tokens
    if args.max_new_tokens is None and max_new > args.max_context // 2:
        # As a run does (tasks/model.py): K2.6's 32768 would leave a 32768 context no room for a prompt.
        max_new = args.max_context // 4
    images = args.history_images if args.history_images is not None else profile.history_images
    per_image = (
        facts.image_tokens(*args.screen, limit) + facts.image_wrapper_tokens
        if facts and facts.image_tokens
        else 0
    )
    results.append(
        server.check_context(
            card.get("max_model_len"), args.max_context, max_new + MARGIN + TEXT_ROOM + images * per_image
        )
    )

    tok = http.call(
        "POST", f"{http.root}/tokenize", {"model": model, "prompt": "image", "add_special_tokens": False}
    )
    results.append(server.check_tokenize(tok.status))

    render, why = _renderer(args, root or model, facts, limit, find_tokenizer)
    results.append(_template(http, model, tok.status == 200, render, why, limit, facts))
    results.append(_image_tokens(http, model, render, facts, limit))
    shots = [probe_screenshot((160, 120)) for _ in range(images)]
    multi = http.chat(model, to_openai([image_message(shots, "How many images?")], limit), max_tokens=1)
    results.append(server.check_image_limit(multi.status, multi.message(), images, facts))
    long = http.chat(model, to_openai([Message.text("user", LONG_REPLY)], limit), max_tokens=None)
    usage = long.data.get("usage", {}) if isinstance(long.data, dict) else {}
    results.append(server.check_default_max_tokens(choice(long)[1], usage.get("completion_tokens")))

    cfg = HistoryConfig(
        thinking=variant.thinking,
        in_token_limit=limit,
        max_context=args.max_context,
        max_new_tokens=max_new,
        max_images=images,
        profile=profile.layouts[0],  # the family's own prompts, as a run without --prompt-profile
        family=profile.prompt_family,
    )
    built = ContextBuilder(cfg).build(PROBE_TASK, [], probe_screenshot(), 1)
    step = http.chat(
        model, to_openai(built.messages, limit), max_tokens=max_new, temperature=variant.temperature
    )
    text, finish = choice(step)
    error = profile.parse_reply(text, finish or "stop").error if step.status == 200 else step.message()
    results.append(server.check_grammar(profile, finish, error, text, max_new))
    return results, ServedModel(profile, facts, model)


def _renderer(
    args: argparse.Namespace,
    name: str,
    facts: ServingFacts | None,
    limit: int,
    find: Callable[[str], Path | None],
) -> tuple[Render | None, str]:
    if facts is None:
        return None, server.NO_FACTS
    if facts.render is None:
        return None, f"we cannot render the {name!r} chat template locally (no renderer for its profile)"
    where = Path(args.tokenizer) if args.tokenizer else find(name)
    if where is None:
        return None, f"no local tokenizer for {name!r}"
    try:
        return facts.render(where, limit), ""
    except (OSError, ValueError) as e:
        return None, f"the tokenizer at {where} does not load: {e}"


def _template(
    http: Http,
    model: str,
    tokenize: bool,
    render: Render | None,
    why: str,
    limit: int,
    facts: ServingFacts | None,
) -> CheckResult:
    if not tokenize:
        return server.check_template(None, None, "the server has no /tokenize")
    if render is None:
        # A family whose template we do not render: a tokenizer would not help, so don't ask for one.
        fix = (
            "serve the checkpoint's own chat template (no --chat-template)"
            if facts is not None and facts.render is None
            else "pass --tokenizer CHECKPOINT_DIR"
        )
        return server.check_template(None, None, why, fix)
    probe = probe_conversation()
    body = {
        "model": model,
        "messages": to_openai(probe, limit),
        "add_generation_prompt": True,
        "add_special_tokens": False,
    }
    a = http.call("POST", f"{http.root}/tokenize", body)
    theirs = a.data.get("tokens") if a.status == 200 and isinstance(a.data, dict) else None
    if theirs is None:
        return server.check_template(None, None, f"/tokenize refused the messages form: {a.message()}")
    return server.check_template(render(probe), theirs)


def _image_tokens(
    http: Http, model: str, render: Render | None, facts: ServingFacts | None, limit: int
) -> CheckResult:
    with_image = [image_message([probe_screenshot()], "Describe the screen.")]
    without = [Message.text("user", "Describe the screen.")]
    a = http.chat(model, to_openai(with_image, limit), max_tokens=1)
    b = http.chat(model, to_openai(without, limit), max_tokens=1)
    pa, pb = prompt_tokens(a), prompt_tokens(b)
    if pa is None or pb is None:
        failed = a if pa is None else b
        return server.check_image_tokens(
            None, None, PROBE_SIZE, f"a 1-token chat completion: {failed.message()}"
        )
    if render is not None:
        ours = len(render(with_image)) - len(render(without))
    elif facts is not None and facts.image_tokens is not None:
        ours = facts.image_tokens(*PROBE_SIZE, limit) + facts.image_wrapper_tokens
    else:
        why = server.NO_FACTS if facts is None else "no local image rule for this profile"
        return server.check_image_tokens(None, None, PROBE_SIZE, why)
    return server.check_image_tokens(ours, pa - pb, PROBE_SIZE)
