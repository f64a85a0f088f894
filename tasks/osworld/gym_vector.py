"""N ``OSWorldEnv``s stepping at once behind Gymnasium's ``VectorEnv`` API, in one process or, with
``ray=``, as actors on a Ray cluster's sandbox nodes (tasks/osworld/gym_ray.py).

Gymnasium's SyncVectorEnv steps its environments one after another and AsyncVectorEnv gives each a
process of its own (and so a pool of its own). A desktop step is mostly waiting (the X server, the
apps, the settle wait), so threads step them concurrently here, and every environment takes its
sandboxes from one shared warm pool and scores through one evaluator worker. On Ray each
environment has its own pool and evaluator worker on its node; the batching and autoreset below are
the same for both (``SubEnvs`` is all that differs).

Autoreset is Gymnasium's default, next-step: the step after an episode ended resets that
environment (reward 0, not terminated, not truncated) instead of stepping it; it replays the task
that environment played last. ``reset(options={"task": [t1, t2, ...]})`` gives each its own task
(one task for all: a plain value).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from tasks.osworld.gym_env import OSWorldEnv
from tasks.osworld.pool import PoolSettings, SandboxPool
from tasks.osworld.runner import OfficialScorer, default_cache

Result = tuple[dict[str, Any], float, bool, bool, dict[str, Any]]


@dataclass(frozen=True)
class Call:
    """One environment's part of a vector call: ``reset``, ``step`` or ``render`` and its arguments."""

    method: Literal["reset", "step", "render"]
    kwargs: dict[str, Any]


class SubEnvs(Protocol):
    """Where a vector's environments live: threads in this process (``LocalEnvs``) or Ray actors
    on a cluster's sandbox nodes (tasks/osworld/gym_ray.py ``RayEnvs``). The vector's logic
    (batching, options per environment, autoreset) is the same for both."""

    envs: list[Any]
    single_observation_space: spaces.Space[Any]
    single_action_space: spaces.Space[Any]
    metadata: dict[str, Any]
    render_mode: str | None

    def call(self, calls: Sequence[Call]) -> list[Any]:
        """``calls[i]`` on environment ``i``, all at once; the results by index. The first error
        (by index) is raised."""
        ...

    def close(self) -> None: ...


class LocalEnvs:
    """The environments in this process: one shared warm pool and evaluator worker, a thread each."""

    def __init__(
        self,
        num_envs: int,
        pool_size: int | None,
        desktop: str,
        pool: SandboxPool | None,
        env_kwargs: dict[str, Any],
    ) -> None:
        from env.isolation import Isolation

        network = env_kwargs.get("network", True)
        self._pool = pool or SandboxPool(
            PoolSettings(pool_size or num_envs, desktop, Isolation(network=network)),
            close_with_last_user=True,
        )
        self._scorer = OfficialScorer(env_kwargs.pop("cache_dir", None) or default_cache())
        self._threads: ThreadPoolExecutor | None = None
        self.envs: list[OSWorldEnv] = []
        try:
            for _ in range(num_envs):
                self.envs.append(
                    OSWorldEnv(pool=self._pool, desktop=desktop, scorer=self._scorer, **env_kwargs)
                )
        except BaseException:
            self.close()
            raise
        first = self.envs[0]
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.metadata, self.render_mode = first.metadata, first.render_mode
        self._threads = ThreadPoolExecutor(num_envs, thread_name_prefix="osworld-env")

    def call(self, calls: Sequence[Call]) -> list[Any]:
        assert self._threads is not None
        futures = [
            self._threads.submit(getattr(e, c.method), **c.kwargs)
            for e, c in zip(self.envs, calls, strict=True)
        ]
        return [f.result() for f in futures]

    def close(self) -> None:
        for e in self.envs:
            e.close()
        if self._threads is not None:
            self._threads.shutdown()
        self._scorer.close()


