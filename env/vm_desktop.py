"""A desktop behind OSWorld's VM server protocol: an OSWorld VM, or `kimi-agent serve` anywhere.

Two ways to act, picked once by probing ``/kimi/info``:
- our server: the typed action goes as JSON to ``/kimi/act`` and is executed (and settled) there by
  the executor the local desktops use; frames come raw from ``/kimi/frame``;
- any other server (OSWorld's own): the action becomes pyautogui code that WE write from the typed
  action's fields (strings only ever as ``repr`` literals, never model text as code), POSTed to
  ``/execute`` as ``python -c`` the way OSWorld's controller does; screenshots are /screenshot PNGs
  and settling is watched from here, with as few of them as it can (env/settle.py's
  ``settle_by_looks``): the settle's last look is handed out as the next screenshot.
"""

from __future__ import annotations

import inspect
import io
import time
from typing import Any

from PIL import Image

from env import vm_paste
from env.actions import Action
from env.desktop import ActionResult, Frame
from env.executor import split_runs
from env.geometry import OutOfScreen, ScreenGeometry
from env.osworld_client import NotFound, OSWorldClient, OSWorldError
from env.settle import Settle, settle_by_looks

# OSWorld's PythonController wraps every action in this (desktop_env/controllers/python.py).
OSWORLD_PREFIX = "import pyautogui; import time; pyautogui.FAILSAFE = False; {command}"
DRAG_SECONDS = 0.2
# Text no key types is pasted by env/vm_paste.py, whose source goes along as the program's first lines
# and defines paste_text there (no xclip: its forked server held /execute's pipes open and outlived the
# command). Our own module's source, never anything a model wrote, and run as code, not through exec.
PASTE_PROGRAM = inspect.getsource(vm_paste)
ACT_MARGIN_S = 30.0
# Through OSWorld's protocol alone, how long a screenshot stays the answer to the next screenshot() when
# no action came between: the settle's last look is the screen it judged still, and the loop asks for
# the step's screenshot (and OSWorld's runner for its step_N.png) right after; asking the server again
# would cost a PNG and, on OSWorld's own server, an X connection it never closes (Xvfb's ~250 run out).
REUSE_S = 1.0
LOCAL_HOSTS = ("unix:", "http://127.", "http://localhost", "http://[::1]")


