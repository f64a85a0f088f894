"""How a sandbox is walled off from the host: bubblewrap namespaces, an unprivileged user, resource
limits, and an environment built from an allow-list.

Inside, programs see the host's filesystem read-only, a private writable /home/user and /tmp (the
sandbox directory's ``home`` and ``tmp``), no other home directory, their own process, IPC and UTS
namespaces (and network namespace with ``network=False``), and the sandbox's X socket only. They
run as ``user`` (uid 1000, OSWorld's user) with no capabilities. Run as root, the sandbox drops to a
uid of its own, since the kernel exempts root from the process limit and root-owned host files
would otherwise be its own.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

USER, UID, HOME = "user", 1000, "/home/user"  # OSWorld's VM user and home
RUNTIME_DIR = f"/run/user/{UID}"
HOSTNAME = "kimi-sandbox"
CONTROL_DIR = "/run/kimi"  # the sandbox directory's ``ctl``, read-only inside: cookie, token, logs
WRITABLE = ("home", "tmp", "run")  # the sandbox directory's parts its programs may change
STAGE = "runtime"  # where runtime_binds stages a python the sandbox's user could not reach
PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
# Host variables a desktop program may want and that carry no secrets. Anything else (API keys,
# tokens, the host's paths) stays out.
ENV_ALLOWED = ("TZ", "LANG", "LANGUAGE", "LC_ALL", "TERM", "COLORTERM")
UID_BASE, UID_SPAN = 2_000_000, 1_000_000  # far above any real account; one uid per sandbox


class IsolationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Isolation:
    """Limits are per sandbox. ``memory_mb`` needs a writable cgroup (root, or a delegated cgroup
    v2 subtree); without one the sandbox warns and runs without a memory limit."""

    network: bool = True
    memory_mb: int = 4096
    max_procs: int = 1024
    max_file_mb: int = 2048  # one file's size: a runaway writer stops here, not at a full disk

    def check(self) -> None:
        if shutil.which("bwrap") is None:
            raise IsolationError(
                "bubblewrap is not installed (Debian: apt-get install bubblewrap); "
                "or run without isolation (--no-isolation)"
            )


def sandbox_uid() -> int | None:
    """The host uid the sandbox runs as: a fresh one when we are root, else ours (None)."""
    return UID_BASE + secrets.randbelow(UID_SPAN) if os.geteuid() == 0 else None


def new_file(path: Path, data: bytes = b"", mode: int = 0o600, uid: int | None = None) -> int:
    """Create ``path``, which must not exist (a link there is an error, never followed), with
    ``mode`` whatever the umask, owned by ``uid`` when given, holding ``data``; return it open for
    appending. Chowned through the descriptor: the file we made, not whatever the name is now."""
    fd = os.open(
        path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode
    )
    try:
        os.fchmod(fd, mode)
        if uid is not None:
            os.fchown(fd, uid, uid)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_new_file(path: Path, data: bytes, mode: int = 0o600, uid: int | None = None) -> None:
    os.close(new_file(path, data, mode, uid))


def passwd_files(ctl: Path) -> tuple[Path, Path]:
    """/etc/passwd and /etc/group for inside: ``user`` as uid 1000, so ``whoami`` and ``~user``
    work, and nothing of the host's accounts."""
    passwd, group = ctl / "passwd", ctl / "group"
    users = (
        "root:x:0:0:root:/root:/bin/sh\n"
        f"{USER}:x:{UID}:{UID}:{USER}:{HOME}:/bin/bash\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    write_new_file(passwd, users.encode(), 0o644)
    write_new_file(group, f"root:x:0:\n{USER}:x:{UID}:\nnogroup:x:65534:\n".encode(), 0o644)
    return passwd, group


def bwrap_argv(
    iso: Isolation,
    root: Path,
    x_socket: Path,
    hostname: str = HOSTNAME,
    runtime: Sequence[tuple[Path, Path]] = (),
) -> list[str]:
    """bubblewrap's options for a sandbox whose directory is ``root`` (home, tmp, run, ctl).
    ``runtime``: (source, place) pairs bound back read-only over what the sandbox hides."""
    passwd, group = passwd_files(root / "ctl")
    argv = [
        "bwrap",
        *("--unshare-user", "--uid", str(UID), "--gid", str(UID)),
        *("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", hostname),
        *(() if iso.network else ("--unshare-net",)),
        "--die-with-parent",  # the sandbox ends with the process that made it, SIGKILL included
        *("--ro-bind", "/", "/"),
        *("--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm"),
        # Hide every home and private place of the host, then put ours in.
        *("--tmpfs", "/home", "--tmpfs", "/root", "--tmpfs", "/run", "--tmpfs", "/var/tmp"),
        *("--bind", str(root / "home"), HOME),
        *("--bind", str(root / "tmp"), "/tmp"),
        *("--bind", str(root / "run"), RUNTIME_DIR),
        # Read-only: no name in it can change, so the host may open what it made there.
        *("--ro-bind", str(root / "ctl"), CONTROL_DIR),
        *("--ro-bind", str(passwd), "/etc/passwd", "--ro-bind", str(group), "/etc/group"),
        # Only our display's socket: the abstract one is per network namespace, so this is what
        # clients use when the network is off.
        *("--ro-bind", str(x_socket), f"/tmp/.X11-unix/{x_socket.name}"),
    ]
    home = _host_home()
    if home != Path("/") and not home.is_relative_to("/home") and home != Path("/root"):
        argv += ["--tmpfs", str(home)]  # a home elsewhere (/work/me) is hidden too
    for source, place in runtime:
        argv += ["--ro-bind", str(source), str(place)]
    return argv


def _host_home() -> Path:
    return Path(os.environ.get("HOME", "/root")).resolve()


def hidden_inside(path: Path) -> bool:
    """Whether the sandbox hides ``path`` (under a home, /root, /tmp, /run or /var/tmp of the host)."""
    home = _host_home()
    hidden = [Path(p) for p in ("/home", "/root", "/tmp", "/run", "/var/tmp")]
    if home != Path("/"):
        hidden.append(home)
    return any(path.is_relative_to(h) for h in hidden)


def python_runtime() -> list[Path]:
    """What our own Python programs need to run inside (the OSWorld server, /run_python): the
    interpreter's installation, the virtual environment, and where this package is imported from."""
    package_parent = Path(__file__).resolve().parent.parent
    paths = sorted({Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), package_parent})
    return [p for p in paths if not any(p != q and p.is_relative_to(q) for q in paths)]


