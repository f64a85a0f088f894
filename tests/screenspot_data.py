"""Small synthetic grounding datasets, written in each layout users download, with real PNG screenshots.

Each ``write_*`` function writes one dataset into a directory and returns a ``Written``: the samples
``tasks.screenspot.datasets.load_dataset`` must give for it (in load order: annotation files by
name, records by index) and the problems it must report. The target boxes are drawn on the images
(one filled colour per target), so a test can also find them by looking at the pixels.

Options inject what real downloads get wrong: ``bad_records`` (missing keys, wrong types, a
degenerate box, an empty instruction, a duplicate id), ``missing_images`` (records whose image was
never written). ``copies`` repeats every good record (new index, same image) for scale tests.
Features the scorers must handle are always present: a ScreenSpot-Pro group of null, boxes touching
the image border, OSWorld-G polygons, refusals and an item no category lists.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from tasks.screenspot.sample import DatasetName, Sample, Target

COLOURS = ((220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 160, 20), (150, 40, 180), (20, 170, 170))


@dataclass
class Written:
    root: Path
    samples: list[Sample] = field(default_factory=list)
    # (source "file#index" or a file name, a fragment of the problem line), in the order reported
    problems: list[tuple[str, str]] = field(default_factory=list)

    def by_id(self, sample_id: str) -> Sample:
        return next(sample for sample in self.samples if sample.id == sample_id)


def box(x1: float, y1: float, x2: float, y2: float) -> Target:
    return Target(kind="bbox", box=(float(x1), float(y1), float(x2), float(y2)))


def polygon(*points: tuple[float, float]) -> Target:
    return Target(kind="polygon", polygon=tuple((float(x), float(y)) for x, y in points))


def draw_screenshot(path: Path, size: tuple[int, int], targets: list[Target]) -> None:
    """A PNG of ``size`` with each target filled in its own colour over a grey background."""
    image = Image.new("RGB", size, (235, 235, 235))
    pen = ImageDraw.Draw(image)
    for index, target in enumerate(targets):
        colour = COLOURS[index % len(COLOURS)]
        if target.kind == "bbox" and target.box:
            x1, y1, x2, y2 = target.box
            pen.rectangle((x1, y1, x2 - 1, y2 - 1), fill=colour, outline=(0, 0, 0))
        elif target.kind == "polygon" and target.polygon:
            pen.polygon(list(target.polygon), fill=colour, outline=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")


def _draw_all(images: Path, sizes: dict[str, tuple[int, int]], samples: list[Sample]) -> None:
    for name, size in sizes.items():
        draw_screenshot(images / name, size, [s.target for s in samples if s.image == images / name])


# ---------------------------------------------------------------- ScreenSpot-Pro

# file stem -> (application, platform, group, image folder, [(image, [x1, y1, x2, y2], ui_type, en, cn)])
PRO_FILES: dict[str, tuple[str, str, str | None, str, list[tuple[str, list[int], str, str, str | None]]]] = {
    "vscode_macos": (
        "vscode",
        "macos",
        "Dev",
        "vscode_mac",
        [
            ("shot_1.png", [10, 20, 110, 60], "text", "Open the terminal", "打开终端"),
            ("shot_1.png", [500, 300, 540, 340], "icon", "Refresh the file explorer", None),
        ],
    ),
    "photoshop_windows": (
        "photoshop",
        "windows",
        "Creative",
        "photoshop_windows",
        [
            ("canvas.png", [0, 0, 40, 40], "icon", "Pick the move tool", "选择移动工具"),
            ("canvas.png", [700, 400, 800, 450], "text", "Open the Layers menu", "打开图层菜单"),
        ],
    ),
    "common_linux": (
        "common",
        "linux",
        None,  # ScreenSpot-Pro has records whose group is null
        "common_linux",
        [("desk.png", [300, 100, 360, 130], "text", "Open Files", "打开文件")],
    ),
}
PRO_SIZES = {
    "vscode_mac/shot_1.png": (640, 360),
    "photoshop_windows/canvas.png": (800, 450),
    "common_linux/desk.png": (640, 400),
}


def _pro_record(stem: str, index: int, spec: tuple, folder: str, meta: tuple) -> dict[str, Any]:
    image, bbox, ui_type, en, cn = spec
    application, platform, group = meta
    record: dict[str, Any] = {"img_filename": f"{folder}/{image}", "bbox": bbox, "instruction": en}
    if cn is not None:
        record["instruction_cn"] = cn
    size = PRO_SIZES[f"{folder}/{image}"]
    record.update(id=f"{stem}_{index}", application=application, platform=platform, img_size=list(size))
    record.update(ui_type=ui_type, group=group)
    return record


def write_screenspot_pro(
    root: Path, *, bad_records: bool = False, missing_images: bool = False, copies: int = 1
) -> Written:
    written = Written(root)
    images = root / "images"
    for stem in sorted(PRO_FILES):
        application, platform, group, folder, specs = PRO_FILES[stem]
        records: list[Any] = []
        for spec in specs * copies:
            record = _pro_record(stem, len(records), spec, folder, (application, platform, group))
            source = f"annotations/{stem}.json#{len(records)}"
            records.append(record)
            written.samples.append(
                Sample(
                    dataset="screenspot-pro",
                    id=record["id"],
                    source=source,
                    image=images / record["img_filename"],
                    image_size=tuple(record["img_size"]),
                    instruction=record["instruction"],
                    instruction_cn=record.get("instruction_cn"),
                    target=box(*record["bbox"]),
                    platform=platform,
                    application=application,
                    group=group,
                    ui_type=record["ui_type"],
                    record=record,
                )
            )
        if bad_records and stem == "vscode_macos":
            good = records[0]
            for change, fragment in _PRO_BAD:
                written.problems.append((f"annotations/{stem}.json#{len(records)}", fragment))
                records.append(change(dict(good)))
        if missing_images:
            written.problems.append((f"annotations/{stem}.json#{len(records)}", "image not found"))
            records.append(dict(records[0], id=f"{stem}_gone", img_filename=f"{folder}/gone.png"))
        _write_json(root / "annotations" / f"{stem}.json", records)
    _draw_all(images, PRO_SIZES, written.samples)
    return written


def _without(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda record: {k: v for k, v in record.items() if k != key}


def _with(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda record: {**record, **changes}


_PRO_BAD: list[tuple[Callable[[dict[str, Any]], Any], str]] = [
    (_without("bbox"), "missing 'bbox'"),
    (_with(bbox="10,20,110,60", id="bad_1"), "'bbox' is"),
    (_with(bbox=[50, 50, 50, 80], id="bad_2"), "degenerate box"),
    (_with(instruction="  ", id="bad_3"), "'instruction' is empty"),
    (_with(img_size=[640, 0], id="bad_4"), "'img_size'"),
    (lambda record: ["not", "an", "object"], "expected an object"),
    (_with(instruction="Same id again"), "duplicate id 'vscode_macos_0'"),  # the id of record 0
]


# ---------------------------------------------------------------- ScreenSpot v1 / v2

# split -> (image, size, [([x, y, w, h], data_type, data_source, instruction)])
SEECLICK_SPLITS: dict[str, tuple[str, tuple[int, int], list[tuple[list[int], str, str, str]]]] = {
    "mobile": (
        "mobile_1.png",
        (360, 640),
        [
            ([20, 40, 100, 30], "text", "ios", "Open settings"),
            ([300, 580, 40, 40], "icon", "android", "Go back"),
        ],
    ),
    "desktop": (
        "pc_1.png",
        (640, 360),
        [
            ([100, 50, 80, 20], "text", "macos", "Click File"),
            ([10, 300, 30, 30], "icon", "windows", "Start menu"),
        ],
    ),
    "web": (
        "web_1.png",
        (640, 400),
        [([50, 60, 120, 24], "text", "gitlab", "New issue"), ([600, 360, 40, 40], "icon", "shop", "Cart")],
    ),
}


_SEECLICK_BAD: list[tuple[Callable[[dict[str, Any]], Any], str]] = [
    (_without("data_type"), "missing 'data_type'"),
    (_with(bbox=[10, 10, 30]), "'bbox' has 3 values"),
    (_with(bbox=[10, 10, 0, 20]), "degenerate box"),
    (_with(bbox=[10, 10, True, 20]), "'bbox' holds true"),
    (_with(bbox=[10, 10, 10**400, 20]), "expected finite numbers"),
    (_with(bbox=[10, float("nan"), 10, 20]), "holds nan, expected finite numbers"),
    (_with(instruction=""), "'instruction' is empty"),
    (_with(instruction=7), "'instruction' is 7, expected a string"),
    (_with(img_filename="../outside.png"), "outside the image folder"),
    (lambda record: "just text", "expected an object"),
]


def _write_seeclick(
    root: Path,
    dataset: DatasetName,
    suffix: str,
    image_dir: str,
    *,
    bad_records: bool,
    missing_images: bool,
    copies: int,
    splits: tuple[str, ...],
) -> Written:
    written = Written(root)
    images = root / image_dir
    sizes: dict[str, tuple[int, int]] = {}
    for split in ("mobile", "desktop", "web"):
        name = f"screenspot_{split}{suffix}.json"
        if split not in splits:
            written.problems.append((name, "not found"))
            continue
        image, size, specs = SEECLICK_SPLITS[split]
        sizes[image] = size
        records: list[Any] = []
        for bbox, data_type, data_source, instruction in specs * copies:
            source = f"{name}#{len(records)}"
            record = {
                "img_filename": image,
                "bbox": bbox,
                "instruction": instruction,
                "data_type": data_type,
                "data_source": data_source,
            }
            records.append(record)
            x, y, w, h = bbox
            written.samples.append(
                Sample(
                    dataset=dataset,
                    id=source,
                    source=source,
                    image=images / image,
                    instruction=instruction,
                    target=box(x, y, x + w, y + h),
                    ui_type=data_type,
                    split=split,
                    data_source=data_source,
                    record=record,
                )
            )
        if bad_records and split == "desktop":
            for change, fragment in _SEECLICK_BAD:
                written.problems.append((f"{name}#{len(records)}", fragment))
                records.append(change(dict(records[0])))
        if missing_images:
            written.problems.append((f"{name}#{len(records)}", "image not found"))
            records.append(dict(records[0], img_filename=f"gone_{split}.png"))
        _write_json(root / name, records)
    _draw_all(images, sizes, written.samples)
    return written


def write_screenspot_v2(
    root: Path,
    *,
    bad_records: bool = False,
    missing_images: bool = False,
    copies: int = 1,
    splits: tuple[str, ...] = ("mobile", "desktop", "web"),
) -> Written:
    """OS-Copilot/ScreenSpot-v2 as downloaded: the three JSON files and screenspotv2_image/."""
    return _write_seeclick(
        root,
        "screenspot-v2",
        "_v2",
        "screenspotv2_image",
        bad_records=bad_records,
        missing_images=missing_images,
        copies=copies,
        splits=splits,
    )


def write_screenspot_v1(
    root: Path,
    *,
    bad_records: bool = False,
    missing_images: bool = False,
    copies: int = 1,
    splits: tuple[str, ...] = ("mobile", "desktop", "web"),
) -> Written:
    """SeeClick's ScreenSpot: screenspot_{mobile,desktop,web}.json and images/."""
    return _write_seeclick(
        root,
        "screenspot-v1",
        "",
        "images",
        bad_records=bad_records,
        missing_images=missing_images,
        copies=copies,
        splits=splits,
    )


