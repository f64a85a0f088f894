"""The checks of a served model, each a pure function of what the probes found (probe.py)."""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

from agent.models.profile import ModelProfile
from tasks.doctor_checks.facts import UNKNOWN, ServingFacts
from tasks.doctor_checks.result import CheckResult

NO_FACTS = "no serving facts for this profile yet (tasks/doctor_checks/facts.py)"


def check_reachable(base_url: str, error: str | None, served: list[str]) -> CheckResult:
    name = "server reachable"
    if error is not None:
        return CheckResult.fail(
            name, f"{base_url}: {error}", "start the server, or pass the right --base-url"
        )
    return CheckResult.ok(name, f"{base_url} serves {', '.join(served) or 'nothing'}")


def check_version(version: str | None, facts: ServingFacts | None) -> CheckResult:
    """GET /version answers {"version": ...} on vLLM (api_server's show_version); other servers
    (SGLang, TensorRT-LLM, Moonshot's API) have no such endpoint."""
    name = "server version"
    if version is None:
        return CheckResult.warn(
            name,
            "no GET /version: not vLLM (or a proxy hides it)",
            "the checks below assume vLLM's endpoints",
        )
    if facts is None:
        return CheckResult.warn(name, f"vLLM {version}; {NO_FACTS}", "compare with the model's own docs")
    if facts.min_vllm.value == UNKNOWN:
        return CheckResult.warn(
            name,
            f"vLLM {version}; the first release serving {facts.hub_id} is UNKNOWN ({facts.min_vllm.source})",
            "compare with the model's deploy guide",
        )
    try:
        ok = Version(version) >= Version(facts.min_vllm.value)
    except InvalidVersion:
        return CheckResult.warn(
            name, f"unreadable version {version!r}", f"use vLLM >= {facts.min_vllm.value}"
        )
    if not ok:
        return CheckResult.fail(
            name,
            f"vLLM {version}; the first release known to serve this model is {facts.min_vllm.value} "
            f"({facts.min_vllm.source})",
            f"pip install 'vllm>={facts.min_vllm.value}' and restart the server",
        )
    return CheckResult.ok(name, f"vLLM {version} (>= {facts.min_vllm.value})")


def check_served_model(
    model: str, served: list[str], root: str | None, profile: ModelProfile, chosen_from: str
) -> CheckResult:
    """The model is served, and its root (the checkpoint it was loaded from) is one the profile
    recognises: a run's prompts, parser and image rule are that profile's."""
    name = "served model"
    if model not in served:
        return CheckResult.fail(
            name,
            f"{model!r} is not served (served: {', '.join(served) or 'none'})",
            "pass --model NAME_SERVED",
        )
    if root is None:
        return CheckResult.warn(
            name,
            f"{model!r}; the server does not say its root (not vLLM?); profile {profile.name} ({chosen_from})",
            "pass --model-profile to say which family it is",
        )
    if not profile.matches(root, None):
        return CheckResult.fail(
            name,
            f"{model!r} loaded from {root!r}, which the {profile.title} profile does not recognise "
            f"(profile {profile.name}: {chosen_from})",
            f"serve a {profile.title} checkpoint, or pass the --model-profile of {root}",
        )
    return CheckResult.ok(name, f"{model!r} from {root!r}: profile {profile.name} ({chosen_from})")


def check_context(max_model_len: int | None, max_context: int, needed: int) -> CheckResult:
    """``max_context``: the budget the run asks for (--max-context); ``needed``: what the first
    step with a full history of screenshots takes (reply room included). A run lowers its budget to
    the server's length (tasks/model.py); below ``needed`` the history cannot hold its images."""
    name = "context length"
    fix = f"restart the server with --max-model-len {max_context}"
    if max_model_len is None:
        return CheckResult.warn(name, "the server does not report max_model_len", f"make sure: {fix}")
    found = f"max_model_len {max_model_len}; the run's budget {max_context}, a full history needs ~{needed}"
    if max_model_len < needed:
        return CheckResult.fail(name, found, fix)
    if max_model_len < max_context:
        return CheckResult.warn(name, found + " (the run lowers its budget to the server's)", fix)
    return CheckResult.ok(name, found)


