"""Which windows are up on the machine, asked through ``/execute`` (which every server of OSWorld's
protocol runs), matched the way the window endpoints match.

OSWorld's own server answers 200 to ``activate_window`` / ``close_window`` whether or not a window
matched (its Linux code runs ``wmctrl -a NAME`` and ignores the result), so a window step looks for
the window itself before acting. The listing program is ours and takes no input; it needs the
``python`` with pyautogui that the client's actions need there anyway (python-xlib comes with it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from env.osworld_client import OSWorldClient
from env.osworld_server.screen import wmctrl_matches

# _NET_CLIENT_LIST with each window's title (_NET_WM_NAME, else WM_NAME) and "instance.class": what
# wmctrl -l -x lists and matches.
LIST_PROGRAM = """
import json
from Xlib import X, display
d = display.Display()
def prop(w, name):
    p = w.get_full_property(d.intern_atom(name), X.AnyPropertyType)
    return p.value if p is not None else None
out = []
for wid in prop(d.screen().root, "_NET_CLIENT_LIST") or []:
    w = d.create_resource_object("window", wid)
    try:
        title = prop(w, "_NET_WM_NAME") or prop(w, "WM_NAME") or b""
        cls = w.get_wm_class() or ("", "")
    except Exception:
        continue  # closed while we looked
    if isinstance(title, bytes):
        title = title.decode("utf-8", "replace")
    out.append([str(title), ".".join(cls)])
print(json.dumps(out))
"""
MAX_WINDOWS = 10_000


class CannotList(Exception):
    """The machine could not list its windows; the message says why."""


@dataclass(frozen=True)
class WindowInfo:
    title: str
    wm_class: str  # "instance.class"


def list_windows(client: OSWorldClient) -> list[WindowInfo]:
    """The machine's managed windows, oldest first. Connection failures raise OSWorldError."""
    r = client.execute(["python", "-c", LIST_PROGRAM], timeout_s=30.0)
    if not r.ok:
        raise CannotList(r.why())
    try:
        rows = json.loads(r.output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise CannotList(f"the window list was not JSON: {r.output[:100]!r}") from None
    # The machine's answer is not trusted: exactly [[str, str], ...] or nothing.
    ok = isinstance(rows, list) and len(rows) <= MAX_WINDOWS
    if not ok or not all(
        isinstance(w, list) and len(w) == 2 and all(isinstance(s, str) for s in w) for w in rows
    ):
        raise CannotList("the window list was not a list of [title, class] pairs")
    return [WindowInfo(title, wm_class) for title, wm_class in rows]


def matches(window: WindowInfo, name: str, strict: bool, by_class: bool) -> bool:
    """wmctrl's matching (-x: by class), as our server's window endpoints match too."""
    return wmctrl_matches(window.wm_class if by_class else window.title, name, strict)


def describe(name: str, strict: bool, by_class: bool) -> str:
    """How a window step looks for ``name``, for messages."""
    what = "class" if by_class else "title"
    return f"{name!r} ({what} {'exactly' if strict else 'contains it, any case'})"