# ---------------------------------------------------------------- OSWorld-G

# (id, image, box_type, box_coordinates, instruction, categories)
OSWORLD_ITEMS: list[tuple[str, str, str, list[int], str, tuple[str, ...]]] = [
    ("aB3_0", "aB3.png", "bbox", [10, 20, 100, 40], "Click the Save button", ("text_matching",)),
    (
        "aB3_1",
        "aB3.png",
        "polygon",
        [300, 100, 420, 100, 360, 220],
        "Drag the triangle handle",
        ("element_recognition", "fine_grained_manipulation"),
    ),
    ("cD4_0", "cD4.png", "refusal", [-1, -1, -1, -1], "Click the Upload to Cloud button", ("refusal",)),
    ("cD4_1", "cD4.png", "bbox", [600, 320, 40, 40], "Close the dialog in the corner", ()),  # unclassified
]
OSWORLD_SIZES = {"aB3.png": (640, 360), "cD4.png": (640, 360)}

_OSWORLD_BAD: list[tuple[Callable[[dict[str, Any]], Any], str]] = [
    (_with(id="bad_0", box_type="circle"), "'box_type' is \"circle\""),
    (_with(id="bad_1", box_type="polygon", box_coordinates=[1, 2, 3, 4]), "3 or more x, y pairs"),
    (_with(id="bad_2", box_type="polygon", box_coordinates=[0, 0, 10, 10, 20, 20]), "degenerate polygon"),
    (_with(id="bad_3", box_coordinates=[10, 10, -5, 20]), "degenerate box"),
    (_with(id="bad_4", image_path=None), "'image_path' is null"),
    (_with(id="bad_5", instruction=123), "'instruction' is 123"),
    (_with(id=["x"]), "'id' is"),
    (lambda record: dict(record), "duplicate id 'aB3_0'"),
]


