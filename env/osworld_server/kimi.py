"""Our faster endpoints, beside the protocol's: typed actions and raw frames.

OSWorld's way to act is ``python -c "import pyautogui; ..."`` through /execute (a new interpreter
per action, ~300 ms) and to see is a PNG; here an action is the typed JSON of env/actions.py,
executed in the server by the executor the local desktops use, settled there (grabs are local), and
a frame is the grabber's BGRA bytes, optionally zlib-compressed for a link slower than loopback.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from flask import Blueprint, Response, current_app, jsonify, request

from env.actions import action_from_dict
from env.activity import Activity, ProcessActivity, XActivity, in_bubblewrap
from env.desktop import ActionResult
from env.executor import execute, execute_and_settle
from env.geometry import ScreenGeometry
from env.osworld_server.body import request_json
from env.settle import Settle

if TYPE_CHECKING:
    from env.drivers import HeldInputs
    from env.osworld_server.state import ServerState

bp = Blueprint("kimi", __name__, url_prefix="/kimi")
PROTOCOL = 1
MAX_SETTLE_S = 30.0
SETTLE_RANGES = {  # seconds
    "timeout_s": (0.0, MAX_SETTLE_S),
    "interval_s": (0.0, 1.0),  # 0: grab back to back (tests/bench), still bounded by timeout_s
    "quiet_s": (0.0, MAX_SETTLE_S),
    "window_quiet_s": (0.0, MAX_SETTLE_S),
    "react_s": (0.0, MAX_SETTLE_S),
    "sleep_after_s": (0.0, MAX_SETTLE_S),  # or null: watch instead of sleeping
}


def _state() -> ServerState:
    return current_app.extensions["kimi"]


def _hands(state: ServerState) -> HeldInputs:
    """The server's input connection, made on first use and kept: keys held by a key_down stay
    held across requests until their key_up."""
    hands = state.kimi_hands
    if hands is None:
        from env.drivers import HeldInputs, XTestDriver

        hands = state.kimi_hands = HeldInputs(XTestDriver(state.config.display, state.config.xauthority))
    return hands


_signals: dict[int, list[Activity]] = {}  # per server state: what the settle wait watches


def _watch(state: ServerState) -> list[Activity]:
    """Windows on the served display and, inside a sandbox (whose pid namespace is the desktop's),
    its processes; made on first use and kept."""
    if id(state) not in _signals:
        signals: list[Activity] = [XActivity(state.config.display, state.config.xauthority)]
        if in_bubblewrap():
            signals.append(ProcessActivity())
        _signals[id(state)] = signals
    return _signals[id(state)]


def close(state: ServerState) -> None:
    for signal in _signals.pop(id(state), []):
        signal.close()
    hands = state.kimi_hands
    if hands is not None:
        hands.release_all()
        hands.driver.close()
        state.kimi_hands = None


@bp.get("/info")
def info() -> Response:
    w, h = _state().screen.size
    return jsonify({"server": "kimi-agent", "protocol": PROTOCOL, "width": w, "height": h})


@bp.get("/frame")
def frame() -> Response:
    encoding = request.args.get("encoding", "raw")
    if encoding not in ("raw", "zlib", "rgb"):
        return Response(f"encoding must be raw, zlib or rgb, not {encoding!r}\n", 400)
    f = _state().screen.frame()
    body = f.bgra
    if encoding == "zlib":
        body = zlib.compress(body, 1)
    elif encoding == "rgb":  # 3 bytes a pixel, R G B: an array's layout, a quarter fewer bytes than raw
        body = f.to_image().tobytes()
    headers = {"X-Frame-Width": str(f.width), "X-Frame-Height": str(f.height), "X-Frame-Encoding": encoding}
    return Response(body, mimetype="application/octet-stream", headers=headers)


def _settle(raw: object) -> Settle:
    """The request's Settle, its timings each a number in range: interval_s goes to a sleep and
    timeout_s bounds the wait, both while the action lock is held. Other fields go to Settle as
    sent (an unknown one is a TypeError there)."""
    if not isinstance(raw, dict):
        raise ValueError("settle must be an object or null")
    for name, (lo, hi) in SETTLE_RANGES.items():
        value = raw.get(name, lo)
        if name == "sleep_after_s" and value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
            raise ValueError(f"settle.{name} must be a number in [{lo:g}, {hi:g}], got {str(value)[:40]}")
    return Settle(**raw)


@bp.post("/act")
def act() -> Response | tuple[Response, int]:
    data = request_json()  # decoded in front of every route: NaN and infinities are a 400 already
    if "action" not in data:
        return jsonify({"error": 'expected {"action": {...}, "settle": {...} or null}'}), 400
    try:
        action = action_from_dict(data["action"])
        settle = _settle(data["settle"]) if data.get("settle") is not None else None
    except (ValueError, TypeError) as e:
        return jsonify({"error": f"bad request: {e}"}), 400
    state = _state()
    screen = state.screen
    geometry = ScreenGeometry.plain(*screen.size)
    with state.act_lock:  # one action at a time: they share the pointer and keyboard anyway
        if settle is None:
            result: ActionResult = execute(action, _hands(state), geometry)
        else:
            result = execute_and_settle(action, _hands(state), geometry, screen.frame, settle, _watch(state))
    return jsonify(result.model_dump())


@bp.post("/release")
def release() -> Response:
    state = _state()
    with state.act_lock:
        _hands(state).release_all()
    return jsonify({"status": "success"})
