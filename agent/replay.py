"""Replaying a recorded run: a scripted policy made of the actions that run executed."""

from __future__ import annotations

from pathlib import Path

from agent.policy import ScriptedPolicy
from agent.trajectory import read_steps


def replay_policy(run_dir: Path) -> ScriptedPolicy:
    """The executed actions of each step (steps that did nothing are skipped), then done."""
    steps = []
    for rec in read_steps(run_dir):
        kept = [a.to_action() for a in rec.actions if (a.executed and a.ok) or a.action["kind"] == "done"]
        if kept:
            steps.append(kept)
    return ScriptedPolicy(steps, thought="replaying a recorded step")
