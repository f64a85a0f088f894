"""The sandboxes an MCP server has open: ids, an upper limit, who owns each, closing.

Each is an env.sandbox.Sandbox, which starts its reaper before anything else: if this server dies,
SIGKILL included, the reaper sees its pipe close and kills what the sandbox ran and removes its
directory. Here we only close them on purpose: at sandbox_close, when the client's session ends,
and at shutdown.
"""

from __future__ import annotations

import logging
import secrets
import shlex
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from mcp.server.mcpserver.exceptions import ToolError

if TYPE_CHECKING:
    from env.desktop import Desktop
    from env.sandbox import Sandbox

HOST_ID = "host"  # this machine's own desktop: only with --allow host-desktop, only when named

log = logging.getLogger(__name__)

DesktopEnv = Literal["minimal", "xfce"]


@dataclass(frozen=True)
class SandboxDefaults:
    """What the server's flags fix for every sandbox it starts."""

    max_sandboxes: int = 4
    isolated: bool = True  # False: --no-isolation (machines without user namespaces)
    sleep_after_s: float | None = None  # --sleep-after: a fixed sleep after each action, not the settle wait
    host_desktop: bool = False  # --allow host-desktop: sandbox_id "host" is this machine's desktop


@dataclass
class OpenSandbox:
    id: str
    box: Desktop  # an env.sandbox.Sandbox, or env.local.LocalDesktop for HOST_ID
    desktop_env: DesktopEnv
    network: bool
    owner: str | None  # the MCP session that made it (None: stdio's only session)
    # One action or screenshot at a time per sandbox: clients may send calls concurrently.
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The size of the last screenshot sent to the client: what `pixels` coordinates refer to.
    last_shot: tuple[int, int] | None = None

    @property
    def size(self) -> tuple[int, int]:
        """The size of a full screenshot (on a Retina screen, physical pixels, not input points)."""
        g = self.box.geometry
        return g.shot_width, g.shot_height

    def describe(self) -> dict[str, object]:
        w, h = self.size
        data: dict[str, object] = {"sandbox_id": self.id, "width": w, "height": h}
        if self.id == HOST_ID:
            return {**data, "desktop_env": "host"}
        box: Sandbox = self.box  # type: ignore[assignment]
        return {
            **data,
            "desktop_env": self.desktop_env,
            "network": self.network,
            # Where its files are and which host processes are its own (Xvfb, its supervisor, its
            # reaper): for the user to look at, and for tests to check that nothing is left.
            "directory": str(box.root),
            "host_pids": box.pids,
            "warnings": list(box.warnings),
        }