def write_osworld_g(
    root: Path,
    *,
    bad_records: bool = False,
    missing_images: bool = False,
    copies: int = 1,
    classification: bool = True,
) -> Written:
    """xlang-ai/OSWorld-G's benchmark/ folder: OSWorld-G.json, classification_result.json, images/."""
    written = Written(root)
    images = root / "images"
    records: list[Any] = []
    categories: dict[str, list[dict[str, str]]] = {}
    for copy in range(copies):
        for item_id, image, kind, coordinates, instruction, groups in OSWORLD_ITEMS:
            item_id = item_id if copy == 0 else f"{item_id}_copy{copy}"
            size = OSWORLD_SIZES[image]
            record = {
                "id": item_id,
                "image_path": image,
                "image_size": list(size),
                "instruction": instruction,
                "box_type": kind,
                "box_coordinates": coordinates,
                "GUI_types": ["Button"],
            }
            for group in groups:
                categories.setdefault(group, []).append({"id": item_id, "instruction": instruction})
            if kind == "bbox":
                x, y, w, h = coordinates
                target = box(x, y, x + w, y + h)
            elif kind == "polygon":
                target = polygon(*zip(coordinates[0::2], coordinates[1::2], strict=True))
            else:
                target = Target(kind="refusal")
            written.samples.append(
                Sample(
                    dataset="osworld-g",
                    id=item_id,
                    source=f"OSWorld-G.json#{len(records)}",
                    image=images / image,
                    image_size=size,
                    instruction=instruction,
                    target=target,
                    categories=groups if classification else (),
                    record=record,
                )
            )
            records.append(record)
    if not classification:
        written.problems.insert(0, ("classification_result.json", "not found"))
    if bad_records:
        for change, fragment in _OSWORLD_BAD:
            written.problems.append((f"OSWorld-G.json#{len(records)}", fragment))
            records.append(change(dict(records[0])))
    if missing_images:
        written.problems.append((f"OSWorld-G.json#{len(records)}", "image not found"))
        records.append(dict(records[0], id="gone_0", image_path="gone.png"))
    _write_json(root / "OSWorld-G.json", records)
    if classification:
        _write_json(root / "classification_result.json", {"classified": categories})
    _draw_all(images, OSWORLD_SIZES, written.samples)
    return written