def runtime_binds(root: Path, uid: int | None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """The python runtime paths the sandbox would hide, as (source, place) pairs for bwrap_argv, and
    the command prefix that stages the ones the sandbox's own uid cannot reach (a python under root's
    0700 /root when we drop from root): bind-mounted into the sandbox directory in a private mount
    namespace of the sandbox's processes, so the host's mount table never changes."""
    binds: list[tuple[Path, Path]] = []
    staged: list[str] = []
    for path in python_runtime():
        if not hidden_inside(path):
            continue
        if uid is not None and unreachable_by_others(path) is not None:
            stage = root / STAGE / str(len(staged) // 2)
            stage.mkdir(parents=True)
            staged += [str(path), str(stage)]
            binds.append((stage, path))
        else:
            binds.append((path, path))
    if not staged:
        return binds, []
    script = 'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 125; shift 2; done; shift; exec "$@"'
    prefix = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", *staged, "--"]
    return binds, prefix


def unreachable_by_others(path: Path) -> Path | None:
    """The first directory on the way to ``path`` that another user cannot pass through (no o+x):
    the sandbox's own uid must reach its directory to bind it in."""
    for d in (*reversed(path.parents), path):
        try:
            if not d.stat().st_mode & 0o001:
                return d
        except OSError:
            return d
    return None


def limits_argv(iso: Isolation, uid: int | None, before_drop: Sequence[str] = ()) -> list[str]:
    """prlimit and setpriv in front of bubblewrap: limits the whole sandbox inherits, and the drop
    to the sandbox's own uid when we are root (``before_drop`` runs as root just before it)."""
    argv = [
        "prlimit",
        f"--nproc={iso.max_procs}",
        f"--fsize={iso.max_file_mb * 1024 * 1024}",
        "--core=0",
        "--",
    ]
    argv += before_drop
    if uid is not None:
        argv += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    return argv


@dataclass
class CGroup:
    """The cgroup directories a sandbox's processes join (v2 or v1 memory + pids)."""

    dirs: list[Path]

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def remove(self) -> None:
        for d in self.dirs:
            with contextlib.suppress(OSError):
                d.rmdir()


def make_cgroup(name: str, iso: Isolation) -> tuple[CGroup | None, str | None]:
    """A cgroup with the sandbox's memory and process limits, or (None, why not)."""
    mem = str(iso.memory_mb * 1024 * 1024)
    v2 = _own_cgroup_v2()
    attempts: list[list[tuple[Path, dict[str, str]]]] = []
    if v2 is not None:
        attempts.append(
            [(v2 / name, {"memory.max": mem, "memory.swap.max": "0", "pids.max": str(iso.max_procs)})]
        )
    attempts.append(
        [
            (_v1_parent("memory") / name, {"memory.limit_in_bytes": mem}),
            (_v1_parent("pids") / name, {"pids.max": str(iso.max_procs)}),
        ]
    )
    why = "no writable cgroup"
    for attempt in attempts:
        made: list[Path] = []
        try:
            for d, settings in attempt:
                d.mkdir()
                made.append(d)
                for k, v in settings.items():
                    with contextlib.suppress(FileNotFoundError):  # memory.swap.max without swap
                        (d / k).write_text(v)
            return CGroup(made), None
        except OSError as e:
            why = f"cannot make a cgroup under {attempt[0][0].parent}: {e.strerror or e}"
            CGroup(made).remove()
    return None, why


def _own_cgroup_v2() -> Path | None:
    """Our cgroup v2 directory when the unified hierarchy is mounted and has both controllers."""
    try:
        line = next(x for x in Path("/proc/self/cgroup").read_text().splitlines() if x.startswith("0::"))
    except (OSError, StopIteration):
        return None
    for mount in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        ctl = mount / "cgroup.controllers"
        if ctl.exists() and {"memory", "pids"} <= set(ctl.read_text().split()):
            return mount / line[3:].lstrip("/")
    return None


def _v1_parent(controller: str) -> Path:
    """Our own cgroup in a v1 hierarchy (a container's, say), so limits nest under it."""
    base = Path("/sys/fs/cgroup") / controller
    try:
        for x in Path("/proc/self/cgroup").read_text().splitlines():
            _, names, path = x.split(":", 2)
            if controller in names.split(","):
                return base / path.lstrip("/")
    except (OSError, ValueError):
        pass
    return base


def join_cgroup_argv(cgroup: CGroup | None) -> list[str]:
    """A shell that moves itself into the cgroup, then execs the rest: everything the sandbox
    starts afterwards is born inside it."""
    if cgroup is None:
        return []
    script = 'for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f"; shift; done; shift; exec "$@"'
    return ["/bin/sh", "-c", script, "sh", *cgroup.procs_files, "--"]


def chown_tree(root: Path, uid: int | None) -> None:
    """Before the sandbox starts: give its user (``uid``, when not ours) the parts it may change
    and the stage; ``root`` and ``ctl`` stay ours, passable by its group only (0710), so it can
    reach what it needs there and never replace a name in them."""
    if uid is None:
        return
    for d in (root, root / "ctl"):
        os.chown(d, os.geteuid(), uid)
        d.chmod(0o710)
    for top in (*WRITABLE, STAGE):
        if (root / top).exists():
            os.lchown(root / top, uid, uid)
            for path in (root / top).rglob("*"):
                os.lchown(path, uid, uid)


def sandbox_env(
    display: str,
    xauthority: str,
    marker: tuple[str, str],
    *,
    home: str = HOME,
    tmp: str = "/tmp",
    runtime_dir: str = RUNTIME_DIR,
) -> dict[str, str]:
    """The whole environment of programs inside: an allow-list, never the host's environment."""
    env = {k: os.environ[k] for k in ENV_ALLOWED if k in os.environ}
    env.setdefault("LANG", "C.UTF-8")
    if not env["LANG"].lower().endswith(("utf-8", "utf8")):
        env["LANG"] = "C.UTF-8"  # xterm and GTK handle UTF-8 text only in a UTF-8 locale
    env.pop("LC_ALL", None)
    env.update(
        PATH=PATH,
        HOME=home,
        USER=USER,
        LOGNAME=USER,
        SHELL="/bin/bash",
        DISPLAY=display,
        XAUTHORITY=xauthority,
        XDG_RUNTIME_DIR=runtime_dir,
        TMPDIR=tmp,
        LC_ALL=env["LANG"],
    )
    env[marker[0]] = marker[1]
    return env
