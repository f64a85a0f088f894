"""A sandbox has what OSWorld's Ubuntu image has where tasks read it (env/image.py, issue 25): a session bus
with dconf behind gsettings, google-chrome as Chrome, Totem as the default video player; and three real
OSWorld tasks that an idle agent passed before score 0.0 idle and 1.0 when solved."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from env.osworld_client import NotFound, OSWorldClient
from env.reaper import marked_pids
from env.sandbox import Sandbox
from env.served_sandbox import ServedSandbox
from tasks.osworld.coverage import check_task
from tasks.osworld.results import RESULT_FILE
from tasks.osworld.task import load_task
from tests.test_osworld_run import run_cli
from tests.test_osworld_tasks import CORPUS

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
SCRIPTS = DATA / "osworld_image"
TASKS = (
    "937087b6-f668-4ba6-9110-60682ee33441",  # multi_apps: VLC as the default video player
    "93eabf48-6a27-4cb6-b963-7d5fe1e0d3a9",  # chrome: Chrome's dark mode off
    "a4d98375-215b-4a4d-aee9-3d4370fccc41",  # os: lock the screen automatically (gsettings)
)
needs_x = pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed")


def _until(check: Callable[[], object], timeout_s: float = 30.0) -> object:
    deadline = time.monotonic() + timeout_s
    while not (got := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.25)
    return got


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ServedSandbox, OSWorldClient]]:
    with (
        ServedSandbox(1280, 800, desktop="minimal", execute_timeout_s=30) as box,
        OSWorldClient(box.socket_url, token=box.token) as client,
    ):
        yield box, client


def _sh(client: OSWorldClient, line: str) -> str:
    return client.execute(["sh", "-c", line]).output.strip()


@needs_x
def test_gsettings_persist_between_commands_on_the_sandboxs_session_bus(served) -> None:
    _, client = served
    assert _sh(client, "echo $DBUS_SESSION_BUS_ADDRESS") == "unix:path=/run/user/1000/bus"
    assert (
        client.execute(
            ["gsettings", "set", "org.gnome.desktop.screensaver", "lock-enabled", "false"]
        ).returncode
        == 0
    )
    assert _sh(client, "gsettings get org.gnome.desktop.screensaver lock-enabled") == "false"
    assert _sh(client, "gsettings set org.gnome.desktop.screensaver lock-enabled true && echo ok") == "ok"
    assert _sh(client, "gsettings get org.gnome.desktop.screensaver lock-enabled") == "true"


@needs_x
def test_python_and_python3_have_pyautogui_and_no_import_path_of_the_host(served) -> None:
    """OSWorld's image: both have pyautogui (GIMP's postconfig quits it with python3 -c "import
    pyautogui; ..."); the path the host's server was imported from does not leak to the programs."""
    _, client = served
    assert _sh(client, 'echo "[$PYTHONPATH]"') == "[]"
    for name in ("python", "python3"):
        r = client.execute([name, "-c", "import pyautogui; print('ok')"])
        assert (r.returncode, r.output.strip()) == (0, "ok"), name


@needs_x
def test_videos_open_in_totem_until_the_user_picks_another_player(served) -> None:
    _, client = served
    assert _sh(client, "xdg-mime query default video/mp4") == "org.gnome.Totem.desktop"
    assert _sh(client, "gio mime video/x-matroska | head -1").endswith("org.gnome.Totem.desktop")
    _sh(client, "xdg-mime default vlc.desktop video/mp4")
    assert _sh(client, "xdg-mime query default video/mp4") == "vlc.desktop"
    assert _sh(client, "xdg-mime query default video/webm") == "org.gnome.Totem.desktop"
    _sh(client, "rm ~/.config/mimeapps.list")


