"""report.html: one self-contained page (inline CSS and images, no scripts, no network) showing the
run's totals and every step's screenshot with the click or drag drawn over it, the thought, the
actions and every model reply of the step (retries included).

Screenshots are embedded as WebP (lossless PNGs stay next to it for tools): a 1080p desktop is
~40-120 KB, so a 50-step report stays a few MB and opens from a mail or a CI artifact alone.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import io
import threading
from html import escape as _html
from pathlib import Path

from PIL import Image

from agent.jsonfile import JSONFileError
from agent.text import visible
from agent.trajectory import ActionRecord, RunInfo, StepRecord, read_info, read_steps, read_verdict

EMBED_MAX_WIDTH = 1600  # wider screenshots are scaled down for the page (the PNGs stay full size)
EMBED_QUALITY = 80

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:16px;color:#222}
h1{font-size:20px} .meta{color:#555} .step{border-top:1px solid #ddd;padding:12px 0}
.shot{position:relative;display:inline-block;max-width:100%}
.shot img{display:block;max-width:100%;height:auto;border:1px solid #ccc}
.shot svg{position:absolute;inset:0;width:100%;height:100%;pointer-events:none}
.thought{white-space:pre-wrap;background:#f6f6f6;padding:8px;border-radius:4px}
.err{color:#b00020} .warn{color:#8a5a00} code{background:#eef;padding:1px 4px;border-radius:3px}
details pre{white-space:pre-wrap;font-size:12px;background:#fafafa;padding:8px}
.dry{background:#fff3cd;border:1px solid #e0c060;padding:8px;border-radius:4px;font-weight:bold}
table.totals td{padding:1px 12px 1px 0} table.totals td:first-child{color:#555}
.verdict{border:1px solid #ccc;border-radius:4px;padding:8px 12px;margin:8px 0}
.verdict .score{font-size:20px;font-weight:bold} .pass{background:#e8f5e9} .fail{background:#fdecea}
"""


def escape(text: str) -> str:
    """HTML-escaped, with control and bidi characters shown as escapes: a page must not reorder
    or hide what a model wrote ("txt.exe" behind a right-to-left override reads "exe.txt")."""
    return _html(visible(text))


# A benchmark task's report is rendered twice, when the run closes and again with its score, and a
# run's last step screenshot and final.png are often the same picture. WebP encoding is the cost
# (~0.1-0.4 s a 1080p screen), so each distinct image is encoded once per process: keyed by a
# digest of the file's bytes, at most 32 entries of ~20-300 KB.
_EMBEDDED: collections.OrderedDict[bytes, tuple[str, tuple[int, int]]] = collections.OrderedDict()
_EMBEDDED_MAX = 32
_embedded_lock = threading.Lock()


