"""The summary of an OSWorld run, from its files alone: per domain, per category (as OSWorld groups
domains), the always-FAIL baseline beside it, per-step latency and tokens, and an HTML page linking
each task's report.

Rates divide by the run's task list (the split), not by the tasks that produced a result: a task that
crashed, timed out, was unsupported here or never ran counts as 0 and is listed with its reason
(OSWorld's show_result.py divides by finished tasks only, issues #279/#380).
"""

from __future__ import annotations

import html
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agent.trajectory import read_steps_lenient
from tasks.osworld.fidelity import RunFidelity, for_run
from tasks.osworld.results import (
    Outcome,
    RunManifest,
    read_manifest,
    read_outcome,
    read_score,
    ref_dir,
    write_atomic,
)

# The OSWorld paper's grouping of its domains (OS, Office, Daily, Professional, Workflow); show_result.py
# prints Office, Daily and Professional with the same members.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "OS": ("os",),
    "Office": ("libreoffice_calc", "libreoffice_impress", "libreoffice_writer"),
    "Daily": ("vlc", "thunderbird", "chrome"),
    "Professional": ("gimp", "vs_code"),
    "Workflow": ("multi_apps",),
}
# Published OSWorld success rates (%), printed beside a run of the same model: by the model profile
# and variant the run recorded (run.json's model), else (runs of a family without figures here, and
# runs from before profiles) by a name in the served model's name.
REFERENCES_BY_VARIANT: dict[tuple[str, str], list[tuple[str, float]]] = {
    # Kimi-K2.6 model card table, thinking mode (copies: cnb.wcchen.cn/ai-models/moonshotai/Kimi-K2.6
    # README.md, haimaker.ai/models/moonshotai/kimi-k2.6; /work/wt/i21-facts.md 1.7).
    ("kimi-k2", "k2.6"): [("Kimi-K2.6 model card, OSWorld-Verified, thinking", 73.1)],
    ("kimi-k2", "k2.5"): [("Kimi-K2.6 model card (K2.5 column), OSWorld-Verified, thinking", 63.3)],
}
REFERENCES: dict[str, list[tuple[str, float]]] = {
    "kimi-vl-a3b": [
        ("Kimi-VL technical report, OSWorld", 8.22),
        ("OpenCUA README, OSWorld-Verified, 15 steps", 9.7),
        ("OpenCUA README, OSWorld-Verified, 100 steps", 10.3),
    ],
}
SUMMARY_JSON = "summary.json"
SUMMARY_HTML = "summary.html"


@dataclass
class TaskRow:
    domain: str
    task_id: str
    score: float
    status: str  # scored / crashed / timed_out / unsupported / setup_failed / not run
    reason: str | None
    infeasible: bool
    outcome: Outcome | None
    run_dir: str | None = None  # under the run's root when not <domain>/<task_id> (a rollout's)


@dataclass
class Group:
    name: str
    tasks: int = 0
    ran: int = 0
    score: float = 0.0
    baseline: float = 0.0  # what always answering FAIL scores: the infeasible tasks
    setup_failed: int = 0  # tasks whose setup failed: counted 0, never played nor scored

    @property
    def rate(self) -> float:
        return 100 * self.score / self.tasks if self.tasks else 0.0

    @property
    def baseline_rate(self) -> float:
        return 100 * self.baseline / self.tasks if self.tasks else 0.0


@dataclass
class StepStats:
    steps: int = 0
    model_s: list[float] = field(default_factory=list)
    step_s: list[float] = field(default_factory=list)
    tokens_in: list[int] = field(default_factory=list)
    tokens_out: list[int] = field(default_factory=list)
    reset_s: list[float] = field(default_factory=list)
    task_steps: list[int] = field(default_factory=list)  # per task the agent played
    task_s: list[float] = field(default_factory=list)  # per task that started, reset to score


def published_references(model: str, served: tuple[str, str] | None) -> list[tuple[str, float]]:
    """The published OSWorld figures printed beside a run of ``model`` (its served name), given the
    (model profile, variant) its tasks recorded (None: not recorded): another family's own figures,
    or none; Kimi-VL's, and any profile's by a fragment of the name, otherwise."""
    from agent.models.registry import PROFILES  # each profile's own published figures too

    name = model.lower()
    if served is not None and served[0] != "kimi-vl":
        if served in REFERENCES_BY_VARIANT:
            return REFERENCES_BY_VARIANT[served]
        profile = PROFILES.get(served[0])
        published = profile.published.items() if profile is not None else ()
        return [r for key, refs in published if key in name for r in refs]
    known = {**REFERENCES, **{k: list(v) for p in PROFILES.values() for k, v in p.published.items()}}
    return [r for key, refs in known.items() if key in name for r in refs]


