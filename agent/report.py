"""report.html: one self-contained page (inline CSS, no scripts, no network) showing every step's
screenshot with the click or drag drawn over it, the thought and the actions."""

from __future__ import annotations

from html import escape
from pathlib import Path

from agent.trajectory import ActionRecord, StepRecord, read_info, read_steps

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:16px;color:#222}
h1{font-size:20px} .meta{color:#555} .step{border-top:1px solid #ddd;padding:12px 0}
.shot{position:relative;display:inline-block;max-width:100%}
.shot img{display:block;max-width:100%;height:auto;border:1px solid #ccc}
.shot svg{position:absolute;inset:0;width:100%;height:100%;pointer-events:none}
.thought{white-space:pre-wrap;background:#f6f6f6;padding:8px;border-radius:4px}
.err{color:#b00020} code{background:#eef;padding:1px 4px;border-radius:3px}
details pre{white-space:pre-wrap;font-size:12px;background:#fafafa;padding:8px}
"""


def _marks(actions: list[ActionRecord], width: int, height: int) -> str:
    """SVG marks in the screenshot's pixel space; the viewBox scales them with the image."""
    r = max(width, height) / 120
    out = []
    for a in actions:
        pts = [(x * width, y * height) for x, y in a.model_points]
        colour = "#e0002a" if a.ok else "#888"
        if len(pts) == 2:
            (x1, y1), (x2, y2) = pts
            out.append(
                f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
                f'stroke-width="{r / 3:.1f}" marker-end="url(#arrow)"/>'
            )
        for x, y in pts[:1]:
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="none" stroke="{colour}" '
                f'stroke-width="{r / 3:.1f}"/><circle cx="{x:.1f}" cy="{y:.1f}" r="{r / 4:.1f}" '
                f'fill="{colour}"/>'
            )
    arrow = (
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="4" markerHeight="4" '
        'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#e0002a"/></marker></defs>'
    )
    return (
        f'<svg viewBox="0 0 {width} {height}" preserveAspectRatio="none" '
        f'xmlns="http://www.w3.org/2000/svg">{arrow}{"".join(out)}</svg>'
    )


def _step_html(s: StepRecord) -> str:
    w, h = s.screenshot_size
    t = s.timing
    acts = "".join(
        f"<li><code>{escape(a.description)}</code>"
        + (f" &rarr; screen {escape(str(a.screen_points))}" if a.screen_points else "")
        + ("" if a.executed else " <em>(not executed)</em>")
        + (f' <span class="err">{escape(a.error)}</span>' if a.error else "")
        + "</li>"
        for a in s.actions
    )
    errors = "".join(
        f'<p class="err">{escape(label)}: {escape(msg)}</p>'
        for label, msg in (("parse error", s.parse_error), ("error", s.error))
        if msg
    )
    thinking = (
        f"<details><summary>thinking</summary><pre>{escape(s.thinking)}</pre></details>" if s.thinking else ""
    )
    raw = f"<details><summary>raw reply</summary><pre>{escape(s.raw)}</pre></details>" if s.raw else ""
    return (
        f'<section class="step" id="step-{s.step}"><h2>Step {s.step}</h2>'
        f'<div class="shot"><img src="{escape(s.screenshot)}" width="{w}" height="{h}" '
        f'alt="screenshot of step {s.step}">{_marks(s.actions, w, h)}</div>'
        f'<p class="thought">{escape(s.thought) or "<em>no thought</em>"}</p>'
        f"<p><b>Action:</b> {escape(s.action_text)}</p><ul>{acts}</ul>{errors}{thinking}{raw}"
        f'<p class="meta">capture {t.capture_s * 1000:.1f} ms · model {t.model_s:.2f} s · '
        f"execute {t.execute_s * 1000:.1f} ms · settle {t.settle_s * 1000:.0f} ms · "
        f"record {t.record_s * 1000:.1f} ms · tokens {s.tokens_in} in / {s.tokens_out} out</p></section>"
    )


def write_report(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    info = read_info(run_dir)
    steps = read_steps(run_dir)
    summary = (
        f"{info.steps} steps · stop: {info.stop_reason} · status: {info.status or '-'}"
        + (f" · answer: {escape(info.answer)}" if info.answer else "")
        + (f' · <span class="err">{escape(info.error)}</span>' if info.error else "")
    )
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>kimi-agent: {escape(info.task[:80])}</title><style>{_CSS}</style></head><body>"
        f"<h1>{escape(info.task)}</h1><p class=meta>policy {escape(info.policy)} · desktop "
        f"{escape(info.desktop)} {info.screen[0]}x{info.screen[1]} · {summary}</p>"
        + "".join(_step_html(s) for s in steps)
        + "</body></html>"
    )
    path = run_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
