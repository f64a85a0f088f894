"""The command line of a ``kimi-agent t`` run against an OpenAI-compatible server (the tests' loopback
one), written once for the tests that start such runs."""

from __future__ import annotations


def openai_task(base_url: str, *flags: str) -> list[str]:
    """``t --backend openai --base-url base_url`` and then ``flags``."""
    return ["t", "--backend", "openai", "--base-url", base_url, *flags]