class OSWorldVectorEnv(VectorEnv[dict[str, Any], Any, Any]):
    def __init__(
        self,
        num_envs: int,
        *,
        pool_size: int | None = None,
        desktop: str = "xfce",
        pool: SandboxPool | None = None,
        ray: str | None = None,
        **env_kwargs: Any,
    ) -> None:
        """``pool_size``: ready sandboxes (default ``num_envs``); ``env_kwargs`` go to each OSWorldEnv.
        ``ray``: run each environment in a Ray actor on a sandbox node of the cluster at that address
        (``auto``: $RAY_ADDRESS, else a local cluster); tasks/osworld/gym_ray.py."""
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, not {num_envs}")
        self._subs: SubEnvs
        if ray is None:
            self._subs = LocalEnvs(num_envs, pool_size, desktop, pool, env_kwargs)
        else:
            if pool is not None:
                raise ValueError(
                    "pool= is a pool of this process; with ray= each environment has one on its node"
                )
            from tasks.osworld.gym_ray import RayEnvs

            self._subs = RayEnvs(num_envs, ray, pool_size, desktop, env_kwargs)
        self.envs = self._subs.envs  # OSWorldEnvs here; on Ray, the actors' handles and nodes
        self.num_envs = num_envs
        self.metadata = {**self._subs.metadata, "autoreset_mode": AutoresetMode.NEXT_STEP}
        self.render_mode = self._subs.render_mode
        self.single_observation_space = self._subs.single_observation_space
        self.single_action_space = self._subs.single_action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._obs = create_empty_array(self.single_observation_space, n=num_envs, fn=np.zeros)
        self._done = np.zeros(num_envs, dtype=np.bool_)

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        seeds = _seeds(seed, self.num_envs)
        per_env = [_options_for(options, i, self.num_envs) for i in range(self.num_envs)]
        got = self._subs.call(
            [Call("reset", {"seed": s, "options": o}) for s, o in zip(seeds, per_env, strict=True)]
        )
        self._done[:] = False
        infos: dict[str, Any] = {}
        for i, (_, info) in enumerate(got):
            infos = self._add_info(infos, info, i)
        self._obs = concatenate(self.single_observation_space, [o for o, _ in got], self._obs)
        return deepcopy(self._obs), infos

    def step(self, actions: Any) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        acts = (
            list(actions) if isinstance(actions, (list, tuple)) else list(iterate(self.action_space, actions))
        )
        if len(acts) != self.num_envs:
            raise ValueError(f"{len(acts)} actions for {self.num_envs} environments")
        # Next-step autoreset: an environment whose episode ended is reset by this step instead.
        calls = [
            Call("reset", {}) if done else Call("step", {"action": a})
            for done, a in zip(self._done, acts, strict=True)
        ]
        answers = self._subs.call(calls)
        got: list[Result] = [
            (a[0], 0.0, False, False, a[1]) if c.method == "reset" else a
            for c, a in zip(calls, answers, strict=True)
        ]
        rewards = np.array([r for _, r, _, _, _ in got], dtype=np.float64)
        terminated = np.array([t for _, _, t, _, _ in got], dtype=np.bool_)
        truncated = np.array([t for _, _, _, t, _ in got], dtype=np.bool_)
        infos: dict[str, Any] = {}
        for i, (*_, info) in enumerate(got):
            infos = self._add_info(infos, info, i)
        self._done = np.logical_or(terminated, truncated)
        self._obs = concatenate(self.single_observation_space, [g[0] for g in got], self._obs)
        return deepcopy(self._obs), rewards, terminated, truncated, infos

    def render(self) -> tuple[Any, ...] | None:
        return tuple(self._subs.call([Call("render", {})] * self.num_envs))

    def close_extras(self, **kwargs: Any) -> None:
        if hasattr(self, "_subs"):
            self._subs.close()


def _seeds(seed: int | list[int | None] | None, n: int) -> list[int | None]:
    if seed is None:
        return [None] * n
    if isinstance(seed, int):
        return [seed + i for i in range(n)]
    if len(seed) != n:
        raise ValueError(f"{len(seed)} seeds for {n} environments")
    return list(seed)


def _options_for(options: dict[str, Any] | None, i: int, n: int) -> dict[str, Any] | None:
    """Environment ``i``'s reset options: a list under "task" gives each its own task."""
    if not options:
        return None
    task = options.get("task")
    if isinstance(task, (list, tuple)):
        if len(task) != n:
            raise ValueError(f"{len(task)} tasks for {n} environments")
        return {**options, "task": task[i]}
    return options
