"""N ``OSWorldEnv``s stepping at once behind Gymnasium's ``VectorEnv`` API, in one process.

Gymnasium's SyncVectorEnv steps its environments one after another and AsyncVectorEnv gives each a
process of its own (and so a pool of its own). A desktop step is mostly waiting (the X server, the
apps, the settle wait), so threads step them concurrently here, and every environment takes its
sandboxes from one shared warm pool and scores through one evaluator worker.

Autoreset is Gymnasium's default, next-step: the step after an episode ended resets that
environment (reward 0, not terminated, not truncated) instead of stepping it; it replays the task
that environment played last. ``reset(options={"task": [t1, t2, ...]})`` gives each its own task
(one task for all: a plain value).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from tasks.osworld.gym_env import OSWorldEnv
from tasks.osworld.pool import PoolSettings, SandboxPool
from tasks.osworld.runner import OfficialScorer, default_cache

Result = tuple[dict[str, Any], float, bool, bool, dict[str, Any]]


class OSWorldVectorEnv(VectorEnv[dict[str, Any], Any, Any]):
    def __init__(
        self,
        num_envs: int,
        *,
        pool_size: int | None = None,
        desktop: str = "xfce",
        pool: SandboxPool | None = None,
        **env_kwargs: Any,
    ) -> None:
        """``pool_size``: ready sandboxes (default ``num_envs``); ``env_kwargs`` go to each OSWorldEnv."""
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, not {num_envs}")
        from env.isolation import Isolation

        network = env_kwargs.get("network", True)
        self._pool = pool or SandboxPool(
            PoolSettings(pool_size or num_envs, desktop, Isolation(network=network)),
            close_with_last_user=True,
        )
        self._scorer = OfficialScorer(env_kwargs.pop("cache_dir", None) or default_cache())
        self.envs: list[OSWorldEnv] = []
        try:
            for _ in range(num_envs):
                self.envs.append(
                    OSWorldEnv(pool=self._pool, desktop=desktop, scorer=self._scorer, **env_kwargs)
                )
        except BaseException:
            self.close()
            raise
        self.num_envs = num_envs
        self.metadata = {**self.envs[0].metadata, "autoreset_mode": AutoresetMode.NEXT_STEP}
        self.render_mode = self.envs[0].render_mode
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._obs = create_empty_array(self.single_observation_space, n=num_envs, fn=np.zeros)
        self._done = np.zeros(num_envs, dtype=np.bool_)
        self._threads = ThreadPoolExecutor(num_envs, thread_name_prefix="osworld-env")

    def _each(self, calls: Sequence[Callable[[], Any]]) -> list[Any]:
        """Run one call per environment at once; the first exception (by index) is raised."""
        futures = [self._threads.submit(c) for c in calls]
        return [f.result() for f in futures]

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        seeds = _seeds(seed, self.num_envs)
        per_env = [_options_for(options, i, self.num_envs) for i in range(self.num_envs)]
        got = self._each(
            [
                lambda e=e, s=s, o=o: e.reset(seed=s, options=o)
                for e, s, o in zip(self.envs, seeds, per_env, strict=True)
            ]
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

        def one(i: int) -> Result:
            if self._done[i]:  # next-step autoreset: this step resets it instead
                obs, info = self.envs[i].reset()
                return obs, 0.0, False, False, info
            return self.envs[i].step(acts[i])

        got: list[Result] = self._each([lambda i=i: one(i) for i in range(self.num_envs)])
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
        return tuple(e.render() for e in self.envs)

    def close_extras(self, **kwargs: Any) -> None:
        for e in self.envs:
            e.close()
        if hasattr(self, "_threads"):
            self._threads.shutdown()
        self._scorer.close()


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
