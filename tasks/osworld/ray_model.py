"""The model actors of a Ray run with ``--backend transformers`` (docs/ray.md): ``--ray-models K``
replicas of the local model, each loaded once through our transformers path (tasks/model.load_local)
in an actor that asks Ray for ``--ray-gpus G`` GPUs (0: it runs on CPU), so that Ray's GPU resource
places it. The sandbox actors (tasks/osworld/ray_workers.py) play with a ``RemoteBackend`` that
forwards each call to a replica, so many sandboxes share one model.

A replica runs its ``generate`` calls one at a time (Ray runs an actor's calls of one concurrency
group in turn), as ``_Locked`` serialises the local path's shared backend: the backend keeps its KV
cache between calls. Counting a text's tokens, which every prompt build asks for, runs in a group of
its own on a tokenizer of its own, so it does not wait behind generations.

A replica lost mid-run (its process or node): each caller asks the next live replica instead (the
call has no side effect; the prompt carries the whole episode), so with K > 1 the tasks in flight
go on. With none left the call raises BackendError, and the run stops as it does when a model server
becomes unreachable: with one line, its unfinished tasks resumed by the same command. A replica is
not restarted: reloading weights takes minutes and needs GPUs that may be gone with the node.
"""

from __future__ import annotations

import argparse
import functools
import socket
from dataclasses import dataclass
from typing import Any

import ray
import ray.exceptions as rex

from agent.backends.base import BackendError, Completion, GenerationParams
from agent.messages import Message
from agent.models.kimi_vl.variants import ResolvedVariant
from tasks.model import LoadedModel
from tasks.osworld.ray_errors import LOST, one_line

COUNT_CACHE = 4096  # texts whose token counts a sandbox actor keeps (the prompts' fixed parts recur)


@dataclass(frozen=True)
class ModelReport:
    """What a replica says once it has loaded (or failed to)."""

    name: str  # IP:NODEID/model-K
    lacks: str | None  # one line: why it has no model; None when it has one
    resolved: ResolvedVariant | None = None
    device: str = ""
    checkpoint: str = ""
    kv_reuse: bool = True
    host: str = ""


def replica_name(ip: str, node_id: str, index: int) -> str:
    return f"{ip}:{node_id[:8]}/model-{index}"


class ModelServer:
    """The actor's class (``ModelActor`` is its Ray form): the run's model, loaded once."""

    def __init__(self, args: dict[str, Any], index: int, gpus: float) -> None:
        from agent.models.kimi_vl.chat import KimiChat
        from agent.models.kimi_vl.tokenizer import load_tokenizer
        from tasks.model import load_local

        ctx = ray.get_runtime_context()
        self.name = replica_name(ray.util.get_node_ip_address(), ctx.get_node_id(), index)
        self.backend: Any = None
        self.report = ModelReport(self.name, "not loaded")
        try:
            # No GPU asked for: CPU, even where the node has one (another actor's, by Ray's count).
            tb, resolved, path = load_local(
                argparse.Namespace(**args), lambda line: None, None, "cpu" if gpus == 0 else None
            )
            # Counting runs beside generation: it gets a tokenizer of its own (one is not shared
            # between threads).
            self.counter = KimiChat(load_tokenizer(path), tb.in_token_limit).count_text_tokens
        except Exception as e:
            self.report = ModelReport(self.name, one_line(e), host=socket.gethostname())
            return
        self.backend = tb
        self.report = ModelReport(self.name, None, resolved, tb.device, str(path), tb.kv_reuse)

    def hello(self) -> ModelReport:
        return self.report

    def generate(self, messages: list[Message], params: GenerationParams) -> Completion:
        if self.backend is None:
            raise BackendError(f"model replica {self.name} has no model: {self.report.lacks}")
        return self.backend.generate(messages, params)

    @ray.method(concurrency_group="tokens")
    def count_text_tokens(self, text: str) -> int:
        if self.backend is None:
            raise BackendError(f"model replica {self.name} has no model: {self.report.lacks}")
        return self.counter(text)


# Placed by the GPUs it asks for (set per run with .options). The default group (generate, hello)
# runs one call at a time; "tokens" its own. No restarts: see the module's docstring.
ModelActor = ray.remote(max_restarts=0, max_concurrency=1, concurrency_groups={"tokens": 1})(ModelServer)