def check_tokenize(status: int | None) -> CheckResult:
    name = "/tokenize"
    if status == 200:
        return CheckResult.ok(name, "POST /tokenize answers: the history counts exact tokens")
    return CheckResult.warn(
        name,
        f"POST /tokenize: {'no answer' if status is None else f'HTTP {status}'}; the history counts UTF-8 "
        "bytes (an upper bound) and template drift cannot be checked",
        "serve with vLLM, whose server has /tokenize",
    )


def check_template(
    ours: list[int] | None,
    theirs: list[int] | None,
    why_skipped: str = "",
    fix: str = "pass --tokenizer CHECKPOINT_DIR",
) -> CheckResult:
    """Our rendering of a probe conversation against the server's chat template (POST /tokenize,
    messages form): any difference means the model sees prompts unlike the ones we count and record."""
    name = "chat template"
    if ours is None or theirs is None:
        return CheckResult.warn(name, f"not compared: {why_skipped}", fix)
    if ours == theirs:
        return CheckResult.ok(
            name, f"the server renders the probe conversation as we do ({len(ours)} tokens)"
        )
    at = next(
        (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs))
    )
    return CheckResult.fail(
        name,
        f"the server's prompt differs from ours at token {at} ({len(theirs)} vs {len(ours)} tokens)",
        "serve without --chat-template (the checkpoint's own template), or with the checkpoint's chat_template.jinja",
    )


def check_image_tokens(
    ours: int | None, theirs: int | None, size: tuple[int, int], why_skipped: str = ""
) -> CheckResult:
    """Prompt tokens one probe screenshot adds on the server (two 1-token chat completions, with and
    without it: ``usage.prompt_tokens`` counts images on every vLLM version, /tokenize does not
    before vLLM PR #34560) against ours. A difference: other processor settings (in_token_limit,
    mm_processor_kwargs) or an image resized twice."""
    name = "image tokens"
    w, h = size
    if ours is None or theirs is None:
        return CheckResult.warn(name, f"not compared: {why_skipped}", "see the checks above")
    if ours == theirs:
        return CheckResult.ok(name, f"a {w}x{h} screenshot costs {theirs} prompt tokens there and here")
    return CheckResult.fail(
        name,
        f"a {w}x{h} screenshot costs {theirs} prompt tokens on the server, {ours} here",
        "serve the checkpoint's own preprocessor_config.json (no --mm-processor-kwargs), or pass the "
        "server's --in-token-limit; don't resize images before the server",
    )


def check_image_limit(
    status: int | None, message: str, images: int, facts: ServingFacts | None
) -> CheckResult:
    name = "images per prompt"
    if status == 200:
        return CheckResult.ok(name, f"a prompt with {images} screenshots (the history's cap) is accepted")
    want = max(images, int(facts.image_limit.value)) if facts else images
    return CheckResult.fail(
        name,
        f"a prompt with {images} screenshots: HTTP {status}: {message}",
        f"restart the server with --limit-mm-per-prompt '{{\"image\": {want}}}' (or lower --history-images)",
    )


def check_default_max_tokens(finish_reason: str | None, completion_tokens: int | None) -> CheckResult:
    """A request without max_tokens: vLLM's chat endpoint then allows the rest of the context, but
    a generation_config.json default, a proxy or the legacy completions default (16) can cut it."""
    name = "reply length"
    if finish_reason == "stop":
        return CheckResult.ok(
            name, f"a reply without max_tokens ended by itself ({completion_tokens} tokens)"
        )
    return CheckResult.warn(
        name,
        f"a reply without max_tokens was cut ({finish_reason}) at {completion_tokens} tokens: a default max_tokens",
        "kimi-agent always sends max_tokens; for other clients start vLLM with --generation-config vllm",
    )


def check_grammar(
    profile: ModelProfile, finish_reason: str | None, error: str | None, reply: str, max_tokens: int
) -> CheckResult:
    """The first step's real prompt, sent as a run sends it, and the profile's parser on the reply."""
    name = "reply grammar"
    if finish_reason == "length":
        return CheckResult.fail(
            name, f"the probe reply was cut at max_tokens {max_tokens}", "raise --max-new-tokens"
        )
    if error is not None:
        return CheckResult.fail(
            name,
            f"the {profile.title} parser refuses the probe reply ({error}): {reply[:80]!r}",
            "pass the --model-profile of the served model, or serve a model of this profile",
        )
    return CheckResult.ok(name, f"the {profile.title} parser reads the probe reply")
