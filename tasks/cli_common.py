"""What every `kimi-agent` command shares: the usage error, the help layout, the version line, the
y/N question and the checks of the model flags. A module of its own so that tasks/cli.py and the
benchmark CLIs (tasks/osworld, tasks/screenspot) import it without importing each other."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from rich.console import Console
from rich.text import Text

from agent.layouts import OPENCUA_LAYOUTS, UI_TARS_LAYOUTS
from agent.layouts import PROFILES as PROMPT_PROFILES
from agent.version import kimi_agent_version

if TYPE_CHECKING:
    from agent.models.profile import ModelProfile


class UsageError(Exception):
    """Bad flags or inputs: reported as one line, exit status 2."""


class HelpFormatter(argparse.HelpFormatter):
    """argparse's layout, with every option's default shown: appended as "(default: X)" unless the
    help already says what the default is (many explain it better than the bare value can, e.g.
    "default: $KIMI_VM_TOKEN"). Switches (default off) and options without a default get nothing.
    In descriptions, a blank line starts a paragraph and an indented line (a table of commands) is
    kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        for para in re.split(r"\n\s*\n", text.strip()):
            prose: list[str] = []
            for line in [*para.splitlines(), ""]:
                if line.startswith(" ") or not line:
                    if prose:
                        out.append(super()._fill_text(" ".join(prose), width, indent))
                        prose = []
                    if line:
                        out.append(indent + line)
                else:
                    prose.append(line)
            out.append("")
        return "\n".join(out).rstrip("\n")

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text.lower() or not action.option_strings:
            return text
        if action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)".lstrip()


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error on one line like the tool's own checks (argparse prints the
    whole usage block first, burying the error), a pointer to --help, and the nearest choice or
    option for a typo. Subparsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}{self.suggestion(message)} (see {self.prog} --help)\n")

    def suggestion(self, message: str) -> str:
        """ "(did you mean X?)" for an invalid choice or an unknown option close to a real one."""
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            options = re.findall(r"'?([^,' ]+)'?", choice.group(2))
            close = difflib.get_close_matches(choice.group(1), options, n=1, cutoff=0.6)
            return f" (did you mean {close[0]!r}?)" if close else ""
        if message.startswith("unrecognized arguments: "):
            known = [o for a in self._actions for o in a.option_strings]
            for word in message.split()[2:]:
                close = difflib.get_close_matches(word.split("=")[0], known, n=1, cutoff=0.7)
                if word.startswith("-") and close:
                    return f" (did you mean {close[0]}?)"
        return ""


def parser(prog: str, description: str, **kw: object) -> ArgumentParser:
    """An ArgumentParser in the CLI's style."""
    return ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter, **kw)  # type: ignore[arg-type]


def version() -> str:
    """``kimi-agent 0.1.0``, with the git commit (and ", modified" when tracked files changed) when it
    runs from a checkout: a run made from a modified tree must not look like one made from a release.
    The same record run.json and summary.json carry (agent.version)."""
    return f"kimi-agent {kimi_agent_version()}"


def ask_yes_no(console: Console) -> Callable[[str], bool] | None:
    """A y/N question when a person is at the terminal; None (go ahead) when not."""
    if not sys.stdin.isatty():
        return None

    def ask(question: str) -> bool:
        return console.input(Text(f"{question} [y/N] ")).strip().lower() in ("y", "yes")

    return ask


