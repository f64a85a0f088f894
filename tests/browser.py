"""A real headless Chromium (the system's, /usr/bin/chromium) driven with Playwright, for the live
view's page: open it, wait until noVNC is connected, read its canvas."""

from __future__ import annotations

import base64
import io
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from PIL import Image

CHROMIUM = "/usr/bin/chromium"


def missing() -> str | None:
    if shutil.which(CHROMIUM) is None:
        return "Chromium is not installed (Debian: apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """A browser (playwright's Browser); as root Chromium needs --no-sandbox."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def open_view(browser: Any, url: str, width: int = 900, height: int = 700) -> Any:
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    page.wait_for_selector('body[data-connected="1"]', state="attached", timeout=15_000)
    return page


CANVAS = "#screen canvas"


def canvas_image(page: Any) -> Image.Image:
    """The canvas's own pixels (the remote framebuffer as noVNC drew it, before any CSS scaling)."""
    url = page.evaluate(f"document.querySelector('{CANVAS}').toDataURL('image/png')")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def canvas_pixel(page: Any, x: int, y: int) -> tuple[int, int, int]:
    r, g, b = page.evaluate(
        f"([x, y]) => Array.from(document.querySelector('{CANVAS}').getContext('2d')"
        ".getImageData(x, y, 1, 1).data.slice(0, 3))",
        [x, y],
    )
    return r, g, b


def wait_canvas(page: Any, pred: Any, timeout_s: float = 10.0) -> Image.Image:
    deadline = time.monotonic() + timeout_s
    while True:
        img = canvas_image(page)
        if pred(img) or time.monotonic() > deadline:
            return img
        time.sleep(0.05)


def click_canvas(page: Any, fx: float, fy: float) -> None:
    """Click at a fraction of the canvas as shown (scaled to the page)."""
    box = page.locator(CANVAS).bounding_box()
    page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
