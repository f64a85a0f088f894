"""`kimi-agent bench osworld check-vm URL`: does a VM (OSWorld's own server, or ours) have what
kimi-agent's client and OSWorld's tasks need? Each check is one request; a failed one says what to
install. docs/osworld.md ("What a VM image needs") lists the same things for people building images.

OSWorld's server needs, besides itself: gnome-screenshot (pyscreeze refuses to capture without it,
so /screenshot answers 500), wmctrl (its /setup/activate_window and close_window), a `python` on PATH
that imports pyautogui and python-xlib (our client sends ``["python", "-c", ...]`` to /execute, as
OSWorld's own harness does; text that is not plain ASCII is pasted and windows are listed through
python-xlib in that same python), and ffmpeg recording display :0 (its /start_recording hard-codes
it).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from env.osworld_client import NotFound, OSWorldClient, OSWorldError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found, or what to install
    required: bool = True  # False: a task or a faster path needs it, the client works without it


def _run(client: OSWorldClient, command: list[str]) -> tuple[bool, str]:
    """A command through /execute: (ran with exit 0, its output or error in one line)."""
    r = client.execute(command, timeout_s=30.0)
    text = " ".join((r.output or r.error).split())
    return r.ok, text[:200]


def _screenshot(client: OSWorldClient) -> Check:
    width, height = client.screen_size()
    try:
        data = client.screenshot()
    except OSWorldError as e:
        return Check("screenshot", False, f"{e}: on OSWorld's server, install gnome-screenshot")
    with Image.open(io.BytesIO(data)) as im:
        size = im.size
    if size != (width, height):
        return Check("screenshot", False, f"{size[0]}x{size[1]}, but /screen_size says {width}x{height}")
    return Check("screenshot", True, f"a {width}x{height} PNG")


def _command(
    name: str, command: list[str], fix: str, required: bool = True
) -> Callable[[OSWorldClient], Check]:
    def check(client: OSWorldClient) -> Check:
        ok, text = _run(client, command)
        return Check(name, ok, text if ok else f"{text or 'failed'}: {fix}", required)

    return check


def _display(client: OSWorldClient) -> Check:
    r = client.execute(
        ["sh", "-c", 'echo "display=$DISPLAY"; echo "ffmpeg=$(command -v ffmpeg)"'], timeout_s=30.0
    )
    found = dict(line.partition("=")[::2] for line in r.output.splitlines() if "=" in line)
    display, ffmpeg = found.get("display", ""), found.get("ffmpeg", "")
    if not ffmpeg:
        return Check("recording", False, "no ffmpeg on PATH: install ffmpeg for /start_recording", False)
    if display not in (":0", ":0.0"):
        return Check(
            "recording",
            False,
            f"the server's display is {display or 'unset'}; OSWorld's /start_recording records :0",
            False,
        )
    return Check("recording", True, f"ffmpeg, display {display}", False)


def _fast(client: OSWorldClient) -> Check:
    try:
        server = client.call("GET", "/kimi/info").json().get("server")
    except NotFound:
        server = None
    if server == "kimi-agent":
        return Check("kimi endpoints", True, "kimi-agent's server: typed actions and raw frames", False)
    return Check(
        "kimi endpoints",
        True,
        "OSWorld's protocol only: actions go as pyautogui code through /execute",
        False,
    )


CHECKS: tuple[Callable[[OSWorldClient], Check], ...] = (
    _screenshot,
    _command(
        "python with pyautogui",
        [
            "python",
            "-c",
            "import pyautogui, Xlib; print('pyautogui', pyautogui.__version__, 'Xlib', Xlib.__version_string__)",
        ],
        "put a `python` that imports pyautogui and Xlib on the server's PATH (a link to python3, "
        "pip install pyautogui python-xlib)",
    ),
    _command("wmctrl", ["wmctrl", "-m"], "install wmctrl (window setup steps need it)"),
    _display,
    _fast,
)


def check_vm(client: OSWorldClient) -> list[Check]:
    """Every check, in order. The server must answer (and accept the token): OSWorldError otherwise."""
    client.screen_size()  # unreachable, or a refused token: raised as it is, one line
    out = []
    for check in CHECKS:
        try:
            out.append(check(client))
        except OSWorldError as e:
            out.append(Check(check.__name__.strip("_"), False, str(e)))
    return out
