"""The prompt layouts' names (--prompt-profile), in a module that imports nothing, so that the CLI's
``--help`` can list them without loading the model code (agent.history pulls in torch)."""

from __future__ import annotations

PROFILES: tuple[str, ...] = ("append", "osworld")
# OpenCUA's levels (agent/models/opencua/profile.py): laid out as ``osworld``, worded as OpenCUA's
# prompts (prompts/opencua-lN/); a model profile's own layouts, not Kimi-VL's.
OPENCUA_LAYOUTS: tuple[str, ...] = (
    "opencua-l2",
    "opencua-l1",
    "opencua-l3",
    "opencua-v1-l2",
    "opencua-v1-l1",
    "opencua-v1-l3",
)
# UI-TARS-1.5's layout (agent/models/ui_tars/profile.py): the layout of OSWorld's UI-TARS agent,
# worded as its prompt (prompts/ui-tars/).
UI_TARS_LAYOUTS: tuple[str, ...] = ("ui-tars",)