def _embed(path: Path) -> tuple[str, tuple[int, int]] | None:
    """The image as a data URL (WebP) and its size, or None when the file is missing or unreadable."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    key = hashlib.blake2b(data, digest_size=16).digest()
    with _embedded_lock:
        if key in _EMBEDDED:
            _EMBEDDED.move_to_end(key)
            return _EMBEDDED[key]
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            image = img.convert("RGB")
    except (OSError, ValueError):
        return None
    dims = image.size
    if image.width > EMBED_MAX_WIDTH:
        h = round(image.height * EMBED_MAX_WIDTH / image.width)
        image = image.resize((EMBED_MAX_WIDTH, h), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="WEBP", quality=EMBED_QUALITY, method=4)
    embedded = "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), dims
    with _embedded_lock:
        _EMBEDDED[key] = embedded
        while len(_EMBEDDED) > _EMBEDDED_MAX:
            _EMBEDDED.popitem(last=False)
    return embedded


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


def _shot(run_dir: Path, name: str, alt: str, marks: str = "") -> str:
    embedded = _embed(run_dir / name)
    if embedded is None:
        return f'<p class="warn">({escape(name)} is missing: the run was cut short before it was written)</p>'
    url, (w, h) = embedded
    return f'<div class="shot"><img src="{url}" width="{w}" height="{h}" alt="{escape(alt)}">{marks}</div>'


def _action_html(a: ActionRecord) -> str:
    where = f" &rarr; screen {escape(str(a.screen_points))}" if a.screen_points else ""
    state = "" if a.executed else " <em>(not executed)</em>"
    err = f' <span class="err">{escape(a.error)}</span>' if a.error else ""
    return f"<li><code>{escape(a.description)}</code>{where}{state}{err}</li>"


def _step_html(run_dir: Path, s: StepRecord) -> str:
    t = s.timing
    acts = "".join(_action_html(a) for a in s.actions)
    errors = "".join(
        f'<p class="err">{escape(label)}: {escape(msg)}</p>'
        for label, msg in (("parse error", s.parse_error), ("error", s.error))
        if msg
    )
    notes = "".join(f'<p class="warn">note: {escape(n)}</p>' for n in s.notes)
    if s.takeover is not None:  # the live view's --view-control: this screenshot shows what they did
        held = s.takeover.ended_at - s.takeover.started_at
        notes += f'<p class="warn">before this step a person held the desktop for {held:.1f} s; the agent waited</p>'
    thinking = (
        f"<details><summary>thinking</summary><pre>{escape(s.thinking)}</pre></details>" if s.thinking else ""
    )
    if len(s.attempts) > 1:
        replies = "".join(
            f"<details><summary>reply {i} of {len(s.attempts)}"
            + (f' <span class="err">({escape(a.error)})</span>' if a.error else "")
            + f"</summary><pre>{escape(a.raw)}</pre></details>"
            for i, a in enumerate(s.attempts, 1)
        )
    else:
        replies = (
            f"<details><summary>raw reply</summary><pre>{escape(s.raw)}</pre></details>" if s.raw else ""
        )
    marks = _marks(s.actions, *s.screenshot_size)
    shot = _shot(run_dir, s.screenshot, f"screenshot of step {s.step}", marks)
    return (
        f'<section class="step" id="step-{s.step}"><h2>Step {s.step}</h2>{shot}'
        f'<p class="thought">{escape(s.thought) or "<em>no thought</em>"}</p>'
        f"<p><b>Action:</b> {escape(s.action_text)}</p><ul>{acts}</ul>{errors}{notes}{thinking}{replies}"
        f'<p class="meta">capture {t.capture_s * 1000:.1f} ms · model {t.model_s:.2f} s · '
        f"execute {t.execute_s * 1000:.1f} ms · settle {t.settle_s * 1000:.0f} ms · "
        f"record {t.record_s * 1000:.1f} ms · tokens {s.tokens_in} in / {s.tokens_out} out</p></section>"
    )


def _verdict(run_dir: Path) -> str:
    """The benchmark's score and the evaluator's reasons, when it scored this run."""
    try:
        v = read_verdict(run_dir)
    except JSONFileError as e:
        return f'<p class="err">score: {escape(str(e))}</p>'
    if v is None:
        return ""
    kind = "" if v.kind == "scored" else f" ({escape(v.kind)})"
    lines = ([v.error] if v.error else []) + [r for r in v.reasons if r != v.error]
    reasons = "".join(f"<li>{escape(r)}</li>" for r in lines)
    return (
        f'<div class="verdict {"pass" if v.score > 0 else "fail"}"><span class="score">score {v.score:g}</span>'
        f"{kind}" + (f"<ul>{reasons}</ul>" if reasons else "") + "</div>"
    )


def _totals(info: RunInfo, steps: list[StepRecord]) -> str:
    duration = info.duration_s
    model_s = sum(s.timing.model_s for s in steps)
    rows = [
        ("stop", f"{info.stop_reason or 'still running, or killed'} · status {info.status or '-'}"),
        ("steps", f"{len(steps)}"),
        ("duration", f"{duration:.1f} s (model {model_s:.1f} s)" if duration is not None else "-"),
        ("tokens", f"{sum(s.tokens_in for s in steps)} in / {sum(s.tokens_out for s in steps)} out"),
        ("parse retries", str(sum(s.retries for s in steps))),
        ("policy", info.policy),
        ("desktop", f"{info.desktop} {info.screen[0]}x{info.screen[1]}"),
    ]
    if info.model:
        rows.append(("model settings", ", ".join(f"{k}={v}" for k, v in info.model.items() if v is not None)))
    if info.answer:
        rows.append(("answer", info.answer))
    if info.kimi_agent:
        rows.append(("kimi-agent", info.kimi_agent.line()))
    body = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
    err = f'<p class="err">error: {escape(info.error)}</p>' if info.error else ""
    return f'<table class="totals">{body}</table>{err}'


def write_report(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    info = read_info(run_dir)
    steps = read_steps(run_dir)
    dry = (
        '<p class="dry">DRY RUN: the actions below were decided and recorded, none was executed.</p>'
        if info.dry_run
        else ""
    )
    final = ""
    if info.final_screenshot:
        final = '<section class="step" id="final"><h2>End state</h2>' + _shot(
            run_dir, info.final_screenshot, "the screen after the last step"
        )
        final += "</section>"
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>kimi-agent: {escape(info.task[:80])}</title><style>{_CSS}</style></head><body>"
        f"<h1>{escape(info.task)}</h1>{dry}{_verdict(run_dir)}{_totals(info, steps)}"
        + "".join(_step_html(run_dir, s) for s in steps)
        + final
        + "</body></html>"
    )
    path = run_dir / "report.html"
    tmp = path.with_name(".report.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