@dataclass
class Summary:
    root: Path
    manifest: RunManifest
    rows: list[TaskRow]
    domains: list[Group]
    categories: list[Group]
    total: Group
    stats: StepStats
    fidelity: RunFidelity

    @property
    def on_sandbox(self) -> bool:
        """Whether the tasks ran on sandboxes (runs from before the target was kept: their workers)."""
        if self.manifest.target is not None:
            return self.manifest.target == "sandbox"
        return any(r.outcome is not None and r.outcome.worker.startswith("sandbox-") for r in self.rows)

    def references(self) -> list[tuple[str, float]]:
        return published_references(self.manifest.model, self.served_model())

    def served_model(self) -> tuple[str, str] | None:
        """(model profile, variant) as the first task that ran recorded them in its run.json; None
        when none did (runs from before profiles, scripted runs)."""
        for ref in self.manifest.tasks:
            path = ref_dir(self.root, ref) / "run.json"
            try:
                model = json.loads(path.read_text(encoding="utf-8")).get("model", {})
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(model, dict) and model.get("model_profile") and model.get("variant"):
                return str(model["model_profile"]), str(model["variant"])
        return None


def _collect(root: Path, manifest: RunManifest) -> tuple[list[TaskRow], StepStats]:
    rows, stats = [], StepStats()
    for ref in manifest.tasks:
        d = ref_dir(root, ref)
        score = read_score(d)
        outcome = read_outcome(d) if score is not None else None
        if score is None:
            status, reason = "not run", "no result (not reached, or killed mid-task: a resume runs it)"
        elif outcome is None:
            status, reason = "scored", None
        else:
            status, reason = outcome.kind, outcome.error
            if outcome.timings.reset_s:
                stats.reset_s.append(outcome.timings.reset_s)
            if outcome.kind != "unsupported":  # an unsupported task never started
                stats.task_s.append(outcome.timings.total_s)
            if (d / "steps.jsonl").is_file():  # the agent played (setup went well)
                stats.task_steps.append(outcome.steps)
        rows.append(
            TaskRow(
                ref.domain, ref.task_id, score or 0.0, status, reason, ref.infeasible, outcome, ref.run_dir
            )
        )
        if score is not None and (d / "steps.jsonl").is_file():
            steps, _ = read_steps_lenient(d)
            for s in steps:
                stats.steps += 1
                stats.model_s.append(s.timing.model_s)
                if s.finished_at:
                    stats.step_s.append(s.finished_at - s.started_at)
                if s.attempts:
                    stats.tokens_in.append(s.tokens_in)
                    stats.tokens_out.append(s.tokens_out)
    return rows, stats


def _group(name: str, rows: list[TaskRow]) -> Group:
    g = Group(name)
    for r in rows:
        g.tasks += 1
        g.ran += r.status != "not run"
        g.setup_failed += r.status == "setup_failed"
        g.score += r.score
        g.baseline += 1.0 if r.infeasible else 0.0
    return g


def summarize(root: Path) -> Summary:
    manifest = read_manifest(root)
    rows, stats = _collect(root, manifest)
    order = list(dict.fromkeys(r.domain for r in rows))
    domains = [_group(d, [r for r in rows if r.domain == d]) for d in order]
    categories = [
        _group(c, [r for r in rows if r.domain in members])
        for c, members in CATEGORIES.items()
        if any(r.domain in members for r in rows)
    ]
    known = {d for members in CATEGORIES.values() for d in members}
    if others := [r for r in rows if r.domain not in known]:  # our suite's own domains (mousepad)
        categories.append(_group("Other", others))
    fid = for_run(t.task_id for t in manifest.tasks)
    return Summary(root, manifest, rows, domains, categories, _group("all", rows), stats, fid)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..1) of a non-empty list: a value that occurred."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def spread(values: Sequence[float]) -> dict[str, float] | None:
    """n, mean, median, p90 and max of ``values``; None when there are none."""
    if not values:
        return None
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "p90": percentile(values, 0.9),
        "max": max(values),
    }


