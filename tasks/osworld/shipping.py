"""What crosses between the driver of a Ray run and its sandbox actors (tasks/osworld/ray_workers.py),
with no filesystem shared between them:

- to a node, a task packed with the local files its setup reads (``pack``/``unpack``): the task file's
  path and the files beside it exist on the driver only. Local download URLs are rewritten to the
  copies shipped with it; http(s) URLs stay (the node downloads them into its own cache).
- back from a node, a finished task's directory as files (``collect``), which the driver writes under
  the task's directory in one rename (``store``): a task is recorded whole or not at all, and a driver
  killed halfway leaves only its staging folder, which the next run clears (``clear_staging``).

Standard library and our own modules only: the driver imports this without Ray.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tasks.osworld.results import RESULT_FILE, TaskRef, ref_dir
from tasks.osworld.setup import local_source

# What one task may bring back (screenshots, recording, records): far above a 15-step task's
# 5-30 MB, low enough that a runaway file cannot fill the driver's memory or the object store.
MAX_TASK_BYTES = 1 << 30
STAGING = ".kimi-incoming"  # under the run's root: finished tasks on their way in
SHIPPED_DIR = "shipped"  # beside the task file on the node: the local files its setup reads


class ShippingError(ValueError):
    """A task or its files cannot be shipped; the message is one line."""


@dataclass(frozen=True)
class TaskBundle:
    """A task as a node needs it: the driver's reference (ids, run_dir), the task file's name and
    contents (local download URLs pointing at ``files``) and those files by relative path."""

    ref: TaskRef
    file_name: str
    task_json: bytes
    files: dict[str, bytes]

    @property
    def size(self) -> int:
        return len(self.task_json) + sum(len(b) for b in self.files.values())


def pack(ref: TaskRef) -> TaskBundle:
    """``ref``'s task file, with each local file its download steps read (setup and postconfig)
    shipped beside it. A local file that is missing here stays as named: the node's setup step
    then fails with the usual "no such local file"."""
    path = Path(ref.path)
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ShippingError(f"task {ref.task_id}: cannot read {path}: {e}") from None
    files: dict[str, bytes] = {}
    names: dict[Path, str] = {}  # one copy of a file that several steps read
    for f in _download_files(data):
        local = local_source(str(f.get("url", "")), path.parent)
        if local is None or not local.is_file():
            continue
        key = local.resolve()
        if key not in names:
            names[key] = f"{SHIPPED_DIR}/{len(names)}-{local.name}"
            files[names[key]] = local.read_bytes()
        f["url"] = names[key]
    return TaskBundle(ref, path.name, json.dumps(data, ensure_ascii=False).encode(), files)


def _download_files(data: Any) -> list[dict[str, Any]]:
    """The ``{url, path}`` entries of a task's download steps (setup, then postconfig)."""
    if not isinstance(data, dict):
        return []
    evaluator = data.get("evaluator")
    steps = [*(data.get("config") or []), *((evaluator or {}).get("postconfig") or [])]
    out = []
    for step in steps:
        if isinstance(step, dict) and step.get("type") == "download":
            params = step.get("parameters")
            entries = params.get("files") if isinstance(params, dict) else None
            out += [f for f in entries or [] if isinstance(f, dict)]
    return out


def unpack(bundle: TaskBundle, where: Path) -> TaskRef:
    """Write the bundle under ``where`` (``<domain>/<file name>``, its files beside it: a task's
    domain is its folder's name) and return the reference with the node's path."""
    domain = Path(bundle.ref.path).parent.name or bundle.ref.domain
    folder = where / _safe_part(domain)
    for rel, data in bundle.files.items():
        _write(folder, rel, data)
    task_file = folder / _safe_part(bundle.file_name)
    task_file.parent.mkdir(parents=True, exist_ok=True)
    task_file.write_bytes(bundle.task_json)
    return bundle.ref.model_copy(update={"path": str(task_file)})


def collect(task_dir: Path, limit: int = MAX_TASK_BYTES) -> dict[str, bytes]:
    """Every regular file under ``task_dir`` by relative (POSIX) path; links are left out.
    ShippingError when they come to more than ``limit`` bytes."""
    sizes: dict[Path, int] = {}
    for p in sorted(task_dir.rglob("*")):
        if p.is_file() and not p.is_symlink():
            sizes[p] = p.stat().st_size
    total = sum(sizes.values())
    if total > limit:
        biggest = max(sizes, key=lambda p: sizes[p])
        raise ShippingError(
            f"the task's files come to {total / 2**20:.0f} MB, more than the {limit / 2**20:.0f} MB "
            f"a task may bring back (largest: {biggest.relative_to(task_dir).as_posix()})"
        )
    return {p.relative_to(task_dir).as_posix(): p.read_bytes() for p in sizes}


def store(root: Path, ref: TaskRef, files: dict[str, bytes], limit: int = MAX_TASK_BYTES) -> Path:
    """Write a finished task's ``files`` as ``ref``'s directory under ``root``, all at once: into a
    staging folder first (each file on disk), then renamed into place over what an unfinished
    attempt left. Returns the directory."""
    if RESULT_FILE not in files:
        raise ShippingError(f"task {ref.task_id}: its files have no {RESULT_FILE}")
    total = sum(len(b) for b in files.values())
    if total > limit:
        raise ShippingError(f"task {ref.task_id}: {total} bytes of files, more than the {limit} allowed")
    dest = ref_dir(root, ref)
    staging = root / STAGING / uuid.uuid4().hex
    try:
        for rel, data in files.items():
            _write(staging, rel, data, sync=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)  # what a killed local attempt left (a finished one is never rerun)
        os.rename(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _sync_dir(dest.parent)
    return dest


def clear_staging(root: Path) -> None:
    """Remove what a driver killed while storing a task left (never a finished task)."""
    shutil.rmtree(root / STAGING, ignore_errors=True)


def _safe_part(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ShippingError(f"{name!r} cannot name a file")
    return name


def _write(base: Path, rel: str, data: bytes, sync: bool = False) -> None:
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise ShippingError(f"{rel!r}: not a relative path inside the task's directory")
    path = base.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())


def _sync_dir(path: Path) -> None:
    """The rename itself on disk: a power cut after ``store`` keeps the task."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