WRITERS: dict[DatasetName, Callable[..., Written]] = {
    "screenspot-pro": write_screenspot_pro,
    "screenspot-v2": write_screenspot_v2,
    "screenspot-v1": write_screenspot_v1,
    "osworld-g": write_osworld_g,
}


# ---------------------------------------------------------------- a published ScreenSpot-Pro results file

# The test set's make-up (shared/docs/screenspot.md): 1581 records, by group, platform and ui_type.
PRO_GROUPS = {"Dev": 299, "Creative": 341, "CAD": 261, "Scientific": 254, "Office": 230, "OS": 196}
PRO_PLATFORMS = {"windows": 927, "macos": 604, "linux": 50}
PRO_UI_TYPES = {"text": 977, "icon": 604}
PRO_APPS = {"Dev": "vscode", "Creative": "photoshop", "CAD": "autocad", "Scientific": "matlab",
            "Office": "excel", "OS": "windows_common"}  # fmt: skip
SCREENS = ((3840, 2160), (2560, 1440), (1920, 1080), (5120, 2880), (3024, 1964))


def _spread(counts: dict[str, int]) -> list[str]:
    return [value for value, n in counts.items() for _ in range(n)]


def _official_verdict(point: tuple[float, float] | None, bbox: list[int], size: tuple[int, int]) -> str:
    """The official rule, written out here on its own: the model's fraction against box / size."""
    if point is None:
        return "wrong_format"
    w, h = size
    fx, fy = point[0] / w, point[1] / h
    inside = bbox[0] / w <= fx <= bbox[2] / w and bbox[1] / h <= fy <= bbox[3] / h
    return "correct" if inside else "wrong"


