"""``kimi-agent/OSWorld-v0``: OSWorld tasks as a Gymnasium environment, on our sandboxes (taken ready
from a warm pool) or on any OSWorld-protocol server (``vm=URL``: OSWorld's VM image, `kimi-agent serve`).

    import gymnasium, tasks.osworld.gym_env   # the import registers the id
    env = gymnasium.make("kimi-agent/OSWorld-v0", max_steps=15)
    obs, info = env.reset(options={"task": "calc-sum-formula"})
    obs, reward, terminated, truncated, info = env.step("pyautogui.hotkey('ctrl', 's')")

An episode is what ``bench osworld run`` plays for one task, one step at a time: ``reset`` takes a
fresh desktop and runs the task's setup (``config``); each ``step`` executes one step's actions; the
episode ends on DONE/FAIL (terminated) or at ``max_steps`` (truncated, scored as FAIL: the runner's
rule), and only then is the reward the official evaluator's score (0.0 before). A step is what a
``--script`` file holds (an action dict or a list of them), typed ``Action``s, or a string: a model
reply, pyautogui code, or ``WAIT`` / ``DONE`` / ``FAIL`` as OSWorld's ``DesktopEnv.step`` takes. Strings
are parsed by the agent's parser and never run as code. A step that cannot be read or executed is an
error in ``info`` and a step spent, as for a model; a value of the wrong type raises TypeError and
spends nothing.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, get_args

import gymnasium
import numpy as np
from gymnasium import spaces
from pydantic import ValidationError

from agent.models.kimi_vl.parser import parse_reply
from agent.models.pyautogui_code import ParseError, read_code
from agent.trajectory import ActionRecord, action_record
from env.actions import Action, Done, Wait, action_from_dict, brief_error
from env.isolation import Isolation
from env.osworld_client import OSWorldClient
from env.settle import Settle
from env.vm_desktop import VMDesktop
from tasks.osworld.pool import SCREEN, PoolSettings, SandboxPool
from tasks.osworld.ports import fixed_ports, hold_ports
from tasks.osworld.results import TaskRef
from tasks.osworld.runner import (
    OfficialScorer,
    SandboxTarget,
    Target,
    VMTarget,
    default_cache,
    osworld_action,
    unsupported,
)
from tasks.osworld.setup import SetupContext, run_config
from tasks.osworld.task import Task, parse_task

ENV_ID = "kimi-agent/OSWorld-v0"
MAX_TEXT = 1 << 20  # the longest instruction, action string or accessibility tree a space admits
ACTION_TYPES: tuple[type, ...] = get_args(get_args(Action)[0])  # Click, Move, ... Done
MARKERS = {"WAIT": Wait(), "DONE": Done(status="success"), "FAIL": Done(status="failure")}


class AnyText(spaces.Text):
    """Any string up to ``max_length``: instructions, replies and trees hold any character, where
    ``spaces.Text`` admits its charset only. It samples printable ASCII (a random step is then a
    malformed action, which the environment answers with an error in ``info``)."""

    def __init__(self, max_length: int = MAX_TEXT) -> None:
        printable = "".join(chr(c) for c in range(32, 127)) + "\n"
        super().__init__(max_length=max_length, min_length=0, charset=printable)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length


@dataclass(frozen=True)
class ParsedStep:
    actions: list[Action]
    error: str | None = None


def parse_step(step: object) -> ParsedStep:
    """A step as the environment takes it, as typed actions; what cannot be read is an error value.
    TypeError for a value of no accepted type (a trainer's bug, not a policy's mistake)."""
    if isinstance(step, str):
        return _parse_text(step)
    items = list(step) if isinstance(step, (list, tuple)) else [step]
    if not items:
        return ParsedStep([], "an empty step: no action")
    actions: list[Action] = []
    for i, item in enumerate(items, 1):
        if isinstance(item, dict):
            try:
                actions.append(action_from_dict(item))
            except ValidationError as e:
                return ParsedStep([], f"action {i}: {brief_error(e)}")
            except ValueError as e:
                return ParsedStep([], f"action {i}: {e}")
        elif isinstance(item, ACTION_TYPES):
            actions.append(item)
        else:
            raise TypeError(
                f"a step is a string, an action dict, an Action, or a list of those; got {type(item).__name__}"
            )
    return ParsedStep(actions)


def _parse_text(text: str) -> ParsedStep:
    marker = MARKERS.get(text.strip())
    if marker is not None:
        return ParsedStep([marker])
    if "## " in text or "```" in text or "◁think▷" in text:  # a model reply: its ## Code section
        reply = parse_reply(text)
        return ParsedStep(reply.actions, reply.error)
    try:
        return ParsedStep(read_code(text)[0])
    except ParseError as e:
        return ParsedStep([], str(e))
    except (RecursionError, MemoryError):
        return ParsedStep([], "code is nested too deeply to read")
    except (ValueError, TypeError) as e:
        return ParsedStep([], f"cannot read the code: {type(e).__name__}")


def one_task(spec: object, osworld_dir: Path | None) -> TaskRef:
    """The one task a reset's ``task`` names (a suite id, an OSWorld task id, a task file; not a
    dict); TypeError or ValueError (TaskError) saying why not."""
    if not isinstance(spec, (str, Path)):
        raise TypeError(f"a task is a suite id, task id, task file or task dict; got {type(spec).__name__}")
    from tasks.osworld.run_cli import resolve

    _, refs = resolve([str(spec)], osworld_dir)
    if len(refs) != 1:
        raise ValueError(f"{spec} names {len(refs)} tasks (a split); an episode plays one")
    return refs[0]


class OSWorldEnv(gymnasium.Env[dict[str, Any], str]):
    """One desktop, one task at a time. ``task``: the default for a ``reset`` without one (a suite
    id, an OSWorld task id found under ``osworld_dir``, a task file, or a task dict). ``pool``: a
    warm pool shared with other environments (its settings decide desktop and isolation); without
    one, a pool of ``pool_size`` of its own (0: each reset starts a sandbox, on its critical path).
    ``vm``: an OSWorld-protocol server instead of sandboxes."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 1}

    def __init__(
        self,
        task: str | Path | dict[str, Any] | None = None,
        *,
        osworld_dir: str | Path | None = None,
        vm: str | None = None,
        vm_token: str | None = None,
        pool: SandboxPool | None = None,
        pool_size: int = 1,
        desktop: str = "xfce",
        network: bool = True,
        max_steps: int = 15,
        obs_a11y: bool = False,
        cache_dir: str | Path | None = None,
        sleep_after_s: float | None = None,
        scorer: OfficialScorer | None = None,
        render_mode: str | None = None,
    ) -> None:
        from tasks.osworld.evalenv import ready_python

        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, not {max_steps}")
        if pool_size < 0:
            raise ValueError(f"pool_size must be 0 or more, not {pool_size}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode {render_mode!r}: only 'rgb_array' is offered")
        ready_python()  # the reward needs the evaluator environment: say so now, not at the first score
        self.render_mode = render_mode
        self.max_steps, self.obs_a11y, self.network = max_steps, obs_a11y, network
        self.osworld_dir = Path(osworld_dir) if osworld_dir is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache()
        self.default_task = task
        self._settle = Settle(sleep_after_s=sleep_after_s)
        self._own_scorer = scorer is None
        self._scorer = scorer or OfficialScorer(self.cache_dir)
        self._target: Target
        if vm is not None:
            self._target = VMTarget(vm, vm_token, None)
            self._target.check_token()
            with self._target.wait_up() as probe:
                screen = probe.screen_size()
        else:
            iso = Isolation(network=network)
            if pool is None and pool_size > 0:  # a pool of its own, closed with the environment
                pool = SandboxPool(PoolSettings(pool_size, desktop, iso), close_with_last_user=True)
            elif pool is not None:  # a shared pool's sandboxes have its settings
                iso, desktop = pool.settings.isolation, pool.settings.desktop or "minimal"
                self.network = iso is None or iso.network
            self._target = SandboxTarget("gym", desktop, iso, pool)
            screen = pool.settings.screen if pool is not None else SCREEN
        self._screen = screen
        width, height = screen
        obs: dict[str, spaces.Space[Any]] = {
            "screenshot": spaces.Box(0, 255, (height, width, 3), np.uint8),
            "instruction": AnyText(),
            "step": spaces.Discrete(max_steps + 1),
        }
        if obs_a11y:
            obs["accessibility_tree"] = AnyText()
        self.observation_space = spaces.Dict(obs)
        self.action_space = AnyText()  # also: action dicts, Actions, lists of them (parse_step)
        self._episode: _Episode | None = None
        self._last_frame: np.ndarray | None = None

    # -- the Gymnasium API ---------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        spec = (options or {}).get("task", self.default_task)
        if spec is None:
            raise ValueError("no task: pass options={'task': ...} to reset, or task= to the environment")
        task, domain = self.resolve(spec, (options or {}).get("domain"))
        self.default_task = spec  # a reset without a task plays this one again (a vector's autoreset)
        why = unsupported(task, domain, self._target.kind, self.network)
        if why:
            raise ValueError(f"task {task.id} cannot run on this {self._target.kind}: {why}")
        self._end()
        # Chrome's fixed DevTools ports, on sandboxes sharing the host's network: one such task at a
        # time across environments and processes, as in the runner (a reset waits for them).
        held = contextlib.ExitStack()
        if self._target.kind == "sandbox" and self.network:
            held.enter_context(hold_ports(fixed_ports(task)))
        t0 = time.perf_counter()
        try:
            client = self._target.reset()
        except BaseException:
            held.close()
            raise
        reset_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        try:
            ctx = SetupContext(client=client, cache_dir=self.cache_dir)
            report = run_config(task, ctx)
            setup_s = time.perf_counter() - t1
            desktop = VMDesktop(
                OSWorldClient(self._target.desktop_url() or client.base_url, token=client.token),
                settle=self._settle,
                fast=True if self._target.kind == "sandbox" else None,  # our server: no need to ask
            )
        except BaseException:
            client.close()
            held.close()
            raise
        self._episode = _Episode(task, domain, client, ctx, desktop, held)
        obs = self._observe()
        failed = [o.line() for o in report.outcomes if not o.ok]
        info = {
            "task_id": task.id,
            "domain": domain,
            "instruction": task.instruction,
            # False: the desktop is not in the task's start state, and the episode's reward means nothing
            "setup_ok": report.ok,
            "setup_errors": failed + ([f"{report.not_run} steps not run"] if report.not_run else []),
            "timings": {
                "reset_s": reset_s,
                "setup_s": setup_s,
                "observe_s": time.perf_counter() - t1 - setup_s,
            },
        }
        return obs, info

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        ep = self._episode
        if ep is None or ep.over:
            raise gymnasium.error.ResetNeeded("call reset() before step(), and again after an episode ends")
        parsed = parse_step(action)  # TypeError here spends no step
        ep.steps += 1
        t0 = time.perf_counter()
        info: dict[str, Any] = {"step": ep.steps}
        records: list[ActionRecord] = []
        terminated = False
        if parsed.error is not None:
            info["error"] = parsed.error
        for a in parsed.actions:
            if isinstance(a, Done):
                ep.last_action = "DONE" if a.status == "success" else "FAIL"
                terminated = True
                break
            result = ep.desktop.execute(a)
            records.append(action_record(a, ep.desktop.geometry, result))
            ep.last_action = osworld_action(records[-1])  # what scoring reads, as OSWorld's action_history
            if not result.ok:
                info["error"] = f"{records[-1].description}: {result.error}"
                break
        info["actions"] = [r.description for r in records]
        info["execute_s"] = time.perf_counter() - t0
        truncated = not terminated and ep.steps >= self.max_steps
        obs = self._observe()
        reward = 0.0
        if terminated or truncated:
            ep.over = True
            if truncated:
                ep.last_action = "FAIL"  # as the runner ends a run at its step limit
            t1 = time.perf_counter()
            score = self._scorer(ep.task, ep.client, ep.ctx, ep.last_action)
            reward = float(score.score)
            info["evaluation"] = score.details
            info["evaluate_s"] = time.perf_counter() - t1
        info["last_action"] = ep.last_action
        return obs, reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        if self.render_mode != "rgb_array" or self._last_frame is None:
            return None
        return self._last_frame.copy()

    def close(self) -> None:
        self._end()
        self._target.close()
        if self._own_scorer:
            self._scorer.close()
        super().close()

    @property
    def server(self) -> tuple[str, str | None] | None:
        """The current episode's desktop server (URL, token), for another client of the same
        desktop (a viewer, a second driver); None between episodes."""
        ep = self._episode
        return (ep.desktop.client.base_url, ep.desktop.client.token) if ep is not None else None

    # -- the parts -----------------------------------------------------------------------------
    def resolve(self, spec: str | Path | dict[str, Any], domain: str | None = None) -> tuple[Task, str]:
        """The task (and its domain) a reset's ``task`` names; TaskError/ValueError saying why not."""
        if isinstance(spec, dict):
            task = parse_task(spec)
            return task, domain or task.domain
        from tasks.osworld.task import load_task

        ref = one_task(spec, self.osworld_dir)
        return load_task(ref.path), domain or ref.domain

    def _observe(self) -> dict[str, Any]:
        ep = self._episode
        assert ep is not None
        width, height, data = ep.desktop.rgb()
        if (width, height) != tuple(self._screen):
            raise RuntimeError(
                f"the desktop's screenshot is {width}x{height}, the observation space {self._screen[0]}x{self._screen[1]}"
            )
        # Read-only, over the bytes as they came: ``.copy()`` it to change it.
        pixels = np.frombuffer(data, np.uint8).reshape(height, width, 3)
        self._last_frame = pixels
        obs: dict[str, Any] = {
            "screenshot": pixels,
            "instruction": ep.task.instruction,
            "step": min(ep.steps, self.max_steps),
        }
        if self.obs_a11y:
            obs["accessibility_tree"] = ep.client.accessibility()
        return obs

    def _end(self) -> None:
        ep, self._episode = self._episode, None
        if ep is not None:
            if self._target.kind == "sandbox":
                ep.desktop.client.close()  # the sandbox goes: no key of it needs letting go
            else:
                ep.desktop.close()  # a VM stays: let go of the keys the episode held down
            ep.client.close()
            ep.ports.close()


@dataclass
class _Episode:
    task: Task
    domain: str
    client: OSWorldClient  # setup and scoring
    ctx: SetupContext
    desktop: VMDesktop  # the agent's actions and frames (its own client)
    ports: contextlib.ExitStack  # the task's fixed ports, held until the episode is over
    steps: int = 0
    last_action: str | None = None
    over: bool = False


gymnasium.register(id=ENV_ID, entry_point=f"{__name__}:OSWorldEnv", nondeterministic=True)
