"""What a run scored, for people: a rich table in the terminal and a self-contained report.html
(accuracy bars as inline SVG, and a gallery of misses: the crop around the target with the box and
the predicted point drawn, embedded as WebP)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw
from rich.table import Table

from tasks.screenspot.sample import Correctness, Prediction, Sample

# Published figures by the model profile, dataset and variant that a run served: a run is shown beside
# its own model's figure only. Kimi-VL's: its model cards (shared/docs/screenspot.md). Kimi K2.5 / K2.6:
# none gathered with a source (/work/wt/i21-facts.md), so none is shown.
PUBLISHED: dict[tuple[str, str, str], float] = {
    ("kimi-vl", "screenspot-pro", "instruct"): 34.5,
    ("kimi-vl", "screenspot-pro", "thinking-2506"): 52.8,
    ("kimi-vl", "screenspot-v2", "instruct"): 92.8,
    ("kimi-vl", "screenspot-v2", "thinking-2506"): 91.4,
    ("kimi-vl", "osworld-g", "instruct"): 41.6,
    ("kimi-vl", "osworld-g", "thinking-2506"): 52.5,
    # UI-TARS-1.5-7B: bytedance/UI-TARS README.md @ 582f3a7ea5d285ee8ed9e2e84048d1ab01453c49 (model-scale table)
    ("ui-tars-1.5", "screenspot-pro", "7b"): 49.6,
}
# How many samples those figures are over: the whole test set (shared/docs/screenspot.md). A run
# over fewer (a subset downloaded, records skipped, samples not answered) is not comparable.
PUBLISHED_SAMPLES: dict[str, int] = {"screenspot-pro": 1581, "screenspot-v2": 1272, "osworld-g": 564}
BREAKDOWNS = ("group", "platform", "ui_type", "split", "data_source", "application", "categories")
CROP = 560  # side of a gallery crop around the target, in original pixels (at least)
THUMB = 420  # side of a gallery image as embedded
Outcome = str  # a Correctness, or "error" (the model could not be asked)


def published(dataset: str, variant: str, profile: str = "kimi-vl") -> float | None:
    return PUBLISHED.get((profile, dataset, variant))


def covers_published_set(results: Mapping[str, Any]) -> bool:
    """Whether the results score every sample the published figure is over: the set's full count
    scored, none skipped, none left unanswered."""
    want = PUBLISHED_SAMPLES.get(str(results.get("dataset")))
    scored = results.get("metrics", {}).get("overall", {}).get("num_total")
    not_scored = results.get("not_scored", {})
    return (
        want is not None
        and scored == want
        and not results.get("skipped", {}).get("count")
        and not not_scored.get("num_errors")
        and not not_scored.get("num_missing")
    )


# --- the terminal table ---------------------------------------------------------------------------------


def metrics_table(results: Mapping[str, Any], published: float | None = None, who: str = "Kimi-VL") -> Table:
    """Accuracy per block of the results, ours beside the published figure on the headline row."""
    t = Table(title="grounding accuracy", title_justify="left")
    for name, kw in (("", {}), ("n", {"justify": "right"}), ("text", {"justify": "right"}),
                     ("icon", {"justify": "right"}), ("all", {"justify": "right"})):  # fmt: skip
        t.add_column(name, **kw)
    if published is not None:
        t.add_column(f"{who} (published)", justify="right")
    details = results.get("details") or []
    quirk = False
    for label, m, head in rows(results):
        text_n, icon_n = _ui_counts(details, label)
        if label.endswith(":None"):
            label, quirk = label + " *", True
        cells = [label, str(m.get("num_total", "")),
                 _pct(m.get("text_acc")) if text_n else "-", _pct(m.get("icon_acc")) if icon_n else "-",
                 _pct(m.get("action_acc"))]  # fmt: skip
        if published is not None:
            cells.append(f"{published:.1f}" if head else "")
        t.add_row(*cells, style="bold" if head else None)
    if quirk:
        t.caption = "* as in the official script, a None value filters nothing: the row covers every sample"
        t.caption_justify = "left"
    return t


_KEY_FIELDS = {"plat": "platform", "app": "application", "group": "group"}


def _ui_counts(details: Sequence[Mapping[str, Any]], label: str) -> tuple[int, int]:
    """How many text and icon samples a row covers ("-" instead of an accuracy over none). Rows
    without details to count (v1/v2 cells keep their own) are taken as having both."""
    if not details:
        return 1, 1
    chosen = list(details)
    for token in label.split():
        key, _, value = token.partition(":")
        field = _KEY_FIELDS.get(key)
        if field is None or value == "None":  # not a field filter, or the official no-op filter
            continue
        chosen = [d for d in chosen if str(d.get(field)) == value]
    if "split" in details[0]:  # v1/v2: a row named after a split
        in_split = [d for d in chosen if d.get("split") == label]
        chosen = in_split or chosen
    return sum(d.get("ui_type") == "text" for d in chosen), sum(d.get("ui_type") == "icon" for d in chosen)


def rows(results: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any], bool]]:
    """(label, metrics dict, is the headline) to show, headline first: v1/v2 the plain mean of the
    six cells (as SeeClick reports) then each split; otherwise the overall, then the groups /
    platforms (ScreenSpot-Pro) or categories (OSWorld-G)."""
    m = results.get("metrics", {})
    if "table" in m:
        out: list[tuple[str, Mapping[str, Any], bool]] = [
            (
                "average of the cells",
                {"num_total": m["overall"]["num_total"], "action_acc": m["average"]},
                True,
            )
        ]
        for split, cells in m["table"].items():
            n = sum(c["num_total"] for c in cells.values())
            hits = sum(c["num_correct_action"] for c in cells.values())
            accs = {f"{ui}_acc": c["action_acc"] for ui, c in cells.items() if c["num_total"]}
            out.append((split, {"num_total": n, **accs, "action_acc": hits / n if n else 0}, False))
        return [*out, ("overall (pooled)", m["overall"], False)]
    out = [("overall", m["overall"], True)] if "overall" in m else []
    for block in ("leaderboard_simple_style", "seeclick_style", "by_category"):
        # seeclick_style keys also name inst_style and gt_type, the same on every row: the platform says it
        out += [(_short(block, key), v, False) for key, v in m.get(block, {}).items()]
    return out


def _short(block: str, key: str) -> str:
    return key.split(" inst_style:")[0] if block == "seeclick_style" else key


def headline(results: Mapping[str, Any]) -> float | None:
    """The figure a paper quotes for these results, in percent."""
    found = rows(results)
    return 100 * found[0][1]["action_acc"] if found and found[0][2] else None


def verdicts_line(results: Mapping[str, Any]) -> str:
    """What a re-scored file's records counted, and how many a re-judgement changes (score)."""
    n, stored = len(results.get("details") or []), results.get("stored_verdicts", 0)
    changed = results.get("changed") or []
    if not stored:
        return f"no record stores a verdict: all {n} were judged from their pred and target"
    unstored = f"; {n - stored} records store none and were judged from their pred" if stored < n else ""
    if results.get("counted") == "rejudged":
        return (
            f"counted verdicts judged again from each pred (--rejudge): {len(changed)} of {stored} "
            f"differ from the verdict the file stores{unstored}"
        )
    if not changed:
        return f"counted the {stored} stored verdicts; judging every point again agrees with all of them{unstored}"
    c = changed[0]
    return (
        f"counted the {stored} stored verdicts, as the official metrics step does; judging the points again "
        f"would change {len(changed)} of them (first: {c['where']} {c['was']} -> {c['now']}); --rejudge "
        f"counts the new verdicts{unstored}"
    )


