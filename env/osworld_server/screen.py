"""The X display the server serves: grabs with the cursor drawn in, the pointer, and windows.

One X connection and one mss grabber, shared by the request threads under a lock.
"""

from __future__ import annotations

import array
import io
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from env.capture import open_mss
from env.desktop import Frame
from env.xauth import authority

# The arrow drawn where XFixes is missing: (x, y) offsets of a 12x19 pointer outline.
_ARROW = [(0, i) for i in range(17)] + [(i, i) for i in range(12)] + [(i, 11) for i in range(7, 12)]


def wmctrl_matches(text: str, name: str, strict: bool) -> bool:
    """wmctrl's rule for NAME (-a/-c; -F strict): a case-insensitive substring of the title or
    class, or with ``strict`` the whole string, case-sensitive."""
    return text == name if strict else name.lower() in text.lower()


@dataclass(frozen=True)
class Window:
    id: int
    title: str
    wm_class: str  # "instance.class", the form wmctrl -x matches


class XScreen:
    """``title_aliases``: a name in a window lookup -> what the windows of this display say in its
    place (a sandbox's "Chromium" for OSWorld's "Google Chrome"), tried when the name itself finds none."""

    def __init__(
        self, display: str, xauthority: Path | None = None, title_aliases: dict[str, str] | None = None
    ) -> None:
        self.title_aliases = dict(title_aliases or {})
        from Xlib import X
        from Xlib import display as xdisplay
        from Xlib import error as xerror

        self._X, self._Xerror = X, xerror
        self.display_name = display
        self._lock = threading.Lock()
        with authority(xauthority):
            self.d = xdisplay.Display(display)
        self.root = self.d.screen().root
        self._xfixes = self.d.has_extension("XFIXES")
        if self._xfixes:
            self.d.xfixes_query_version()  # XFixes answers nothing before the version handshake
        with authority(xauthority):
            self._sct = open_mss(display)

    def close(self) -> None:
        with self._lock:
            self._sct.close()
            self.d.close()

    @property
    def size(self) -> tuple[int, int]:
        s = self.d.screen()
        return s.width_in_pixels, s.height_in_pixels

    def frame(self) -> Frame:
        w, h = self.size
        with self._lock:
            shot = self._sct.grab({"left": 0, "top": 0, "width": w, "height": h})
        return Frame(shot.width, shot.height, bytes(shot.raw))

    def cursor_position(self) -> tuple[int, int]:
        with self._lock:
            p = self.root.query_pointer()
        return p.root_x, p.root_y

    def screenshot_png(self) -> bytes:
        """The screen as PNG with the pointer drawn in: its real image from XFixes where the server
        has the extension (Xvfb and Xorg do), else a plain arrow at the pointer's position."""
        image = self.frame().to_image()
        cursor = self._cursor_image()
        if cursor is not None:
            sprite, x, y = cursor
            image.paste(sprite, (x, y), sprite)
        else:
            _draw_arrow(image, *self.cursor_position())
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=1)  # level 1: a fifth of the time of level 6
        return buf.getvalue()

    def _cursor_image(self) -> tuple[Image.Image, int, int] | None:
        if not self._xfixes:
            return None
        with self._lock:
            try:
                r = self.d.xfixes_get_cursor_image(self.root)
            except self._Xerror.XError:
                return None
        if r.width == 0 or r.height == 0:
            return None
        # ARGB words; on a little-endian host their bytes are B, G, R, A.
        words = array.array("I", r.cursor_image)
        if array.array("I", [1]).tobytes()[0] != 1:
            words.byteswap()
        sprite = Image.frombuffer("RGBA", (r.width, r.height), words.tobytes(), "raw", "BGRA", 0, 1)
        return sprite, r.x - r.xhot, r.y - r.yhot

    # -- windows ---------------------------------------------------------------------------------
    def _prop(self, window: Any, name: str) -> Any:
        p = window.get_full_property(self.d.intern_atom(name), self._X.AnyPropertyType)
        return None if p is None else p.value

    def windows(self) -> list[Window]:
        """Managed top-level windows (EWMH _NET_CLIENT_LIST), oldest first."""
        with self._lock:
            ids = self._prop(self.root, "_NET_CLIENT_LIST")
            out = []
            for wid in ids if ids is not None else []:
                w = self.d.create_resource_object("window", wid)
                try:
                    title = self._prop(w, "_NET_WM_NAME") or self._prop(w, "WM_NAME") or b""
                    cls = w.get_wm_class() or ("", "")
                except self._Xerror.XError:
                    continue  # closed while we looked
                if isinstance(title, bytes):
                    title = title.decode("utf-8", "replace")
                out.append(Window(wid, title, ".".join(cls)))
            return out

    def find_window(self, name: str, strict: bool = False, by_class: bool = False) -> Window | None:
        """wmctrl's matching, which OSWorld's Linux server uses: a case-insensitive substring of the
        title (or, ``by_class``, of "instance.class"); ``strict``: the whole string, case-sensitive.
        A title that finds nothing is tried again with its aliases in place, matched the same way."""
        windows = self.windows()
        names = [name]
        if not by_class:
            flags = 0 if strict else re.IGNORECASE
            for alias, shown in self.title_aliases.items():
                other = re.sub(re.escape(alias), lambda _, s=shown: s, name, flags=flags)
                if other != name:
                    names.append(other)
        for n in names:
            for w in windows:
                if wmctrl_matches(w.wm_class if by_class else w.title, n, strict):
                    return w
        return None

    def _client_message(self, window_id: int, atom: str, data: list[int]) -> None:
        from Xlib.protocol import event

        with self._lock:
            win = self.d.create_resource_object("window", window_id)
            ev = event.ClientMessage(window=win, client_type=self.d.intern_atom(atom), data=(32, data))
            mask = self._X.SubstructureRedirectMask | self._X.SubstructureNotifyMask
            self.root.send_event(ev, event_mask=mask)
            self.d.flush()

    def activate(self, window: Window) -> None:
        # Source 2: a pager, which window managers obey without focus-stealing checks.
        self._client_message(window.id, "_NET_ACTIVE_WINDOW", [2, self._X.CurrentTime, 0, 0, 0])

    def close_window(self, window: Window) -> None:
        self._client_message(window.id, "_NET_CLOSE_WINDOW", [self._X.CurrentTime, 2, 0, 0, 0])

    def window_size(self, window: Window) -> tuple[int, int]:
        with self._lock:
            g = self.d.create_resource_object("window", window.id).get_geometry()
        return g.width, g.height


def _draw_arrow(image: Image.Image, x: int, y: int) -> None:
    for dx, dy in _ARROW:
        for px, colour in ((x + dx, (0, 0, 0)), (x + dx + 1, (255, 255, 255))):
            if 0 <= px < image.width and 0 <= y + dy < image.height:
                image.putpixel((px, y + dy), colour)