class VMDesktop:
    def __init__(self, client: OSWorldClient, *, settle: Settle = Settle(), fast: bool | None = None) -> None:
        self.client = client
        self.settle = settle
        self._held: dict[str, None] = {}  # keys a key_down pressed through /execute
        self._raw = client.base_url.startswith(LOCAL_HOSTS)  # raw frames where bandwidth is free
        self._seen: Frame | None = None  # the last screen grabbed (protocol path)
        self._seen_at = float("-inf")  # when, or -inf once an action may have changed it
        try:
            self.fast = self._probe() if fast is None else fast
            width, height = client.screen_size()
            # Our server's frames are the screen's size; another's screenshot may be smaller (a
            # HiDPI VM): points then map through both sizes, and one screenshot tells (held for
            # REUSE_S: a run's first step asks no second one).
            shot = None if self.fast else self.screenshot()
        except BaseException:
            client.close()
            raise
        self._geometry = ScreenGeometry(
            shot.width if shot else width, shot.height if shot else height, width, height
        )

    def _probe(self) -> bool:
        try:
            return self.client.call("GET", "/kimi/info").json().get("server") == "kimi-agent"
        except NotFound:
            return False  # OSWorld's server (or another): the protocol endpoints only

    @property
    def geometry(self) -> ScreenGeometry:
        return self._geometry

    @property
    def name(self) -> str:
        return f"vm {self.client.base_url} ({'kimi-agent server' if self.fast else 'OSWorld protocol'})"

    def screenshot(self) -> Frame:
        if not self.fast:
            if self._seen is None or time.perf_counter() - self._seen_at > REUSE_S:
                asked = time.perf_counter()
                self._seen = Frame.from_image(Image.open(io.BytesIO(self.client.screenshot())))
                self._seen_at = asked
            return self._seen
        r = self.client.call("GET", f"/kimi/frame?encoding={'raw' if self._raw else 'zlib'}")
        body = r.body
        if r.headers.get("x-frame-encoding") == "zlib":
            import zlib

            body = zlib.decompress(body)
        w, h = int(r.headers["x-frame-width"]), int(r.headers["x-frame-height"])
        if len(body) != w * h * 4:
            raise OSWorldError(f"/kimi/frame on {self.client.base_url} sent {len(body)} bytes for {w}x{h}")
        return Frame(w, h, body)

    def rgb(self) -> tuple[int, int, bytes]:
        """The screen as (width, height, RGB bytes, 3 a pixel): what an array of the screen needs.
        From our server on this machine it comes as such (no conversion here); else converted from
        a screenshot."""
        if not (self.fast and self._raw):
            frame = self.screenshot()
            return frame.width, frame.height, frame.to_image().tobytes()
        r = self.client.call("GET", "/kimi/frame?encoding=rgb")
        w, h = int(r.headers["x-frame-width"]), int(r.headers["x-frame-height"])
        if r.headers.get("x-frame-encoding") != "rgb" or len(r.body) != w * h * 3:
            raise OSWorldError(
                f"/kimi/frame?encoding=rgb on {self.client.base_url} sent no RGB frame of {w}x{h}"
            )
        return w, h, r.body

    def _grab(self) -> Frame:
        """A new screenshot, never the one held."""
        self._seen_at = float("-inf")
        return self.screenshot()

    def execute(self, action: Action) -> ActionResult:
        if action.kind != "done":  # anything else may change the screen (a wait lets time pass)
            self._seen_at = float("-inf")
        try:
            points = _points(action, self._geometry)
        except OutOfScreen as e:
            return ActionResult.failed(f"not executed: {e}")
        try:
            if self.fast:
                return self._act_fast(action)
            return self._act_osworld(action, points)
        except OSWorldError as e:
            return ActionResult.failed(f"{action.kind} failed: {e}")

    def _act_fast(self, action: Action) -> ActionResult:
        settle = None if action.kind in ("wait", "done") else vars(self.settle)
        wait = getattr(action, "seconds", 0.0)
        r = self.client.call(
            "POST",
            "/kimi/act",
            json_body={"action": action.model_dump(mode="json"), "settle": settle},
            timeout_s=wait + max(self.settle.timeout_s, self.settle.sleep_after_s or 0.0) + ACT_MARGIN_S,
        )
        return ActionResult(**r.json())

    def _act_osworld(self, action: Action, points: list[tuple[int, int]]) -> ActionResult:
        t0 = time.perf_counter()
        if action.kind == "wait":
            time.sleep(action.seconds)
            return ActionResult(ok=True, execute_s=time.perf_counter() - t0)
        if action.kind == "done":
            return ActionResult(ok=True)
        code = pyautogui_code(action, points)
        result = self.client.execute(["python", "-c", OSWORLD_PREFIX.format(command=code)])
        execute_s = time.perf_counter() - t0
        if not result.ok:
            return ActionResult(ok=False, error=f"{action.kind} failed: {result.why()}", execute_s=execute_s)
        if action.kind == "key_down":
            self._held[action.key] = None
        elif action.kind == "key_up":
            self._held.pop(action.key, None)
        # No window or process signals through OSWorld's protocol: screenshots are all there is, and
        # each is a request; the settle's last one is the next step's screenshot.
        waited, _ = settle_by_looks(self._grab, self._seen, self.settle)
        return ActionResult(
            ok=True,
            screen_points=points,
            execute_s=execute_s,
            settled=waited.settled,
            settle_s=waited.seconds,
            settle_reason=waited.reason,
        )

    def release_held(self) -> None:
        """Let go of the keys this run's key_downs left pressed."""
        if self.fast:
            self.client.call("POST", "/kimi/release")
            return
        keys, self._held = list(self._held), {}
        self._seen_at = float("-inf")
        if keys:
            code = "; ".join(f"pyautogui.keyUp({k!r})" for k in reversed(keys))
            self.client.execute(["python", "-c", OSWORLD_PREFIX.format(command=code)])

    def close(self) -> None:
        try:
            self.release_held()
        except OSWorldError:
            pass  # the server is gone: nothing is held there any more either
        finally:
            self.client.close()

    def __enter__(self) -> VMDesktop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _points(action: Action, g: ScreenGeometry) -> list[tuple[int, int]]:
    if action.kind == "drag":
        return [g.to_screen(action.start), g.to_screen(action.end)]
    point = getattr(action, "point", None)
    return [g.to_screen(point)] if point is not None else []


def pyautogui_code(action: Action, points: list[tuple[int, int]]) -> str:
    """The pyautogui statements for a validated action, with its points already on the screen.
    Every value enters the code as a number or a ``repr`` literal of a validated field."""
    a: Any = action
    match action.kind:
        case "click":
            (x, y) = points[0]
            return f"pyautogui.click({x}, {y}, clicks={a.clicks}, interval=0.05, button={a.button!r})"
        case "move":
            (x, y) = points[0]
            return f"pyautogui.moveTo({x}, {y})"
        case "drag":
            (x1, y1), (x2, y2) = points
            return (
                f"pyautogui.moveTo({x1}, {y1}); "
                f"pyautogui.dragTo({x2}, {y2}, duration={DRAG_SECONDS}, button={a.button!r})"
            )
        case "scroll":
            fn = "hscroll" if a.direction in ("left", "right") else "scroll"
            clicks = a.amount if a.direction in ("up", "right") else -a.amount
            where = f", x={points[0][0]}, y={points[0][1]}" if points else ""
            return f"pyautogui.{fn}({clicks}{where})"
        case "type":
            runs = split_runs(a.text)
            # pyautogui types ASCII only: paste the rest, as the local desktops do
            code = "; ".join(
                f"pyautogui.write({run!r})" if is_ascii else f"paste_text({run!r})" for is_ascii, run in runs
            )
            # The paste program's lines go first: after OSWORLD_PREFIX's "; ", then its own lines.
            return code if all(is_ascii for is_ascii, _ in runs) else f"{PASTE_PROGRAM}\n{code}"
        case "key":
            return f"pyautogui.press({a.key!r}, presses={a.presses})"
        case "hotkey":
            return f"pyautogui.hotkey({', '.join(repr(k) for k in a.keys)})"
        case "key_down":
            return f"pyautogui.keyDown({a.key!r})"
        case "key_up":
            return f"pyautogui.keyUp({a.key!r})"
    raise ValueError(f"no pyautogui code for {action.kind}")
