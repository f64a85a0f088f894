"""What OSWorld's Ubuntu 22.04 image has that a sandbox provides itself, so that a task's setup and its
evaluator meet the state they were written for: a ``google-chrome`` command (Debian's Chromium with
Chrome's profile path, process name and window class) and the system's default applications
(Totem plays videos, as on Ubuntu). The session bus with dconf behind gsettings is the sandbox's
own (env/sandbox.py).

Everything here is written by the host into the sandbox's control directory before the sandbox
starts: read-only inside, so no program there can change the command or the defaults.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from env.isolation import HOME, write_new_file

CHROMIUM_DIR = Path("/usr/lib/chromium")  # Debian's Chromium: the binary and what it loads beside it
# Commands of OSWorld's image that a sandbox provides as another program: name -> the program needed.
PROVIDED = {"google-chrome": "chromium"}
# Chrome's WM_CLASS class on Ubuntu (the instance part follows the profile path in Chromium).
CHROME_CLASS = "Google-chrome"
# How OSWorld's task files name Chrome's windows -> what Chromium's windows say in its place.
TITLE_ALIASES = {"Google Chrome": "Chromium"}
# Ubuntu's system defaults send videos to Totem (org.gnome.Totem.desktop): these are the video types
# Totem's desktop file declares. Programs that are not installed are skipped by xdg-mime and gio.
TOTEM = "org.gnome.Totem.desktop"
TOTEM_VIDEO_TYPES = (
    *("3gp", "3gpp", "3gpp2", "dv", "divx", "fli", "flv", "mp2t", "mp4", "mp4v-es", "mpeg"),
    *("mpeg-system", "msvideo", "ogg", "quicktime", "vivo", "vnd.divx", "vnd.mpegurl"),
    *("vnd.rn-realvideo", "vnd.vivo", "webm", "x-anim", "x-avi", "x-flc", "x-fli", "x-flic"),
    *("x-flv", "x-m4v", "x-matroska", "x-mjpeg", "x-mpeg", "x-mpeg2", "x-ms-asf"),
    *("x-ms-asf-plugin", "x-ms-asx", "x-msvideo", "x-ms-wm", "x-ms-wmv", "x-ms-wmx", "x-ms-wvx"),
    *("x-nsv", "x-ogm+ogg", "x-theora", "x-theora+ogg"),
)


@dataclass(frozen=True)
class ImageParts:
    """What the sandbox adds: ``env`` to every program's environment, ``path`` in front of its PATH,
    ``binds`` (host source, place inside) to bubblewrap, and ``title_aliases`` for its server's
    window lookups."""

    env: dict[str, str] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)
    binds: list[tuple[Path, Path]] = field(default_factory=list)
    title_aliases: dict[str, str] = field(default_factory=dict)


def provided(program: str, which: Callable[[str], str | None] = shutil.which) -> bool:
    """Whether a sandbox on this machine provides ``program`` of OSWorld's image itself."""
    return program in PROVIDED and which(PROVIDED[program]) is not None


def chrome_profile(home: Path, which: Callable[[str], str | None] = shutil.which) -> None:
    """Chrome's profile in a sandbox's home, as on OSWorld's image, where Chrome has run before: its
    ``Default/Preferences`` exists (tasks edit it before Chrome starts, some with ``cd`` into its
    directory first) and the first run is over. Chrome fills in the rest at its first start."""
    if which("google-chrome") is None and not provided("google-chrome", which):
        return
    root = home / ".config" / "google-chrome"
    if (root / "Default" / "Preferences").exists():
        return
    (root / "Default").mkdir(parents=True, exist_ok=True)
    write_new_file(root / "Default" / "Preferences", b"{}", 0o600)
    write_new_file(root / "First Run", b"", 0o600)


def mimeapps() -> str:
    lines = [f"video/{t}={TOTEM}" for t in TOTEM_VIDEO_TYPES]
    return "[Default Applications]\n" + "\n".join(lines) + "\n"


def chrome_script(chromium: str, home: str) -> str:
    """``google-chrome``: Chromium with Chrome's profile and window class, accessibility on (as on
    OSWorld's GNOME image: Chromium joins the AT-SPI tree only when told to, and shows its pages there
    only when forced), and its own sandbox off only where it cannot work (root, no user namespaces).
    Started outside a desktop session (by the OSWorld server), it takes the image's GNOME session as
    its desktop: Chrome's default theme follows it (GTK there, "Classic" with none), and the appearance
    getter reads the theme."""
    profile = shlex.quote(f"{home}/.config/google-chrome")
    return (
        "#!/bin/sh\n"
        "# OSWorld's image has Google Chrome; this machine has Debian's Chromium (kimi-agent, env/image.py).\n"
        'if [ "$(id -u)" = 0 ] || ! unshare --user true 2>/dev/null; then set -- --no-sandbox "$@"; fi\n'
        "export ACCESSIBILITY_ENABLED=1 CHROME_DESKTOP=google-chrome.desktop\n"
        'export XDG_CURRENT_DESKTOP="${XDG_CURRENT_DESKTOP:-ubuntu:GNOME}"\n'
        f"exec {shlex.quote(chromium)} --user-data-dir={profile} --class={CHROME_CLASS} "
        '--force-renderer-accessibility --no-first-run --no-default-browser-check "$@"\n'
    )


def prepare(ctl: Path, inside_ctl: str, *, isolated: bool, home: str = HOME) -> ImageParts:
    """Write the image's parts into ``ctl`` (the control directory, ``inside_ctl`` inside; files
    readable by all, none secret) and say how the sandbox puts them in place."""
    xdg = ctl / "xdg"
    xdg.mkdir()
    write_new_file(xdg / "mimeapps.list", mimeapps().encode(), 0o644)
    # Ubuntu's session puts its own directory first the same way (/etc/xdg/xdg-ubuntu).
    env = {"XDG_CONFIG_DIRS": f"{inside_ctl}/xdg:/etc/xdg"}
    parts = ImageParts(env)
    if shutil.which("google-chrome") or not (CHROMIUM_DIR / "chromium").is_file():
        return parts  # a real Chrome, or no Chromium: nothing to provide
    chromium = "chromium"  # Debian's wrapper, with the flags it adds (/etc/chromium.d)
    binds: list[tuple[Path, Path]] = []
    if isolated:
        # Chromium names its process after the file it runs (/proc/self/exe): bound in as
        # .../chrome, as Chrome's binary is called, it is a process `pkill chrome` finds. What it
        # loads beside itself (paks, locales, ICU data) is bound next to it.
        chrome = ctl / "chrome"
        chrome.mkdir()
        for entry in sorted(CHROMIUM_DIR.iterdir()):
            name = "chrome" if entry.name == "chromium" else entry.name
            if entry.is_dir():  # the mount point, of the same kind
                (chrome / name).mkdir()
            else:
                write_new_file(chrome / name, b"", 0o644)
            binds.append((entry, Path(inside_ctl, "chrome", name)))
        chromium = f"{inside_ctl}/chrome/chrome"  # the binary itself: Debian's wrapper runs chromium
    bin_dir = ctl / "bin"
    bin_dir.mkdir()
    write_new_file(bin_dir / "google-chrome", chrome_script(chromium, home).encode(), 0o755)
    return ImageParts(env, [f"{inside_ctl}/bin"], binds, dict(TITLE_ALIASES))
