"""Key names as pyautogui spells them, canonicalised, with their X11 keysym names.

The table is what the XTEST driver needs; pyautogui (the local driver) takes the canonical names as-is.
"""

from __future__ import annotations

# Aliases a model is likely to write, mapped to pyautogui's canonical spelling.
_ALIASES = {
    "return": "enter",
    "escape": "esc",
    "del": "delete",
    "control": "ctrl",
    "ctl": "ctrl",
    "cmd": "command",
    "super": "win",
    "meta": "win",
    "windows": "win",
    "pgup": "pageup",
    "pgdn": "pagedown",
    "page_up": "pageup",
    "page_down": "pagedown",
    "arrowup": "up",
    "arrowdown": "down",
    "arrowleft": "left",
    "arrowright": "right",
    "prtsc": "printscreen",
    "prtscr": "printscreen",
    "print": "printscreen",
    "spacebar": "space",
    "back": "backspace",
    "caps": "capslock",
    "ins": "insert",
    "option": "alt",
}

# canonical name -> X keysym name (see X11/keysymdef.h)
X_KEYSYMS: dict[str, str] = {
    "enter": "Return",
    "tab": "Tab",
    "space": "space",
    "backspace": "BackSpace",
    "delete": "Delete",
    "esc": "Escape",
    "up": "Up",
    "down": "Down",
    "left": "Left",
    "right": "Right",
    "home": "Home",
    "end": "End",
    "pageup": "Prior",
    "pagedown": "Next",
    "insert": "Insert",
    "ctrl": "Control_L",
    "ctrlleft": "Control_L",
    "ctrlright": "Control_R",
    "shift": "Shift_L",
    "shiftleft": "Shift_L",
    "shiftright": "Shift_R",
    "alt": "Alt_L",
    "altleft": "Alt_L",
    "altright": "Alt_R",
    "win": "Super_L",
    "winleft": "Super_L",
    "winright": "Super_R",
    "command": "Super_L",
    "capslock": "Caps_Lock",
    "numlock": "Num_Lock",
    "scrolllock": "Scroll_Lock",
    "printscreen": "Print",
    "pause": "Pause",
    "menu": "Menu",
    "apps": "Menu",
    "volumeup": "XF86AudioRaiseVolume",
    "volumedown": "XF86AudioLowerVolume",
    "volumemute": "XF86AudioMute",
    "playpause": "XF86AudioPlay",
    "nexttrack": "XF86AudioNext",
    "prevtrack": "XF86AudioPrev",
    **{f"f{i}": f"F{i}" for i in range(1, 25)},
    **{f"num{i}": f"KP_{i}" for i in range(10)},
    "add": "KP_Add",
    "subtract": "KP_Subtract",
    "multiply": "KP_Multiply",
    "divide": "KP_Divide",
    "decimal": "KP_Decimal",
}

# Printable ASCII single characters are keys too ("a", "1", "/", "+").
_PRINTABLE = {chr(c) for c in range(0x21, 0x7F)}


def normalize_key(name: str) -> str:
    """Return pyautogui's spelling of ``name`` or raise ValueError naming the bad key."""
    if not isinstance(name, str) or not name:
        raise ValueError("a key name must be a non-empty string")
    if len(name) == 1:
        if name in _PRINTABLE:
            return name.lower() if name.isalpha() else name
        if name == " ":
            return "space"
        raise ValueError(f"unknown key {name!r}")
    low = name.strip().lower().replace(" ", "")
    low = _ALIASES.get(low, low)
    if low in X_KEYSYMS:
        return low
    raise ValueError(f"unknown key {name!r}")