def _pct(v: Any) -> str:
    return f"{100 * v:.1f}" if isinstance(v, (int, float)) else ""


# --- report.html ----------------------------------------------------------------------------------------


def outcomes(
    samples: Sequence[Sample],
    predictions: Mapping[str, Prediction],
    correctness: Callable[[Sample, Prediction], Correctness],
) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    for s in samples:
        p = predictions.get(s.id)
        if p is not None:
            out[s.id] = "error" if p.error is not None else correctness(s, p)
    return out


def breakdown(
    samples: Iterable[Sample], result: Mapping[str, Outcome], key: str
) -> dict[str, tuple[int, int]]:
    """value -> (correct, scored) for one grouping field; errors are not scored."""
    out: dict[str, tuple[int, int]] = {}
    for s in samples:
        r = result.get(s.id)
        if r is None or r == "error":
            continue
        raw = getattr(s, key)
        if key == "categories" and not raw:
            raw = ("unclassified",)  # as OSWorld-G's evaluation counts an item no category lists
        for v in raw if isinstance(raw, tuple) else (raw,):
            hit, n = out.get(str(v), (0, 0))
            out[str(v)] = (hit + (r == "correct"), n + 1)
    return out


def bars_svg(title: str, data: Mapping[str, tuple[int, int]], reference: float | None = None) -> str:
    """Horizontal accuracy bars, one per value, with the percentage and counts written beside."""
    label_w, bar_w, row_h = 170, 360, 22
    h = 28 + row_h * len(data)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 140}" height="{h}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="0" y="16" class="t">{html.escape(title)}</text>',
    ]
    for i, (name, (hit, n)) in enumerate(sorted(data.items(), key=lambda kv: -kv[1][0] / max(kv[1][1], 1))):
        y = 26 + i * row_h
        acc = hit / n if n else 0.0
        parts += [
            f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end">{html.escape(name[:26])}</text>',
            f'<rect x="{label_w}" y="{y + 3}" width="{bar_w}" height="{row_h - 6}" class="bg"/>',
            f'<rect x="{label_w}" y="{y + 3}" width="{bar_w * acc:.1f}" height="{row_h - 6}" class="fg"/>',
            f'<text x="{label_w + bar_w + 6}" y="{y + 14}">{100 * acc:.1f}% ({hit}/{n})</text>',
        ]
    if reference is not None:
        x = label_w + bar_w * reference / 100
        parts.append(f'<line x1="{x:.1f}" y1="22" x2="{x:.1f}" y2="{h}" class="ref"/>')
    parts.append("</svg>")
    return "".join(parts)


