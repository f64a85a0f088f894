"""Input drivers: the primitives an action is made of, on one input system.

``XTestDriver`` talks XTEST to a named X display (sandboxes: pyautogui binds $DISPLAY at import,
so several sandboxes in one process need their own connections). ``PyAutoGUIDriver`` drives the
local desktop wherever pyautogui works (X11, macOS, Windows).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Protocol

from env.keys import X_KEYSYMS

BUTTONS = {"left": 1, "middle": 2, "right": 3}


class InputDriver(Protocol):
    def move(self, x: int, y: int) -> None: ...
    def button(self, button: str, down: bool) -> None: ...
    def scroll(self, clicks: int, horizontal: bool) -> None: ...  # >0 = up / right
    def key(self, name: str, down: bool) -> None: ...
    def type_ascii(self, text: str) -> None: ...
    def paste(self, text: str) -> None: ...


class XTestDriver:
    def __init__(self, display: str) -> None:
        from Xlib import XK, X
        from Xlib import display as xdisplay
        from Xlib import error as xerror
        from Xlib.ext import xtest

        self._X, self._XK, self._xtest, self._Xerror = X, XK, xtest, xerror
        self.display_name = display
        self.d = xdisplay.Display(display)

    def close(self) -> None:
        self.d.close()

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
            windows = [
                w for w in root.query_tree().children if w.get_attributes().map_state == self._X.IsViewable
            ]
        for w in windows:
            try:
                if any(want in c.lower() for c in w.get_wm_class() or ()):
                    return True
            except self._Xerror.XError:
                continue  # the window went away while we looked
        return False

    def _sync(self) -> None:
        self.d.sync()

    def move(self, x: int, y: int) -> None:
        self._xtest.fake_input(self.d, self._X.MotionNotify, x=x, y=y)
        self._sync()

    def button(self, button: str, down: bool) -> None:
        self._xtest.fake_input(
            self.d, self._X.ButtonPress if down else self._X.ButtonRelease, BUTTONS[button]
        )
        self._sync()

    def scroll(self, clicks: int, horizontal: bool) -> None:
        # X wheel buttons: 4 up, 5 down, 6 left, 7 right.
        b = (7 if clicks > 0 else 6) if horizontal else (4 if clicks > 0 else 5)
        for _ in range(abs(clicks)):
            self._xtest.fake_input(self.d, self._X.ButtonPress, b)
            self._xtest.fake_input(self.d, self._X.ButtonRelease, b)
        self._sync()

    def _keycode(self, keysym: int) -> tuple[int, bool]:
        """Keycode for ``keysym`` and whether it sits on the shifted level."""
        for code, index in self.d.keysym_to_keycodes(keysym):
            if index in (0, 1):
                return code, index == 1
        raise ValueError(f"no key on this keyboard produces keysym {keysym:#x}")

    def key(self, name: str, down: bool) -> None:
        sym_name = X_KEYSYMS.get(name, name)
        keysym = self._XK.string_to_keysym(sym_name)
        if not keysym and len(name) == 1:
            keysym = ord(name)
        if not keysym:
            raise ValueError(f"unknown key {name!r}")
        code, _ = self._keycode(keysym)
        self._xtest.fake_input(self.d, self._X.KeyPress if down else self._X.KeyRelease, code)
        self._sync()

    def type_ascii(self, text: str) -> None:
        shift = self._keycode(self._XK.string_to_keysym("Shift_L"))[0]
        for ch in text:
            keysym = {"\n": self._XK.XK_Return, "\t": self._XK.XK_Tab}.get(ch, ord(ch))
            code, shifted = self._keycode(keysym)
            if shifted:
                self._xtest.fake_input(self.d, self._X.KeyPress, shift)
            self._xtest.fake_input(self.d, self._X.KeyPress, code)
            self._xtest.fake_input(self.d, self._X.KeyRelease, code)
            if shifted:
                self._xtest.fake_input(self.d, self._X.KeyRelease, shift)
        self._sync()

    def paste(self, text: str) -> None:
        clipboard_paste(text, self.display_name, lambda: self._shift_insert())

    def _shift_insert(self) -> None:
        self.key("shift", True)
        self.key("insert", True)
        self.key("insert", False)
        self.key("shift", False)


def _xclip(display: str, selection: str, data: bytes | None) -> bytes:
    """Read (``data=None``) or set one X selection. A read that gets no answer counts as empty."""
    env = {"DISPLAY": display, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    try:
        if data is None:
            r = subprocess.run(
                ["xclip", "-selection", selection, "-o"], env=env, capture_output=True, timeout=1
            )
            return r.stdout if r.returncode == 0 else b""
        # xclip forks a process that serves the selection until someone else owns it.
        subprocess.run(
            ["xclip", "-selection", selection, "-i"],
            env=env,
            input=data,
            check=True,
            timeout=5,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return data
    except subprocess.TimeoutExpired:
        if data is None:
            return b""
        raise RuntimeError(f"xclip did not set the {selection} selection") from None
    except (FileNotFoundError, subprocess.CalledProcessError):
        raise RuntimeError("typing non-ASCII text needs xclip (Debian: apt-get install xclip)") from None


def clipboard_paste(text: str, display: str, press_paste: object) -> None:
    """Put ``text`` on CLIPBOARD and PRIMARY, paste with shift+Insert (which pastes in xterm from
    PRIMARY and in GTK/Qt/LibreOffice from CLIPBOARD), then restore what was there."""
    saved = {sel: _xclip(display, sel, None) for sel in ("clipboard", "primary")}
    try:
        data = text.encode("utf-8")
        for sel in saved:
            _xclip(display, sel, data)
            # xclip returns before its forked child owns the selection: a paste right away can
            # fetch the old contents. Read it back until it is ours.
            deadline = time.monotonic() + 2.0
            while _xclip(display, sel, None) != data:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"could not take the {sel} selection to paste text")
                time.sleep(0.01)
        press_paste()  # type: ignore[operator]
        time.sleep(0.15)  # the app requests the selection asynchronously
    finally:
        for sel, data in saved.items():
            if data:
                _xclip(display, sel, data)


class PyAutoGUIDriver:
    def __init__(self) -> None:
        import pyautogui  # needs a display: imported only when the local desktop is used

        pyautogui.FAILSAFE = True  # pointer into a corner aborts: the user's emergency brake
        pyautogui.PAUSE = 0
        self.p = pyautogui

    def move(self, x: int, y: int) -> None:
        self.p.moveTo(x, y)

    def button(self, button: str, down: bool) -> None:
        (self.p.mouseDown if down else self.p.mouseUp)(button=button)

    def scroll(self, clicks: int, horizontal: bool) -> None:
        (self.p.hscroll if horizontal else self.p.scroll)(clicks)

    def key(self, name: str, down: bool) -> None:
        (self.p.keyDown if down else self.p.keyUp)(name)

    def type_ascii(self, text: str) -> None:
        self.p.write(text)

    def paste(self, text: str) -> None:
        if sys.platform.startswith("linux"):
            clipboard_paste(text, os.environ.get("DISPLAY", ":0"), lambda: self.p.hotkey("shift", "insert"))
            return
        import pyperclip

        saved = pyperclip.paste()
        try:
            pyperclip.copy(text)
            self.p.hotkey("command" if sys.platform == "darwin" else "ctrl", "v")
            time.sleep(0.15)
        finally:
            pyperclip.copy(saved)
