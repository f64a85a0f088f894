"""The documentation stays honest: README.md stays a short front door, every relative link in it and
in docs/*.md resolves (anchors included), and every `kimi-agent ...` command in their code blocks
names subcommands and options the CLI really has.

The commands are checked against the CLI's own `--help`, in-process: a bare word after `kimi-agent` is
a subcommand when `kimi-agent WORDS --help` prints a usage line for exactly those words; where a
command lists its subcommands ({a,b,c}), or takes no positional argument, any other bare word is an
error; elsewhere it is an argument.
Each option shown must appear in the help of the command it is given to.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

from tasks.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 160

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`+[^`]*`+")
BARE_WORD = re.compile(r"[a-z][a-z0-9-]*")
CHOICES = re.compile(r"(\S+)\s+\{([a-z0-9,-]+)\}")  # a word, then {a,b,c}
SHELL_BREAK = {"&&", "||", "|", ";", "&", ">", ">>", "<", "2>&1"}


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, inline code removed (a link there is not a link)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(INLINE_CODE.sub("", line))
    return lines


def code_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(language, lines) of each fenced block."""
    blocks: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    lang = ""
    for line in text.splitlines():
        m = FENCE.match(line)
        if m and current is None:
            lang, current = line.strip()[3:].strip().lower(), []
        elif m and current is not None:
            blocks.append((lang, current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = INLINE_CODE.sub(lambda m: m.group(0).strip("`"), heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading: its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        m = re.match(r"#{1,6}\s+(.*)", line)
        if fenced or not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def relative_links() -> list[tuple[Path, str]]:
    links = []
    for page in PAGES:
        for line in prose_lines(page.read_text(encoding="utf-8")):
            for target in LINK.findall(line):
                if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
                    links.append((page, target))
    return links


def test_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move reference text to docs/"


def test_the_docs_pages_exist_and_the_readme_links_each() -> None:
    readme_targets = {target.split("#")[0] for page, target in relative_links() if page.name == "README.md"}
    pages = {f"docs/{p.name}" for p in PAGES if p.parent == ROOT / "docs"}
    assert {"docs/cli.md", "docs/troubleshooting.md", "docs/osworld.md", "docs/screenspot.md"} <= pages
    assert pages <= readme_targets, f"pages the README does not link: {sorted(pages - readme_targets)}"


@pytest.mark.parametrize(
    ("page", "target"), relative_links(), ids=lambda v: v.name if isinstance(v, Path) else str(v)
)
def test_relative_links_resolve(page: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    assert dest.exists(), f"{page.relative_to(ROOT)}: link to {target}: no {dest}"
    assert dest.is_relative_to(ROOT), f"{page.relative_to(ROOT)}: link to {target} leaves the repository"
    if anchor:
        assert dest.suffix == ".md", f"{page.relative_to(ROOT)}: anchor into a non-markdown file: {target}"
        assert anchor in anchors(dest), (
            f"{page.relative_to(ROOT)}: {target}: no heading with that anchor in {dest.name} "
            f"(has {sorted(anchors(dest))})"
        )


# ------------------------------------------------------------------------------------ commands


def shell_commands(block: list[str]) -> list[str]:
    """The block's commands, with backslash continuations joined."""
    out, pending = [], ""
    for line in block:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    if pending:
        out.append(pending)
    return out


def kimi_agent_invocations() -> dict[str, tuple[str, list[str]]]:
    """Each distinct `kimi-agent ...` command shown in a shell block: its text -> (where, its words
    after kimi-agent, quotes kept so that a quoted task is not taken for a subcommand)."""
    found: dict[str, tuple[str, list[str]]] = {}
    for page in PAGES:
        for lang, block in code_blocks(page.read_text(encoding="utf-8")):
            if lang not in ("", "bash", "sh", "shell", "console"):
                continue
            for command in shell_commands(block):
                try:
                    words = shlex.split(command, comments=True, posix=False)
                except ValueError:
                    continue  # not shell (an error message shown as output, say)
                for i, word in enumerate(words):
                    if Path(word).name != "kimi-agent":
                        continue
                    args = []
                    for arg in words[i + 1 :]:
                        if arg in SHELL_BREAK:
                            break
                        args.append(arg)
                    text = " ".join(["kimi-agent", *args])
                    found.setdefault(text, (page.name, args))
    return found


@cache
def help_text(path: tuple[str, ...]) -> str:
    """What `kimi-agent PATH --help` prints; the CLI exits after it, whatever the path."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), contextlib.suppress(SystemExit):
        main([*path, "--help"])
    return out.getvalue()


def prog(path: tuple[str, ...]) -> tuple[str, ...] | None:
    """The command words of the usage line `kimi-agent PATH --help` prints; None when it prints an
    error instead (`kimi-agent bench NAME` with a NAME that is not a benchmark)."""
    for line in help_text(path).splitlines():
        if line.startswith("usage:"):
            words = line.split()[1:]
            assert words and words[0] == "kimi-agent", line
            taken = []
            for word in words[1:]:
                if not BARE_WORD.fullmatch(word):
                    break
                taken.append(word)
            return tuple(taken)
    return None


def choices(path: tuple[str, ...]) -> set[str] | None:
    """The subcommands `kimi-agent PATH --help` lists in its usage ({a,b,c}), if any; an option's
    choices (`[--desktop-env {xfce,minimal}]`) are not subcommands."""
    usage = " ".join(help_text(path).split("\n\n", 1)[0].split())
    for m in CHOICES.finditer(usage):
        before = m.group(1)  # `[--desktop-env {..}`: that option's values; `[-h] {..}`: subcommands
        if not (before.lstrip("[").startswith("-") and not before.endswith("]")):
            return set(m.group(2).split(","))
    return None


def resolve(args: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """The subcommand path the words name, and the words after it."""
    path: tuple[str, ...] = ()
    rest = list(args)
    while rest and BARE_WORD.fullmatch(rest[0]):
        word = rest[0]
        if prog((*path, word)) == (*path, word):
            path, rest = (*path, word), rest[1:]
            continue
        listed = choices(path)
        assert not path or listed is None or word in listed, (
            f"`kimi-agent {' '.join(path)} {word}`: {word} is not one of its subcommands {sorted(listed or ())}"
        )
        assert path, f"`kimi-agent {word}`: no such subcommand (a task must be quoted)"
        assert "positional arguments:" in help_text(path), (
            f"`kimi-agent {' '.join(path)} {word}`: no such subcommand, and "
            f"`kimi-agent {' '.join(path)}` takes no arguments"
        )
        break
    return path, rest


INVOCATIONS = kimi_agent_invocations()


def test_the_docs_show_commands() -> None:
    assert len(INVOCATIONS) > 20  # the extraction found them (a broken parser would pass everything)
    assert any(args[:2] == ["bench", "osworld"] for _, args in INVOCATIONS.values())


@pytest.mark.parametrize("command", sorted(INVOCATIONS), ids=lambda command: command)
def test_commands_in_the_docs_exist_with_their_options(command: str) -> None:
    page, args = INVOCATIONS[command]
    path, rest = resolve(args)
    text = help_text(path)
    missing = [
        option
        for option in (word.split("=", 1)[0] for word in rest if word.startswith("--"))
        if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text)
    ]
    assert not missing, f"{page}: `{command}`: `kimi-agent {' '.join(path)}` has no {', '.join(missing)}"


def test_the_checker_catches_a_misspelt_subcommand_and_an_unknown_option() -> None:
    assert resolve(["bench", "screenspot", "run", "DIR"]) == (("bench", "screenspot", "run"), ["DIR"])
    assert resolve(['"task"', "--sandbox"]) == ((), ['"task"', "--sandbox"])
    for misspelt in (["sandbx"], ["bench", "screenspot", "scor", "x.json"], ["bench", "osworl"]):
        with pytest.raises(AssertionError, match="subcommand"):
            resolve(misspelt)
    assert "--concurrency" in help_text(("bench", "screenspot", "run"))
    assert not re.search(r"(?<![\w-])--concurrenc(?![\w-])", help_text(("bench", "screenspot", "run")))