class RemoteBackend:
    """The Backend protocol over a run's replicas. Each caller starts at its own replica (``first``:
    the sandbox actors spread round-robin over them, and a replica's KV cache keeps serving the
    tasks that reach it) and moves to the next live one when its replica is lost."""

    def __init__(self, replicas: list[Any], names: list[str], first: int = 0) -> None:
        if not replicas:
            raise ValueError("no model replica")
        self.replicas, self.names = list(replicas), list(names)
        self.at = first % len(self.replicas)
        self.lost: list[str] = []
        self.count_text_tokens = functools.lru_cache(maxsize=COUNT_CACHE)(self._count)

    def _call(self, method: str, *args: Any) -> Any:
        while self.replicas:
            replica = self.replicas[self.at]
            try:
                return ray.get(getattr(replica, method).remote(*args))
            except LOST as e:
                # Ray's own text of a dead actor runs to several sentences: its kind says enough.
                self.lost.append(f"{self.names[self.at]} ({type(e).__name__})")
                del self.replicas[self.at], self.names[self.at]
                self.at = self.at % len(self.replicas) if self.replicas else 0
            except rex.RayTaskError as e:  # the model's own error, raised as the local path raises it
                cause = e.cause if isinstance(e.cause, BaseException) else None
                raise (cause or RuntimeError(one_line(e))) from None
        raise BackendError(f"every model replica is lost: {'; '.join(self.lost)}")

    def generate(self, messages: list[Message], params: GenerationParams) -> Completion:
        return self._call("generate", messages, params)

    def _count(self, text: str) -> int:
        return self._call("count_text_tokens", text)


@dataclass(frozen=True)
class ModelReplicas:
    """A run's model replicas, loaded: what the driver hands each sandbox actor (in its ActorSpec)."""

    handles: list[Any]
    names: list[str]
    resolved: ResolvedVariant
    label: str
    where: dict[str, Any]

    def loaded(self, first: int = 0) -> LoadedModel:
        """A policy's model that forwards to the replicas, starting at replica ``first``."""
        backend = RemoteBackend(self.handles, self.names, first)
        return LoadedModel(backend, self.resolved, backend.count_text_tokens, self.label, self.where)


def gpu_room(gpus: float) -> tuple[int, list[float]]:
    """How many replicas of ``gpus`` GPUs the live nodes hold by their GPU totals, and those totals."""
    totals = [float(n.get("Resources", {}).get("GPU", 0)) for n in ray.nodes() if n.get("Alive")]
    if gpus == 0:
        return (1 << 30), totals
    # A small slack for fractions (0.1 GPU ten times is Ray's 1.0).
    return sum(int(t / gpus + 1e-9) for t in totals), totals


def check_room(gpus: float, replicas: int) -> None:
    """RuntimeError with one line when the cluster's GPUs cannot hold ``replicas`` replicas of
    ``gpus`` GPUs: said now, not as actors Ray waits forever to place."""
    room, totals = gpu_room(gpus)
    if room < replicas:
        have = ", ".join(f"{t:g}" for t in totals if t) or "none"
        what = f"{replicas} model replica{'s' if replicas != 1 else ''} of {gpus:g} GPU{'s' if gpus != 1 else ''}"
        raise RuntimeError(
            f"the Ray cluster has no room for {what} (--ray-models {replicas}, --ray-gpus {gpus:g}): "
            f"its nodes' GPUs: {have}"
        )


def start_models(args: dict[str, Any], gpus: float, replicas: int) -> ModelReplicas:
    """Place ``replicas`` model actors of ``gpus`` GPUs and wait for each to load; RuntimeError with
    one line when the cluster cannot hold them or one fails to load (the others are ended)."""
    check_room(gpus, replicas)
    # With GPUs, they alone place it (no CPU asked for: a GPU node's CPUs may all be its sandboxes').
    place = {"num_gpus": gpus, "num_cpus": 0 if gpus else 1}
    handles = [ModelActor.options(**place).remote(args, k + 1, gpus) for k in range(replicas)]
    try:
        reports: list[ModelReport] = ray.get([h.hello.remote() for h in handles])
    except LOST as e:
        stop_models(handles)
        raise RuntimeError(f"a model replica was lost while loading: {one_line(e)}") from None
    bad = [r for r in reports if r.lacks is not None]
    if bad:
        stop_models(handles)
        raise RuntimeError(
            f"model replica {bad[0].name} (host {bad[0].host}) cannot load the model: {bad[0].lacks}"
        )
    first = reports[0]
    assert first.resolved is not None
    devices = sorted({r.device for r in reports})
    label = f"{args['model']} (transformers, {'/'.join(devices)}, {replicas} on Ray)"
    where = {
        "checkpoint": first.checkpoint,
        "device": "/".join(devices),
        "kv_reuse": first.kv_reuse,
        "ray_models": replicas,
        "ray_gpus": gpus,
    }
    return ModelReplicas(handles, [r.name for r in reports], first.resolved, label, where)


def stop_models(handles: list[Any]) -> None:
    for h in handles:
        try:
            ray.kill(h, no_restart=True)
        except Exception:  # already gone
            continue
