"""`kimi-agent doctor`: check a setup before a long run and print a table (OK / WARN / FAIL, each
with its fix); exit 1 on any FAIL. With --base-url the served model is probed (tasks/doctor_checks/
served.py); always, this machine (packages, GPU, a checkpoint); then the `vllm serve` command
recommended for the model on the GPUs present. docs/doctor.md says what each check means."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from agent.deps import declared_range
from agent.models.profile import ModelProfile
from agent.models.registry import PROFILES, choose_profile
from tasks.cli_common import model_profile_flag, parser
from tasks.doctor_checks import local
from tasks.doctor_checks.facts import facts_for
from tasks.doctor_checks.probe import gpus, installed, read_checkpoint, tested_pins
from tasks.doctor_checks.result import CheckResult, Status, any_failed
from tasks.doctor_checks.serve_cmd import recommend
from tasks.doctor_checks.served import ServedModel, check_server

CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints.txt"  # in a checkout; absent when installed
STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}


def build_parser() -> argparse.ArgumentParser:
    p = parser(
        "kimi-agent doctor", "check a setup before a long run: the model server, this machine, the checkpoint"
    )
    p.add_argument(
        "--base-url", help="an OpenAI-compatible server (vLLM) to probe, e.g. http://127.0.0.1:8000/v1"
    )
    p.add_argument(
        "--model",
        help="the served model name (default: the server's first) or, without --base-url, a checkpoint",
    )
    p.add_argument("--api-key", help="the server's API key; default: the OPENAI_API_KEY environment variable")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds one probe may take (default 120)")
    model_profile_flag(p)
    p.add_argument(
        "--variant",
        choices=sorted({v for p in PROFILES.values() for v in p.variants}),
        help="as the main command's (the profile's own variants)",
    )
    p.add_argument("--in-token-limit", type=int, help="as the main command's")
    p.add_argument("--max-new-tokens", type=int, help="as the main command's (default: the variant's)")
    p.add_argument("--history-images", type=int, help="as the main command's (default: the profile's)")
    p.add_argument("--max-context", type=int, default=32768, help="the run's context budget (default 32768)")
    p.add_argument("--tokenizer", help="a local checkpoint directory whose tokenizer renders our prompts")
    p.add_argument("--checkpoint", type=Path, help="a local checkpoint directory to check (files, config)")
    p.add_argument(
        "--screen",
        type=_size,
        default=(1920, 1080),
        metavar="WxH",
        help="the desktop's size (default 1920x1080)",
    )
    return p


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return w, h


def find_tokenizer(name: str) -> Path | None:
    """A local tokenizer for a checkpoint name: the directory itself, or the Hugging Face cache
    (never a download: the doctor only looks)."""
    from agent.backends.base import BackendError
    from agent.backends.weights import resolve_tokenizer

    try:
        return resolve_tokenizer(name, offline=True, notice=lambda _: None)
    except (BackendError, OSError):  # not here, or not a name at all: the check says so
        return None


def local_checks(args: argparse.Namespace, served: ServedModel | None) -> list[CheckResult]:
    pins = tested_pins(CONSTRAINTS)
    results = [
        local.check_package(name, installed(name), declared_range(name), pins.get(name))
        for name in ("torch", "transformers")
    ]
    found, why = gpus()
    facts = served.facts if served else facts_for(_profile(args).name, args.model or "")
    results.append(local.check_gpu(found, facts, why))
    checkpoint = args.checkpoint or (Path(args.model) if args.model and Path(args.model).is_dir() else None)
    if checkpoint is not None:
        profile = served.profile if served else _profile(args)
        results.append(local.check_checkpoint(read_checkpoint(checkpoint), profile))
    return results


def _profile(args: argparse.Namespace) -> ModelProfile:
    checkpoint = args.checkpoint or (Path(args.model) if args.model and Path(args.model).is_dir() else None)
    config = read_checkpoint(checkpoint).config if checkpoint else None
    return choose_profile(args.model_profile, served_root=args.model, checkpoint_config=config).profile


def table(results: list[CheckResult]) -> Table:
    t = Table(title="kimi-agent doctor", show_lines=False)
    for column in ("check", "status", "found", "fix"):
        t.add_column(column, overflow="fold")
    for r in results:
        t.add_row(r.name, Text(r.status.value, style=STYLE[r.status]), r.found, r.fix)
    return t


def collect(args: argparse.Namespace) -> tuple[list[CheckResult], ServedModel | None]:
    """Every check's result, the server's first (when --base-url is given)."""
    results: list[CheckResult] = []
    served: ServedModel | None = None
    if args.base_url:
        results, served = check_server(args, find_tokenizer)
    return results + local_checks(args, served), served


def cmd_doctor(console: Console, argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.api_key is None:
        args.api_key = os.environ.get("OPENAI_API_KEY")
    results, served = collect(args)
    console.print(table(results))
    facts = served.facts if served else facts_for(_profile(args).name, args.model or "")
    if facts is not None:
        profile = served.profile if served else _profile(args)
        images = args.history_images if args.history_images is not None else profile.history_images
        name = served.served_name if served else profile.name
        advice = recommend(facts, name, args.max_context, images, gpus()[0])
        console.print(Text("recommended server command:", style="bold"))
        console.print(Text(advice.command), soft_wrap=True)
        for note in advice.notes:
            source = f" ({note.source})" if note.source else ""
            console.print(Text(f"  - {note.value}{source}"), soft_wrap=True)
    failed = any_failed(results)
    verdict = "FAIL: fix the lines marked FAIL before a run" if failed else "no FAIL"
    console.print(Text(verdict, style=STYLE[Status.FAIL if failed else Status.OK]))
    return 1 if failed else 0