def miss_image(sample: Sample, point: tuple[float, float] | None) -> tuple[str, str]:
    """(WebP data URL of the crop around the target with the box and the point drawn, a note)."""
    with Image.open(sample.image) as im:
        im.load()
        image = im.convert("RGB")
    W, H = image.size
    box = _target_box(sample, W, H)
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = max(CROP, (x2 - x1) * 2.5, (y2 - y1) * 2.5)
    note = ""
    if point is not None:  # widen the crop to hold the point too, when it is not far
        far = max(abs(point[0] - cx), abs(point[1] - cy)) * 2 + 60
        if far <= max(side, 1400):
            side = max(side, far)
        else:
            note = f"predicted point ({point[0]:.0f}, {point[1]:.0f}) lies outside this crop"
    left = min(max(cx - side / 2, 0), max(W - side, 0))
    top = min(max(cy - side / 2, 0), max(H - side, 0))
    crop = image.crop((int(left), int(top), int(min(left + side, W)), int(min(top + side, H))))
    scale = min(THUMB / crop.width, THUMB / crop.height, 2.0)
    crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))))

    def at(x: float, y: float) -> tuple[float, float]:
        return (x - int(left)) * scale, (y - int(top)) * scale

    d = ImageDraw.Draw(crop)
    if sample.target.kind == "polygon" and sample.target.polygon:
        d.polygon([at(*v) for v in sample.target.polygon], outline=(0, 200, 0), width=2)
    elif sample.target.kind == "bbox":
        d.rectangle((*at(x1, y1), *at(x2, y2)), outline=(0, 200, 0), width=2)
    if point is not None and not note:
        px, py = at(*point)
        for r, colour in ((7, (255, 255, 255)), (5, (230, 0, 0))):
            d.line((px - r, py, px + r, py), fill=colour, width=3)
            d.line((px, py - r, px, py + r), fill=colour, width=3)
    buf = io.BytesIO()
    crop.save(buf, format="WEBP", quality=80)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), note


