"""The full desktop is one a model can act on: a scripted session opens a terminal from the
panel's Applications menu and with Ctrl+Alt+T, on a real XFCE in a real sandbox."""

from __future__ import annotations

import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from env.actions import Action, Click, Done, Hotkey, KeyPress, Point, TypeText, Wait
from env.osworld_server.accessibility import WORKER

if TYPE_CHECKING:
    from env.sandbox import Sandbox

CP = "https://accessibility.ubuntu.example.org/ns/component"

pytestmark = [
    pytest.mark.x11,
    pytest.mark.skipif(shutil.which("xfce4-panel") is None, reason="XFCE is not installed"),
]


def _wait_text(path: Path, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().endswith("\n")) and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.read_text() if path.exists() else ""


def _a11y_point(box: Sandbox, role: str, name: str, timeout: float = 10.0) -> Point:
    """The centre of the element the desktop's accessibility tree shows with this role and name (the
    tree OSWorld's /accessibility serves, read inside the sandbox): where a person would click, wherever
    the menu happens to put it."""
    deadline = time.monotonic() + timeout
    while True:
        r = box.run(["/usr/bin/python3", "-", "tree"], input=WORKER.read_bytes(), timeout_s=30)
        if r.returncode == 0:
            for el in ET.fromstring(r.stdout).iter(role):
                coord, size = el.get(f"{{{CP}}}screencoord"), el.get(f"{{{CP}}}size")
                if el.get("name") == name and coord and size:
                    (x, y), (w, h) = (tuple(int(v) for v in t.strip("()").split(",")) for t in (coord, size))
                    if w > 0 and h > 0:
                        return Point.px(x + w // 2, y + h // 2)
        if time.monotonic() > deadline:
            raise AssertionError(f"no {role} named {name!r} in the accessibility tree: {r.stderr[-300:]!r}")
        time.sleep(0.3)


def test_a_scripted_session_opens_terminals_from_the_menu_and_the_shortcut() -> None:
    from agent.loop import run
    from agent.policy import ScriptedPolicy
    from env.sandbox import Sandbox

    with Sandbox(1280, 800) as box:
        first = box.screenshot().to_image()
        assert first.getpixel((640, 13)) != first.getpixel((640, 400))  # a panel, not wallpaper only
        box.execute(Click(point=_a11y_point(box, "toggle-button", "Applications")))
        terminal = _a11y_point(box, "menu-item", "Terminal Emulator")
        steps: list[list[Action]] = [
            [Click(point=terminal)],
            [Wait(seconds=1)],
            [TypeText(text="echo from the menu > ~/menu.txt"), KeyPress(key="enter")],
            [Hotkey(keys=["ctrl", "alt", "t"])],
            [Wait(seconds=1)],
            [TypeText(text="echo from the shortcut > ~/shortcut.txt"), KeyPress(key="enter")],
            [Done(status="success")],
        ]
        traj = run("open two terminals", ScriptedPolicy(steps), box, max_steps=len(steps))
        assert traj.status == "success"
        assert _wait_text(box.home / "menu.txt") == "from the menu\n"
        assert _wait_text(box.home / "shortcut.txt") == "from the shortcut\n"
        terminals = [w for w in box._x.top_level_windows() if "terminal" in str(w.get_wm_class()).lower()]
        assert len(terminals) == 2


def test_the_applications_menu_is_the_same_on_every_machine() -> None:
    """xfce4-appfinder is required, so "Run Program..." always heads the menu (where it was missing,
    every entry sat one row higher and a remembered click opened the wrong program)."""
    from env.sandbox import Sandbox

    with Sandbox(1280, 800) as box:
        box.execute(Click(point=_a11y_point(box, "toggle-button", "Applications")))
        run_program = _a11y_point(box, "menu-item", "Run Program...")
        terminal = _a11y_point(box, "menu-item", "Terminal Emulator")
        assert run_program.y < terminal.y


def test_the_home_is_a_desktop_users() -> None:
    from env.sandbox import Sandbox

    with Sandbox(800, 600) as box:
        assert {"Desktop", "Documents", "Downloads"} <= {p.name for p in box.home.iterdir()}
        r = box.run(
            [
                "sh",
                "-c",
                "whoami; hostname; echo $XDG_MENU_PREFIX; ls /usr/share/applications | grep -c desktop",
            ]
        )
        user, host, _, apps = r.stdout.decode().split("\n")[:4]
        assert (user, host) == ("user", "kimi-sandbox") and int(apps) > 5  # apps registered for "open X"