class Registry:
    """Thread-safe: tools run in worker threads."""

    def __init__(self, defaults: SandboxDefaults) -> None:
        self.defaults = defaults
        self._open: dict[str, OpenSandbox] = {}
        self._starting = 0  # slots taken by sandboxes still starting
        self._lock = threading.Lock()
        self._closed = False
        self._host: OpenSandbox | None = None  # opened at its first use

    def create(
        self,
        owner: str | None,
        *,
        width: int,
        height: int,
        desktop_env: DesktopEnv,
        network: bool,
        apps: Sequence[str],
    ) -> OpenSandbox:
        from env.isolation import Isolation
        from env.sandbox import Sandbox, SandboxError
        from env.settle import Settle

        argvs = []
        for i, app in enumerate(apps):
            try:
                argv = shlex.split(app)
            except ValueError as e:
                raise ToolError(f"apps[{i}]: {e}") from None
            if not argv:
                raise ToolError(f"apps[{i}]: an empty command line")
            argvs.append(argv)
        with self._lock:
            if self._closed:
                raise ToolError("the server is shutting down")
            if len(self._open) + self._starting >= self.defaults.max_sandboxes:
                raise ToolError(
                    f"{self.defaults.max_sandboxes} sandbox(es) already open (the server's "
                    "--max-sandboxes); close one with sandbox_close first"
                )
            self._starting += 1
        try:
            isolation = Isolation(network=network) if self.defaults.isolated else None
            try:
                settle = Settle(sleep_after_s=self.defaults.sleep_after_s)
                box = Sandbox(width, height, argvs, desktop=desktop_env, isolation=isolation, settle=settle)
            except SandboxError as e:
                raise ToolError(f"the sandbox did not start: {e}") from None
            entry = OpenSandbox(secrets.token_hex(4), box, desktop_env, network, owner)
            with self._lock:
                closing = self._closed
                if not closing:
                    self._open[entry.id] = entry
            if closing:  # shutdown began while it started: it must not outlive the server
                box.close()
                raise ToolError("the server is shutting down")
        finally:
            with self._lock:
                self._starting -= 1
        log.info("sandbox %s open: %s", entry.id, entry.describe())
        return entry

    def visible(self, owner: str | None) -> list[OpenSandbox]:
        """The sandboxes a session may use: its own (one session's sandboxes are not another's)."""
        with self._lock:
            return [s for s in self._open.values() if s.owner == owner]

    def get(self, owner: str | None, sandbox_id: str | None) -> OpenSandbox:
        """``sandbox_id`` of this session, or the only one it has open when None (never the host's
        desktop: that one is used only when named)."""
        if sandbox_id == HOST_ID:
            return self.host()
        mine = self.visible(owner)
        if sandbox_id is None:
            if len(mine) == 1:
                return mine[0]
            if not mine:
                raise ToolError("sandbox_id: no sandbox is open; start one with sandbox_create")
            ids = ", ".join(s.id for s in mine)
            raise ToolError(f"sandbox_id: {len(mine)} sandboxes are open ({ids}); say which")
        for s in mine:
            if s.id == sandbox_id:
                return s
        raise ToolError(f"sandbox_id: no open sandbox {sandbox_id!r} (sandbox_list shows them)")

    def host(self) -> OpenSandbox:
        """This machine's desktop, shared by every session; opened once, closed with the server."""
        if not self.defaults.host_desktop:
            raise ToolError(f"sandbox_id: {HOST_ID!r} (this machine's desktop) needs --allow host-desktop")
        with self._lock:
            if self._closed:
                raise ToolError("the server is shutting down")
            if self._host is None:
                from env.local import LocalDesktop
                from env.settle import Settle

                try:
                    desk = LocalDesktop(settle=Settle(sleep_after_s=self.defaults.sleep_after_s))
                except Exception as e:  # no display, no X authority: python-xlib and mss raise many kinds
                    raise ToolError(f"sandbox_id: this machine's desktop cannot be opened: {e}") from None
                self._host = OpenSandbox(HOST_ID, desk, "minimal", True, None)
            return self._host

    def close(self, owner: str | None, sandbox_id: str | None) -> OpenSandbox:
        if sandbox_id == HOST_ID:
            raise ToolError(
                f"sandbox_id: {HOST_ID!r} is this machine's desktop; it is not closed by a client"
            )
        entry = self.get(owner, sandbox_id)
        with self._lock:
            if self._open.pop(entry.id, None) is None:
                raise ToolError(f"sandbox_id: sandbox {entry.id!r} is already closing")
        self._shut(entry)
        return entry

    def close_owned(self, owner: str | None) -> int:
        """Close what one session opened (its end: stdio EOF, HTTP DELETE or idle timeout)."""
        with self._lock:
            mine = [s for s in self._open.values() if s.owner == owner]
            for s in mine:
                del self._open[s.id]
        for s in mine:
            self._shut(s)
        return len(mine)

    def close_all(self) -> None:
        """At shutdown; sandboxes still starting close themselves when they see ``_closed``."""
        with self._lock:
            self._closed = True
            entries = list(self._open.values())
            self._open.clear()
            if self._host is not None:
                entries.append(self._host)  # LocalDesktop.close releases the keys and buttons held
                self._host = None
        for s in entries:
            self._shut(s)

    @staticmethod
    def _shut(entry: OpenSandbox) -> None:
        # Wait for an action in progress: closing the display under it would fail it oddly.
        with entry.lock:
            try:
                entry.box.close()
            except Exception:  # one sandbox failing to close must not keep the others open
                log.exception("sandbox %s did not close cleanly", entry.id)
        log.info("sandbox %s closed", entry.id)
