"""`--allow`: the tool groups a client may use. Fails closed: nothing given, an empty item or a
name we do not know is an error at start-up, never "everything" (cua's server grants all tools
on an empty or misspelt list)."""

from __future__ import annotations

import difflib

# Every group a client can be granted, and what it gives. host-desktop is never implied by another.
GROUPS: dict[str, str] = {
    "sandbox": "sandbox_create, sandbox_list, sandbox_close: start and stop private desktops",
    "computer": "computer_*: screenshots, pointer and keyboard on a sandbox",
    "shell": "shell_run: commands inside a sandbox as its user",
    "files": "file_read, file_write, file_list: files in a sandbox's home",
    "kimi": "kimi_locate, kimi_run: Kimi-VL grounding and the agent loop on a sandbox",
    "host-desktop": "the computer_* tools on this machine's own desktop (sandbox id 'host')",
}


class PermissionsError(ValueError):
    """A bad --allow list; the message is the one line printed at start-up."""


def parse_allow(text: str | None) -> frozenset[str]:
    """``"sandbox,computer"`` -> the set of groups, or PermissionsError naming what was wrong."""
    if text is None or not text.strip():
        raise PermissionsError(
            f"--allow is required and names the tool groups to grant (any of {', '.join(GROUPS)}); "
            "nothing is granted by default"
        )
    granted: set[str] = set()
    for raw in text.split(","):
        name = raw.strip().lower()
        if not name:
            raise PermissionsError(f"--allow {text!r} has an empty item")
        if name not in GROUPS:
            close = difflib.get_close_matches(name, list(GROUPS), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PermissionsError(
                f"--allow: unknown tool group {raw.strip()!r}{hint}; the groups are {', '.join(GROUPS)}"
            )
        granted.add(name)
    return frozenset(granted)
