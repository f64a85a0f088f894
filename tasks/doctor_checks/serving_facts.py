"""Serving facts of the Kimi K2.5/K2.6, OpenCUA and UI-TARS-1.5 profiles, and which one a served root
names.

Every value is from /work/wt/i21-facts.md (sections 1.10, 2.8, 3.2, 4), with the source it gives; where
those sources leave a fact open it is UNKNOWN here too, and the doctor prints it as such.
"""

from __future__ import annotations

from agent.models.kimi_k2.profile import KIMI_K2
from agent.models.opencua.profile import OPENCUA
from agent.models.ui_tars.profile import UI_TARS
from tasks.doctor_checks.facts import KIMI_VL_FACTS, UNKNOWN, Cited, ServingFacts

K25_GUIDE = "https://huggingface.co/moonshotai/Kimi-K2.5 (docs/deploy_guidance.md)"
K25_RECIPE = "https://recipes.vllm.ai/moonshotai/Kimi-K2.5"
K26_RECIPE = "https://recipes.vllm.ai/moonshotai/Kimi-K2.6"
OPENCUA_README = "https://github.com/xlang-ai/OpenCUA (README; the OpenCUA-72B model card)"
KIMI_K2_PARSER = "vllm-project/vllm vllm/reasoning/kimi_k2_reasoning_parser.py @ 01a703487ceb"
# Three screenshots by default (current + two), the history the OSWorld agents of both families keep.
IMAGES_SOURCE = "xlang-ai/OSWorld mm_agents/kimi and mm_agents/opencua (3 screenshots in the history)"
REASONING_FIELD = Cited(
    "thinking arrives as `reasoning` on vLLM >= ~0.17 and `reasoning_content` before (both are read)",
    "https://github.com/vllm-project/vllm/pull/33402",
)


def _k2(hub_id: str, min_vllm: Cited, tp_source: str) -> ServingFacts:
    return ServingFacts(
        hub_id=hub_id,
        min_vllm=min_vllm,
        weights_gb=None,  # not in the gathered sources: the published command's GPUs are used instead
        trust_remote_code=True,  # the K2.5 deploy guide's command
        reasoning_parser=Cited("kimi_k2", KIMI_K2_PARSER),
        image_limit=Cited("3", IMAGES_SOURCE),
        notes=(REASONING_FIELD,),
        image_tokens=KIMI_K2.image_tokens,  # MoonViT-3d "navit" rule, the profile's own
        # <|media_begin|> image <|media_content|> ... <|media_end|>: vLLM kimi_k25.py get_placeholder_str.
        image_wrapper_tokens=4,
        render=None,  # we have no renderer of the K2.x chat template here
        tensor_parallel=Cited("8", tp_source),
        extra_args=Cited("--mm-encoder-tp-mode data --tool-call-parser kimi_k2", K25_GUIDE),
        unknowns=(Cited("the GB of the weights", "not in the K2.5 deploy guide or the K2.6 recipe"),),
    )


# At release "available in nightly vLLM wheel" (K25_GUIDE); vLLM's recipe now says >= 0.15.0.
K25_FACTS = _k2("moonshotai/Kimi-K2.5", Cited("0.15.0", K25_RECIPE), K25_GUIDE)
K26_FACTS = _k2("moonshotai/Kimi-K2.6", Cited("0.19.1", K26_RECIPE), K26_RECIPE + " (8x H200, INT4)")


def _opencua(size: str, tp: str) -> ServingFacts:
    return ServingFacts(
        hub_id=f"xlangai/OpenCUA-{size}",
        min_vllm=Cited("0.12.0", OPENCUA_README),  # "Requires vllm>=0.12.0 with --trust-remote-code"
        weights_gb=None,
        trust_remote_code=True,
        reasoning_parser=None,
        image_limit=Cited("3", IMAGES_SOURCE),
        notes=(),
        image_tokens=OPENCUA.image_tokens,  # Qwen2.5-VL's 28-px cells, the profile's own
        image_wrapper_tokens=2,  # <|vision_start|> ... <|vision_end|> (Qwen2.5-VL; inferred for OpenCUA)
        render=None,  # OpenCUA's remote-code template is not rendered here
        tensor_parallel=Cited(tp, OPENCUA_README),
        unknowns=(Cited("the GB of the weights", "not in the OpenCUA README"),),
    )


