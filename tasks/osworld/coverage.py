"""`kimi-agent bench osworld --check SPLIT`: for each task, whether its apps, setup steps and evaluator
are supported on a sandbox (this machine's Debian programs) and on an OSWorld VM (its official image
has every app), and the coverage per domain.

Setup support comes from ``tasks.osworld.setup.REGISTRY`` only; evaluator support from the names the
official desktop-env package exports (``tasks.osworld.official``) plus those kimi-agent writes.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from env.image import provided
from tasks.osworld import official
from tasks.osworld.setup import is_supported, why_unsupported
from tasks.osworld.task import CommandParams, DownloadParams, OpenTabsParams, Split, Task

Target = Literal["sandbox", "vm"]
TARGETS: tuple[Target, ...] = ("sandbox", "vm")

# related_apps as the corpus spells them -> the programs that provide the app on Debian (any one).
APP_PROGRAMS: dict[str, tuple[str, ...]] = {
    "chrome": ("google-chrome", "chromium"),
    "libreoffice_calc": ("libreoffice", "soffice"),
    "libreoffice_writer": ("libreoffice", "soffice"),
    "libreoffice_impress": ("libreoffice", "soffice"),
    "libreoffice": ("libreoffice", "soffice"),
    "gimp": ("gimp",),
    "vlc": ("vlc",),
    "thunderbird": ("thunderbird",),
    "vscode": ("code",),
    "os": ("xterm", "gnome-terminal"),
    "terminal": ("xterm", "gnome-terminal"),
    "mousepad": ("mousepad",),  # the text editor of our suite (tasks/osworld/suite)
    "pdf": ("evince", "okular", "chromium", "google-chrome"),
    "image": ("eog", "ristretto", "gimp"),
    "picard": ("picard",),
    "ubuntu_media_player": ("totem", "vlc"),
}
APP_NAMES = {
    "libreoffice calc": "libreoffice_calc",
    "calc": "libreoffice_calc",
    "writer": "libreoffice_writer",
    "vs_code": "vscode",
    "browser": "chrome",
}
# Programs the server itself provides (``kimi-agent serve`` puts a python with pyautogui on PATH).
SERVER_PROGRAMS = {"python", "python3"}
SHELL_BUILTINS = {"cd", "echo", "export", "true", "false", "test", "[", "source", ".", "set", "exit"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")
# Getters that need a cloud account whatever the machine.
CLOUD_GETTERS = {"googledrive_file"}
# Tasks whose start state or scoring cannot be made OSWorld's on a sandbox (an idle agent would pass,
# or a setup step cannot succeed here), by task id, with the reason: what `bench osworld fidelity`
# found and no fix to the sandbox can remove. They run on OSWorld's VM only.
UNFAITHFUL_ON_SANDBOX: Mapping[str, str] = MappingProxyType(
    {
        # "Delete browsing data on close": the getter (data_delete_automacally) calls any
        # profile.default_content_setting_values "on", and Debian's Chromium writes one there
        # (has_migrated_local_network_access) at its first start; the VM's Chrome does not.
        "99146c54-4f37-4ab8-9327-5f3291665e1e": "Chromium writes the content settings the evaluator reads "
        "as auto-delete on at its first start, so an idle agent passes",
    }
)


def app_key(name: str) -> str:
    key = name.strip().lower()
    return APP_NAMES.get(key, key)


def programs_of(task: Task) -> list[str]:
    """The programs that launch / execute / command steps start (setup and postconfig). Shell
    commands count by their first word; relative paths (./setup.sh) are the task's own files."""
    found: list[str] = []
    for step in task.steps():
        if not isinstance(step.parameters, CommandParams):
            continue
        p = step.parameters
        try:
            argv = shlex.split(p.command) if isinstance(p.command, str) else list(p.command)
        except ValueError:
            continue
        if p.shell:  # the first word after any leading VAR=value assignments
            while argv and _ASSIGNMENT.match(argv[0]):
                argv = argv[1:]
            argv = [argv[0].rstrip(";")] if argv else []
        if not argv or argv[0] in SHELL_BUILTINS or argv[0].startswith("./"):
            continue
        if argv[0] not in found:
            found.append(argv[0])
    return found


@dataclass(frozen=True)
class Part:
    """One aspect (apps / setup / evaluator) of a task on one target: supported, or why not."""

    ok: bool
    why: str = ""


@dataclass(frozen=True)
class TaskCoverage:
    domain: str
    task_id: str
    parts: dict[Target, dict[str, Part]]
    network: bool  # setup or evaluation fetches files from the internet

    def supported(self, target: Target) -> bool:
        return all(p.ok for p in self.parts[target].values())

    def reasons(self, target: Target) -> list[str]:
        return [p.why for p in self.parts[target].values() if not p.ok]


