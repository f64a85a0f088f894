"""Signs that a desktop is still reacting to an action before (and while) its pixels change.

A key that starts a program changes no pixel for as long as the program takes to start (1.5 s on a
loaded machine); a screen watched for pixels alone looks settled all that time. These see the
reaction from its first millisecond:

- ``XActivity``: windows created, mapped, moved or closed, and the window manager's root
  properties (_NET_CLIENT_LIST, _NET_ACTIVE_WINDOW) changing: a new window, a menu, a dialog;
- ``ProcessActivity``: the desktop's processes running (or waiting to run, or on the disk), using
  CPU, or being started: a program starting or working.

Each answers ``active()``: whether anything happened since the last call (or ``reset()``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Protocol

from env.xauth import authority


class Activity(Protocol):
    windows: bool  # whether it watches windows (a change there is followed by the desktop's own)

    def reset(self) -> None:
        """Forget what happened so far: called just before an action."""
        ...

    def active(self) -> bool: ...

    def close(self) -> None: ...


class XActivity:
    """Structure events of the root window's children (every top-level window, menus and
    tooltips included) and property changes on the root, from a connection of our own. A splash
    screen (EWMH _NET_WM_WINDOW_TYPE_SPLASH: LibreOffice, GIMP) counts as activity for as long as
    it shows: its program is still starting, however still it sits."""

    windows = True

    def __init__(self, display: str, xauthority: Path | None = None) -> None:
        from Xlib import X
        from Xlib import display as xdisplay
        from Xlib import error as xerror

        self._X, self._Xerror = X, xerror
        with authority(xauthority):
            self.d = xdisplay.Display(display)
        self.root = self.d.screen().root
        self._client_list = self.d.intern_atom("_NET_CLIENT_LIST")
        self._type = self.d.intern_atom("_NET_WM_WINDOW_TYPE")
        self._splash_type = self.d.intern_atom("_NET_WM_WINDOW_TYPE_SPLASH")
        # Key remapping (ours, when a key is typed that the keymap lacks) says nothing about the desktop.
        self._ignored = {X.MappingNotify, X.KeymapNotify, X.NoExpose, X.GraphicsExpose}
        self._splash_of: dict[int, bool] = {}  # managed window id -> whether it is a splash screen
        self.root.change_attributes(event_mask=X.SubstructureNotifyMask | X.PropertyChangeMask)
        self._splashing = self._splash_shown()

    def _splash_shown(self) -> bool:
        """Whether a window the window manager manages is a splash screen."""
        prop = self.root.get_full_property(self._client_list, self._X.AnyPropertyType)
        known, self._splash_of = self._splash_of, {}
        for wid in prop.value if prop is not None else ():
            if wid in known:  # a window's type is set before it is mapped: asked once
                self._splash_of[wid] = known[wid]
                continue
            try:
                t = self.d.create_resource_object("window", wid).get_full_property(
                    self._type, self._X.AnyPropertyType
                )
            except self._Xerror.XError:
                continue  # gone meanwhile
            self._splash_of[wid] = t is not None and self._splash_type in t.value
        return any(self._splash_of.values())

    def _drain(self) -> bool:
        seen = clients_changed = False
        while self.d.pending_events():
            e = self.d.next_event()
            if e.type in self._ignored:
                continue
            seen = True
            if e.type == self._X.PropertyNotify and e.atom == self._client_list:
                clients_changed = True
        if clients_changed:
            self._splashing = self._splash_shown()
        return seen or self._splashing

    def reset(self) -> None:
        self._drain()

    def active(self) -> bool:
        return self._drain()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.d.close()


class ProcessActivity:
    """A desktop's processes are active when one of them is runnable or in uninterruptible sleep
    (a starved one counts: it has work to do), is new, or they used CPU since the last look.

    ``root``: the desktop is that process and its descendants (a sandbox's supervisor); None: every
    process /proc shows (inside a sandbox's pid namespace, the sandbox's). Our own process is never
    counted: its settle loop is always running."""

    windows = False

    def __init__(self, root: int | None = None) -> None:
        self._root = root
        self._me = os.getpid()
        self._cpu: dict[int, int] = {}

    def _look(self) -> tuple[dict[int, int], bool]:
        """CPU ticks per process of the desktop, and whether one of them is running now."""
        procs: dict[int, tuple[int, bool, int]] = {}  # pid -> (parent, running, ticks)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue  # gone meanwhile
            f = stat.rsplit(b")", 1)[1].split()
            procs[int(entry)] = (int(f[1]), f[0] in (b"R", b"D"), int(f[11]) + int(f[12]))
        pids = set(procs) if self._root is None else _tree(self._root, procs)
        pids.discard(self._me)
        return {p: procs[p][2] for p in pids}, any(procs[p][1] for p in pids)

    def reset(self) -> None:
        self._cpu, _ = self._look()

    def active(self) -> bool:
        cpu, running = self._look()
        before, self._cpu = self._cpu, cpu
        if running or any(pid not in before for pid in cpu):
            return True
        # One tick (10 ms) is what idle programs' timers cost now and then: not a reaction.
        return sum(ticks - before[pid] for pid, ticks in cpu.items()) >= 2

    def close(self) -> None:
        pass


def _tree(root: int, procs: dict[int, tuple[int, bool, int]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in procs.items():
        children.setdefault(parent, []).append(pid)
    tree, todo = set(), [root] if root in procs else []
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(children.get(pid, ()))
    return tree


def in_bubblewrap() -> bool:
    """Whether this process runs in a bubblewrap sandbox of its own pid namespace (pid 1 is
    bwrap): there every process /proc shows is the sandbox's."""
    try:
        return Path("/proc/1/comm").read_text().strip() == "bwrap"
    except OSError:
        return False