OPENCUA_FACTS = {"7b": _opencua("7B", "1"), "32b": _opencua("32B", "4"), "72b": _opencua("72B", "8")}

# OpenCUA-A3B is a Kimi-VL checkpoint: served like Kimi-VL (vLLM >= 0.8.5 inferred, facts 2.8).
OPENCUA_A3B_FACTS = ServingFacts(
    hub_id="xlangai/OpenCUA-A3B",
    min_vllm=Cited(KIMI_VL_FACTS.min_vllm.value, "Kimi-VL architecture: " + KIMI_VL_FACTS.min_vllm.source),
    weights_gb=None,
    trust_remote_code=True,
    reasoning_parser=None,
    image_limit=Cited("3", IMAGES_SOURCE),
    notes=KIMI_VL_FACTS.notes,
    image_tokens=KIMI_VL_FACTS.image_tokens,
    image_wrapper_tokens=KIMI_VL_FACTS.image_wrapper_tokens,
    render=None,  # its chat template is OpenCUA's, not verified to equal Kimi-VL's
    unknowns=(
        Cited("an OpenCUA-A3B-specific serve command", OPENCUA_README),
        Cited("the GB of the weights", "not in the OpenCUA README"),
    ),
)


UI_TARS_REPO = "https://github.com/bytedance/UI-TARS @ 582f3a7ea5d285ee8ed9e2e84048d1ab01453c49"
UI_TARS_AGENT = "mrwwk/DeskCraft mm_agents/uitars15_v1.py @ 4893b45ee51b57b2c1279d0e140aee02a7d0f6a6"


# UI-TARS-1.5-7B is a Qwen2.5-VL checkpoint (model_type qwen2_5_vl), built into vLLM: no remote code.
UI_TARS_FACTS = ServingFacts(
    hub_id="ByteDance-Seed/UI-TARS-1.5-7B",
    # The repo documents HF Inference Endpoints (TGI 3.2.1), no vLLM command or version; inferred: any
    # vLLM with Qwen2.5-VL support (>= 0.7.3).
    min_vllm=Cited(UNKNOWN, f"{UI_TARS_REPO} README_deploy.md (inferred: Qwen2.5-VL support, vLLM >= 0.7.3)"),
    weights_gb=None,
    trust_remote_code=False,
    reasoning_parser=None,  # its Thought: line is part of the reply's text
    image_limit=Cited("5", f"{UI_TARS_AGENT} (history_n = 5)"),
    notes=(),
    image_tokens=UI_TARS.image_tokens,  # Qwen2.5-VL's rule at UI-TARS's min_pixels 78400
    image_wrapper_tokens=2,  # <|vision_start|> ... <|vision_end|> (Qwen2.5-VL)
    render=None,  # Qwen2.5-VL's chat template is not rendered here
    unknowns=(
        Cited("an official vLLM serve command for UI-TARS-1.5", f"{UI_TARS_REPO} README_deploy.md"),
        Cited("the GB of the weights", f"not in {UI_TARS_REPO} README.md"),
    ),
)


def facts_by_profile(profile_name: str, served_root: str) -> ServingFacts | None:
    if profile_name == "kimi-vl":
        return KIMI_VL_FACTS
    if profile_name == "kimi-k2":
        from agent.models.kimi_k2.variants import guess_variant

        return K25_FACTS if guess_variant(served_root) == "k2.5" else K26_FACTS
    if profile_name == "opencua":
        from agent.models.opencua.variants import guess_variant as guess_size

        return OPENCUA_FACTS.get(guess_size(served_root) or "", OPENCUA_FACTS["7b"])
    if profile_name == "opencua-a3b":
        return OPENCUA_A3B_FACTS
    if profile_name == "ui-tars-1.5":
        return UI_TARS_FACTS
    return None
