"""The model profiles this package knows, and which one a run uses (``--model-profile NAME|auto``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.models.kimi_k2.profile import KIMI_K2
from agent.models.kimi_vl.profile import KIMI_VL
from agent.models.opencua.profile import OPENCUA, OPENCUA_A3B
from agent.models.profile import ModelProfile
from agent.models.ui_tars.profile import UI_TARS

# OpenCUA before Kimi-VL: OpenCUA-A3B is a Kimi-VL checkpoint (its config may say kimi_vl); its name decides.
PROFILES: dict[str, ModelProfile] = {p.name: p for p in (OPENCUA, OPENCUA_A3B, KIMI_VL, KIMI_K2, UI_TARS)}
# What a run uses when nothing says which family it is (every run did before profiles existed).
DEFAULT_PROFILE = KIMI_VL
AUTO = "auto"


@dataclass(frozen=True)
class ChosenProfile:
    profile: ModelProfile
    source: str  # how it was chosen, for run.json

    def record(self) -> dict[str, str]:
        return {"model_profile": self.profile.name, "model_profile_from": self.source}


def profile_names() -> list[str]:
    return [AUTO, *PROFILES]


def choose_profile(
    flag: str, served_root: str | None = None, checkpoint_config: Mapping[str, Any] | None = None
) -> ChosenProfile:
    """``flag`` names a profile, or ``auto``: the first profile that recognises the served model's root
    (or the checkpoint's name) or the checkpoint's config.json; else the default. ValueError (one
    line, listing the profiles) for an unknown name."""
    if flag != AUTO:
        if flag not in PROFILES:
            raise ValueError(f"unknown model profile {flag!r} (choose from {', '.join(profile_names())})")
        return ChosenProfile(PROFILES[flag], "--model-profile")
    name = served_root or ""
    for profile in PROFILES.values():
        # The checkpoint's own config is the surer word; a name can be anything a user chose.
        if checkpoint_config is not None and profile.matches("", checkpoint_config):
            return ChosenProfile(profile, "auto: the checkpoint's config.json")
        if name and profile.matches(name, None):
            return ChosenProfile(profile, f"auto: {name!r}")
    return ChosenProfile(DEFAULT_PROFILE, "auto: default (nothing said which family)")
