"""A sandbox's LibreOffice starts as on OSWorld's image: a document opens without the first-run
"Release Notes" infobar. Real LibreOffice in a real sandbox; a fresh profile beside it shows that the
check sees the bar when it is there."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from env.libreoffice import PROFILE_FILE, installed_version, profile_xcu

pytestmark = [
    pytest.mark.x11,
    pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice is not installed"),
]

SUITE_FILES = Path(__file__).resolve().parent.parent / "tasks" / "osworld" / "suite" / "files"
# The background of LibreOffice's information infobars (sfx2's InfobarType::INFO): a band of it
# across the window is a bar ("what's new", "read-only", "get involved", ...).
INFOBAR_RGB = (0xBD, 0xE5, 0xF8)
OOR = "{http://openoffice.org/2001/registry}"


def settings(xcu: str) -> dict[str, str]:
    """registrymodifications.xcu as {"/path/name": value}."""
    out = {}
    for item in ET.fromstring(xcu):
        for prop in item:
            value = prop.find("value")
            out[f"{item.get(OOR + 'path')}/{prop.get(OOR + 'name')}"] = (
                "" if value is None else value.text or ""
            )
    return out


def test_the_profile_records_the_installed_version_as_already_run() -> None:
    said = subprocess.run(["soffice", "--version"], capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"LibreOffice (\d+\.\d+)", said)
    assert m, said
    assert installed_version() == m.group(1)
    values = settings(profile_xcu(installed_version(), now=1_800_000_000.0))
    assert values == {
        "/org.openoffice.Setup/Product/ooSetupLastVersion": m.group(1),
        "/org.openoffice.Setup/Product/LastTimeGetInvolvedShown": "1800000000",
        "/org.openoffice.Setup/Product/LastTimeDonateShown": "1800000000",
        "/org.openoffice.Office.Common/Misc/FirstRun": "false",
        "/org.openoffice.Office.Common/Misc/ShowTipOfTheDay": "false",
    }
    # Without a version to record, nothing is claimed about it.
    assert "/org.openoffice.Setup/Product/ooSetupLastVersion" not in settings(profile_xcu(None, 0.0))


def infobars(image: object) -> int:
    """How many infobar bands cross the screenshot (rows mostly of the infobar's colour)."""
    from PIL import Image

    assert isinstance(image, Image.Image)
    rgb = image.convert("RGB")
    w, h = rgb.size
    px = rgb.load()
    assert px is not None
    rows = [sum(px[x, y] == INFOBAR_RGB for x in range(0, w, 4)) * 4 >= 0.6 * w for y in range(h)]
    bands, run = 0, 0
    for full in [*rows, False]:
        if full:
            run += 1
            continue
        bands += run >= 10
        run = 0
    return bands


def open_sales_sheet(fresh_profile: bool) -> tuple[object, str]:
    """A real spreadsheet opened in LibreOffice Calc in a new sandbox: the settled screenshot, and
    the profile the sandbox started with."""
    from env.sandbox import Sandbox

    with Sandbox(1280, 800, desktop="minimal") as box:
        profile = box.home / PROFILE_FILE
        written = profile.read_text(encoding="utf-8")
        if fresh_profile:
            profile.unlink()
        doc = box.home / "sales.xlsx"
        shutil.copyfile(SUITE_FILES / "sales.xlsx", doc)
        doc.chmod(0o666)  # writable by the sandbox's user: no "read-only" bar either
        box.launch(["soffice", "--calc", "/home/user/sales.xlsx"])
        box.wait_window("libreoffice-calc", timeout_s=90)
        # The bar comes with the document's window; wait for the screen to stop changing.
        deadline = time.monotonic() + 60
        last = box.screenshot().to_image()
        stable_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - stable_since < 3.0:
            time.sleep(0.5)
            shot = box.screenshot().to_image()
            if shot.tobytes() != last.tobytes():
                last, stable_since = shot, time.monotonic()
        return last, written


@pytest.mark.slow
def test_a_document_opens_without_the_release_notes_bar() -> None:
    control, _ = open_sales_sheet(fresh_profile=True)
    assert infobars(control) == 1, "a fresh profile should show the what's-new bar: is the check still valid?"
    shot, written = open_sales_sheet(fresh_profile=False)
    assert settings(written)["/org.openoffice.Setup/Product/ooSetupLastVersion"] == installed_version()
    assert infobars(shot) == 0
