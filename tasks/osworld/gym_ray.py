"""``OSWorldVectorEnv(n, ray=ADDRESS)``: the vector's environments as Ray actors on the sandbox nodes
of a cluster (docs/environments.md, docs/ray.md). The vector's own logic (batches, options per
environment, autoreset) is gym_vector.py's; this module only decides where the environments live.

Each environment is an actor placed by one unit of the custom resource ``kimi_sandbox`` (and no CPU),
on the node with the most room left, as the `--ray` driver places its workers (ray_driver.py). It
holds an ``OSWorldEnv`` with a warm pool of its own on its node and the official scorer there. A
vector call sends every environment its part at once and then waits for all the answers.

- Task files: a task given as a file, or as an OSWorld task id found on this machine, is packed here
  with the local files its setup reads (shipping.py) and unpacked on the node; a suite id or a task
  dict travels as it is.
- A node that lacks the sandbox stack is refused with one line (``RayEnvs.refused``, and a warning)
  and its environments go to other nodes.
- An actor lost (its process or its node) raises ``EnvLost`` naming the environment and its node at
  the vector call that finds it: the episodes of a vector are one batch, so the training loop decides
  (close the vector and make a new one). Nothing is re-created behind its back.
- ``close`` closes each actor's environment (its sandboxes, its evaluator worker, its folder), then
  ends the actors; the driver leaves a cluster it joined.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.osworld.gym_vector import Call

log = logging.getLogger(__name__)

try:
    import ray
    import ray.exceptions as rex
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError:  # the ray extra: said when a vector asks for it
    ray = None

INSTALL_HINT = "pip install 'kimi-agent[ray]'"
HELLO_TIMEOUT_S = 240.0  # an actor placed and its first sandbox ready, before the wait is given up
CLOSE_TIMEOUT_S = 60.0


class RayEnvError(RuntimeError):
    """The environments cannot be placed on the cluster; one line."""


class EnvLost(RuntimeError):
    """An environment's actor or node is gone; the message names the environment and the node."""


@dataclass(frozen=True)
class RemoteEnv:
    """One environment of the vector on the cluster: its actor and where it runs."""

    index: int
    actor: Any
    node_id: str
    ip: str
    hostname: str
    pid: int  # the actor's process on its node

    def where(self) -> str:
        return f"{self.ip} ({self.hostname}, {self.node_id[:8]})"


class EnvWorker:
    """The actor's class (``EnvActor`` is its Ray form): one ``OSWorldEnv`` on this node, with a
    pool of ``pool_size`` ready sandboxes of its own made in the actor's folder."""

    def __init__(self, desktop: str, pool_size: int, env_kwargs: dict[str, Any]) -> None:
        from tasks.osworld.ray_errors import one_line
        from tasks.osworld.ray_workers import node_lacks

        self.node_id = ray.get_runtime_context().get_node_id()
        self.ip = ray.util.get_node_ip_address()
        self._lock = threading.Lock()
        self._tmp: Path | None = None
        self._env: Any = None
        self._pool: Any = None
        self._shipped: Path | None = None  # the folder of the task file last shipped here
        self.lacks = node_lacks(desktop, isolated=True)  # the environment always isolates its sandboxes
        if self.lacks is None:
            try:
                self._start(desktop, pool_size, env_kwargs)
            except Exception as e:
                self.lacks = one_line(e)
                self.close()
        atexit.register(self.close)  # a graceful exit (ray.shutdown) closes too

    def _start(self, desktop: str, pool_size: int, env_kwargs: dict[str, Any]) -> None:
        from env.isolation import Isolation
        from tasks.osworld.gym_env import OSWorldEnv
        from tasks.osworld.pool import PoolSettings, SandboxPool
        from tasks.osworld.ray_workers import READY_TIMEOUT_S, TEMP_PREFIX, sweep_stale

        sweep_stale()  # the folders of this node's actors that died without closing
        self._tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-"))
        # The sandboxes are made in it too (a sandbox's own user reaches its directory through it):
        # the sweep of a dead actor's folder removes theirs.
        self._tmp.chmod(0o711)
        iso = Isolation(network=env_kwargs.get("network", True))
        if pool_size > 0:
            self._pool = SandboxPool(PoolSettings(pool_size, desktop, iso, parent_dir=self._tmp))
        self._env = OSWorldEnv(pool=self._pool, pool_size=0, desktop=desktop, **env_kwargs)
        if self._pool is not None:  # a first sandbox that starts, or the node is refused
            try:
                self._pool.wait_ready(1, timeout_s=READY_TIMEOUT_S)
            except Exception as e:
                raise RuntimeError(f"cannot start a sandbox: {e}") from None

    def hello(self) -> tuple[str, str, str, int, str | None]:
        """(node id, IP, host name, the actor's pid, what the node lacks or None)."""
        return self.node_id, self.ip, socket.gethostname(), os.getpid(), self.lacks

    def spaces(self) -> tuple[Any, Any, dict[str, Any], str | None]:
        env = self._live()
        return env.observation_space, env.action_space, env.metadata, env.render_mode

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None, bundle: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        from tasks.osworld.shipping import unpack

        env = self._live()
        if bundle is None:
            return env.reset(seed=seed, options=options)
        assert self._tmp is not None
        folder = self._tmp / "tasks" / uuid.uuid4().hex
        try:
            ref = unpack(bundle, folder)
            opts = {**(options or {}), "task": ref.path}
            opts.setdefault("domain", ref.domain)
            got = env.reset(seed=seed, options=opts)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        # The task is this environment's to replay now (an autoreset): the one before can go.
        old, self._shipped = self._shipped, folder
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return got

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        return self._live().step(action)

    def render(self) -> Any:
        return self._live().render()

    def _live(self) -> Any:
        if self._env is None:
            raise RuntimeError(self.lacks or "the environment is closed")
        return self._env

    def close(self) -> None:
        """Close the environment (its sandbox, its scorer), the pool and the actor's folder."""
        with self._lock:
            env, self._env = self._env, None
            pool, self._pool = self._pool, None
            tmp, self._tmp = self._tmp, None
        if env is not None:
            with contextlib.suppress(Exception):
                env.close()
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


