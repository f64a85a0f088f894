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


def start_reply(text: object, max_chars: int) -> tuple[ParsedReply, str]:
    """A fresh ParsedReply and the reply's text ("" when it is not a string). A reply longer than
    ``max_chars`` is not read: ``error`` says so (one line) and the parser returns it as it is."""
    out = ParsedReply()
    text = text if isinstance(text, str) else ""
    if len(text) > max_chars:
        out.error = f"reply too long ({len(text)} characters > {max_chars}); it was not read"
    return out, text


def cut_note(finish_reason: str) -> str:
    """What an error adds when the reply stopped at max_new_tokens (the likely reason it is unusable)."""
    return " (the reply hit max_new_tokens)" if finish_reason == "length" else ""
