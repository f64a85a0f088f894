"""What a model family's reply parser returns: the model's words and the typed actions in them."""

from __future__ import annotations

from dataclasses import dataclass, field

from env.actions import Action


@dataclass
class ParsedReply:
    thought: str = ""
    action_text: str = ""
    thinking: str | None = None
    code: str = ""
    actions: list[Action] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # remarks on a reply that parsed; shown to the model