def step_stats(st: StepStats) -> dict[str, Any]:
    """The run's step statistics as numbers (summary.json's ``steps``)."""
    return {
        "total": st.steps,
        "per_task": spread(st.task_steps),
        "seconds_per_step": spread(st.step_s),
        "model_seconds_per_step": spread(st.model_s),
        "tokens_in_per_step": spread(st.tokens_in),
        "tokens_out_per_step": spread(st.tokens_out),
        "seconds_per_task": spread(st.task_s),
        "reset_seconds_per_task": spread(st.reset_s),
    }


def stats_lines(st: StepStats) -> list[str]:
    """The same statistics, as lines for the terminal and summary.html."""
    out = [f"steps: {st.steps}"]
    labels = [
        ("per_task", "steps per task", "{:.1f}"),
        ("seconds_per_step", "whole step", "{:.2f} s"),
        ("model_seconds_per_step", "model call per step", "{:.2f} s"),
        ("tokens_in_per_step", "tokens in per step", "{:.0f}"),
        ("tokens_out_per_step", "tokens out per step", "{:.0f}"),
        ("seconds_per_task", "task (reset to score)", "{:.1f} s"),
        ("reset_seconds_per_task", "reset per task", "{:.1f} s"),
    ]
    stats = step_stats(st)
    for key, label, fmt in labels:
        if (x := stats[key]) is not None:
            out.append(
                f"{label}: mean {fmt.format(x['mean'])}, median {fmt.format(x['median'])}, "
                f"p90 {fmt.format(x['p90'])}, max {fmt.format(x['max'])}"
            )
    return out


def task_table(s: Summary) -> list[dict[str, Any]]:
    """One row per task of the split, in its order: summary.json's ``tasks``."""
    return [
        {
            "id": r.task_id,
            "domain": r.domain,
            "score": r.score,
            "kind": r.status,
            "steps": r.outcome.steps if r.outcome else None,
            "seconds": round(r.outcome.timings.total_s, 3) if r.outcome else None,
            "error": r.reason,
            "infeasible": r.infeasible,
        }
        for r in s.rows
    ]


def _table(title: str, groups: list[Group], total: Group) -> Table:
    t = Table(title=title)
    for col in ("", "tasks", "ran", "setup failed", "score", "success %", "always-FAIL %"):
        t.add_column(col, justify="left" if not col else "right")
    for g in [*groups, total]:
        t.add_row(
            g.name,
            str(g.tasks),
            str(g.ran),
            str(g.setup_failed),
            f"{g.score:.2f}",
            f"{g.rate:.2f}",
            f"{g.baseline_rate:.2f}",
            style="bold" if g is total else None,
        )
    return t


SANDBOX_CAVEAT = (
    "These tasks ran on sandboxes: their scores approximate OSWorld's and are not comparable with "
    "published OSWorld numbers, which need OSWorld's VM (`--vm`)."
)


def caveats(s: Summary) -> list[str]:
    """What the numbers are: on sandboxes, an approximation; and what the fidelity check found."""
    if not s.on_sandbox:
        return []
    return [SANDBOX_CAVEAT, s.fidelity.line()]


def print_summary(s: Summary, console: Console) -> None:
    m = s.manifest
    console.print(Text(f"{m.model} on {m.split} ({len(m.tasks)} tasks, up to {m.max_steps} steps): {s.root}"))
    if m.kimi_agent:
        console.print(Text(f"kimi-agent {m.kimi_agent.line()}"))
    console.print(_table("Success rate per domain (divided by every task of the split)", s.domains, s.total))
    if s.categories:
        console.print(_table("Per category (OSWorld's grouping)", s.categories, s.total))
    failed = [r for r in s.rows if r.status not in ("scored",)]
    if failed:
        t = Table(title=f"Counted as 0: {len(failed)} tasks that did not produce a score")
        for col in ("domain", "task", "status", "reason"):
            t.add_column(col, overflow="fold")
        for r in failed:
            t.add_row(r.domain, r.task_id, r.status, escape(" ".join((r.reason or "").split())[:300]))
        console.print(t)
    for line in stats_lines(s.stats):
        console.print(Text(line))
    for name, value in s.references():
        console.print(Text(f"published: {name}: {value:.2f}%  (this run: {s.total.rate:.2f}%)"))
    for line in caveats(s):
        console.print(Text(line), soft_wrap=True)


