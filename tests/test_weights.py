"""Getting the weights on a fresh machine (issue 6 item 13), against a real HTTP server that speaks the
Hugging Face Hub API (tests/fake_hub.py). huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE
when imported, so each hub call runs in its own Python process with the environment a user would set."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_hub import FakeHub, fake_hub
from safetensors.numpy import save_file

from agent.backends.base import BackendError
from agent.backends.weights import resolve_checkpoint

ROOT = Path(__file__).resolve().parents[1]
REPO = "moonshotai/Kimi-VL-A3B-Instruct"
NEEDED = [
    "config.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "tiktoken.model",
    "model.safetensors",
]
# One process: resolve, then print what happened as JSON on the last stdout line (progress bars go to stderr).
RESOLVE = """
import json, sys
from agent.backends.base import BackendError
from agent.backends.weights import resolve_checkpoint
a = json.loads(sys.argv[1])
out = {"notices": [], "asked": []}
def confirm(question):
    out["asked"].append(question)
    return a["answer"]
try:
    out["path"] = str(resolve_checkpoint(a["model"], offline=a["offline"],
        confirm=None if a["answer"] is None else confirm, notice=out["notices"].append))
except BackendError as e:
    out["error"] = str(e)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub repo's files: what the model needs (4.0 MB in all, nearly all of it the weights) and what
    it does not (a 5 MB README, remote code), so the notice's size shows which files were counted."""
    root = tmp_path_factory.mktemp("repo")
    (root / "config.json").write_text(json.dumps({"model_type": "kimi_vl"}))
    (root / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 131072}))
    (root / "chat_template.jinja").write_text("{{ messages }}")
    (root / "tiktoken.model").write_text("IQ== 0\nIg== 1\n")
    save_file({"w": np.arange(999_900, dtype=np.float32)}, str(root / "model.safetensors"))
    (root / "README.md").write_text("x" * 5_000_000)
    (root / "modeling_kimi_vl.py").write_text("# remote code\n")
    return root


@pytest.fixture
def hub(checkpoint: Path) -> Iterator[FakeHub]:
    with fake_hub({REPO: checkpoint}) as h:
        yield h


