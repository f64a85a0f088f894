"""`kimi-agent bench screenspot run DATASET_DIR --out DIR` and `... score FILE --out RESULTS.json`.

``main(argv)`` returns the exit status (0 all samples answered, 1 some were recorded with an error,
2 bad usage is raised as an exception for tasks/cli.py to report on one line).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from agent.backends.base import GenerationParams
from agent.backends.weights import DEFAULT_MODEL
from agent.models.kimi_vl.variants import ResolvedVariant, Variant
from agent.models.profile import ModelProfile
from tasks.cli_common import VARIANTS, ArgumentParser, HelpFormatter, make_console, model_profile_flag
from tasks.monitor_server import add_monitor_flag, monitoring
from tasks.screenspot import report
from tasks.screenspot.monitor_board import GroundingBoard
from tasks.screenspot.runner import (
    FILTER_KEYS,
    Ask,
    AskSettings,
    Tally,
    check_resume,
    local_ask,
    openai_ask,
    parse_filters,
    run_samples,
    select,
    write_json,
)
from tasks.screenspot.sample import Sample

if TYPE_CHECKING:
    from tasks.screenspot.datasets import Dataset

CONCURRENCY = 16
# run.json settings a resumed run must share with the run it continues.
# What a resume must share with the run it continues: otherwise one log would mix two experiments.
RESUME_KEYS = (
    "dataset",
    "dataset_dir",
    "model",
    "checkpoint",
    "variant",
    "in_token_limit",
    "send",
    "language",
    "system_prompt_sha256",
    "params",
)


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="kimi-agent bench screenspot",
        description="Grounding benchmarks (ScreenSpot v1 / v2 / Pro, OSWorld-G): `run` a model on a dataset, "
        "or `score` a results file again. --help after each command.",
        formatter_class=HelpFormatter,
    )
    sub = p.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")
    r = sub.add_parser(
        "run",
        help="ask a model about every sample; resumable",
        description="Ask a model where each sample's target is, score the answers, write results.json "
        "and report.html in --out; the same command resumes an interrupted run.",
        formatter_class=HelpFormatter,
    )
    r.add_argument("dataset", type=Path, help="the dataset directory, as downloaded (layout auto-detected)")
    r.add_argument("--out", type=Path, required=True, help="run directory: predictions.jsonl, results.json")
    add_monitor_flag(r)
    r.add_argument(
        "--backend",
        choices=["openai", "transformers"],
        default="openai",
        help="openai: ask an OpenAI-compatible server such as vLLM (--base-url); transformers: load "
        "the checkpoint here (a GPU)",
    )
    r.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="the served model name (openai) or a checkpoint directory / hub id (transformers)",
    )
    r.add_argument(
        "--base-url",
        action="append",
        help="OpenAI-compatible server; repeat it to spread the requests over several "
        "(default http://127.0.0.1:8000/v1)",
    )
    r.add_argument("--api-key", help="the servers' API key; default: the OPENAI_API_KEY environment variable")
    r.add_argument("--timeout", type=float, default=600.0, help="seconds one try of a request may take")
    r.add_argument("--retries", type=int, default=4, help="retries of a failed request (default 4)")
    r.add_argument(
        "--concurrency",
        type=int,
        default=CONCURRENCY,
        help=f"requests in flight (openai; default {CONCURRENCY})",
    )
    r.add_argument("--limit", type=int, help="only the first N samples (after --filter)")
    r.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"only samples with this field value; keys: {', '.join(FILTER_KEYS)} (repeatable)",
    )
    r.add_argument("--language", choices=["en", "cn"], default="en", help="instruction language (Pro: cn)")
    r.add_argument(
        "--system-prompt", type=Path, help="a file replacing prompts/grounding_system.md (a published setup)"
    )
    model_profile_flag(r)
    r.add_argument("--variant", choices=VARIANTS, help="default: from the checkpoint the backend reports")
    r.add_argument(
        "--in-token-limit", type=int, help="MoonViT's patch limit per image; default: the variant's"
    )
    r.add_argument("--temperature", type=float, default=0.0, help="default 0 (greedy)")
    r.add_argument("--max-new-tokens", type=int, help="default: 1024 Instruct, 8192 Thinking")
    r.add_argument(
        "--send",
        choices=["original", "resized"],
        default="original",
        help="images as the file's bytes when the server then sees the official pixels (default), "
        "or resized by the client",
    )
    r.add_argument("--offline", action="store_true", help="never download weights (transformers)")
    r.add_argument(
        "--no-kv-reuse",
        action="store_true",
        help="no KV cache kept between samples (transformers; they share only the system prompt)",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    r.add_argument("--max-misses", type=int, default=60, help="misses shown in report.html (default 60)")
    s = sub.add_parser(
        "score",
        help="re-score a results file offline",
        description="Score a results file again, offline: a run's results.json or a published one.",
        formatter_class=HelpFormatter,
    )
    s.add_argument(
        "file",
        type=Path,
        help="a run's results.json, or an official ScreenSpot-Pro results file (JSON, or JSONL of records)",
    )
    s.add_argument("--out", type=Path, required=True, help="where to write the results JSON")
    s.add_argument(
        "--rejudge",
        action="store_true",
        help="count each record's verdict judged again from its pred and target (default: the "
        "correctness the file stores, as the official metrics step counts it; the number of records "
        "a re-judgement would change is printed either way)",
    )
    return p


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(list(argv))
    console = make_console(highlight=False)
    if args.command == "score":
        return _score(args, console)
    return _run(args, console)


def _score(args: argparse.Namespace, console: Console) -> int:
    from tasks.screenspot.scoring import rescore_file

    results = rescore_file(args.file, rejudge=args.rejudge)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, results)
    console.print(f"wrote {escape(str(args.out))}")
    console.print(report.metrics_table(results))
    console.print(escape(report.verdicts_line(results)))
    return 0


def _comparable_figure(
    args: argparse.Namespace, filters: Mapping[str, Any], setup: Setup, results: Mapping[str, Any]
) -> tuple[float | None, list[str]]:
    """Kimi-VL's published figure, only beside a run it can be compared with: the whole published
    sample set scored (no subset downloaded, no record skipped or unanswered), in English, with a
    variant read from the checkpoint (or named), every v1/v2 cell scored. Else (None, why not)."""
    dataset = str(results.get("dataset", ""))
    figure = report.published(dataset, setup.resolved.variant.name, setup.profile)
    if figure is None:
        return None, []
    why = [flag for flag, used in (("--filter", filters), ("--limit", args.limit)) if used]
    if args.language != "en":
        why.append(f"--language {args.language}")
    if setup.resolved.source.startswith("default"):
        why.append("the variant is a default, not read from the checkpoint (name it with --variant)")
    if not report.covers_published_set(results):
        scored = results.get("metrics", {}).get("overall", {}).get("num_total", 0)
        why.append(f"{scored} of the {report.PUBLISHED_SAMPLES[dataset]} samples scored")
    elif results.get("metrics", {}).get("cells_averaged", 6) != 6:
        why.append("not every table cell scored")
    return (None, why) if why else (figure, [])


@dataclass
class Setup:
    askers: list[Ask]
    resolved: ResolvedVariant
    settings: dict[str, Any]  # run.json

    @property
    def profile(self) -> str:
        """The model profile the run served (its published figures are the only ones shown)."""
        return str(self.settings.get("model_profile", "kimi-vl"))

    @property
    def who(self) -> str:
        """Whose published figure it is, for people: the profile's title."""
        from agent.models.registry import PROFILES

        profile = PROFILES.get(self.profile)
        return profile.title if profile is not None else self.profile


