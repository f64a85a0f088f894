"""Input drivers: the primitives every action is made of, on one input system.

``XTestDriver`` speaks XTEST to a named X display (sandboxes: pyautogui binds $DISPLAY once, at
import, so several sandboxes in one process need connections of their own). ``PyAutoGUIDriver``
drives the local desktop wherever pyautogui works (X11, macOS, Windows).
Key names are the canonical ones of env/keys.py.
"""

from __future__ import annotations

import os
import sys
from typing import Protocol

from env.clipboard import X11Paster, paste_elsewhere
from env.keys import X_KEYSYMS

BUTTONS = {"left": 1, "middle": 2, "right": 3}


class InputDriver(Protocol):
    def move_to(self, x: int, y: int) -> None: ...
    def button_down(self, button: str) -> None: ...
    def button_up(self, button: str) -> None: ...
    def scroll(self, clicks: int, horizontal: bool) -> None: ...  # clicks > 0: wheel up / right
    def key_down(self, key: str) -> None: ...
    def key_up(self, key: str) -> None: ...
    def type_ascii(self, text: str) -> None: ...  # printable ASCII, \n and \t
    def paste_text(self, text: str) -> None: ...  # anything, through the clipboard
    def close(self) -> None: ...


class XTestDriver:
    def __init__(self, display: str) -> None:
        from Xlib import XK, X
        from Xlib import display as xdisplay
        from Xlib import error as xerror
        from Xlib.ext import xtest

        self._X, self._XK, self._xtest, self._Xerror = X, XK, xtest, xerror
        self.display_name = display
        self.d = xdisplay.Display(display)
        if not self.d.has_extension("XTEST"):
            raise RuntimeError(f"X display {display} has no XTEST extension to fake input with")
        self._shift = self._keycode(XK.string_to_keysym("Shift_L"))[0]
        self._shift_added: set[str] = set()  # keys held down together with a Shift we pressed
        self._paster: X11Paster | None = None

    def close(self) -> None:
        if self._paster is not None:
            self._paster.close()
        self.d.close()

    # -- windows (for tests and the sandbox's readiness checks) -----------------------------------
    def has_window_manager(self) -> bool:
        """An EWMH window manager announces itself with _NET_SUPPORTING_WM_CHECK on the root."""
        root = self.d.screen().root
        prop = root.get_full_property(self.d.intern_atom("_NET_SUPPORTING_WM_CHECK"), self._X.AnyPropertyType)
        return prop is not None and len(prop.value) > 0

    def find_window(self, wm_class: str) -> bool:
        """Whether a window whose WM_CLASS contains ``wm_class`` (any case) is up: managed by the
        window manager (EWMH _NET_CLIENT_LIST) or, with no manager, mapped."""
        want = wm_class.lower()
        root = self.d.screen().root
        clients = root.get_full_property(self.d.intern_atom("_NET_CLIENT_LIST"), self._X.AnyPropertyType)
        if clients is not None:
            windows = [self.d.create_resource_object("window", wid) for wid in clients.value]
        else:
            windows = root.query_tree().children
        for w in windows:
            try:
                if clients is None and w.get_attributes().map_state != self._X.IsViewable:
                    continue
                if any(want in c.lower() for c in w.get_wm_class() or ()):
                    return True
            except self._Xerror.XError:
                continue  # the window went away while we looked
        return False

    # -- pointer -----------------------------------------------------------------------------------
    def move_to(self, x: int, y: int) -> None:
        self._xtest.fake_input(self.d, self._X.MotionNotify, x=x, y=y)
        self.d.sync()

    def button_down(self, button: str) -> None:
        self._xtest.fake_input(self.d, self._X.ButtonPress, BUTTONS[button])
        self.d.sync()

    def button_up(self, button: str) -> None:
        self._xtest.fake_input(self.d, self._X.ButtonRelease, BUTTONS[button])
        self.d.sync()

    def scroll(self, clicks: int, horizontal: bool) -> None:
        # X has no wheel events: buttons 4 up, 5 down, 6 left, 7 right, one click each.
        b = (7 if clicks > 0 else 6) if horizontal else (4 if clicks > 0 else 5)
        for _ in range(abs(clicks)):
            self._xtest.fake_input(self.d, self._X.ButtonPress, b)
            self._xtest.fake_input(self.d, self._X.ButtonRelease, b)
        self.d.sync()

    # -- keyboard ----------------------------------------------------------------------------------
    def _keycode(self, keysym: int) -> tuple[int, bool]:
        """Keycode for ``keysym`` and whether it sits on the shifted level."""
        for code, index in self.d.keysym_to_keycodes(keysym):
            if index in (0, 1):
                return code, index == 1
        raise ValueError(f"no key on the keyboard of {self.display_name} produces keysym {keysym:#x}")

    def _key_code(self, key: str) -> tuple[int, bool]:
        keysym = self._XK.string_to_keysym(X_KEYSYMS.get(key, key))
        if not keysym and len(key) == 1 and 0x20 <= ord(key) < 0x7F:
            keysym = ord(key)  # Latin-1 keysyms equal the code point ("+" has no name lookup)
        if not keysym:
            raise ValueError(f"unknown key {key!r}")
        return self._keycode(keysym)

    def key_down(self, key: str) -> None:
        code, shifted = self._key_code(key)
        if shifted:  # "!" is shift+1 on the keyboard
            self._xtest.fake_input(self.d, self._X.KeyPress, self._shift)
            self._shift_added.add(key)
        self._xtest.fake_input(self.d, self._X.KeyPress, code)
        self.d.sync()

    def key_up(self, key: str) -> None:
        code, _ = self._key_code(key)
        self._xtest.fake_input(self.d, self._X.KeyRelease, code)
        if key in self._shift_added:
            self._shift_added.discard(key)
            self._xtest.fake_input(self.d, self._X.KeyRelease, self._shift)
        self.d.sync()

    def type_ascii(self, text: str) -> None:
        special = {"\n": self._XK.XK_Return, "\t": self._XK.XK_Tab}
        for ch in text:
            code, shifted = self._keycode(special.get(ch, ord(ch)))
            if shifted:
                self._xtest.fake_input(self.d, self._X.KeyPress, self._shift)
            self._xtest.fake_input(self.d, self._X.KeyPress, code)
            self._xtest.fake_input(self.d, self._X.KeyRelease, code)
            if shifted:
                self._xtest.fake_input(self.d, self._X.KeyRelease, self._shift)
        self.d.sync()

    def paste_text(self, text: str) -> None:
        if self._paster is None:
            self._paster = X11Paster(self.display_name)
        self._paster.paste(text, self._shift_insert)

    def _shift_insert(self) -> None:
        self.key_down("shift")
        self.key_down("insert")
        self.key_up("insert")
        self.key_up("shift")


