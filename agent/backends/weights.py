"""Where a checkpoint's files are: a local directory, the Hugging Face cache, or a download into it.

A hub id that is not cached is fetched on first use, as transformers users expect: one notice line
with its size, an optional confirmation, then the hub's own progress bars. Offline mode (--offline,
HF_HUB_OFFLINE) never downloads. Only the files the model needs are fetched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent.backends.base import BackendError

DEFAULT_MODEL = "moonshotai/Kimi-VL-A3B-Instruct"
# What the native path reads: config, generation, tokenizer and processor json, the chat template,
# the tiktoken BPE file, the weights and their index. README, LICENSE and figures are never fetched.
# The checkpoint's *.py (remote code) is not needed by the native path.
NEEDED_FILES = ("*.json", "*.jinja", "tiktoken.model", "*.safetensors")
OTHER_WAYS = "pass --model DIR for a local copy, or serve the model with vLLM and pass --backend openai"
# What agent/models/kimi_vl/tokenizer.py reads (a few MB): enough for `kimi-agent export` to count and render
# tokens for runs made against a model server, with no weights here.
TOKENIZER_FILES = ("tiktoken.model", "tokenizer_config.json", "chat_template.jinja")


def resolve_checkpoint(
    model: str,
    *,
    offline: bool = False,
    confirm: Callable[[str], bool] | None = None,
    notice: Callable[[str], None] = print,
) -> Path:
    """The directory holding ``model``'s checkpoint, downloading a hub id into the HF cache if needed.

    ``confirm`` gets a question ("download 32.8 GB ...?") and says yes or no; None downloads without
    asking (non-interactive runs). Every failure is a one-line BackendError saying what to do."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BackendError(
                f"{path} has no config.json: pass a checkpoint directory or a hub id like {DEFAULT_MODEL}"
            )
        return path
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise BackendError(
            f"no checkpoint directory at {model}: pass a directory with config.json "
            f"or a hub id like {DEFAULT_MODEL}"
        )
    cached = _cached(model)
    if cached is not None:
        return cached
    from huggingface_hub import constants

    if offline or constants.is_offline_mode():
        switch = "--offline" if offline else "HF_HUB_OFFLINE is set"
        raise BackendError(
            f"{model} is not (fully) in the Hugging Face cache ({constants.HF_HUB_CACHE}) and offline "
            f"mode is on ({switch}), so no download was attempted: run `{_hf()} download {model}` where there "
            f"is network, or {OTHER_WAYS}"
        )
    size, count = _download_size(model)
    notice(
        f"{model} is not (fully) in the Hugging Face cache: downloading {count} files, {_human(size)}, "
        f"from {constants.ENDPOINT} into {constants.HF_HUB_CACHE}"
    )
    if confirm is not None and not confirm(f"download {_human(size)} of {model} now?"):
        raise BackendError(
            f"download declined; fetch it later with `{_hf()} download {model}`, or {OTHER_WAYS}"
        )
    return _download(model)


