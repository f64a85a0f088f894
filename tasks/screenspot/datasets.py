"""Grounding datasets as users download them, auto-detected from a directory.

Each layout is one ``Layout`` entry in ``LAYOUTS``: how to recognise it and a generator of samples
(or of problem lines, for records it has to skip). ``load_dataset`` does the rest for all of them:
detection, duplicate ids, missing images. Images are only checked for existence here; the runner
reads them when it needs them.

Where the files lie (facts from the public repositories and dataset cards):
- ScreenSpot-Pro (HF likaixin/ScreenSpot-Pro): ``annotations/<app>_<os>.json``, images at
  ``images/<img_filename>`` where img_filename carries its own folder ("android_studio_mac/x.png");
  the official eval_screenspot_pro.py joins ``--screenspot_imgs`` and img_filename.
- ScreenSpot-v2 (HF OS-Copilot/ScreenSpot-v2): ``screenspot_{desktop,mobile,web}_v2.json`` next to
  ``screenspotv2_image.zip``, which unpacks to ``screenspotv2_image/``.
- ScreenSpot v1 (SeeClick): ``screenspot_{mobile,desktop,web}.json`` and an image folder
  (``images/``, or SeeClick's ``screenspot_imgs/``).
- OSWorld-G (xlang-ai/OSWorld-G ``benchmark/``): ``OSWorld-G.json``, ``classification_result.json``
  and ``images/<image_path>``; an item no category lists is "unclassified" in its evaluation.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from agent.jsonfile import JSONFileError, read_json
from tasks.screenspot.sample import DatasetName, Sample, Target

SPLITS = ("mobile", "desktop", "web")


class DatasetError(ValueError):
    """The directory holds no dataset we can load, or more than one; the message is one line."""


class BadRecord(ValueError):
    """One record cannot become a sample; the message says what is wrong with it."""


@dataclass
class Dataset:
    name: DatasetName
    root: Path  # the directory the layout was found in
    samples: list[Sample]
    problems: list[str] = field(default_factory=list)  # "file#index: what is wrong", one per skip


Loader = Callable[[Path], Iterator[Sample | str]]  # yields samples, or problem lines


@dataclass(frozen=True)
class Layout:
    name: DatasetName
    title: str  # for messages: "ScreenSpot-Pro"
    looks_for: str  # for messages: what marks this layout
    detect: Callable[[Path], bool]
    load: Loader


# ---------------------------------------------------------------- record fields


def _field(record: dict[str, Any], key: str, kind: type | tuple[type, ...], optional: bool) -> Any:
    value = record.get(key)
    if value is None:
        if optional:
            return None
        raise BadRecord(f"missing {key!r}" if key not in record else f"{key!r} is null")
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadRecord(f"{key!r} is {_short(value)}, expected {_kind_name(kind)}")
    return value


def _text(record: dict[str, Any], key: str) -> str:
    value = _field(record, key, str, optional=False)
    if not value.strip():
        raise BadRecord(f"{key!r} is empty")
    return value


def _maybe_text(record: dict[str, Any], key: str) -> str | None:
    value = _field(record, key, str, optional=True)
    return value if value and value.strip() else None  # an empty instruction_cn is as good as none


def _numbers(record: dict[str, Any], key: str, count: int | None = None) -> list[float]:
    value = _field(record, key, list, optional=False)
    if count is not None and len(value) != count:
        raise BadRecord(f"{key!r} has {len(value)} values, expected {count}: {_short(value)}")
    for number in value:
        if not _finite(number):
            raise BadRecord(f"{key!r} holds {_short(number)}, expected finite numbers: {_short(value)}")
    return [float(number) for number in value]


def _finite(number: Any) -> bool:
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        return False
    try:
        return math.isfinite(number)
    except OverflowError:  # an integer too large for a float
        return False


def _size(record: dict[str, Any], key: str) -> tuple[int, int] | None:
    if record.get(key) is None:
        return None
    width, height = _numbers(record, key, 2)
    if width <= 0 or height <= 0 or not width.is_integer() or not height.is_integer():
        raise BadRecord(f"{key!r} is not a positive whole [width, height]: {_short(record[key])}")
    return int(width), int(height)


def _id(record: dict[str, Any], source: str) -> str:
    value = _field(record, "id", (str, int), optional=True)
    return source if value is None else str(value)


def _box(x1: float, y1: float, x2: float, y2: float) -> Target:
    if x2 <= x1 or y2 <= y1:
        raise BadRecord(f"degenerate box (x1, y1, x2, y2) = ({x1:g}, {y1:g}, {x2:g}, {y2:g})")
    return Target(kind="bbox", box=(x1, y1, x2, y2))


def _polygon(flat: list[float]) -> Target:
    if len(flat) < 6 or len(flat) % 2:
        raise BadRecord(f"a polygon needs 3 or more x, y pairs, got {len(flat)} numbers")
    points = tuple(zip(flat[0::2], flat[1::2], strict=True))
    twice_area = sum(
        x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1], strict=True)
    )
    if twice_area == 0:
        raise BadRecord("degenerate polygon (zero area)")
    return Target(kind="polygon", polygon=points)


def _image(images: Path, record: dict[str, Any], key: str) -> Path:
    name = _text(record, key)
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise BadRecord(f"{key!r} points outside the image folder: {name!r}")
    return images / relative


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


# ---------------------------------------------------------------- files


def _records(
    root: Path, file: Path, build: Callable[[dict[str, Any], str], Sample]
) -> Iterator[Sample | str]:
    """Each record of a JSON list file through ``build``; a record it rejects becomes a problem line."""
    where = file.relative_to(root).as_posix()
    try:
        data = read_json(file)
    except JSONFileError as exc:
        yield f"{where}: cannot be read as JSON: {exc}"
        return
    if not isinstance(data, list):
        yield f"{where}: expected a JSON list of records, found {_kind_name(type(data))}"
        return
    for index, record in enumerate(data):
        source = f"{where}#{index}"
        try:
            if not isinstance(record, dict):
                raise BadRecord(f"record is {_short(record)}, expected an object")
            yield build(record, source)
        except BadRecord as exc:
            yield f"{source}: {exc}"


def _image_folder(root: Path, candidates: tuple[str, ...]) -> tuple[Path, str | None]:
    """The first candidate folder that exists; else the dataset root and a problem line."""
    for name in candidates:
        if (root / name).is_dir():
            return root / name, None
    looked = " or ".join(f"{name}/" for name in candidates)
    return root, f"{looked}: no such folder; looking for the images next to the annotations"


# ---------------------------------------------------------------- ScreenSpot-Pro


def _pro_sample(images: Path, record: dict[str, Any], source: str) -> Sample:
    x1, y1, x2, y2 = _numbers(record, "bbox", 4)  # [x1, y1, x2, y2] pixels
    return Sample(
        dataset="screenspot-pro",
        id=_id(record, source),
        source=source,
        image=_image(images, record, "img_filename"),
        image_size=_size(record, "img_size"),
        instruction=_text(record, "instruction"),
        instruction_cn=_maybe_text(record, "instruction_cn"),
        target=_box(x1, y1, x2, y2),
        platform=_maybe_text(record, "platform"),
        application=_maybe_text(record, "application"),
        group=_maybe_text(record, "group"),
        ui_type=_maybe_text(record, "ui_type"),
        record=record,
    )


def _pro_files(root: Path) -> list[Path]:
    return sorted((root / "annotations").glob("*.json"))


def _load_pro(root: Path) -> Iterator[Sample | str]:
    images, problem = _image_folder(root, ("images",))
    if problem:
        yield problem
    for file in _pro_files(root):
        yield from _records(root, file, partial(_pro_sample, images))


# ---------------------------------------------------------------- ScreenSpot v1 / v2


def _seeclick_sample(
    dataset: DatasetName, split: str, images: Path, record: dict[str, Any], source: str
) -> Sample:
    x, y, width, height = _numbers(record, "bbox", 4)  # [x, y, w, h] pixels
    return Sample(
        dataset=dataset,
        id=source,  # the records carry no id: file and index are stable
        source=source,
        image=_image(images, record, "img_filename"),
        instruction=_text(record, "instruction"),
        target=_box(x, y, x + width, y + height),
        ui_type=_text(record, "data_type"),
        split=split,
        data_source=_maybe_text(record, "data_source"),
        record=record,
    )


def _seeclick_layout(dataset: DatasetName, title: str, suffix: str, image_dirs: tuple[str, ...]) -> Layout:
    names = {split: f"screenspot_{split}{suffix}.json" for split in SPLITS}

    def detect(root: Path) -> bool:
        return any((root / name).is_file() for name in names.values())

    def load(root: Path) -> Iterator[Sample | str]:
        images, problem = _image_folder(root, image_dirs)
        if problem:
            yield problem
        for split, name in names.items():
            if not (root / name).is_file():
                yield f"{name}: not found; the {split} split is left out"
                continue
            yield from _records(root, root / name, partial(_seeclick_sample, dataset, split, images))

    looks_for = f"screenspot_{{{','.join(SPLITS)}}}{suffix}.json"
    return Layout(dataset, title, looks_for, detect, load)


# ---------------------------------------------------------------- OSWorld-G


def _osworld_target(record: dict[str, Any]) -> Target:
    kind = _field(record, "box_type", str, optional=False)
    if kind == "refusal":
        return Target(kind="refusal")  # its box_coordinates are placeholders ([-1, -1, -1, -1])
    if kind == "bbox":
        x, y, width, height = _numbers(record, "box_coordinates", 4)  # [x, y, w, h] pixels
        return _box(x, y, x + width, y + height)
    if kind == "polygon":
        return _polygon(_numbers(record, "box_coordinates"))
    raise BadRecord(f"'box_type' is {_short(kind)}, expected bbox, polygon or refusal")


def _osworld_sample(
    images: Path, categories: dict[str, tuple[str, ...]], record: dict[str, Any], source: str
) -> Sample:
    sample_id = _id(record, source)
    return Sample(
        dataset="osworld-g",
        id=sample_id,
        source=source,
        image=_image(images, record, "image_path"),
        image_size=_size(record, "image_size"),
        instruction=_text(record, "instruction"),
        target=_osworld_target(record),
        categories=categories.get(sample_id, ()),
        record=record,
    )


def _osworld_categories(root: Path, problems: list[str]) -> dict[str, tuple[str, ...]]:
    """id -> its categories, from ``{"classified": {category: [{"id": ...}, ...]}}``."""
    name = "classification_result.json"
    if not (root / name).exists():
        problems.append(f"{name}: not found; samples have no categories")
        return {}
    try:
        classified = read_json(root / name)["classified"]
        if not isinstance(classified, dict):
            raise TypeError(f"'classified' is {_kind_name(type(classified))}, expected an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problems.append(f"{name}: cannot be read ({type(exc).__name__}: {exc}); samples have no categories")
        return {}
    found: dict[str, list[str]] = {}
    for category, items in classified.items():
        for index, item in enumerate(items if isinstance(items, list) else [items]):
            if not isinstance(item, dict) or not isinstance(item.get("id"), (str, int)):
                problems.append(f"{name}#{category}/{index}: expected an object with an 'id'")
                continue
            listed = found.setdefault(str(item["id"]), [])
            if category not in listed:
                listed.append(category)
    return {key: tuple(value) for key, value in found.items()}


def _load_osworld(root: Path) -> Iterator[Sample | str]:
    problems: list[str] = []
    images, problem = _image_folder(root, ("images",))
    categories = _osworld_categories(root, problems)
    yield from ([problem] if problem else []) + problems
    yield from _records(root, root / "OSWorld-G.json", partial(_osworld_sample, images, categories))


# ---------------------------------------------------------------- the registry

LAYOUTS: tuple[Layout, ...] = (
    Layout(
        "screenspot-pro",
        "ScreenSpot-Pro",
        "annotations/*.json",
        lambda root: bool(_pro_files(root)),
        _load_pro,
    ),
    _seeclick_layout("screenspot-v2", "ScreenSpot-v2", "_v2", ("screenspotv2_image", "images")),
    _seeclick_layout("screenspot-v1", "ScreenSpot v1", "", ("images", "screenspot_imgs")),
    Layout(
        "osworld-g",
        "OSWorld-G",
        "OSWorld-G.json",
        lambda root: (root / "OSWorld-G.json").is_file(),
        _load_osworld,
    ),
)


def detect(directory: Path) -> tuple[Layout, Path]:
    """The one layout in ``directory``, or in the one subfolder of it that holds a dataset."""
    if not directory.is_dir():
        raise DatasetError(f"{directory}: not a directory")
    found = [layout for layout in LAYOUTS if layout.detect(directory)]
    if len(found) == 1:
        return found[0], directory
    if found:
        titles = ", ".join(layout.title for layout in found)
        raise DatasetError(f"{directory}: holds more than one dataset ({titles}); point at a folder with one")
    nested = [
        (layout, child)
        for child in sorted(path for path in directory.iterdir() if path.is_dir())
        for layout in LAYOUTS
        if layout.detect(child)
    ]
    if len(nested) == 1:
        return nested[0]
    if nested:
        which = ", ".join(f"{child.name}/ ({layout.title})" for layout, child in nested)
        raise DatasetError(f"{directory}: holds more than one dataset: {which}; point at one of them")
    looked = "; ".join(f"{layout.looks_for} ({layout.title})" for layout in LAYOUTS)
    raise DatasetError(f"{directory}: no dataset found here or one folder down; looked for {looked}")


def load_dataset(directory: Path) -> Dataset:
    """Every good sample of the dataset in ``directory``; every skipped record as a problem line."""
    layout, root = detect(Path(directory))
    dataset = Dataset(name=layout.name, root=root, samples=[])
    first_seen: dict[str, str] = {}
    exists: dict[Path, bool] = {}  # samples share screenshots: one stat per file
    for item in layout.load(root):
        if isinstance(item, str):
            dataset.problems.append(item)
        elif item.id in first_seen:
            dataset.problems.append(
                f"{item.source}: duplicate id {item.id!r} (first at {first_seen[item.id]})"
            )
        else:
            first_seen[item.id] = item.source
            if item.image not in exists:
                exists[item.image] = os.path.isfile(item.image)
            if exists[item.image]:
                dataset.samples.append(item)
            else:
                dataset.problems.append(f"{item.source}: image not found: {item.image}")
    return dataset
