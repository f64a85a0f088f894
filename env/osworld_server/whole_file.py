"""Writing a file whole: a new file beside the target, renamed over it once complete.

/setup/upload and /setup/download_file write here. Written in place, a failed write would leave the
target truncated, and removing what it wrote would remove a file it did not create (a root server
once unlinked /dev/full that way; a download's ``NAME.part`` could be someone's file). Here the
target is untouched until the rename, and a failure removes only the file this write made.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable
from typing import BinaryIO


class TargetRefused(ValueError):
    """A target no upload may write (empty, a directory, a device): the client's mistake, a 400."""


def write_whole(target: str, fill: Callable[[BinaryIO], None]) -> int:
    """Write what ``fill`` writes to ``target`` (a link is written through, as opening it would) and
    return the size. OSError or whatever ``fill`` raises: nothing was written, the target is as it was."""
    if not target:
        raise TargetRefused("the path is empty")
    real = os.path.realpath(target)
    try:
        existing: os.stat_result | None = os.stat(real)
    except FileNotFoundError:
        existing = None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        raise TargetRefused(f"{target} exists and is not a regular file")
    parent, name = os.path.split(real)
    os.makedirs(parent, exist_ok=True)
    # A name of its own in the same directory (so the rename is atomic); O_EXCL: never a file that
    # was already there, O_NOFOLLOW: never through a link someone put at that name.
    part = os.path.join(parent, f".{name}.{secrets.token_hex(6)}.part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if existing is not None:  # a replaced file keeps its mode and, where we may, its owner
                os.fchmod(f.fileno(), stat.S_IMODE(existing.st_mode))
                if os.geteuid() == 0:
                    os.fchown(f.fileno(), existing.st_uid, existing.st_gid)
            fill(f)
            size = f.tell()
        os.replace(part, real)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise
    return size