def resolve_tokenizer(
    model: str,
    *,
    offline: bool = False,
    notice: Callable[[str], None] = print,
    other_ways: str = OTHER_WAYS,
) -> Path:
    """A directory holding ``model``'s tokenizer: a local checkpoint directory, the cached snapshot
    (the whole checkpoint or the tokenizer alone), or TOKENIZER_FILES fetched from the hub into its
    cache, never the weights. The offline rules are the weights' (--offline, HF_HUB_OFFLINE): then
    the error gives the exact command that fetches them. ``other_ways`` ends a download error: what
    else the caller's command accepts (export has no --model, and a model server is no help there)."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "tiktoken.model").is_file():
            raise BackendError(f"{path} has no tiktoken.model: pass a checkpoint directory or a hub id")
        return path
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise BackendError(f"{model} is neither a directory here nor a hub id like {DEFAULT_MODEL}")
    cached = _cached(model, TOKENIZER_FILES)
    if cached is not None and (cached / "tiktoken.model").is_file():
        return cached
    from huggingface_hub import constants

    if offline or constants.is_offline_mode():
        switch = "--offline" if offline else "HF_HUB_OFFLINE is set"
        include = " ".join(f"--include {f}" for f in TOKENIZER_FILES)
        raise BackendError(
            f"the tokenizer of {model} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
            f"offline mode is on ({switch}), so nothing was fetched: run `{_hf()} download {model} {include}` "
            "(a few MB) where there is network, or pass --tokenizer CHECKPOINT_DIR"
        )
    size, count = _download_size(model, TOKENIZER_FILES, other_ways)
    notice(
        f"fetching only the tokenizer of {model} ({count} files, {_human(size)}; no weights) from "
        f"{constants.ENDPOINT} into {constants.HF_HUB_CACHE}"
    )
    got = _download(model, TOKENIZER_FILES, other_ways)
    if not (got / "tiktoken.model").is_file():
        raise BackendError(f"{model} on {constants.ENDPOINT} has no tiktoken.model: not a Kimi-VL checkpoint")
    return got


def _cached(model: str, patterns: tuple[str, ...] = NEEDED_FILES) -> Path | None:
    """The cached snapshot with every file matching ``patterns``, without touching the network;
    an interrupted download (the library's tree listing shows files missing) is not a copy, nor
    is a tokenizer fetched alone a checkpoint."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model, allow_patterns=list(patterns), local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def _download_size(
    model: str, patterns: tuple[str, ...] = NEEDED_FILES, other_ways: str = OTHER_WAYS
) -> tuple[int, int]:
    """Bytes and number of the files to fetch, from the hub's file metadata."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    try:
        info = HfApi().model_info(model, files_metadata=True)
    except Exception as e:
        raise _hub_error(model, e, other_ways) from None
    files = list(
        filter_repo_objects(info.siblings or [], allow_patterns=list(patterns), key=lambda s: s.rfilename)
    )
    return sum(f.size or 0 for f in files), len(files)


def _download(model: str, patterns: tuple[str, ...] = NEEDED_FILES, other_ways: str = OTHER_WAYS) -> Path:
    """Into the HF cache, with the hub's progress bars; files an interrupted run finished are kept."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, allow_patterns=list(patterns)))
    except Exception as e:
        raise _hub_error(model, e, other_ways) from None


def _hub_error(model: str, e: Exception, other_ways: str = OTHER_WAYS) -> BackendError:
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(e, GatedRepoError):
        return BackendError(
            f"{model} on {constants.ENDPOINT} is gated: accept its terms there, "
            "run `hf auth login`, and retry"
        )
    if isinstance(e, RepositoryNotFoundError):
        return BackendError(
            f"no model {model} on {constants.ENDPOINT} (a typo, or private: run `hf auth login`); "
            f"{other_ways}"
        )
    # A LocalEntryNotFoundError from snapshot_download wraps the network error that caused it.
    cause = e.__cause__ if isinstance(e.__cause__, Exception) else e
    return BackendError(
        f"could not download {model} from {constants.ENDPOINT} ({type(cause).__name__}: {reason(cause)}); "
        f"check the network or HF_ENDPOINT, or {other_ways}"
    )


def reason(e: BaseException, limit: int = 160) -> str:
    """An exception's first sentence, on one line."""
    text = " ".join(str(e).split()) or type(e).__name__
    first = text.split(". ")[0]
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _human(n: int) -> str:
    """Decimal units, as the hub's progress bars count."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _hf() -> str:
    """The hub's command line as a user can type it: ``hf`` when it is on PATH, else the one
    installed beside this interpreter (``.venv/bin/hf`` after the README's set-up)."""
    import shutil
    import sys

    if shutil.which("hf"):
        return "hf"
    beside = Path(sys.executable).parent / "hf"
    return str(beside) if beside.exists() else "hf"