def command(
    home: Path,
    endpoint: str,
    *,
    model: str = REPO,
    offline: bool = False,
    answer: bool | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """subprocess arguments for a user's run: a fresh process with this HF_HOME and HF_ENDPOINT."""
    ours = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    environ = {**clean, "HF_ENDPOINT": endpoint, "HF_HOME": str(home), "NO_PROXY": "127.0.0.1", **(env or {})}
    args = json.dumps({"model": model, "offline": offline, "answer": answer})
    return {"args": [sys.executable, "-c", RESOLVE, args], "env": environ, "cwd": ROOT}


def resolve(home: Path, endpoint: str, **kw: Any) -> dict[str, Any]:
    run = subprocess.run(**command(home, endpoint, **kw), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.splitlines()[-1])


def test_first_use_downloads_needed_files_then_uses_the_cache(
    tmp_path: Path, hub: FakeHub, checkpoint: Path
) -> None:
    first = resolve(tmp_path, hub.url)
    snapshot = (
        tmp_path / "hub" / "models--moonshotai--Kimi-VL-A3B-Instruct" / "snapshots" / hub.repos[REPO].sha
    )
    assert first.get("path") == str(snapshot), first
    [line] = first["notices"]
    # the size counts the needed files only (the 5 MB README would make it 9.0 MB)
    assert REPO in line and "4.0 MB" in line and "5 files" in line and hub.url in line, line
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(NEEDED)
    assert all((snapshot / f).read_bytes() == (checkpoint / f).read_bytes() for f in NEEDED)
    assert sorted(hub.downloads()) == sorted(NEEDED)

    seen = len(hub.requests)
    again = resolve(tmp_path, hub.url)
    assert again == {"path": str(snapshot), "notices": [], "asked": []}
    offline = resolve(tmp_path, hub.url, env={"HF_HUB_OFFLINE": "1"})
    assert offline["path"] == str(snapshot)
    assert len(hub.requests) == seen, hub.requests[seen:]  # neither touched the network


def test_an_interrupted_download_is_not_a_copy_and_the_next_run_finishes_it(
    tmp_path: Path, hub: FakeHub, checkpoint: Path
) -> None:
    hub.stall = "model.safetensors"
    proc = subprocess.Popen(
        **command(tmp_path, hub.url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    snapshot = (
        tmp_path / "hub" / "models--moonshotai--Kimi-VL-A3B-Instruct" / "snapshots" / hub.repos[REPO].sha
    )
    others = set(NEEDED) - {"model.safetensors"}
    try:
        assert hub.stalled.wait(30), hub.requests
        deadline = time.monotonic() + 30
        while not others <= {p.name for p in snapshot.glob("*")} and time.monotonic() < deadline:
            time.sleep(0.05)  # the small files land in the cache while the weights hang
    finally:
        proc.kill()  # the user's Ctrl-C, or a lost connection, halfway through the weights
        proc.wait()
        hub.release.set()
    hub.stall = None
    fetched = len(hub.downloads())
    out = resolve(tmp_path, hub.url)
    assert len(out["notices"]) == 1  # the partial snapshot was not taken for the checkpoint
    assert (Path(out["path"]) / "model.safetensors").read_bytes() == (
        checkpoint / "model.safetensors"
    ).read_bytes()
    assert hub.downloads()[fetched:] == ["model.safetensors"]  # files the first run finished are kept


def test_confirm_no_declines_before_any_download(tmp_path: Path, hub: FakeHub) -> None:
    out = resolve(tmp_path, hub.url, answer=False)
    assert out["asked"] == [f"download 4.0 MB of {REPO} now?"]
    assert out["error"].startswith("download declined;") and f"hf download {REPO}" in out["error"]
    assert (
        hub.downloads() == [] and not (tmp_path / "hub" / "models--moonshotai--Kimi-VL-A3B-Instruct").exists()
    )


def test_confirm_yes_downloads(tmp_path: Path, hub: FakeHub) -> None:
    out = resolve(tmp_path, hub.url, answer=True)
    assert out["asked"] == [f"download 4.0 MB of {REPO} now?"] and len(out["notices"]) == 1
    assert sorted(p.name for p in Path(out["path"]).iterdir()) == sorted(NEEDED)


@pytest.mark.parametrize("how", ["flag", "HF_HUB_OFFLINE"])
def test_offline_refuses_without_trying(tmp_path: Path, hub: FakeHub, how: str) -> None:
    if how == "flag":
        out = resolve(tmp_path, hub.url, offline=True)
    else:
        out = resolve(tmp_path, hub.url, env={"HF_HUB_OFFLINE": "1"})
    error = out["error"]
    assert "\n" not in error and "offline mode is on" in error and "no download was attempted" in error
    # `hf` if it is on PATH, else the one beside the interpreter (.venv/bin/hf): a command that runs.
    named = re.search(r"`(\S*hf) download " + re.escape(REPO) + "`", error)
    assert named and "--backend openai" in error
    assert shutil.which(named[1]) or Path(named[1]).is_file()
    assert "outgoing traffic" not in error.lower()
    assert hub.requests == [] and out["notices"] == []
    assert (Path(sys.executable).parent / "hf").is_file()  # the command the message names exists


def test_unreachable_endpoint_is_one_line_naming_it(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    error = resolve(tmp_path, endpoint)["error"]
    assert "\n" not in error and error.startswith(f"could not download {REPO} from {endpoint} (Connect"), (
        error
    )


def test_unknown_repo_is_one_line(tmp_path: Path, hub: FakeHub) -> None:
    error = resolve(tmp_path, hub.url, model="moonshotai/No-Such-Model")["error"]
    assert error.startswith(f"no model moonshotai/No-Such-Model on {hub.url}") and "\n" not in error


def test_gated_repo_says_how_to_get_access(tmp_path: Path, hub: FakeHub) -> None:
    hub.gated.add(REPO)
    error = resolve(tmp_path, hub.url)["error"]
    assert (
        error.startswith(f"{REPO} on {hub.url} is gated:") and "hf auth login" in error and "\n" not in error
    )


def test_local_directory_is_returned_as_is(checkpoint: Path) -> None:
    assert resolve_checkpoint(str(checkpoint), notice=pytest.fail) == checkpoint


@pytest.mark.parametrize("model", ["{tmp}", "{tmp}/missing", "./missing", "~/missing/model"])
def test_not_a_checkpoint_directory(tmp_path: Path, model: str) -> None:
    with pytest.raises(BackendError, match=r"(has no config.json|no checkpoint directory at)") as e:
        resolve_checkpoint(model.format(tmp=tmp_path), notice=pytest.fail)
    assert "\n" not in str(e.value) and REPO in str(e.value)