def published_pro_results(
    correct: int = 625, edge_misses: int = 5, no_point: int = 40, seed: int = 18
) -> dict[str, Any]:
    """A ScreenSpot-Pro results JSON as an OmniParser-style pipeline publishes it: the official
    layout (details records without id, ``pred`` in pixels, ``correctness`` stored; ``metrics``),
    with ``pred`` rounded to whole pixels after the official script judged the unrounded point.

    ``correct`` records hit; ``edge_misses`` missed by less than half a pixel beyond a box edge, so
    their stored pred lies exactly on it; ``no_point`` gave no point; the rest missed by far. The
    metrics are counted here from the stored verdicts, independently of the code under test:
    ``overall`` and ``leaderboard_simple_style`` (by group)."""
    rng = random.Random(seed)
    n = sum(PRO_GROUPS.values())
    groups, platforms, ui_types = _spread(PRO_GROUPS), _spread(PRO_PLATFORMS), _spread(PRO_UI_TYPES)
    rng.shuffle(platforms)
    rng.shuffle(ui_types)
    kinds = ["hit"] * correct + ["edge"] * edge_misses + ["none"] * no_point
    kinds += ["far"] * (n - len(kinds))
    rng.shuffle(kinds)
    details = []
    for i in range(n):
        size = SCREENS[i % len(SCREENS)]
        w, h = size
        x1, y1 = rng.randrange(20, w - 400), rng.randrange(20, h - 200)
        bbox = [x1, y1, x1 + rng.randrange(8, 300), y1 + rng.randrange(8, 120)]
        kind = kinds[i]
        point: tuple[float, float] | None
        if kind == "hit":  # inside by at least a pixel, as a model's fraction * size gives it
            point = (rng.uniform(bbox[0] + 1, bbox[2] - 1), rng.uniform(bbox[1] + 1, bbox[3] - 1))
        elif kind == "edge":  # past one edge by under half a pixel: rounds onto it
            edge = rng.choice(("left", "right", "top", "bottom"))
            off = rng.uniform(0.05, 0.45)
            cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
            point = {
                "left": (bbox[0] - off, cy), "right": (bbox[2] + off, cy),
                "top": (cx, bbox[1] - off), "bottom": (cx, bbox[3] + off),
            }[edge]  # fmt: skip
        elif kind == "far":
            point = (rng.uniform(0, w), rng.uniform(0, h))
            while bbox[0] - 2 <= point[0] <= bbox[2] + 2 and bbox[1] - 2 <= point[1] <= bbox[3] + 2:
                point = (rng.uniform(0, w), rng.uniform(0, h))
        else:
            point = None
        group = groups[i]
        details.append(
            {
                "img_path": f"/data/ScreenSpot-Pro/images/{PRO_APPS[group]}/{i:04d}.png",
                "group": group,
                "platform": platforms[i],
                "application": PRO_APPS[group],
                "lang": "en",
                "instruction_style": "instruction",
                "prompt_to_evaluate": f"click element {i}",
                "gt_type": "positive",
                "ui_type": ui_types[i],
                "task_filename": f"{PRO_APPS[group]}_{platforms[i]}",
                "pred": None if point is None else [round(point[0]), round(point[1])],
                "raw_response": "{}",
                "bbox": bbox,
                "correctness": _official_verdict(point, bbox, size),
            }
        )

    def counted(records: list[dict[str, Any]]) -> dict[str, Any]:
        def acc(subset: list[dict[str, Any]]) -> float:
            return sum(r["correctness"] == "correct" for r in subset) / len(subset) if subset else 0

        return {
            "num_correct_action": sum(r["correctness"] == "correct" for r in records),
            "num_total": len(records),
            "wrong_format_num": sum(r["correctness"] == "wrong_format" for r in records),
            "action_acc": acc(records),
            "text_acc": acc([r for r in records if r["ui_type"] == "text"]),
            "icon_acc": acc([r for r in records if r["ui_type"] == "icon"]),
        }

    by_group = {f"group:{g}": counted([r for r in details if r["group"] == g]) for g in PRO_GROUPS}
    return {
        "details": details,
        "metrics": {"leaderboard_simple_style": by_group, "overall": counted(details)},
    }