class RayEnvs:
    """The vector's environments as actors (gym_vector.SubEnvs). ``pool_size``: ready sandboxes in
    all (default one per environment), split over the actors; ``env_kwargs`` go to each OSWorldEnv,
    except ``osworld_dir`` and ``task``, which are read here (tasks are shipped from this machine)."""

    def __init__(
        self, num_envs: int, address: str, pool_size: int | None, desktop: str, env_kwargs: dict[str, Any]
    ) -> None:
        if ray is None:
            raise RayEnvError(f"ray= needs Ray: {INSTALL_HINT}")
        from tasks.osworld.ray_driver import connect

        if env_kwargs.get("vm") is not None:
            raise ValueError(
                "ray= runs the environments on the cluster's sandboxes; vm= names a machine of your own"
            )
        kwargs = dict(env_kwargs)
        self._osworld_dir = kwargs.pop("osworld_dir", None)
        default_task = kwargs.pop("task", None)
        self._per_env_pool = 1 if pool_size is None else -(-pool_size // num_envs)
        self._owns_ray = not ray.is_initialized()
        self.where = connect(address, num_envs)
        self.envs: list[RemoteEnv] = []
        self.refused: dict[str, str] = {}  # node id: the line saying what it lacks
        self._default: dict[str, Any] | None = None
        self._played: set[int] = set()  # the environments reset at least once
        try:
            self._place(num_envs, desktop, kwargs)
            obs, act, self.metadata, self.render_mode = ray.get(self.envs[0].actor.spaces.remote())
            self.single_observation_space, self.single_action_space = obs, act
            # The environment's own default task, shipped like a reset's.
            self._default = None if default_task is None else self._ship({"task": default_task})
        except BaseException:
            self.close()
            raise

    # -- placement ------------------------------------------------------------------------------
    def _place(self, num_envs: int, desktop: str, kwargs: dict[str, Any]) -> None:
        """One actor per environment, each on the usable node with the most room; an actor whose
        node lacks the sandbox stack is ended, the node refused, and its environment placed again."""
        from tasks.osworld.ray_driver import sandbox_nodes
        from tasks.osworld.ray_errors import LOST, one_line
        from tasks.osworld.ray_workers import SANDBOX_RESOURCE

        nodes = sandbox_nodes()
        if not nodes:
            raise RayEnvError(
                f"no node of the Ray cluster advertises the {SANDBOX_RESOURCE} resource: start each node "
                f"that can host sandboxes with ray start ... --resources '{{\"{SANDBOX_RESOURCE}\": N}}'"
            )
        placed: Counter[str] = Counter()
        ready: dict[int, RemoteEnv] = {}
        todo = list(range(num_envs))
        while todo:
            starting = []
            for i in todo:
                room = {k: n.capacity - placed[k] for k, n in nodes.items() if k not in self.refused}
                room = {k: r for k, r in room.items() if r > 0}
                if not room:
                    raise RayEnvError(
                        "; ".join(
                            [
                                f"the cluster has room for {len(ready) + len(starting)} of {num_envs} "
                                f"environments ({SANDBOX_RESOURCE} units of the nodes that can host sandboxes)",
                                *self.refused.values(),
                            ]
                        )
                    )
                node = max(room, key=lambda k: room[k])
                placed[node] += 1
                actor = EnvActor.options(
                    resources={SANDBOX_RESOURCE: 1},
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
                ).remote(desktop, self._per_env_pool, kwargs)
                starting.append((i, node, actor, actor.hello.remote()))
                # Known at once, so that close() ends it whatever happens next.
                self.envs.append(RemoteEnv(i, actor, node, nodes[node].ip, "?", 0))
            todo = []
            for i, node, actor, hello in starting:
                try:
                    node_id, ip, host, pid, lacks = ray.get(hello, timeout=HELLO_TIMEOUT_S)
                except rex.GetTimeoutError:
                    raise RayEnvError(
                        f"environment {i}: its actor on node {nodes[node].ip} ({node[:8]}) did not start "
                        f"within {HELLO_TIMEOUT_S:.0f} s (its {SANDBOX_RESOURCE} units taken by another job?)"
                    ) from None
                except LOST as e:
                    raise RayEnvError(
                        f"environment {i}: its actor on node {nodes[node].ip} ({node[:8]}) was lost: {one_line(e)}"
                    ) from None
                env = RemoteEnv(i, actor, node_id, ip, host, pid)
                self.envs = [env if e.actor is actor else e for e in self.envs]
                if lacks is None:
                    ready[i] = env
                    continue
                if node not in self.refused:
                    self.refused[node] = f"node {env.where()} refused: {lacks}"
                    log.warning("%s", self.refused[node])
                self._end([env])
                todo.append(i)
        self.envs = [ready[i] for i in range(num_envs)]

    # -- calls ----------------------------------------------------------------------------------
    def call(self, calls: Sequence[Call]) -> list[Any]:
        # Every task resolved and packed first: a bad one raises before any environment is reset.
        args = [self._arguments(e, c) for e, c in zip(self.envs, calls, strict=True)]
        refs = [
            getattr(e.actor, c.method).remote(**a) for e, c, a in zip(self.envs, calls, args, strict=True)
        ]
        self._played.update(e.index for e, c in zip(self.envs, calls, strict=True) if c.method == "reset")
        return [self._answer(e, ref) for e, ref in zip(self.envs, refs, strict=True)]

    def _arguments(self, env: RemoteEnv, call: Call) -> dict[str, Any]:
        """The actor method's arguments: a reset's task as the node takes it (``_ship``)."""
        if call.method != "reset":
            return call.kwargs
        options = call.kwargs.get("options")
        if options and "task" in options:
            args = self._ship(options)
        elif self._default is not None and env.index not in self._played:
            # The first reset plays the vector's task=; later ones replay what the node has.
            args = {**self._default, "options": {**self._default["options"], **(options or {})}}
        else:
            args = {"options": options}
        return {"seed": call.kwargs.get("seed"), **args}

    def _answer(self, env: RemoteEnv, ref: Any) -> Any:
        from tasks.osworld.ray_errors import LOST, one_line

        try:
            return ray.get(ref)
        except LOST as e:
            raise EnvLost(f"environment {env.index} on node {env.where()} was lost: {one_line(e)}") from None
        except rex.RayTaskError as e:
            # The environment's own error (a bad task, ResetNeeded, TypeError): as a local one raises it.
            if isinstance(e.cause, BaseException):
                raise e.cause from e
            raise

    def _ship(self, options: dict[str, Any]) -> dict[str, Any]:
        """A reset's arguments for the node: ``options`` as they are when their task is a suite id
        or a dict; a task file (or an OSWorld task id found here) as a bundle with its local files."""
        from tasks.osworld import suite
        from tasks.osworld.gym_env import one_task
        from tasks.osworld.shipping import pack

        spec = options["task"]
        if spec is None or isinstance(spec, dict):
            return {"options": options}
        ref = one_task(spec, self._osworld_dir)
        if Path(ref.path).is_relative_to(suite.EXAMPLES.resolve()) and not str(spec).endswith(".json"):
            return {"options": options}  # the packaged suite: every node has it
        rest = {k: v for k, v in options.items() if k != "task"}
        rest.setdefault("domain", ref.domain)
        return {"options": rest, "bundle": pack(ref)}

    # -- the end ----------------------------------------------------------------------------------
    def _end(self, envs: Sequence[RemoteEnv]) -> None:
        """Each actor closes its environment, then goes."""
        closing = []
        for e in envs:
            with contextlib.suppress(Exception):
                closing.append(e.actor.close.remote())
        if closing:
            with contextlib.suppress(Exception):
                ray.wait(closing, num_returns=len(closing), timeout=CLOSE_TIMEOUT_S)
        for e in envs:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(e.actor, no_restart=True)
        self.envs = [e for e in self.envs if e not in envs]

    def close(self) -> None:
        if ray is None or not ray.is_initialized():
            return  # left the cluster already (a .remote() now would start a new one)
        self._end(list(self.envs))
        if self._owns_ray:
            with contextlib.suppress(Exception):
                ray.shutdown()


# Placed by the custom resource alone (num_cpus=0), as the run's sandbox actors are. No restarts: an
# environment mid-episode cannot be brought back, so a lost one is the training loop's to handle.
EnvActor = ray.remote(num_cpus=0, max_restarts=0)(EnvWorker) if ray is not None else None