@needs_x
def test_google_chrome_is_chromium_with_chromes_profile_window_and_process_name(served) -> None:
    box, client = served
    home = box.sandbox.home
    assert _sh(client, "command -v google-chrome") == "/run/kimi/bin/google-chrome"
    # A profile as on the image, where Chrome has run: tasks edit its Preferences before starting it.
    assert _sh(client, "cat ~/.config/google-chrome/Default/Preferences") == "{}"
    client.launch(["google-chrome", "about:blank"])
    _until(lambda: _sh(client, "pgrep -x chrome"))
    # A window step written for Chrome finds Chromium's window: by title, strict or not, and by class.
    said = _until(lambda: _try_activate(client, "Google Chrome"))
    assert "activated" in str(said)
    _until(lambda: _try_activate(client, "about:blank - Google Chrome", strict=True))  # once the page loaded
    assert client.activate_window("Google-chrome", by_class=True)
    with pytest.raises(NotFound):
        client.activate_window("about:blank - google chrome", strict=True)  # strict stays case-sensitive
    _until(lambda: "profile" in (home / ".config" / "google-chrome" / "Default" / "Preferences").read_text())
    assert not (home / ".config" / "chromium" / "Default").exists()
    # OSWorld's postconfig ends Chrome with `pkill chrome`.
    assert client.execute(["pkill", "chrome"]).returncode == 0
    # (The server reaps what it launched only later: a zombie is no Chrome.)
    _until(lambda: not _sh(client, "ps -eo stat=,comm= | awk '$2 == \"chrome\" && $1 !~ /^Z/'"))


def _try_activate(client: OSWorldClient, name: str, strict: bool = False) -> str | None:
    try:
        return client.activate_window(name, strict=strict)
    except NotFound:
        return None


@needs_x
@pytest.mark.slow
def test_without_isolation_the_bus_and_its_dconf_end_with_the_sandbox(tmp_path: Path) -> None:
    with Sandbox(640, 480, desktop="minimal", isolation=None, parent_dir=tmp_path) as box:
        bus = box.env["DBUS_SESSION_BUS_ADDRESS"]
        assert bus == f"unix:path={box.root}/run/bus"
        box.run(["gsettings", "set", "org.gnome.desktop.screensaver", "lock-enabled", "false"])
        got = box.run(["gsettings", "get", "org.gnome.desktop.screensaver", "lock-enabled"])
        assert got.stdout.decode().strip() == "false"
        assert (
            box.run(["sh", "-c", "command -v google-chrome"])
            .stdout.decode()
            .strip()
            .startswith(str(box.root))
        )
        marker = box.marker.encode()
        assert len(marked_pids(marker)) >= 2  # the bus and the dconf it activated, at least
    assert marked_pids(marker) == [] and not box.root.exists()


def test_coverage_counts_google_chrome_as_provided_where_chromium_is_installed() -> None:
    task = load_task(DATA / "osworld_task_06fe7178.json")  # launches google-chrome and socat
    with_chromium = check_task(task, which=lambda p: f"/usr/bin/{p}" if p in ("chromium", "socat") else None)
    assert with_chromium.supported("sandbox"), with_chromium.reasons("sandbox")
    without_socat = check_task(task, which=lambda p: "/usr/bin/chromium" if p == "chromium" else None)
    assert without_socat.reasons("sandbox") == ["programs not installed: socat"]
    bare = check_task(task, which=lambda p: None)
    assert bare.reasons("sandbox") == ["apps not installed: chrome; programs not installed: socat"]


def _scores(out: Path) -> dict[str, float]:
    return {p.parent.name: float(p.read_text()) for p in out.rglob(RESULT_FILE)}


@needs_x
@pytest.mark.slow
@pytest.mark.skipif(not (CORPUS / "examples").is_dir(), reason="the OSWorld task corpus is not here")
def test_three_tasks_an_idle_agent_passed_score_zero_idle_and_one_solved(tmp_path: Path) -> None:
    # --no-network: the Chrome task's ports (1337, socat's 9222) stay inside its sandbox, so runs beside
    # it on the same machine cannot answer for it; the evaluator then reads the profile's Preferences.
    for kind, expected in (("idle", 0.0), ("solved", 1.0)):
        out = tmp_path / kind
        r = run_cli(
            "run", *TASKS, "--osworld-dir", CORPUS, "--script-dir", SCRIPTS / kind, "--out", out,
            "--no-network", tmp=tmp_path,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert _scores(out) == dict.fromkeys(TASKS, expected), r.stdout[-3000:]
        for outcome in out.rglob("outcome.json"):
            setup = json.loads(outcome.read_text())["details"]["setup"]
            assert setup == [], (outcome.parent.name, setup)  # every setup step ran fine
