"""A borderless Tk window covering the screen that logs pointer and key events as JSON lines.

Usage: python clickpad.py LOGFILE [--managed]. Coordinates are root (screen) pixels. It logs
``ready`` once it holds the pointer and keyboard grab, so every event from then on reaches it.

By default the window is override-redirect: no window manager touches it, so ``ready`` is final.
``--managed``: a full-screen window the manager manages, for a sandbox's ``--app``, which waits until
the app's window is listed by the manager (override-redirect windows never are) and the screen has
settled; a manager's own handling of the window (reparenting, going full screen) can drop events
sent right after ``ready``, so the tests that act on ``ready`` use the default.
"""

from __future__ import annotations

import json
import sys
import tkinter as tk

log = open(sys.argv[1], "a", buffering=1, encoding="utf-8")  # noqa: SIM115


def emit(kind: str, e: tk.Event | None = None, **extra: object) -> None:
    where = {"x": e.x_root, "y": e.y_root} if e is not None else {}
    log.write(json.dumps({"kind": kind, **where, **extra}) + "\n")


def grab() -> None:
    """A global grab fails until the window is viewable; retry briefly instead of guessing a delay."""
    try:
        root.grab_set_global()
    except tk.TclError:
        root.after(10, grab)
        return
    root.focus_force()
    emit("ready")


root = tk.Tk()
w, h = root.winfo_screenwidth(), root.winfo_screenheight()
root.geometry(f"{w}x{h}+0+0")  # window pixel (0,0) is screen pixel (0,0)
if "--managed" in sys.argv[2:]:
    root.attributes("-fullscreen", True)  # no frame under a manager either
else:
    root.overrideredirect(True)
root.configure(background="white")
root.bind("<ButtonPress>", lambda e: emit("down", e, button=e.num, shift=bool(e.state & 1)))
root.bind("<ButtonRelease>", lambda e: emit("up", e, button=e.num))
root.bind("<KeyPress>", lambda e: emit("key", e, keysym=e.keysym))
root.bind("<KeyRelease>", lambda e: emit("keyup", e, keysym=e.keysym))
root.after_idle(grab)
root.mainloop()