def check_limits(args: argparse.Namespace) -> None:
    """Values no run can use are usage errors now, not a failure after the desktop started."""
    context, whose = args.max_context, "--max-context"
    if context is None and (early := early_profile(args)) is not None:
        context, whose = early.max_context, f"--max-context ({early.max_context}, the {early.name} default)"
    problems = [
        (not args.task.strip(), "the task is empty"),
        (args.max_steps is not None and args.max_steps < 1, "--max-steps must be at least 1"),
        (args.retries < 0, "--retries must be at least 0"),
        (args.timeout <= 0, "--timeout must be above 0"),
        (args.in_token_limit is not None and args.in_token_limit < 1, "--in-token-limit must be at least 1"),
        (
            args.history_images is not None and args.history_images < 1,
            "--history-images must be at least 1 (the current screen)",
        ),
        (args.temperature is not None and args.temperature < 0, "--temperature must not be negative"),
        (args.max_new_tokens is not None and args.max_new_tokens < 1, "--max-new-tokens must be at least 1"),
        (
            args.max_new_tokens is not None and context is not None and args.max_new_tokens >= context,
            f"--max-new-tokens must be below {whose}",
        ),
    ]
    for bad, why in problems:
        if bad:
            raise UsageError(why)


def early_profile(args: argparse.Namespace) -> ModelProfile | None:
    """The model profile a run will use as far as its flags say before any model is reached:
    --model-profile, else what ``auto`` reads from the --model name (the served root or the
    checkpoint's config may still say otherwise once the model is reached; the run checks again)."""
    from agent.models.registry import choose_profile

    try:
        return choose_profile(
            getattr(args, "model_profile", None) or "auto", getattr(args, "model", None)
        ).profile
    except ValueError:
        return None  # an unknown profile is argparse's to refuse


def make_console(*, highlight: bool = True) -> Console:
    """The console every command prints on. Output that is not a terminal (a pipe, a file, a CI log)
    is not wrapped at 80 columns: a command, path or URL split over two lines cannot be copied or
    grepped. Tables there get 200 columns unless $COLUMNS says otherwise, so a task id is never cut
    over two lines."""
    console = Console(highlight=highlight)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 200
    console.soft_wrap = not console.is_terminal
    return console


def _seconds(text: str) -> float:
    try:
        s = float(text)
    except ValueError:
        s = -1.0
    if not 0 <= s <= 30:  # also refuses nan and inf; our server allows no longer wait
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 30, got {text!r}")
    return s


def sleep_after_flag(p: argparse.ArgumentParser) -> None:
    """``--sleep-after``: shared by the run commands and `bench osworld run`."""
    p.add_argument(
        "--sleep-after",
        type=_seconds,
        metavar="S",
        help="sleep S seconds after every action, as OSWorld's runners do (--sleep_after_execution; 3 in "
        "Kimi's), instead of waiting until the screen settles (default: wait)",
    )


# Spelled out so that --help does not import the models: agent.models.registry.profile_names(),
# checked by tests/test_model_profiles.py.
# Spelled out here so that `kimi-agent --help` does not import torch (the variant tables live with
# the model code); tests check them against each family's variants module.
VARIANTS = [
    "instruct",
    "thinking",
    "thinking-2506",
    "k2.5",
    "k2.6",
    "k2.5-instant",
    "k2.6-instant",
    "7b",
    "32b",
    "72b",
    "a3b",
]  # Kimi-VL's, Kimi K2's, OpenCUA's (UI-TARS-1.5's one, 7b, is among them)
PROFILES = list(PROMPT_PROFILES)  # the prompt layouts every model profile can use
LAYOUTS = [*PROFILES, *OPENCUA_LAYOUTS, *UI_TARS_LAYOUTS]  # what --prompt-profile takes
MODEL_PROFILES = ["auto", "opencua", "opencua-a3b", "kimi-vl", "kimi-k2", "ui-tars-1.5"]


class AddsArguments(Protocol):
    """A parser or one of its argument groups."""

    def add_argument(self, *names: str, **options: Any) -> argparse.Action: ...


def model_profile_flag(group: AddsArguments) -> None:
    """``--model-profile``, for every command that asks a model (the main one, `bench osworld run`,
    `rollout`, `bench screenspot run`)."""
    group.add_argument(
        "--model-profile",
        choices=MODEL_PROFILES,
        default="auto",
        help="the model family (its prompts, reply grammar and defaults): "
        f"{', '.join(MODEL_PROFILES[1:])}; default auto: recognised from the checkpoint the server "
        "reports or the checkpoint's config.json, else kimi-vl",
    )