def _target_box(sample: Sample, W: int, H: int) -> tuple[float, float, float, float]:
    t = sample.target
    if t.kind == "bbox" and t.box:
        return t.box
    if t.kind == "polygon" and t.polygon:
        xs, ys = [v[0] for v in t.polygon], [v[1] for v in t.polygon]
        return min(xs), min(ys), max(xs), max(ys)
    return 0.0, 0.0, float(W), float(H)  # refusal: the whole screen


def write_html(
    path: Path,
    samples: Sequence[Sample],
    predictions: Mapping[str, Prediction],
    correctness: Callable[[Sample, Prediction], Correctness],
    *,
    results: Mapping[str, Any],
    title: str,
    published: float | None = None,
    max_misses: int = 60,
    who: str = "Kimi-VL",
) -> Path:
    result = outcomes(samples, predictions, correctness)
    scored = [r for r in result.values() if r != "error"]
    ours = headline(results)
    head = f"{ours:.1f}%" if ours is not None else "no score"
    head += f" over {len(scored)} samples scored"
    if len(scored) < len(result):
        head += f" ({len(result) - len(scored)} could not be asked: errors, not scored)"
    if published is not None:
        head += f" · {who} published: {published:.1f}%"
    charts = [
        bars_svg(f"accuracy by {key}", data, published)
        for key in BREAKDOWNS
        if (data := breakdown(samples, result, key)) and (len(data) > 1 or "None" not in data)
    ]
    missed = [s for s in samples if result.get(s.id) in ("wrong", "wrong_format")]
    # Evenly over the run, not the first file's: a Pro run misses hundreds, in annotation-file order.
    step = max(len(missed) / max_misses, 1) if max_misses > 0 else 1
    misses = [missed[int(i * step)] for i in range(min(len(missed), max(max_misses, 0)))]
    cards = [_miss_card(s, predictions[s.id], result[s.id]) for s in misses]
    page = _PAGE.format(
        title=html.escape(title),
        head=html.escape(head),
        charts="\n".join(charts) or "<p>No grouping fields in this dataset.</p>",
        shown=len(cards),
        missed=len(missed),
        cards="\n".join(cards),
        legend=" Dashed red line: the published figure." if published is not None else "",
    )
    path.write_text(page, encoding="utf-8")
    return path


def _miss_card(s: Sample, p: Prediction, outcome: Outcome) -> str:
    try:
        src, note = miss_image(s, p.point)
        img = f'<img src="{src}" alt="crop around the target of {html.escape(s.id)}">'
    except (OSError, ValueError) as e:
        img, note = "", f"image not shown: {e}"
    where = "no point" if p.point is None else f"({p.point[0]:.0f}, {p.point[1]:.0f})"
    reply = html.escape(p.raw_response[-400:])
    return (
        f'<figure class="{outcome}">{img}<figcaption><b>{html.escape(s.instruction)}</b><br>'
        f"{html.escape(s.id)} · {outcome} · predicted {where}"
        f"{'<br><i>' + html.escape(note) + '</i>' if note else ''}"
        f"<details><summary>reply</summary><pre>{reply}</pre></details></figcaption></figure>"
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 12px 32px; margin: 16px 0; }}
svg text {{ font: 12px system-ui, sans-serif; fill: #222; }}
svg text.t {{ font-weight: 600; font-size: 13px; }}
svg .bg {{ fill: #eee; }} svg .fg {{ fill: #3b7dd8; }}
svg .ref {{ stroke: #d83b3b; stroke-width: 2; stroke-dasharray: 4 3; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; width: 420px; border: 1px solid #ddd; border-radius: 6px; overflow: hidden; }}
figure img {{ display: block; width: 100%; background: #f4f4f4; }}
figcaption {{ padding: 6px 8px; font-size: 12px; word-break: break-word; }}
figure.wrong_format {{ border-color: #e0a000; }}
pre {{ white-space: pre-wrap; font-size: 11px; }}
</style></head><body>
<h1>{title}</h1><p>{head}.{legend} Box green, predicted point red.</p>
<div class="charts">{charts}</div>
<h2>Misses ({shown} of {missed} shown)</h2>
<div class="gallery">{cards}</div>
</body></html>
"""