def summary_json(s: Summary) -> dict[str, Any]:
    def g(x: Group) -> dict[str, Any]:
        return {
            "tasks": x.tasks,
            "ran": x.ran,
            "score": x.score,
            "success_rate": x.rate,
            "always_fail_rate": x.baseline_rate,
            "setup_failed": x.setup_failed,
        }

    version = s.manifest.kimi_agent
    return {
        "split": s.manifest.split,
        "model": s.manifest.model,
        "max_steps": s.manifest.max_steps,
        "kimi_agent": version.model_dump() if version else None,
        "total": g(s.total),
        "domains": {x.name: g(x) for x in s.domains},
        "categories": {x.name: g(x) for x in s.categories},
        "not_scored": [
            {"domain": r.domain, "task_id": r.task_id, "status": r.status, "reason": r.reason}
            for r in s.rows
            if r.status != "scored"
        ],
        "tasks": task_table(s),
        "steps": step_stats(s.stats),
        "references": [{"source": n, "success_rate": v} for n, v in s.references()],
        "target": "sandbox" if s.on_sandbox else "vm",
        "caveats": caveats(s),
        "fidelity": s.fidelity.model_dump(),
    }


def _html_table(groups: list[Group], total: Group) -> str:
    rows = "".join(
        f"<tr{' class=total' if x is total else ''}><td>{html.escape(x.name)}</td><td>{x.tasks}</td>"
        f"<td>{x.ran}</td><td>{x.setup_failed}</td><td>{x.score:.2f}</td><td>{x.rate:.2f}</td><td>{x.baseline_rate:.2f}</td></tr>"
        for x in [*groups, total]
    )
    head = (
        "<tr><th></th><th>tasks</th><th>ran</th><th>setup failed</th><th>score</th><th>success %</th>"
        "<th>always-FAIL %</th></tr>"
    )
    return f"<table>{head}{rows}</table>"


def write_html(s: Summary) -> Path:
    m = s.manifest
    task_rows = []
    for r in s.rows:
        rel = r.run_dir or f"{r.domain}/{r.task_id}"
        # A task played several times (a rollout group) names which play each row is.
        name = html.escape(r.task_id + (f" ({Path(r.run_dir).name})" if r.run_dir else ""))
        link = (
            f'<a href="{html.escape(rel)}/report.html">{name}</a>'
            if (s.root / rel / "report.html").is_file()
            else name
        )
        o = r.outcome
        task_rows.append(
            f"<tr><td>{html.escape(r.domain)}</td><td>{link}</td><td>{r.score:g}</td>"
            f"<td>{html.escape(r.status)}</td><td>{o.steps if o else ''}</td>"
            f"<td>{f'{o.timings.total_s:.0f}' if o else ''}</td><td>{html.escape(r.reason or '')}</td></tr>"
        )
    refs = "".join(f"<li>{html.escape(n)}: {v:.2f}%</li>" for n, v in s.references())
    body = f"""<!doctype html><meta charset="utf-8"><title>OSWorld: {html.escape(m.model)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
/* text columns (names, task ids, statuses, reasons) read left-aligned, headers over their cells */
td:first-child,th:first-child,.tasks td:nth-child(-n+2),.tasks th:nth-child(-n+2),
.tasks td:nth-child(4),.tasks th:nth-child(4),.tasks td:last-child,.tasks th:last-child{{text-align:left}}
tr.total{{font-weight:bold}}</style>
<h1>OSWorld: {html.escape(m.model)} on {html.escape(m.split)}</h1>
<p>{len(m.tasks)} tasks, up to {m.max_steps} steps; {html.escape(m.policy)}; kimi-agent
{html.escape(m.kimi_agent.line() if m.kimi_agent else "(version not recorded)")}. Rates divide by every task of the
split; always-FAIL is what a run that only answers FAIL scores (the infeasible tasks); a task whose
setup failed is counted 0 and was not played.</p>
{"".join(f"<p><b>{html.escape(x)}</b></p>" for x in caveats(s))}
<h2>Per domain</h2>{_html_table(s.domains, s.total)}
<h2>Per category</h2>{_html_table(s.categories, s.total)}
{"<h2>Published</h2><ul>" + refs + "</ul>" if refs else ""}
<h2>Steps</h2><ul>{"".join(f"<li>{html.escape(x)}</li>" for x in stats_lines(s.stats))}</ul>
<h2>Tasks</h2><table class=tasks><tr><th>domain</th><th>task</th><th>score</th><th>status</th><th>steps</th>
<th>seconds</th><th>reason</th></tr>
{"".join(task_rows)}</table>
"""
    path = s.root / SUMMARY_HTML
    write_atomic(path, body)
    write_atomic(s.root / SUMMARY_JSON, json.dumps(summary_json(s), indent=2))
    return path
