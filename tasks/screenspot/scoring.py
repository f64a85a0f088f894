"""Scoring, as the official scripts score: pure functions of samples and predictions.

Every scorer works in two steps, so that a live run and an offline re-score share one code path:
``details`` (one record per scored sample, with ``pred``, the target and ``correctness``) and then
``metrics`` computed from those records only, as the official ScreenSpot-Pro script does.

Sources of the rules (facts only; the code here is our own):
- ScreenSpot-Pro: ``eval_screenspot_pro.py`` in likaixin2000/ScreenSpot-Pro-GUI-Grounding (commit bd8bbbb).
- v1/v2: SeeClick's table, per split x ui_type, "Average" = plain mean of the six cells.
- OSWorld-G: the OSWorld-G evaluation as published by its authors (xlang-ai/OSWorld-G, also VLMEvalKit's
  ``osworld_g.py``): bbox [x, y, w, h] borders included; polygon by even-odd ray casting with the
  half-open rule ``(yi > y) != (yj > y) and x < x_cross``; refusal correct iff both coordinates of
  the point are negative; a sample with no classification counts under ``unclassified``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.screenspot.sample import Correctness, DatasetName, Prediction, Sample, Target

Record = dict[str, Any]
Point = tuple[float, float]

# --------------------------------------------------------------------------- geometry and correctness


def in_box(point: Point, box: Sequence[float], tol: float = 0.0) -> bool:
    x, y = point
    return box[0] - tol <= x <= box[2] + tol and box[1] - tol <= y <= box[3] + tol


def in_polygon(point: Point, polygon: Sequence[tuple[float, float]]) -> bool:
    """Even-odd ray casting with the official half-open crossing rule, so a point on an edge counts
    as the official code counts it: for an axis-aligned rectangle, the edges at the smaller x and
    the smaller y are in, those at the larger x and y are out."""
    if not polygon:
        return False
    x, y = point
    inside = False
    for (xi, yi), (xj, yj) in zip(polygon, [polygon[-1], *polygon[:-1]], strict=True):
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
    return inside


def judge(
    target: Target, point: Point | None, size: Sequence[float] | None = None, tol: float = 0.0
) -> Correctness:
    """No point is ``wrong_format``: a miss that stays in the denominator, for every target kind.

    ``size`` (width, height): compare a box in fractions of the image, as the ScreenSpot scripts
    do (box / size against the model's fraction). The point arrives as fraction * size; dividing
    back gives the model's fraction, so a point the model put exactly on an edge stays a hit, where
    comparing pixels loses it by one rounding step for some sizes and edges (5.6% of exact-edge
    points over common screen sizes). OSWorld-G compares pixels: no ``size``."""
    if point is None:
        return "wrong_format"
    if target.kind == "refusal":
        hit = point[0] < 0 and point[1] < 0  # OSWorld-G: a refusal is a point off the screen
    elif target.kind == "polygon":
        hit = in_polygon(point, target.polygon or ())
    elif target.box is None:
        hit = False
    elif size:
        w, h = size
        x1, y1, x2, y2 = target.box
        hit = in_box((point[0] / w, point[1] / h), (x1 / w, y1 / h, x2 / w, y2 / h))
    else:
        hit = in_box(point, target.box, tol)
    return "correct" if hit else "wrong"


def correctness(sample: Sample, prediction: Prediction) -> Correctness:
    if sample.target.kind == "refusal" and prediction.declined:
        return "correct"  # OSWorld-G: the model saw that the element is not there
    # The annotation's size, else the one the runner read (v1/v2 annotations state none).
    size = sample.image_size or prediction.image_size
    if sample.dataset == "osworld-g" or not size or min(size) <= 0:
        size = None
    return judge(sample.target, prediction.point, size)


# --------------------------------------------------------------------------- metric dicts


def metric_dict(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The official ``calc_metric_for_result_list``: six keys, raw floats, 0 for an empty subset."""

    def rate(subset: Sequence[Mapping[str, Any]]) -> float:
        return _count(subset, "correct") / len(subset) if subset else 0

    return {
        "num_correct_action": _count(records, "correct"),
        "num_total": len(records),
        "wrong_format_num": _count(records, "wrong_format"),
        "action_acc": rate(records),
        "text_acc": rate([r for r in records if r.get("ui_type") == "text"]),
        "icon_acc": rate([r for r in records if r.get("ui_type") == "icon"]),
    }


def _count(records: Iterable[Mapping[str, Any]], value: str) -> int:
    return sum(1 for r in records if r.get("correctness") == value)


def _select(records: Sequence[Mapping[str, Any]], **wanted: Any) -> list[Mapping[str, Any]]:
    # Official quirk, kept on purpose: a wanted value of None filters nothing, so the key
    # ``group:None`` holds the metrics of *every* record, not of the records without a group.
    return [r for r in records if all(v is None or r.get(k) == v for k, v in wanted.items())]


def _values(records: Sequence[Mapping[str, Any]], field: str) -> list[Any]:
    # The official script collects a set (its order varies with hash seeds); first appearance
    # keeps the same keys in a stable order.
    return list(dict.fromkeys(r.get(field) for r in records))


def _block(records: Sequence[Mapping[str, Any]], fields: Sequence[str], key: Callable[..., str]) -> dict:
    """All combinations of the fields' values, in the official product order; empty ones left out."""
    combos: list[dict[str, Any]] = [{}] if records else []
    for field in fields:
        combos = [{**c, field: v} for c in combos for v in _values(records, field)]
    block: dict[str, Any] = {}
    for combo in combos:
        subset = _select(records, **combo)
        if subset:
            block[key(**combo)] = metric_dict(subset)
    return block


def pro_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The five blocks of ``eval_screenspot_pro.py``'s ``evaluate``, from details records."""
    # make_combinations walks platform, group, application, language, gt_type, instruction_style,
    # ui_type in that order, whatever order the key string names them in.
    return {
        "fine_grained": _block(
            records,
            ("platform", "application", "gt_type", "instruction_style"),
            lambda platform, application, gt_type, instruction_style: (
                f"plat:{platform} app:{application} inst_style:{instruction_style} gt_type:{gt_type}"
            ),
        ),
        "seeclick_style": _block(
            records,
            ("platform", "gt_type", "instruction_style"),
            lambda platform, gt_type, instruction_style: (
                f"plat:{platform} inst_style:{instruction_style} gt_type:{gt_type}"
            ),
        ),
        "leaderboard_simple_style": _block(records, ("group",), lambda group: f"group:{group}"),
        "leaderboard_detailed_style": _block(
            records, ("application",), lambda application: f"app:{application}"
        ),
        "overall": metric_dict(records),
    }


def _by_field(records: Sequence[Mapping[str, Any]], field: str) -> dict[str, Any]:
    """Plain grouping (a record lands under its own value, None included), for v1/v2 and OSWorld-G."""
    return {str(v): metric_dict([r for r in records if r.get(field) == v]) for v in _values(records, field)}


SPLITS = ("mobile", "desktop", "web")
UI_TYPES = ("text", "icon")


def table_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """SeeClick's v1/v2 table: split x ui_type cells; ``average`` is the plain mean of the cells
    that have samples (all six on a full run), not the pooled rate, which is ``overall``."""
    table = {
        split: {
            ui: metric_dict([r for r in records if r.get("split") == split and r.get("ui_type") == ui])
            for ui in UI_TYPES
        }
        for split in SPLITS
    }
    accs = [cell["action_acc"] for row in table.values() for cell in row.values() if cell["num_total"]]
    return {
        "table": table,
        "average": sum(accs) / len(accs) if accs else 0,
        "cells_averaged": len(accs),
        "overall": metric_dict(records),
        "by_data_source": _by_field(records, "data_source"),
    }


def osworld_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Accuracy over every record (refusals included) and per category; a record counts under each
    of its categories, or under ``unclassified`` when it has none (as the official evaluation)."""
    by_category: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        for category in r.get("categories") or ["unclassified"]:
            by_category.setdefault(str(category), []).append(r)
    return {
        "overall": metric_dict(records),
        "by_category": {c: metric_dict(rs) for c, rs in by_category.items()},
        "by_box_type": _by_field(records, "box_type"),
    }


# --------------------------------------------------------------------------- details records


def _pred(prediction: Prediction) -> list[float] | None:
    return list(prediction.point) if prediction.point is not None else None


def _size_of(sample: Sample, prediction: Prediction) -> list[int] | None:
    size = sample.image_size or prediction.image_size
    return list(size) if size is not None else None


def _prompt(sample: Sample, prediction: Prediction) -> str:
    return (
        sample.instruction_cn if prediction.language == "cn" and sample.instruction_cn else sample.instruction
    )


def pro_details(sample: Sample, prediction: Prediction) -> Record:
    """The official details record (positive ground truth only: our targets always exist)."""
    source_file = sample.source.split("#", 1)[0]
    return {
        "id": sample.id,
        "img_path": str(sample.image),
        "group": sample.group,
        "platform": sample.platform,
        "application": sample.application,
        "lang": prediction.language,
        "instruction_style": sample.record.get("instruction_style", "instruction"),
        "prompt_to_evaluate": _prompt(sample, prediction),
        "gt_type": "positive",
        "ui_type": sample.ui_type,
        "task_filename": sample.record.get("task_filename", Path(source_file).stem),
        "pred": _pred(prediction),
        "raw_response": prediction.raw_response,
        "bbox": sample.record.get("bbox", list(sample.target.box or ())),
        "correctness": correctness(sample, prediction),
    }


def table_details(sample: Sample, prediction: Prediction) -> Record:
    return {
        "id": sample.id,
        "img_path": str(sample.image),
        "split": sample.split,
        "data_source": sample.data_source,
        "ui_type": sample.ui_type,
        "lang": prediction.language,
        "prompt_to_evaluate": _prompt(sample, prediction),
        "pred": _pred(prediction),
        "raw_response": prediction.raw_response,
        "bbox": list(sample.target.box or ()),  # x1, y1, x2, y2 pixels
        "img_size": _size_of(sample, prediction),
        "correctness": correctness(sample, prediction),
    }


def osworld_details(sample: Sample, prediction: Prediction) -> Record:
    t = sample.target
    return {
        "id": sample.id,
        "img_path": str(sample.image),
        "box_type": t.kind,
        "bbox": list(t.box) if t.box is not None else None,  # x1, y1, x2, y2 pixels
        "polygon": [c for p in t.polygon for c in p] if t.polygon is not None else None,  # flat, as OSWorld-G
        "categories": list(sample.categories),
        "ui_type": sample.ui_type,
        "lang": prediction.language,
        "prompt_to_evaluate": _prompt(sample, prediction),
        "pred": _pred(prediction),
        "declined": prediction.declined,
        "raw_response": prediction.raw_response,
        "correctness": correctness(sample, prediction),
    }


# --------------------------------------------------------------------------- targets back from records


class BadRecord(ValueError):
    """A results record that cannot be scored; the message names the field."""


def _number_list(value: Any, field: str, length: int | None = None) -> list[float]:
    if (
        not isinstance(value, list)
        or not all(_finite(v) for v in value)
        or (length is not None and len(value) != length)
    ):
        want = f"{length} numbers" if length else "a list of numbers"
        raise BadRecord(f"{field} must be {want}, got {json.dumps(value)[:80]}")
    return [float(v) for v in value]


def _finite(v: Any) -> bool:
    try:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def _point(record: Mapping[str, Any]) -> Point | None:
    if record.get("pred") is None:
        return None
    x, y = _number_list(record["pred"], "pred", 2)
    return (x, y)


def _box_target(record: Mapping[str, Any]) -> Target:
    if "bbox" not in record:
        raise BadRecord("bbox is missing")
    x1, y1, x2, y2 = _number_list(record["bbox"], "bbox", 4)
    return Target(kind="bbox", box=(x1, y1, x2, y2))


def _osworld_target(record: Mapping[str, Any]) -> Target:
    kind = record.get("box_type")
    if kind == "refusal":
        return Target(kind="refusal")
    if kind == "polygon":
        flat = _number_list(record.get("polygon"), "polygon")
        if len(flat) < 6 or len(flat) % 2:
            raise BadRecord(f"polygon needs an even count of at least 6 numbers, got {len(flat)}")
        return Target(kind="polygon", polygon=tuple(zip(flat[::2], flat[1::2], strict=True)))
    if kind == "bbox":
        return _box_target(record)
    raise BadRecord(f"box_type must be bbox, polygon or refusal, got {kind!r}")


def _osworld_correctness(record: Mapping[str, Any]) -> Correctness:
    target = _osworld_target(record)
    if target.kind == "refusal" and record.get("declined") is True:
        return "correct"
    return judge(target, _point(record))


def _pro_correctness(record: Mapping[str, Any]) -> Correctness:
    if record.get("gt_type", "positive") == "negative":
        # The official verdict for a negative sample comes from the model's "result" field, which
        # the details do not keep: the recorded verdict is the only one there is.
        if record.get("correctness") not in ("correct", "wrong", "wrong_format"):
            raise BadRecord("a negative-ground-truth record needs its recorded correctness")
        return record["correctness"]
    return _judge_box(record)


# Without the image size the fractions cannot be recomputed: a stored pred is fraction * size, so a
# point the model put exactly on an edge can sit one rounding step outside it (x = 123/1920 * 1920
# = 122.99999999999999). Points that close to an edge are on it, as the fraction test has them.
EDGE_TOLERANCE = 1e-9  # pixels per pixel of coordinate; far below any real miss


def _judge_box(record: Mapping[str, Any]) -> Correctness:
    """A bbox record judged as the official script did: in fractions when the record carries its
    ``img_size`` (JSONL variants that keep it, our v1/v2 details), else in pixels with edges widened
    by a rounding step."""
    size = record.get("img_size")
    if size is not None:
        size = _number_list(size, "img_size", 2)
        if min(size) <= 0:
            raise BadRecord(f"img_size must be positive, got {json.dumps(record['img_size'])}")
        return judge(_box_target(record), _point(record), size)
    box = _box_target(record)
    scale = max([1.0, *(abs(v) for v in box.box or ())])
    return judge(box, _point(record), None, tol=EDGE_TOLERANCE * scale)


_HASHABLE = (str, int, float, type(None))


def _check_groups(record: Mapping[str, Any], fields: Sequence[str]) -> None:
    for field in fields:
        if not isinstance(record.get(field), _HASHABLE):
            raise BadRecord(f"{field} must be a string or null, got {json.dumps(record.get(field))[:80]}")


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Scorer:
    details: Callable[[Sample, Prediction], Record]
    metrics: Callable[[Sequence[Mapping[str, Any]]], dict[str, Any]]
    rejudge: Callable[[Mapping[str, Any]], Correctness]  # a details record -> its correctness again
    group_fields: tuple[str, ...]


_PRO = Scorer(
    pro_details,
    pro_metrics,
    _pro_correctness,
    ("platform", "group", "application", "gt_type", "instruction_style", "ui_type"),
)
_TABLE = Scorer(
    table_details,
    table_metrics,
    _judge_box,
    ("split", "ui_type", "data_source"),
)
_OSWORLD = Scorer(osworld_details, osworld_metrics, lambda r: _osworld_correctness(r), ("ui_type",))

SCORERS: dict[str, Scorer] = {
    "screenspot-pro": _PRO,
    "screenspot-v2": _TABLE,
    "screenspot-v1": _TABLE,
    "osworld-g": _OSWORLD,
}


def _scorer(dataset: str) -> Scorer:
    if dataset not in SCORERS:
        raise ValueError(f"no scorer for dataset {dataset!r}; known: {', '.join(SCORERS)}")
    return SCORERS[dataset]


def score(dataset: DatasetName | str, samples: Sequence[Sample], predictions: Iterable[Prediction]) -> dict:
    """The results dict to write as results.json: ``metrics`` and ``details`` as the official
    layout, plus ``not_scored``: samples whose prediction carries an ``error`` (the model could not
    be asked) and samples with no prediction at all. Neither is in any denominator; both are listed
    so a reader sees the run was incomplete. The last prediction for an id wins (a resumed run)."""
    scorer = _scorer(dataset)
    by_id = {p.id: p for p in predictions}
    details: list[Record] = []
    errors: list[dict[str, str]] = []
    missing: list[str] = []
    for sample in samples:
        prediction = by_id.get(sample.id)
        if prediction is None:
            missing.append(sample.id)
        elif prediction.error is not None:
            errors.append({"id": sample.id, "error": prediction.error})
        else:
            details.append(scorer.details(sample, prediction))
    return {
        "dataset": dataset,
        "metrics": scorer.metrics(details),
        "details": details,
        "not_scored": {
            "note": "not in any metric: errors are samples the model could not be asked after retries",
            "num_errors": len(errors),
            "errors": errors,
            "num_missing": len(missing),
            "missing": missing,
        },
    }


# --------------------------------------------------------------------------- re-scoring a file


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:  # a hostile file nests thousands of levels deep
        raise json.JSONDecodeError("nested too deeply to read", text, 0) from None


def _read_records(path: Path) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """(top-level object, [(where, record)]) from a results JSON or a JSONL of details records.
    ``where`` names the record for messages: ``details[3]``, ``[3]`` or ``line 4``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read: {e}") from e
    try:
        top = _loads(text)
    except json.JSONDecodeError:
        top = None  # not one JSON document: JSON lines
    if isinstance(top, dict) and "details" not in top and ("pred" in top or "point" in top):
        return {}, [("line 1", top)]  # JSON lines holding a single record
    if isinstance(top, dict):
        if not isinstance(top.get("details"), list):
            raise ValueError(f"{path}: a results JSON needs a 'details' list")
        return top, [(f"details[{i}]", r) for i, r in enumerate(top["details"])]
    if isinstance(top, list):
        return {}, [(f"record [{i}]", r) for i, r in enumerate(top)]
    if top is not None:
        raise ValueError(f"{path}: a results file holds a JSON object or list, not {type(top).__name__}")
    records: list[tuple[str, Any]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue  # a blank line holds no record
        try:
            records.append((f"line {n}", _loads(line)))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {n} is not JSON ({e.msg}): {line.strip()[:60]}") from None
    return {}, records


CORRECTNESS = ("correct", "wrong", "wrong_format")


def _verdicts(scorer: Scorer, record: Any) -> tuple[Correctness | None, Correctness]:
    """(the stored verdict or None, the verdict a re-judgement of the point gives); BadRecord for
    a record that is not a results record."""
    if not isinstance(record, dict):
        raise BadRecord(f"a record must be a JSON object, got {type(record).__name__}")
    if "pred" not in record:
        # The official layouts always write pred (null when no point was read): without it the
        # record is not a result, and counting it as wrong_format would score garbage.
        raise BadRecord("no 'pred' (the predicted point in pixels, or null)")
    stored = record.get("correctness")
    if stored is not None and stored not in CORRECTNESS:
        raise BadRecord(f"correctness must be one of {', '.join(CORRECTNESS)}, got {json.dumps(stored)[:40]}")
    _check_groups(record, scorer.group_fields)
    return stored, scorer.rejudge(record)


def rescore_file(path: str | Path, *, rejudge: bool = False) -> dict:
    """The metrics of a results file, exactly as the official metrics step computes them from its
    details: each record counts its stored ``correctness``, as the official step does. Reads our
    results.json (its ``dataset`` picks the scorer) or an official ScreenSpot-Pro results JSON /
    JSONL (extra fields are kept).

    Every record is also judged again from ``pred`` and its target; ``changed`` lists those whose
    stored verdict differs. They are real: a pipeline that stores ``pred`` as whole pixels puts a
    point the official script judged unrounded (and outside) exactly on a box edge. ``rejudge``
    counts the new verdicts instead. A record without a stored verdict always counts the new one.

    A file that is not a results file, or holds a bad record, is a ValueError naming the file and
    the first bad record: a score over the records that happen to read is not the file's score."""
    path = Path(path)
    top, raw = _read_records(path)
    if not raw:
        raise ValueError(f"{path}: no results records (neither a results JSON nor JSON lines)")
    first = next((r for _, r in raw if isinstance(r, dict)), {})
    if "point" in first and "pred" not in first:
        raise ValueError(
            f"{path} is a run's prediction log, which holds no targets: re-score the results.json "
            "the run wrote next to it"
        )
    dataset = str(top.get("dataset") or _guess_dataset([r for _, r in raw]))
    scorer = _scorer(dataset)
    details: list[Record] = []
    changed: list[dict[str, Any]] = []
    bad: list[str] = []
    stored_count = 0
    for index, (where, record) in enumerate(raw):
        try:
            stored, verdict = _verdicts(scorer, record)
        except BadRecord as e:
            rid = _id(record)
            bad.append(f"{where}{'' if rid is None else f' (id {rid})'}: {e}")
            continue
        if stored is not None:
            stored_count += 1
            if stored != verdict:
                changed.append(
                    {"index": index, "where": where, "id": record.get("id"), "was": stored, "now": verdict}
                )
        counted = verdict if rejudge or stored is None else stored
        details.append({**record, "correctness": counted})
    if bad:
        more = f" ({len(bad)} of {len(raw)} records are bad)" if len(bad) > 1 else ""
        raise ValueError(f"{path}: {bad[0]}{more}")
    result = {
        "dataset": dataset,
        "metrics": scorer.metrics(details),
        "details": details,
        "rescored_from": str(path),
        # What each record counted: its stored verdict (as the official metrics step), or the
        # verdict judged again from pred (--rejudge, and records that store none).
        "counted": "rejudged" if rejudge else "stored",
        "stored_verdicts": stored_count,
        "changed": changed,
    }
    if "not_scored" in top:
        result["not_scored"] = top["not_scored"]
    return result


def _guess_dataset(records: Sequence[Any]) -> str:
    """Records without our ``dataset`` label: our OSWorld-G and v1/v2 details carry ``box_type`` and
    ``split``; anything else is read as the official ScreenSpot-Pro layout."""
    first = next((r for r in records if isinstance(r, dict)), {})
    if "box_type" in first:
        return "osworld-g"
    return "screenspot-v2" if "split" in first else "screenspot-pro"


def _id(record: Any) -> Any:
    return record.get("id") if isinstance(record, dict) else None
