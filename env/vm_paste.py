"""Pasting text on a machine behind OSWorld's protocol, where no key types it (non-ASCII).

This module's source is sent to the machine as the first lines of a ``python -c`` program
(env/vm_desktop.py), so it has no ``from __future__`` import (which must open a file) and imports only what any OSWorld VM that runs pyautogui has: the standard library, python-xlib (which
pyautogui needs on X11) and pyautogui. It owns CLIPBOARD and PRIMARY itself for the length of one
paste, presses shift+Insert and answers the focused app's requests, then lets go and exits.

Why not ``xclip``: xclip forks a process that serves the selection until someone else takes it. That
process inherits the output pipes of the command, and OSWorld's server reads them to their end, so
``/execute`` waited its full 120 s and answered 500 although the text was typed; and every paste left
xclip processes running. Here nothing outlives the command. The price: after the paste the clipboard
holds nothing (no process is left to serve it), where xclip left the typed text there.
"""

import select
import time

FETCH_TIMEOUT_S = 2.0
MAX_BYTES = 200_000  # one ChangeProperty; more would need the INCR protocol


def paste_text(text: str, timeout_s: float = FETCH_TIMEOUT_S) -> None:
    """Paste ``text`` into the focused window; raise RuntimeError when no window fetched it."""
    import pyautogui
    from Xlib import X, Xatom, display
    from Xlib.protocol import event

    data = text.encode("utf-8")
    if len(data) > MAX_BYTES:
        raise RuntimeError(f"text to paste is {len(data)} bytes; at most {MAX_BYTES} are supported")
    d = display.Display()
    try:
        # An unmapped window is enough to own a selection and to get property events on.
        win = d.screen().root.create_window(0, 0, 1, 1, 0, X.CopyFromParent, event_mask=X.PropertyChangeMask)
        atom = d.intern_atom
        selections = [atom("CLIPBOARD"), atom("PRIMARY")]
        targets, utf8, text_atom = atom("TARGETS"), atom("UTF8_STRING"), atom("TEXT")
        # ICCCM: own a selection with a real server timestamp, read from a property change of ours.
        win.change_property(atom("_KIMI_PASTE_TIME"), Xatom.STRING, 8, b"")
        d.sync()
        while True:
            ev = d.next_event()
            if ev.type == X.PropertyNotify and ev.window == win:
                owned_at = int(ev.time)
                break
        for sel in selections:
            win.set_selection_owner(sel, owned_at)
            if d.get_selection_owner(sel) != win:
                raise RuntimeError("could not take the clipboard to paste the text")
        # shift+Insert pastes PRIMARY in xterm and CLIPBOARD in GTK, Qt and LibreOffice: we own both.
        pyautogui.hotkey("shift", "insert")
        deadline = time.monotonic() + timeout_s
        lost: set[int] = set()
        while True:
            if not d.pending_events():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(
                        f"no window fetched the pasted text within {timeout_s:g} s (is a text field focused?)"
                    )
                select.select([d.fileno()], [], [], left)
                continue
            ev = d.next_event()
            if ev.type == X.SelectionClear and ev.time >= owned_at:
                lost.add(ev.atom)  # a clipboard manager took it over and serves it now
                if len(lost) == len(selections):
                    return
            elif ev.type == X.SelectionRequest:
                prop = ev.property or ev.target  # obsolete clients send None
                delivered = False
                if ev.time != X.CurrentTime and ev.time < owned_at:
                    prop = X.NONE  # asked before we owned it (ICCCM 2.2)
                elif ev.target == targets:
                    ev.requestor.change_property(
                        prop, Xatom.ATOM, 32, [targets, utf8, text_atom, Xatom.STRING]
                    )
                elif ev.target in (utf8, text_atom):
                    ev.requestor.change_property(prop, utf8, 8, data)
                    delivered = True
                elif ev.target == Xatom.STRING:  # Latin-1 by definition
                    latin1 = text.encode("latin-1", "replace")
                    ev.requestor.change_property(prop, Xatom.STRING, 8, latin1)
                    delivered = True
                else:
                    prop = X.NONE  # a target we cannot convert to (an image, say)
                reply = event.SelectionNotify(
                    time=ev.time,
                    requestor=ev.requestor,
                    selection=ev.selection,
                    target=ev.target,
                    property=prop,
                )
                ev.requestor.send_event(reply)
                d.sync()
                if delivered:
                    return
    finally:
        d.close()  # our selections end with our connection: nothing is left serving them