def _first(items: Iterable[str], limit: int = 3) -> str:
    items = list(items)
    return ", ".join(items[:limit]) + (f" (+{len(items) - limit})" if len(items) > limit else "")


def setup_part(task: Task) -> Part:
    bad = [s.type for s in task.steps() if not is_supported(s.type)]
    if not bad:
        return Part(True)
    kinds = list(dict.fromkeys(bad))
    return Part(False, f"setup {_first(kinds)}: {why_unsupported(kinds[0])}")


def evaluator_part(task: Task) -> Part:
    metrics = official.METRICS | official.OURS_METRICS
    getters = official.GETTERS | official.OURS_GETTERS
    missing = [f"metric {f}" for f in task.evaluator.funcs if f not in metrics]
    missing += [f"getter {g}" for g in task.evaluator.getter_types() if g not in getters]
    cloud = [g for g in task.evaluator.getter_types() if g in CLOUD_GETTERS]
    if cloud:
        return Part(False, f"getter {cloud[0]} needs a Google account")
    if missing:
        return Part(
            False, f"not in {official.PACKAGE} nor written yet (issue 11): {_first(dict.fromkeys(missing))}"
        )
    return Part(True)


def apps_part(task: Task, target: Target, which: Callable[[str], str | None]) -> Part:
    if target == "vm":  # OSWorld's image has every app its tasks use
        return Part(True)
    apps = dict.fromkeys(app_key(a) for a in task.related_apps)
    unknown = [a for a in apps if a not in APP_PROGRAMS]
    absent = [a for a in apps if a in APP_PROGRAMS and not any(which(p) for p in APP_PROGRAMS[a])]
    # A missing app's own programs are not listed again.
    covered = {prog for a in absent for prog in APP_PROGRAMS[a]}
    programs: list[str] = []
    for prog in programs_of(task):
        if (
            prog in SERVER_PROGRAMS
            or which(prog)
            or provided(prog, which)
            or prog.rsplit("/", 1)[-1] in covered
        ):
            continue  # a sandbox provides google-chrome itself where Chromium is installed (env/image.py)
        programs.append(prog)
    why = []
    if absent:
        why.append("apps not installed: " + _first(absent))
    if unknown:
        why.append("apps unknown to kimi-agent: " + _first(unknown))
    if programs:
        why.append("programs not installed: " + _first(programs))
    return Part(not why, "; ".join(why))


def _needs_network(task: Task) -> bool:
    """Whether setup or evaluation reaches the internet: downloads, web pages opened in Chrome,
    cloud_file getters, or OSWorld's proxy flag."""
    urls = [
        f.url for s in task.steps() if isinstance(s.parameters, DownloadParams) for f in s.parameters.files
    ]
    urls += [
        u for s in task.steps() if isinstance(s.parameters, OpenTabsParams) for u in s.parameters.urls_to_open
    ]
    web = any(u.startswith(("http://", "https://")) for u in urls)
    return web or task.proxy or "cloud_file" in task.evaluator.getter_types()


def check_task(
    task: Task,
    domain: str | None = None,
    which: Callable[[str], str | None] = shutil.which,
    unfaithful: Mapping[str, str] = UNFAITHFUL_ON_SANDBOX,
) -> TaskCoverage:
    setup, evaluator = setup_part(task), evaluator_part(task)
    parts: dict[Target, dict[str, Part]] = {}
    for target in TARGETS:
        parts[target] = {"apps": apps_part(task, target, which), "setup": setup, "evaluator": evaluator}
    if task.id in unfaithful:
        parts["sandbox"]["fidelity"] = Part(False, f"not faithful on a sandbox: {unfaithful[task.id]}")
    return TaskCoverage(domain or task.domain, task.id, parts, _needs_network(task))


@dataclass(frozen=True)
class DomainCoverage:
    domain: str
    tasks: int
    supported: dict[Target, int]
    offline: int  # supported on a sandbox without reaching the internet


def per_domain(rows: list[TaskCoverage]) -> list[DomainCoverage]:
    out: dict[str, list[TaskCoverage]] = {}
    for r in rows:
        out.setdefault(r.domain, []).append(r)
    return [
        DomainCoverage(
            d,
            len(rs),
            {t: sum(r.supported(t) for r in rs) for t in TARGETS},
            sum(r.supported("sandbox") and not r.network for r in rs),
        )
        for d, rs in out.items()
    ]


def check_split(split: Split, which: Callable[[str], str | None] = shutil.which) -> list[TaskCoverage]:
    return [check_task(t, e.domain, which) for e, t in zip(split.entries, split.load(), strict=True)]
