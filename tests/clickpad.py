"""A borderless Tk window covering the screen that logs pointer and key events as JSON lines.

Usage: python clickpad.py LOGFILE. Coordinates are root (screen) pixels.
"""

from __future__ import annotations

import json
import sys
import tkinter as tk

log = open(sys.argv[1], "a", buffering=1, encoding="utf-8")  # noqa: SIM115


def emit(kind: str, e: tk.Event, **extra: object) -> None:
    log.write(json.dumps({"kind": kind, "x": e.x_root, "y": e.y_root, **extra}) + "\n")


root = tk.Tk()
root.overrideredirect(True)  # no window-manager frame: window pixel (0,0) is screen pixel (0,0)
w, h = root.winfo_screenwidth(), root.winfo_screenheight()
root.geometry(f"{w}x{h}+0+0")
root.configure(background="white")
root.bind("<ButtonPress>", lambda e: emit("down", e, button=e.num, shift=bool(e.state & 1)))
root.bind("<ButtonRelease>", lambda e: emit("up", e, button=e.num))
root.bind("<KeyPress>", lambda e: emit("key", e, keysym=e.keysym))
root.bind("<KeyRelease>", lambda e: emit("keyup", e, keysym=e.keysym))
root.bind("<Map>", lambda e: log.write(json.dumps({"kind": "ready"}) + "\n"))
root.after(200, lambda: (root.focus_force(), root.grab_set_global()))
root.mainloop()
