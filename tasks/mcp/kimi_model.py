"""The model behind the kimi group, from `kimi-agent mcp`'s model flags (the main command's: see
tasks/cli.py model_flags), loaded on the first kimi_* call and kept for the server's life.

For ``--backend transformers`` the weights load once (tasks/model.py load_local) and every later
call reuses them; one call uses them at a time (a model in one process has one KV cache). For
``--backend openai`` the server is probed once; the server itself takes concurrent calls.
"""

from __future__ import annotations

import argparse
import logging
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from mcp.server.mcpserver.exceptions import ToolError

from agent.backends.base import Backend, BackendError, GenerationParams
from agent.models.profile import ModelProfile, ResolvedSettings
from tasks.model import LoadedModel, ModelSetup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Model:
    backend: Backend
    resolved: ResolvedSettings
    profile: ModelProfile
    label: str
    local: LoadedModel | None  # the loaded weights (transformers), handed to each run's policy


class KimiModel:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._load_lock = threading.Lock()
        self._model: Model | None = None
        # One generation at a time on weights in this process; a served model takes many.
        self._busy = threading.Lock() if args.backend == "transformers" else None

    def busy(self) -> AbstractContextManager[object]:
        """Held while a call uses the model (a whole kimi_run on local weights)."""
        return self._busy if self._busy is not None else nullcontext()

    def get(self) -> Model:
        """The model, loaded on first use; a failure is a tool error and the next call tries again."""
        with self._load_lock:
            if self._model is None:
                try:
                    self._model = self._load()
                except (BackendError, ValueError, OSError) as e:
                    raise ToolError(f"the model ({self.args.model}) could not be loaded: {e}") from None
                log.info("model ready: %s", self._model.label)
            return self._model

    def _load(self) -> Model:
        args = self.args
        if args.backend == "openai":
            from agent.backends.openai import OpenAIBackend
            from tasks.model import probe_served

            backend = OpenAIBackend(
                args.base_url,
                args.model,
                api_key=args.api_key,
                timeout_s=args.timeout,
                max_retries=args.retries,
                on_retry=log.warning,
            )
            _, chosen, resolved = probe_served(args, backend)
            return Model(backend, resolved, chosen.profile, f"{args.model} via {args.base_url}", None)
        from tasks.model import checkpoint_profile, load_local

        tb, resolved, path = load_local(args, log.warning, None)
        label = f"{args.model} (transformers, {tb.device})"
        where = {"checkpoint": str(path), "device": tb.device, "kv_reuse": tb.kv_reuse}
        local = LoadedModel(tb, resolved, tb.count_text_tokens, label, where)
        return Model(tb, resolved, checkpoint_profile(args, path).profile, label, local)

    def grounding_params(self) -> GenerationParams:
        """As the ScreenSpot harness asks by default: greedy, the variant's output budget."""
        variant = self.get().resolved.variant
        temperature = self.args.temperature if self.args.temperature is not None else 0.0
        return GenerationParams(
            temperature=temperature, max_new_tokens=self.args.max_new_tokens or variant.max_new_tokens
        )

    def policy(self, task: str, size: tuple[int, int]) -> ModelSetup:
        """A fresh policy for one kimi_run (its own history), on the model loaded once."""
        from tasks.model import build_policy

        model = self.get()
        run_args = argparse.Namespace(**{**vars(self.args), "task": task, "desktop": "sandbox", "size": size})
        try:
            return build_policy(run_args, log.warning, None, loaded=model.local)
        except (BackendError, ValueError, OSError) as e:
            raise ToolError(f"the model ({self.args.model}) is not usable for this run: {e}") from None
