"""Desktop environments a sandbox can run: what to start and how to know it is ready.

``xfce`` (the default) is a full light desktop: a panel with the Applications menu and launchers,
a desktop with icons and a wallpaper, a file manager, and XFCE's usual shortcuts (Ctrl+Alt+T opens
a terminal). Kimi-VL was trained on real desktops; a model asked to "open a terminal" needs a
menu or a shortcut to act on. ``minimal`` is bare openbox, for speed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from env.image import chrome_profile
from env.libreoffice import prepare_profile

DesktopName = Literal["xfce", "minimal"]
DESKTOPS: tuple[DesktopName, ...] = ("xfce", "minimal")
# OSWorld's tasks read and write these under /home/user.
USER_DIRS = ("Desktop", "Documents", "Downloads", "Music", "Pictures", "Public", "Templates", "Videos")
# xfce4-appfinder puts "Run Program..." at the top of the Applications menu: required, so that the menu
# (and where its entries are) is the same on every machine, not one entry lower where it is installed.
XFCE_PACKAGES = "xfwm4 xfce4-panel xfdesktop4 xfce4-settings thunar xfce4-terminal xfce4-appfinder dbus-daemon desktop-base"


@dataclass(frozen=True)
class DesktopSpec:
    name: DesktopName
    command: tuple[str, ...]
    needs: tuple[str, ...]  # programs that must be installed
    install_hint: str
    # WM_CLASS names whose windows show the desktop is drawn (the panel, the icons and wallpaper)
    ready_windows: tuple[str, ...] = ()


def spec(name: DesktopName, ready_file: str) -> DesktopSpec:
    if name == "xfce":
        # XFCE's parts started side by side on the sandbox's session bus: xfce4-session would start
        # them one priority group after another, waiting for each (a second more), and adds nothing
        # a model sees. XDG_MENU_PREFIX picks XFCE's application menu, as the session would.
        script = (
            "export XDG_CURRENT_DESKTOP=XFCE XDG_MENU_PREFIX=xfce- DESKTOP_SESSION=xfce; "
            "xfsettingsd --sm-client-disable & xfwm4 --sm-client-disable & "
            "xfce4-panel --sm-client-disable & xfdesktop --sm-client-disable & "
            "thunar --daemon --sm-client-disable & wait"
        )
        return DesktopSpec(
            "xfce",
            ("sh", "-c", script),
            (
                "dbus-daemon",
                "xfsettingsd",
                "xfwm4",
                "xfce4-panel",
                "xfdesktop",
                "thunar",
                "xfce4-appfinder",
            ),
            f"apt-get install {XFCE_PACKAGES}",
            ready_windows=("xfce4-panel", "xfdesktop"),
        )
    if name == "minimal":
        # openbox runs --startup once it is really managing windows; apps mapped earlier can wait
        # 5 s for an answer it never gives (Xt's wmTimeout, seen with xterm).
        return DesktopSpec(
            "minimal",
            ("openbox", "--startup", f"touch {ready_file}"),
            ("openbox",),
            "apt-get install openbox",
        )
    raise ValueError(f"unknown desktop {name!r}: choose from {', '.join(DESKTOPS)}")


def missing(s: DesktopSpec) -> str | None:
    """A one-line reason the desktop cannot start here, or None."""
    absent = [p for p in s.needs if shutil.which(p) is None]
    if not absent:
        return None
    return f"the {s.name} desktop needs {', '.join(absent)} (Debian: {s.install_hint})"


def prepare_home(
    home: Path, name: DesktopName | None, has: Callable[[str], bool] = lambda p: shutil.which(p) is not None
) -> None:
    """A home directory like a fresh desktop user's: the XDG folders, and for XFCE its default
    panel (otherwise it asks on first start which panel to use) and preferred applications."""
    for d in USER_DIRS:
        (home / d).mkdir(exist_ok=True)
    prepare_profile(home)  # LibreOffice as OSWorld's image has it: no first-run infobar
    chrome_profile(home)  # and Chrome
    if name != "xfce":
        return
    conf = home / ".config" / "xfce4"
    channels = conf / "xfconf" / "xfce-perchannel-xml"
    channels.mkdir(parents=True, exist_ok=True)
    # No compositing: on a virtual framebuffer it only delays every repaint (and screenshots).
    (channels / "xfwm4.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<channel name="xfwm4" version="1.0">\n'
        '  <property name="general" type="empty">\n'
        '    <property name="use_compositing" type="bool" value="false"/>\n'
        "  </property>\n</channel>\n"
    )
    panel = Path("/etc/xdg/xfce4/panel/default.xml")
    if panel.exists():
        shutil.copyfile(panel, channels / "xfce4-panel.xml")
    helpers = {
        "TerminalEmulator": next((t for t in ("xfce4-terminal", "xterm") if has(t)), None),
        "FileManager": "thunar" if has("thunar") else None,
        "WebBrowser": "chromium" if has("chromium") else None,
    }
    (conf / "helpers.rc").write_text("".join(f"{k}={v}\n" for k, v in helpers.items() if v))