class PyAutoGUIDriver:
    def __init__(self) -> None:
        import pyautogui  # needs a display: imported only when the local desktop is used

        pyautogui.FAILSAFE = True  # pointer into a corner aborts: the user's emergency brake
        pyautogui.PAUSE = 0  # the executor and the settle wait do the pacing
        self.p = pyautogui
        self._paster: X11Paster | None = None

    def close(self) -> None:
        if self._paster is not None:
            self._paster.close()

    def move_to(self, x: int, y: int) -> None:
        self.p.moveTo(x, y)

    def button_down(self, button: str) -> None:
        self.p.mouseDown(button=button)

    def button_up(self, button: str) -> None:
        self.p.mouseUp(button=button)

    def scroll(self, clicks: int, horizontal: bool) -> None:
        (self.p.hscroll if horizontal else self.p.scroll)(clicks)

    def key_down(self, key: str) -> None:
        self.p.keyDown(key)

    def key_up(self, key: str) -> None:
        self.p.keyUp(key)

    def type_ascii(self, text: str) -> None:
        self.p.write(text)

    def paste_text(self, text: str) -> None:
        if sys.platform.startswith("linux"):
            if self._paster is None:
                self._paster = X11Paster(os.environ.get("DISPLAY", ":0"))
            self._paster.paste(text, lambda: self.p.hotkey("shift", "insert"))
        else:
            modifier = "command" if sys.platform == "darwin" else "ctrl"
            paste_elsewhere(text, lambda: self.p.hotkey(modifier, "v"))