def _run(args: argparse.Namespace, console: Console) -> int:
    from tasks.screenspot.datasets import load_dataset

    _check_numbers(args)
    filters = parse_filters(args.filter)  # bad flags before the dataset is read
    dataset = load_dataset(args.dataset)
    system = _system(args, refusals=any(s.target.kind == "refusal" for s in dataset.samples))
    for problem in dataset.problems[:5]:
        console.print(f"[yellow]skipped[/] {escape(str(problem))}")
    if len(dataset.problems) > 5:
        console.print(
            f"[yellow]skipped[/] {len(dataset.problems) - 5} more records: every one is listed in "
            'results.json under "skipped"'
        )
    samples = select(dataset.samples, filters, args.limit, args.language)
    if not samples:
        raise ValueError(f"no samples left in {args.dataset} after --filter / --limit")
    setup = _setup(args, system, lambda line: console.print(f"[yellow]{escape(line)}[/]"))
    settings = {
        "dataset": dataset.name,
        "dataset_dir": str(args.dataset.resolve()),
        **setup.settings,
        "language": args.language,
        "send": args.send,
        "system_prompt": str(args.system_prompt) if args.system_prompt else "prompts/grounding_system.md",
        "system_prompt_sha256": hashlib.sha256(system.encode()).hexdigest(),
        "filters": {k: sorted(v) for k, v in filters.items()},
        "limit": args.limit,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    check_resume(args.out, settings, RESUME_KEYS)
    write_json(args.out / "run.json", settings)
    console.print(
        f"{dataset.name}: {len(samples)} samples · {escape(settings['model'])} "
        f"({setup.resolved.variant.name}) · up to {len(setup.askers)} requests in flight"
    )
    tally = Tally(total=len(samples))
    board = GroundingBoard(f"{dataset.name} · {settings['model']}", tally, args.out / "report.html")
    with monitoring(
        args.monitor, board, lambda line: console.print(escape(line)), results=args.out
    ) as monitor:
        code = _ask_and_report(args, console, samples, dataset, filters, setup, settings, tally)
        if monitor is not None:
            board.end()
            monitor.finish()
    return code


def _ask_and_report(
    args: argparse.Namespace,
    console: Console,
    samples: list[Sample],
    dataset: Dataset,
    filters: dict[str, set[str]],
    setup: Setup,
    settings: dict[str, Any],
    tally: Tally,
) -> int:
    from tasks.screenspot.scoring import correctness, score

    predictions = run_samples(
        samples,
        setup.askers,
        args.out / "predictions.jsonl",
        language=args.language,
        hit=lambda s, p: correctness(s, p) == "correct",
        console=console,
        show_progress=not args.no_progress,
        tally=tally,
    )
    errors = sum(p.error is not None for p in predictions.values())
    results = score(dataset.name, samples, predictions.values())
    results["skipped"] = {"count": len(dataset.problems), "records": [str(p) for p in dataset.problems]}
    write_json(args.out / "results.json", results)
    published, why_not = _comparable_figure(args, filters, setup, results)
    if why_not:
        figure = report.published(dataset.name, setup.resolved.variant.name, setup.profile)
        console.print(
            f"[dim]{setup.who}'s published {figure} ({setup.resolved.variant.name}) is over the whole set in "
            f"English; not shown beside this run: {escape('; '.join(why_not))}[/]"
        )
    console.print(report.metrics_table(results, published=published, who=setup.who))
    html = report.write_html(
        args.out / "report.html",
        samples,
        predictions,
        correctness,
        results=results,
        title=f"{dataset.name} · {settings['model']}",
        published=published,
        max_misses=args.max_misses,
        who=setup.who,
    )
    console.print(f"wrote {escape(str(args.out / 'results.json'))} and {escape(str(html))}")
    if errors:
        console.print(
            f"[red]{errors} samples could not be asked[/] (recorded with their error in predictions.jsonl; "
            "rerun the same command to retry them)"
        )
        return 1
    return 0


def _check_numbers(args: argparse.Namespace) -> None:
    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise ValueError(f"--temperature must not be negative, got {args.temperature}")


def _system(args: argparse.Namespace, *, refusals: bool) -> str:
    from tasks.screenspot.prompt import system_prompt

    return system_prompt(args.system_prompt, refusals=refusals)


def _settings_for(
    args: argparse.Namespace, variant: Variant, system: str, profile: ModelProfile | None = None
) -> AskSettings:
    params = GenerationParams(
        temperature=args.temperature, max_new_tokens=args.max_new_tokens or variant.max_new_tokens
    )
    # Kimi-VL's replies are read as they always were; another family's by its coordinate space.
    other = profile if profile is not None and profile.name != "kimi-vl" else None
    return AskSettings(system, params, variant.in_token_limit, args.language, args.send, other)


def _setup(args: argparse.Namespace, system: str, notice: Callable[[str], None]) -> Setup:
    if args.backend == "openai":
        return _openai(args, system, notice)
    if args.base_url:
        raise ValueError("--base-url is for --backend openai")
    return _transformers(args, system, notice)


def _openai(args: argparse.Namespace, system: str, notice: Callable[[str], None]) -> Setup:
    from agent.backends.openai import OpenAIBackend

    urls = list(dict.fromkeys(args.base_url or ["http://127.0.0.1:8000/v1"]))
    backends = [
        OpenAIBackend(
            u,
            args.model,
            api_key=args.api_key,
            timeout_s=args.timeout,
            max_retries=args.retries,
            on_retry=notice,
        )
        for u in urls
    ]
    roots = [b.probe().root or "" for b in backends]  # one line naming a server that is not usable
    if len(set(roots)) > 1:
        listed = ", ".join(f"{u} serves {r!r}" for u, r in zip(urls, roots, strict=True))
        raise ValueError(f"the servers serve different checkpoints ({listed}): one run, one model")
    from tasks.model import server_profile, variant_flag

    chosen = server_profile(args, roots[0])
    resolved = chosen.profile.resolve_variant(
        override=variant_flag(args, chosen),
        names=[("the server's checkpoint", roots[0]), ("the served model", args.model)],
        in_token_limit_override=args.in_token_limit,
    )
    s = _settings_for(args, resolved.variant, system, chosen.profile)
    # Slot i goes to server i mod k: N requests in flight, spread evenly.
    askers = [openai_ask(backends[i % len(backends)], s) for i in range(args.concurrency)]
    settings = {
        "backend": "openai",
        "model": args.model,
        "base_urls": urls,
        "checkpoint": roots[0] or None,
        **chosen.record(),
        **resolved.record(),
        "params": s.params.model_dump(),
        "send": args.send,
    }
    return Setup(askers, resolved, settings)


def _transformers(args: argparse.Namespace, system: str, notice: Callable[[str], None]) -> Setup:
    from tasks.model import checkpoint_profile, load_local

    backend, resolved, path = load_local(args, notice, None)
    s = _settings_for(args, resolved.variant, system)
    if args.concurrency != CONCURRENCY:
        notice("--concurrency is for --backend openai: the transformers backend asks one sample at a time")
    settings = {
        "backend": "transformers",
        "model": args.model,
        "checkpoint": str(path),
        "device": backend.device,
        "kv_reuse": backend.kv_reuse,
        **checkpoint_profile(args, path).record(),
        **resolved.record(),
        "params": s.params.model_dump(),
    }
    return Setup([local_ask(backend, s)], resolved, settings)


if __name__ == "__main__":  # python -m tasks.screenspot.cli: what the tests' subprocesses run
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
