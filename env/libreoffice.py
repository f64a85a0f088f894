"""LibreOffice's user profile in a sandbox's home, as OSWorld's image has it: LibreOffice has been
started there before, so a document opens without first-run extras over it.

A fresh profile makes LibreOffice open every document with a blue infobar "You are running version
X of LibreOffice for the first time. Do you want to learn what's new?" and a "Release Notes" button
(and, on a second start, the Tip of the Day dialog): pixels OSWorld's screenshots never have, and
something a model would have to dismiss first. LibreOffice shows the bar when the profile's
``/org.openoffice.Setup/Product/ooSetupLastVersion`` is older than the installed version, so the
profile records the installed version, read from LibreOffice's own configuration (a fixed "7.4"
would bring the bar back on a machine with 24.8).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import time
from pathlib import Path
from xml.sax.saxutils import escape

# Where LibreOffice keeps a user's settings, relative to the home directory.
PROFILE_FILE = Path(".config/libreoffice/4/user/registrymodifications.xcu")
_VERSION_RE = re.compile(r'<prop oor:name="ooSetupVersion">\s*<value>(\d+\.\d+)</value>')


@functools.cache
def installed_version(program: str | None = None) -> str | None:
    """The installed LibreOffice's version as its profile records it ("7.4", "24.8"), or None when
    LibreOffice is not installed or its configuration does not say."""
    found = program or shutil.which("soffice") or shutil.which("libreoffice")
    if found is None:
        return None
    # <install>/program/soffice; the product's settings are in <install>/share/registry/main.xcd.
    main = Path(os.path.realpath(found)).parent.parent / "share" / "registry" / "main.xcd"
    try:
        text = main.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = _VERSION_RE.search(text)
    return m.group(1) if m else None


def _item(path: str, name: str, value: str) -> str:
    return (
        f'<item oor:path="{path}"><prop oor:name="{name}" oor:op="fuse">'
        f"<value>{escape(value)}</value></prop></item>\n"
    )


def profile_xcu(version: str | None, now: float) -> str:
    """registrymodifications.xcu of a profile that has run ``version`` before (``now``: when)."""
    items = [
        # Started before: no first-run handling, no Tip of the Day dialog.
        _item("/org.openoffice.Office.Common/Misc", "FirstRun", "false"),
        _item("/org.openoffice.Office.Common/Misc", "ShowTipOfTheDay", "false"),
        # The "Get involved" and "Donate" infobars come back 180 days after these.
        _item("/org.openoffice.Setup/Product", "LastTimeGetInvolvedShown", str(int(now))),
        _item("/org.openoffice.Setup/Product", "LastTimeDonateShown", str(int(now))),
    ]
    if version is not None:  # this version has run here before: no "what's new" infobar
        items.append(_item("/org.openoffice.Setup/Product", "ooSetupLastVersion", version))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<oor:items xmlns:oor="http://openoffice.org/2001/registry" '
        'xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        + "".join(items)
        + "</oor:items>\n"
    )


def prepare_profile(home: Path) -> None:
    """Write the profile into a new home directory (nothing when LibreOffice is not installed)."""
    if shutil.which("soffice") is None and shutil.which("libreoffice") is None:
        return
    path = home / PROFILE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(profile_xcu(installed_version(), time.time()), encoding="utf-8")
