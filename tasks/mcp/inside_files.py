"""Run INSIDE a sandbox (standard library only; its source is copied into the sandbox's control
directory and run by the sandbox's own Python as the sandbox's user): file_read, file_write and
file_list's work, so every path resolves in the sandbox's namespaces and never on the host.

``python3 inside_files.py read|write|list HOME REL [N]``: REL is a path relative to HOME whose
components the host already checked (no ``..``, no empty ones). Each is opened from the one before
with O_NOFOLLOW: a symbolic link anywhere on the way is refused, never followed, so nothing the
sandbox put in its home can send us elsewhere. One JSON object on stdout answers; content goes in
on stdin (write) and out base64-encoded (read).
"""

import base64
import errno
import json
import os
import stat
import sys

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(Exception):
    pass


def walk(home, parts, make_dirs=False):
    """A descriptor of the directory holding ``parts[-1]`` (or of ``parts`` itself when it names a
    directory and ``parts`` is handed whole), refusing links."""
    fd = os.open(home, DIR_FLAGS)
    done = []
    for name in parts:
        done.append(name)
        try:
            nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not make_dirs:
                os.close(fd)
                raise Refused("/".join(done) + ": no such directory") from None
            os.mkdir(name, 0o755, dir_fd=fd)
            nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
        except OSError as e:
            reason = why(e, name, fd)
            os.close(fd)
            raise Refused("/".join(done) + ": " + reason) from None
        os.close(fd)
        fd = nxt
    return fd


def why(e, name, dir_fd):
    if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO) and is_link(name, dir_fd):
        return "a symbolic link (file tools do not follow links)"
    if e.errno == errno.ENOTDIR:
        return "not a directory"
    return e.strerror or str(e)


def is_link(name, dir_fd):
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def split(rel):
    parts = [p for p in rel.split("/") if p]
    return parts[:-1], (parts[-1] if parts else None)


def read(home, rel, cap):
    dirs, name = split(rel)
    if name is None:
        raise Refused("a directory, not a file (file_list lists it)")
    d = walk(home, dirs)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=d)
    except OSError as e:
        raise Refused(rel + ": " + why(e, name, d)) from None
    finally:
        os.close(d)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(rel + ": not a regular file")
        data = f.read(cap + 1)
    return {"size": st.st_size, "data": base64.b64encode(data[:cap]).decode(), "cut": len(data) > cap}


def write(home, rel, mode, make_dirs):
    dirs, name = split(rel)
    if name is None:
        raise Refused("names the home directory, not a file")
    data = sys.stdin.buffer.read()
    d = walk(home, dirs, make_dirs)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    flags |= {"overwrite": os.O_TRUNC, "create": os.O_EXCL, "append": os.O_APPEND}[mode]
    try:
        fd = os.open(name, flags, 0o644, dir_fd=d)
    except FileExistsError:
        raise Refused(rel + ": exists (mode 'overwrite' replaces it)") from None
    except OSError as e:
        raise Refused(rel + ": " + why(e, name, d)) from None
    finally:
        os.close(d)
    with os.fdopen(fd, "wb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Refused(rel + ": not a regular file")
        f.write(data)
    return {"bytes": len(data)}


def listing(home, rel, cap):
    parts = [p for p in rel.split("/") if p]
    d = walk(home, parts)
    kinds = {stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink"}
    entries = []
    total = 0
    try:
        for name in sorted(os.listdir(d)):
            total += 1
            if len(entries) >= cap:
                continue
            try:
                st = os.stat(name, dir_fd=d, follow_symlinks=False)
            except OSError:
                continue  # gone since listed
            entry = {"name": name, "type": kinds.get(stat.S_IFMT(st.st_mode), "other"), "size": st.st_size}
            if stat.S_ISLNK(st.st_mode):
                entry["target"] = os.readlink(name, dir_fd=d)  # read, never followed
            entries.append(entry)
    finally:
        os.close(d)
    return {"entries": entries, "total": total}


def main(argv):
    op, home, rel = argv[1], argv[2], argv[3]
    try:
        if op == "read":
            answer = read(home, rel, int(argv[4]))
        elif op == "write":
            answer = write(home, rel, argv[4], argv[5] == "1")
        else:
            answer = listing(home, rel, int(argv[4]))
    except Refused as e:
        answer = {"error": str(e)}
    except OSError as e:
        answer = {"error": rel + ": " + (e.strerror or str(e))}
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
