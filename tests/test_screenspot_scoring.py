"""Scoring as the official scripts score, checked against metrics worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tasks.screenspot.sample import Prediction, Sample, Target
from tasks.screenspot.scoring import (
    correctness,
    in_polygon,
    judge,
    pro_metrics,
    rescore_file,
    score,
)

BOX = Target(kind="bbox", box=(10, 20, 30, 40))


def _sample(id: str, target: Target = BOX, dataset: str = "screenspot-pro", **fields: Any) -> Sample:
    return Sample(
        dataset=dataset,
        id=id,
        source=f"annotations/{fields.pop('task', 'app_os')}.json#{id}",
        image=Path(f"images/{id}.png"),
        instruction=f"click {id}",
        target=target,
        **fields,
    )


def _pred(id: str, point: tuple[float, float] | None, **fields: Any) -> Prediction:
    return Prediction(id=id, point=point, raw_response=f"reply {id}", **fields)


def _metrics(correct: int, total: int, wrong_format: int, action: float, text: float, icon: float) -> dict:
    return {
        "num_correct_action": correct,
        "num_total": total,
        "wrong_format_num": wrong_format,
        "action_acc": action,
        "text_acc": text,
        "icon_acc": icon,
    }


# --------------------------------------------------------------------------- correctness


@pytest.mark.parametrize(
    "point", [(10, 20), (30, 40), (10, 40), (30, 20), (20, 20), (20, 40), (10, 30), (30, 30), (20, 30)]
)
def test_points_on_the_border_or_inside_are_hits(point: tuple[float, float]) -> None:
    assert judge(BOX, point) == "correct"


@pytest.mark.parametrize("point", [(9.999, 30), (30.001, 30), (20, 19.999), (20, 40.001), (-1, -1)])
def test_points_just_outside_are_misses(point: tuple[float, float]) -> None:
    assert judge(BOX, point) == "wrong"


def test_no_point_is_wrong_format_for_every_target_kind() -> None:
    triangle = Target(kind="polygon", polygon=((0, 0), (10, 0), (0, 10)))
    for target in (BOX, triangle, Target(kind="refusal")):
        assert correctness(_sample("a", target), _pred("a", None)) == "wrong_format"


def test_an_exact_edge_point_is_judged_in_fractions_as_the_official_script() -> None:
    # The model says x = 31/3840, exactly the box's right edge; the runner maps it to pixels as
    # 31/3840 * 3840 = 31.000000000000004. The official script compares fractions: a hit.
    fraction = 31 / 3840
    pixel = fraction * 3840
    assert pixel > 31  # the rounding step a pixel comparison trips on
    box = Target(kind="bbox", box=(20, 10, 31, 40))
    sample = _sample("a", box, image_size=(3840, 2160))
    assert correctness(sample, _pred("a", (pixel, 20.0))) == "correct"
    assert judge(box, (pixel, 20.0)) == "wrong"  # without the size, pixels are all there is
    unknown = _sample("b", box, image_size=(0, 0))  # a size that cannot be divided by: pixels
    assert correctness(unknown, _pred("b", (31.0, 20.0))) == "correct"


def test_every_exact_edge_fraction_agrees_with_the_official_rule() -> None:
    misses = []
    for w, h in ((3840, 2160), (1920, 1080), (3456, 2234), (2560, 1440), (6016, 3384)):
        for x in range(1, w, 7):
            box = Target(kind="bbox", box=(0, 0, x, h // 2))
            if judge(box, (x / w * w, h / 4), (w, h)) != "correct":
                misses.append((w, x))
    assert misses == []


def test_osworld_compares_pixels_as_its_evaluation_does() -> None:
    box = Target(kind="bbox", box=(20, 10, 31, 40))
    sample = _sample("a", box, dataset="osworld-g", image_size=(3840, 2160))
    assert correctness(sample, _pred("a", (31 / 3840 * 3840, 20.0))) == "wrong"


def test_convex_polygon() -> None:
    triangle = Target(kind="polygon", polygon=((0, 0), (100, 0), (0, 100)))
    assert judge(triangle, (10, 10)) == "correct"
    assert judge(triangle, (49, 49)) == "correct"
    assert judge(triangle, (51, 51)) == "wrong"  # past the hypotenuse, inside its bounding box
    assert judge(triangle, (-1, 10)) == "wrong"


def test_concave_polygon_notch_is_outside() -> None:
    # A U: two arms (x 0..10 and 20..30, y 0..30) joined by a base at y 20..30.
    u = Target(
        kind="polygon",
        polygon=((0, 0), (10, 0), (10, 20), (20, 20), (20, 0), (30, 0), (30, 30), (0, 30)),
    )
    assert judge(u, (5, 5)) == "correct"  # left arm
    assert judge(u, (25, 5)) == "correct"  # right arm
    assert judge(u, (15, 25)) == "correct"  # base
    assert judge(u, (15, 5)) == "wrong"  # the notch, inside the bounding box
    assert judge(u, (15, 19.5)) == "wrong"


def test_polygon_edges_follow_the_official_half_open_rule() -> None:
    square = ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0))
    assert in_polygon((0, 5), square) and in_polygon((5, 0), square)  # smaller-x / smaller-y edges
    assert not in_polygon((10, 5), square) and not in_polygon((5, 10), square)  # larger ones


def test_refusal_is_correct_only_for_a_point_off_screen() -> None:
    refusal = Target(kind="refusal")
    assert judge(refusal, (-1, -1)) == "correct"
    assert judge(refusal, (-1, 5)) == "wrong"
    assert judge(refusal, (0, 0)) == "wrong"
    assert judge(refusal, (500, 300)) == "wrong"


# --------------------------------------------------------------------------- ScreenSpot-Pro blocks

WINDOWS = _metrics(1, 2, 0, 0.5, 1.0, 0.0)  # a (text, border hit) + b (icon, miss)
MACOS = _metrics(1, 2, 1, 0.5, 0.0, 1.0)  # c (text, no point) + d (icon, border hit)
DEV = _metrics(0, 1, 1, 0.0, 0.0, 0)  # c only; no icon -> 0
OVERALL = _metrics(2, 4, 1, 0.5, 0.5, 0.5)

EXPECTED_PRO = {
    "fine_grained": {
        "plat:windows app:photoshop inst_style:instruction gt_type:positive": WINDOWS,
        "plat:macos app:vscode inst_style:instruction gt_type:positive": MACOS,
    },
    "seeclick_style": {
        "plat:windows inst_style:instruction gt_type:positive": WINDOWS,
        "plat:macos inst_style:instruction gt_type:positive": MACOS,
    },
    # The official filter treats None as "no filter": group:None covers every record.
    "leaderboard_simple_style": {"group:Creative": WINDOWS, "group:Dev": DEV, "group:None": OVERALL},
    "leaderboard_detailed_style": {"app:photoshop": WINDOWS, "app:vscode": MACOS},
    "overall": OVERALL,
}


def _pro_run() -> tuple[list[Sample], list[Prediction]]:
    win = {
        "platform": "windows",
        "application": "photoshop",
        "group": "Creative",
        "task": "photoshop_windows",
    }
    mac = {"platform": "macos", "application": "vscode", "task": "vscode_macos"}
    samples = [
        _sample("a", Target(kind="bbox", box=(0, 0, 10, 10)), ui_type="text", **win),
        _sample("b", Target(kind="bbox", box=(0, 0, 10, 10)), ui_type="icon", **win),
        _sample("c", ui_type="text", group="Dev", **mac),
        _sample("d", Target(kind="bbox", box=(100, 100, 200, 150)), ui_type="icon", **mac),
    ]
    predictions = [_pred("a", (10, 10)), _pred("b", (11, 5)), _pred("c", None), _pred("d", (100, 150))]
    return samples, predictions


def test_pro_blocks_equal_the_hand_computed_ones() -> None:
    results = score("screenspot-pro", *_pro_run())
    assert results["metrics"] == EXPECTED_PRO
    assert [d["correctness"] for d in results["details"]] == ["correct", "wrong", "wrong_format", "correct"]


def test_pro_details_records_have_the_official_fields() -> None:
    results = score("screenspot-pro", *_pro_run())
    official = {"img_path", "group", "platform", "application", "lang", "instruction_style"}
    official |= {"prompt_to_evaluate", "gt_type", "ui_type", "task_filename", "pred", "raw_response"}
    official |= {"bbox", "correctness", "id"}  # the official record, plus the id the issue allows
    for record in results["details"]:
        assert set(record) == official
    d = results["details"][3]
    assert d["group"] is None and d["task_filename"] == "vscode_macos" and d["gt_type"] == "positive"
    assert d["pred"] == [100, 150] and d["bbox"] == [100, 100, 200, 150] and d["lang"] == "en"


def test_cn_language_evaluates_the_chinese_instruction() -> None:
    sample = _sample("a", instruction_cn="点击", platform="linux", application="gimp", ui_type="icon")
    details = score("screenspot-pro", [sample], [_pred("a", (20, 30), language="cn")])["details"]
    assert details[0]["prompt_to_evaluate"] == "点击" and details[0]["lang"] == "cn"


def test_empty_results_give_empty_blocks_and_zero_overall() -> None:
    metrics = pro_metrics([])
    assert metrics["fine_grained"] == {} and metrics["leaderboard_simple_style"] == {}
    assert metrics["overall"] == _metrics(0, 0, 0, 0, 0, 0)


def test_errors_and_missing_samples_are_reported_not_scored() -> None:
    samples, predictions = _pro_run()
    predictions[1] = _pred("b", None, error="HTTP 503 after 5 tries")
    del predictions[2]
    results = score("screenspot-pro", samples, predictions)
    assert results["metrics"]["overall"] == _metrics(2, 2, 0, 1.0, 1.0, 1.0)
    assert results["not_scored"]["errors"] == [{"id": "b", "error": "HTTP 503 after 5 tries"}]
    assert results["not_scored"]["missing"] == ["c"]
    assert results["not_scored"]["num_errors"] == 1 and results["not_scored"]["num_missing"] == 1


def test_a_resumed_run_scores_the_last_prediction_for_an_id() -> None:
    samples, predictions = _pro_run()
    predictions.insert(0, _pred("b", None, error="timeout"))  # the first attempt, before resuming
    results = score("screenspot-pro", samples, predictions)
    assert results["metrics"] == EXPECTED_PRO and results["not_scored"]["num_errors"] == 0


def test_unknown_dataset_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no scorer for dataset 'screenspot-9'"):
        score("screenspot-9", [], [])


# --------------------------------------------------------------------------- v1 / v2 table


def test_v2_table_average_is_the_plain_mean_of_six_cells() -> None:
    outcomes = {  # (split, ui_type): points, against BOX
        ("mobile", "text"): [(20, 30), (10, 20)],  # 2/2
        ("mobile", "icon"): [(0, 0)],  # 0/1
        ("desktop", "text"): [(20, 30), None],  # 1/2, one wrong_format
        ("desktop", "icon"): [(30, 40)],  # 1/1
        ("web", "text"): [(20, 30), (0, 0), (0, 0), (0, 0)],  # 1/4
        ("web", "icon"): [(50, 50)],  # 0/1
    }
    samples, predictions = [], []
    for (split, ui), points in outcomes.items():
        for i, point in enumerate(points):
            sid = f"{split}-{ui}-{i}"
            source = "ios" if split == "mobile" else "windows" if split == "desktop" else "shop"
            samples.append(_sample(sid, dataset="screenspot-v2", split=split, ui_type=ui, data_source=source))
            predictions.append(_pred(sid, point))
    metrics = score("screenspot-v2", samples, predictions)["metrics"]
    cells = {(s, u): metrics["table"][s][u]["action_acc"] for s in metrics["table"] for u in ("text", "icon")}
    assert cells == {
        ("mobile", "text"): 1.0,
        ("mobile", "icon"): 0.0,
        ("desktop", "text"): 0.5,
        ("desktop", "icon"): 1.0,
        ("web", "text"): 0.25,
        ("web", "icon"): 0.0,
    }
    assert metrics["average"] == pytest.approx(2.75 / 6) and metrics["cells_averaged"] == 6
    assert metrics["overall"]["action_acc"] == 5 / 11  # the pooled rate, not the table average
    assert metrics["overall"]["wrong_format_num"] == 1
    assert metrics["by_data_source"]["shop"]["num_total"] == 5


# --------------------------------------------------------------------------- OSWorld-G


def _osworld_run() -> tuple[list[Sample], list[Prediction]]:
    tri = Target(kind="polygon", polygon=((0, 0), (100, 0), (0, 100)))
    refusal = Target(kind="refusal")
    rows = [  # id, target, categories, point
        ("1", BOX, ("text_matching",), (10, 20)),  # border hit
        ("2", tri, ("element_recognition", "layout_understanding"), (10, 10)),  # hit
        ("3", tri, ("element_recognition",), (60, 60)),  # past the hypotenuse
        ("4", refusal, ("text_matching",), (-1, -1)),  # refused: correct
        ("5", refusal, (), (300, 200)),  # pointed at something: wrong, unclassified
        ("6", BOX, ("fine_manipulation",), None),  # wrong_format
    ]
    samples = [_sample(i, t, dataset="osworld-g", categories=c) for i, t, c, _ in rows]
    return samples, [_pred(i, p) for i, _, _, p in rows]


def test_osworld_accuracy_overall_and_per_category_with_refusals() -> None:
    metrics = score("osworld-g", *_osworld_run())["metrics"]
    assert metrics["overall"]["num_correct_action"] == 3 and metrics["overall"]["num_total"] == 6
    assert metrics["overall"]["action_acc"] == 0.5 and metrics["overall"]["wrong_format_num"] == 1
    acc = {c: (m["num_correct_action"], m["num_total"]) for c, m in metrics["by_category"].items()}
    assert acc == {
        "text_matching": (2, 2),
        "element_recognition": (1, 2),
        "layout_understanding": (1, 1),
        "unclassified": (0, 1),
        "fine_manipulation": (0, 1),
    }
    types = {t: (m["num_correct_action"], m["num_total"]) for t, m in metrics["by_box_type"].items()}
    assert types == {"bbox": (1, 2), "polygon": (1, 2), "refusal": (1, 2)}


# --------------------------------------------------------------------------- re-scoring files


def _official_details() -> list[dict]:
    """Details as the official script writes them (no id, as before its May 2025 change), with a
    negative-ground-truth record whose verdict only the recorded correctness holds."""
    base = {"lang": "en", "instruction_style": "instruction", "gt_type": "positive", "raw_response": "r"}
    win = {"platform": "windows", "application": "photoshop", "group": "Creative"}
    mac = {"platform": "macos", "application": "vscode"}
    return [
        {
            **base,
            **win,
            "ui_type": "text",
            "pred": [10, 10],
            "bbox": [0, 0, 10, 10],
            "correctness": "correct",
        },
        {**base, **win, "ui_type": "icon", "pred": [11, 5], "bbox": [0, 0, 10, 10], "correctness": "wrong"},
        {
            **base,
            **mac,
            "group": "Dev",
            "ui_type": "text",
            "pred": None,
            "bbox": [1, 1, 5, 5],
            "correctness": "wrong_format",
        },
        # Recorded as wrong, yet exactly on the corner: re-scoring says correct.
        {
            **base,
            **mac,
            "group": None,
            "ui_type": "icon",
            "pred": [100.0, 150.0],
            "bbox": [100, 100, 200, 150],
            "correctness": "wrong",
        },
    ]


def test_rescoring_an_official_json_counts_its_stored_verdicts_and_lists_what_rejudging_changes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "official.json"
    path.write_text(json.dumps({"details": _official_details(), "metrics": {"overall": {}}}, indent=4))
    results = rescore_file(path)
    # The stored "wrong" of the corner point counts, as the official metrics step counts it.
    assert results["metrics"]["overall"] == _metrics(1, 4, 1, 0.25, 0.5, 0.0)
    assert results["counted"] == "stored" and results["stored_verdicts"] == 4
    assert results["changed"] == [
        {"index": 3, "where": "details[3]", "id": None, "was": "wrong", "now": "correct"}
    ]
    rejudged = rescore_file(path, rejudge=True)
    assert rejudged["metrics"] == EXPECTED_PRO and rejudged["counted"] == "rejudged"
    assert rejudged["changed"] == results["changed"]


def test_a_published_file_with_whole_pixel_preds_reproduces_its_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An OmniParser-style results file: pred rounded to whole pixels after the official script
    judged the unrounded point. Five misses by under half a pixel round onto a box edge."""
    from screenspot_data import published_pro_results

    from tasks.screenspot.cli import main

    published = published_pro_results(correct=625, edge_misses=5)
    path = tmp_path / "omniparser_screenspot_pro.json"
    path.write_text(json.dumps(published, indent=4))
    results = rescore_file(path)
    assert results["metrics"]["overall"] == published["metrics"]["overall"]
    assert results["metrics"]["overall"]["num_correct_action"] == 625
    assert results["metrics"]["leaderboard_simple_style"] == published["metrics"]["leaderboard_simple_style"]
    assert len(results["changed"]) == 5
    assert all(c["was"] == "wrong" and c["now"] == "correct" for c in results["changed"])
    for c in results["changed"]:  # each rounded pred lies on an edge of its box
        record = published["details"][c["index"]]
        (x, y), (x1, y1, x2, y2) = record["pred"], record["bbox"]
        assert x in (x1, x2) or y in (y1, y2)
    assert rescore_file(path, rejudge=True)["metrics"]["overall"]["num_correct_action"] == 630

    out = tmp_path / "rescored.json"
    assert main(["score", str(path), "--out", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "39.5" in printed  # 625 / 1581
    assert "counted the 1581 stored verdicts" in printed and "would change 5 of them" in printed
    assert json.loads(out.read_text())["metrics"]["overall"]["num_correct_action"] == 625
    assert main(["score", str(path), "--out", str(out), "--rejudge"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "39.8" in printed and "5 of 1581 differ" in printed  # 630 / 1581
    assert json.loads(out.read_text())["counted"] == "rejudged"


def test_a_jsonl_variant_with_extra_fields_and_a_negative_record(tmp_path: Path) -> None:
    records: list[Any] = [
        {**r, "id": i, "img_size": [3840, 2160], "thinking": "..."} for i, r in enumerate(_official_details())
    ]
    negative = {**records[1], "id": 9, "gt_type": "negative", "correctness": "correct"}
    negative.pop("bbox")
    lines = [json.dumps(r) for r in [*records, negative]]
    lines.insert(1, "")  # blank lines hold no record
    path = tmp_path / "variant.jsonl"
    path.write_text("\n".join(lines) + "\n")
    results = rescore_file(path)
    # The negative record is scored by its recorded verdict, on its own gt_type key.
    fine = results["metrics"]["fine_grained"]
    assert fine["plat:windows app:photoshop inst_style:instruction gt_type:negative"] == _metrics(
        1, 1, 0, 1.0, 0, 1.0
    )
    assert results["metrics"]["overall"] == _metrics(2, 5, 1, 0.4, 0.5, 1 / 3)
    assert [c["where"] for c in results["changed"]] == ["line 5"]  # 1-based, the blank line counted
    assert all("thinking" in d for d in results["details"])


def test_rescoring_a_jsonl_of_only_official_records_equals_the_json(tmp_path: Path) -> None:
    path = tmp_path / "variant.jsonl"
    path.write_text("".join(json.dumps({**r, "model": "kimi"}) + "\n" for r in _official_details()))
    assert rescore_file(path, rejudge=True)["metrics"] == EXPECTED_PRO


GOOD = json.dumps(_official_details()[0])


@pytest.mark.parametrize(
    "text, where, message",
    [
        ("{", "line 1", "is not JSON"),
        ("[1,2]", "record [0]", "must be a JSON object, got int"),
        ('"a string"', "", "holds a JSON object or list, not str"),
        ("[]", "", "no results records"),
        (json.dumps({"details": [{"bbox": [0, 0, 4, 4]}]}), "details[0]", "no 'pred'"),
        (json.dumps([{"pred": "0.5, 0.5", "bbox": [0, 0, 1, 1]}]), "record [0]", "pred must be 2 numbers"),
        (json.dumps([{"pred": [1, 2]}, {"pred": None}]), "record [0]", "bbox is missing (2 of 2 records"),
        (f"{GOOD}\n{GOOD}\n{{not json\n{GOOD}\n", "line 3", "is not JSON"),
        ("[" + "[" * 100_000 + "]" * 100_000 + "]", "", "not JSON"),
    ],
)
def test_garbage_is_a_one_line_error_naming_the_file_and_first_bad_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, where: str, message: str
) -> None:
    from tasks.cli import main as kimi_agent

    path = tmp_path / "results.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        rescore_file(path)
    assert str(e.value).startswith(f"{path}: {where}") and message in str(e.value)
    out = tmp_path / "out.json"
    assert kimi_agent(["bench", "screenspot", "score", str(path), "--out", str(out)]) == 2
    printed = capsys.readouterr().out
    assert len(printed.strip().splitlines()) == 1 and str(path) in " ".join(printed.split())
    assert not out.exists()


@pytest.mark.parametrize(
    "record, message",
    [
        ({"pred": "0.5, 0.5", "bbox": [0, 0, 1, 1]}, "pred must be 2 numbers"),
        ({"pred": [1, 2], "bbox": [0, 0, 1, float("nan")]}, "bbox must be 4 numbers"),
        ({"pred": [1, 2]}, "bbox is missing"),
        ({"pred": [1, 2], "bbox": [0, 0, 4, 4], "group": ["a"]}, "group must be a string or null"),
        ({"gt_type": "negative", "pred": None}, "needs its recorded correctness"),
        ({"pred": [1, 10**400], "bbox": [0, 0, 4, 4]}, "pred must be 2 numbers"),
        ({"pred": [1, 2], "bbox": [0, 0, 4, 4], "img_size": [0, 10]}, "img_size must be positive"),
        ({"pred": [1, 2], "bbox": [0, 0, 4, 4], "correctness": "yes"}, "correctness must be one of"),
        (None, "must be a JSON object, got NoneType"),
    ],
)
def test_a_malformed_record_is_named_with_its_place_and_id(
    tmp_path: Path, record: dict, message: str
) -> None:
    path = tmp_path / "r.json"
    bad = {**record, "id": "x7"} if isinstance(record, dict) else record
    path.write_text(json.dumps({"details": [_official_details()[0], bad]}))
    with pytest.raises(ValueError) as e:
        rescore_file(path)
    where = "details[1] (id x7)" if isinstance(record, dict) else "details[1]"
    assert str(e.value).startswith(f"{path}: {where}: ") and message in str(e.value)


def test_an_unreadable_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        rescore_file(tmp_path / "absent.json")
    (tmp_path / "x.json").write_text(json.dumps({"metrics": {}}))
    with pytest.raises(ValueError, match="needs a 'details' list"):
        rescore_file(tmp_path / "x.json")
    log = tmp_path / "predictions.jsonl"
    log.write_text(_pred("a", (1, 2)).model_dump_json() + "\n")
    with pytest.raises(ValueError, match="prediction log, which holds no targets"):
        rescore_file(log)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no results records"):
        rescore_file(tmp_path / "empty.jsonl")


@pytest.mark.parametrize("dataset", ["screenspot-pro", "osworld-g"])
def test_our_results_json_rescores_to_the_same_metrics(tmp_path: Path, dataset: str) -> None:
    run = _pro_run() if dataset == "screenspot-pro" else _osworld_run()
    results = score(dataset, *run)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results, ensure_ascii=False))
    again = rescore_file(path)
    assert again["dataset"] == dataset
    assert again["metrics"] == results["metrics"]
    assert again["changed"] == [] and again["stored_verdicts"] == len(results["details"])
    assert again["not_scored"] == results["not_scored"]


def test_our_details_as_jsonl_rescore_with_the_right_scorer(tmp_path: Path) -> None:
    results = score("osworld-g", *_osworld_run())
    path = tmp_path / "details.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in results["details"]))
    again = rescore_file(path)
    assert again["dataset"] == "osworld-g" and again["metrics"] == results["metrics"]


def test_our_v2_results_json_rescores_to_the_same_table(tmp_path: Path) -> None:
    samples = [_sample(str(i), dataset="screenspot-v2", split="web", ui_type="text") for i in range(3)]
    predictions = [_pred("0", (10, 20)), _pred("1", None), _pred("2", (0, 0))]
    results = score("screenspot-v2", samples, predictions)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert rescore_file(path)["metrics"] == results["metrics"]
    assert results["metrics"]["average"] == 1 / 3 and results["metrics"]["cells_averaged"] == 1


def test_rescoring_uses_img_size_when_the_record_keeps_it(tmp_path: Path) -> None:
    edge = {
        "gt_type": "positive",
        "ui_type": "icon",
        "pred": [31 / 3840 * 3840, 20.0],
        "bbox": [20, 10, 31, 40],
    }
    path = tmp_path / "variant.jsonl"
    path.write_text(json.dumps({**edge, "img_size": [3840, 2160]}) + "\n" + json.dumps(edge) + "\n")
    details = rescore_file(path)["details"]
    # With the size: in fractions. Without it (the official layout has none): a point one rounding
    # step off an edge is on it, as the official fraction test has it.
    assert [d["correctness"] for d in details] == ["correct", "correct"]
    far = {**edge, "pred": [31.001, 20.0]}
    path.write_text(json.dumps(far) + "\n")
    assert rescore_file(path)["details"][0]["correctness"] == "wrong"


def test_an_official_file_keeps_its_exact_edge_hits_when_rescored(tmp_path: Path) -> None:
    """The official script judged x = 123/1920 against a box starting at 123 px as a hit; its file
    stores pred = 123/1920 * 1920 = 122.99999999999999 and no image size."""
    record = {
        "img_path": "a.png", "group": "Dev", "platform": "windows", "application": "vscode", "lang": "en",
        "instruction_style": "instruction", "prompt_to_evaluate": "x", "gt_type": "positive",
        "ui_type": "text", "task_filename": "vscode_windows", "pred": [123 / 1920 * 1920, 150],
        "raw_response": "", "bbox": [123, 100, 300, 200], "correctness": "correct",
    }  # fmt: skip
    path = tmp_path / "official.json"
    path.write_text(json.dumps({"metrics": {}, "details": [record]}))
    out = rescore_file(path)
    assert out["details"][0]["correctness"] == "correct" and not out.get("changed")


def test_a_v2_edge_point_is_judged_in_fractions_of_the_size_the_runner_read() -> None:
    """v1/v2 annotations state no image size: the one the runner read decides an exact-edge point
    the way the official script (which compares fractions) does."""
    from pathlib import Path

    from tasks.screenspot.sample import Prediction, Sample, Target
    from tasks.screenspot.scoring import correctness

    sample = Sample(
        dataset="screenspot-v2",
        id="s#0",
        source="s#0",
        image=Path("x.png"),
        instruction="i",
        target=Target(kind="bbox", box=(0.0, 0.0, 31.0, 10.0)),
    )
    edge = (31 / 3840 * 3840, 5.0)  # 31.000000000000004 px: outside in pixels, on the edge in fractions
    assert correctness(sample, Prediction(id="s#0", point=edge)) == "wrong"
    assert correctness(sample, Prediction(id="s#0", point=edge, image_size=(3840, 2160))) == "correct"


def test_a_decline_is_right_only_for_a_refusal_target() -> None:
    from pathlib import Path

    from tasks.screenspot.sample import Prediction, Sample, Target
    from tasks.screenspot.scoring import correctness

    def sample(kind: str) -> Sample:
        box = (0.0, 0.0, 10.0, 10.0) if kind == "bbox" else None
        return Sample(dataset="osworld-g", id=kind, source=kind, image=Path("x.png"), instruction="i",
                      target=Target(kind=kind, box=box))  # type: ignore[arg-type]  # fmt: skip

    decline = Prediction(id="x", point=None, declined=True)
    assert correctness(sample("refusal"), decline) == "correct"
    assert correctness(sample("bbox"), decline) == "wrong_format"  # no click: no point
    assert correctness(sample("refusal"), Prediction(id="x", point=None)) == "wrong_format"
