"""What one server holds between requests: the X connection, launched programs, the recording."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from env.osworld_server.app import ServerConfig
from env.osworld_server.procs import Launched
from env.osworld_server.recording import Recorder
from env.osworld_server.screen import XScreen


class ServerState:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.launched = Launched()
        self.recorder = Recorder(config)
        self._screen: XScreen | None = None
        self._lock = threading.Lock()
        self.act_lock = threading.Lock()
        self.kimi_hands: Any = None  # the input connection of /kimi/act, made on first use
        threading.Thread(target=self._start_accessibility, name="kimi-serve-atspi", daemon=True).start()

    def _start_accessibility(self) -> None:
        """Bring up the AT-SPI bus now (the first read starts it, through D-Bus's X11 autolaunch where
        the display has no session bus): apps register on it only when they start, so the apps that
        /setup/launch starts later show in /accessibility."""
        from env.osworld_server import accessibility

        with contextlib.suppress(accessibility.AccessibilityError):
            accessibility.tree_xml(self.config)

    @property
    def screen(self) -> XScreen:
        """Connected on first use, so a server can start before its display is up."""
        with self._lock:
            if self._screen is None:
                self._screen = XScreen(self.config.display, self.config.xauthority, self.config.title_aliases)
            return self._screen

    def close(self) -> None:
        self.recorder.stop()
        self.launched.stop_all()
        from env.osworld_server import kimi

        kimi.close(self)
        with self._lock:
            if self._screen is not None:
                self._screen.close()
                self._screen = None
