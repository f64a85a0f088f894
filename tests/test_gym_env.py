"""kimi-agent/OSWorld-v0 and its warm pool, on real sandboxes scored by OSWorld's own evaluators (the
venv .ci/setup built): reference solutions through ``step`` score 1.0 and doing nothing 0.0, for a
feasible and an infeasible task, on our sandboxes and on `kimi-agent serve` as a VM; Gymnasium's own
``check_env``; a vector of 2; a SIGKILLed pool owner leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from env.isolation import Isolation
from tasks.osworld import evalenv
from tasks.osworld.gym_env import ENV_ID, OSWorldEnv, parse_step
from tasks.osworld.gym_vector import OSWorldVectorEnv
from tasks.osworld.pool import PoolError, PoolSettings, SandboxPool
from tasks.osworld.suite import SOLUTIONS
from tests.osworld_venv import VENV, osworld_python
from tests.sandbox_marks import marked

REPO = Path(__file__).resolve().parent.parent
needs_x = pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed")
FEASIBLE, INFEASIBLE = "os-hello-file", "os-infeasible-bitlocker"
# A task with no setup: check_env resets many times, and a task's own setup would cost seconds each.
NOOP_TASK = {
    "id": "noop",
    "snapshot": "os",
    "instruction": "Do nothing at all.",
    "config": [],
    "evaluator": {"func": "infeasible"},
}
GOOGLE_DRIVE = {
    "type": "googledrive",
    "parameters": {"settings_file": "s", "operation": ["delete"], "args": [{}]},
}


@pytest.fixture
def eval_venv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    osworld_python()
    monkeypatch.setenv(evalenv.VENV_VAR, str(VENV))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def solution(task_id: str) -> list[object]:
    return json.loads((SOLUTIONS / f"{task_id}.json").read_text())


def play(env: gymnasium.Env, steps: list[object]) -> tuple[float, bool, bool, dict]:
    reward, terminated, truncated, info = 0.0, False, False, {}
    for step in steps:
        _, reward, terminated, truncated, info = env.step(step)
        if terminated or truncated:
            break
    return reward, terminated, truncated, info


def test_steps_are_parsed_never_run() -> None:
    assert [a.kind for a in parse_step("WAIT").actions] == ["wait"]
    assert parse_step("FAIL").actions[0].status == "failure"  # type: ignore[union-attr]
    assert [a.kind for a in parse_step("pyautogui.click(960, 540); pyautogui.write('hi')").actions] == [
        "click",
        "type",
    ]
    reply = "## Action:\nclick\n## Code:\n```python\npyautogui.click(x=0.5, y=0.5)\n```"
    assert [a.kind for a in parse_step(reply).actions] == ["click"]
    assert parse_step([{"kind": "key", "key": "enter"}, {"kind": "done"}]).actions[1].kind == "done"
    # What would run as Python elsewhere is an error value here, and nothing is executed.
    assert "only calls" in (parse_step("import os; os.system('touch /tmp/x')").error or "")
    assert parse_step({"kind": "teleport"}).error
    with pytest.raises(TypeError, match="got int"):
        parse_step(42)


@needs_x
@pytest.mark.slow
def test_solutions_score_1_and_idleness_0_through_step(eval_venv: None) -> None:
    env = gymnasium.make(ENV_ID, max_steps=5, desktop="xfce")
    try:
        obs, info = env.reset(options={"task": FEASIBLE})
        assert info["setup_ok"] and info["task_id"] == FEASIBLE and obs["step"] == 0
        assert obs["screenshot"].shape == (1080, 1920, 3) and obs["screenshot"].dtype == np.uint8
        assert obs["instruction"].startswith("Create a text file hello.txt")
        reward, terminated, truncated, info = play(env, solution(FEASIBLE))
        assert (reward, terminated, truncated) == (1.0, True, False), info
        assert info["last_action"] == "DONE"

        # The next reset takes the sandbox the pool started meanwhile.
        _, info = env.reset()  # the same task again
        assert info["task_id"] == FEASIBLE and info["timings"]["reset_s"] < 0.5, info["timings"]
        assert play(env, ["DONE"])[0] == 0.0

        env.reset(options={"task": INFEASIBLE})
        assert play(env, ["FAIL"])[:2] == (1.0, True)
        env.reset(options={"task": INFEASIBLE})
        assert play(env, ["DONE"])[:2] == (0.0, True)

        # A malformed step is an error in info and a step spent; the step limit truncates, and an
        # episode cut at its limit is scored as FAIL (the runner's rule): 0 for a feasible task.
        env.reset(options={"task": FEASIBLE})
        _, reward, terminated, truncated, info = env.step("pyautogui.click(")
        assert "not valid Python" in info["error"] and info["step"] == 1 and not terminated
        _, _, _, _, info = env.step({"kind": "click", "point": {"x": 5000, "y": 1, "space": "pixel"}})
        assert "error" in info
        reward, terminated, truncated, info = play(env, ["WAIT"] * 3)
        assert (reward, terminated, truncated) == (0.0, False, True) and info["last_action"] == "FAIL"
        with pytest.raises(gymnasium.error.ResetNeeded):
            env.step("WAIT")
    finally:
        env.close()


@needs_x
@pytest.mark.slow
def test_check_env_passes(eval_venv: None) -> None:
    env = gymnasium.make(ENV_ID, task=NOOP_TASK, desktop="minimal", max_steps=3)
    try:
        check_env(env.unwrapped, skip_render_check=False)
    finally:
        env.close()


@needs_x
@pytest.mark.slow
def test_a_vector_of_two_steps_both_and_autoresets(eval_venv: None) -> None:
    envs = OSWorldVectorEnv(2, desktop="minimal", max_steps=3)
    try:
        obs, infos = envs.reset(options={"task": [NOOP_TASK, INFEASIBLE]})
        assert obs["screenshot"].shape == (2, 1080, 1920, 3)
        assert list(infos["task_id"]) == ["noop", INFEASIBLE]
        _, rewards, terminated, _, infos = envs.step(["FAIL", "DONE"])
        assert list(rewards) == [1.0, 0.0] and list(terminated) == [True, True]
        # Next-step autoreset: both restart their task; nothing is stepped.
        _, rewards, terminated, _, infos = envs.step(["WAIT", "WAIT"])
        assert list(rewards) == [0.0, 0.0] and not terminated.any()
        assert list(infos["task_id"]) == ["noop", INFEASIBLE]
        _, rewards, *_ = envs.step(["FAIL", "FAIL"])
        assert list(rewards) == [1.0, 1.0]
    finally:
        envs.close()


@pytest.fixture
def served() -> Iterator[tuple[str, str]]:
    """`kimi-agent serve --sandbox`, as a user starts it: its URL and token."""
    cmd = [sys.executable, "-m", "tasks.cli", "serve", "--sandbox", "--port", "0", "--desktop-env", "xfce"]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        said = [proc.stdout.readline() for _ in range(2)]
        url = re.search(r"at (http://\S+);", said[0])
        token = said[1].removeprefix("token:").strip()
        assert url and token, said
        yield url.group(1), token
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@needs_x
@pytest.mark.slow
def test_the_same_env_on_kimi_agent_serve_as_a_vm(eval_venv: None, served: tuple[str, str]) -> None:
    url, token = served
    env = gymnasium.make(ENV_ID, vm=url, vm_token=token, max_steps=5, obs_a11y=True)
    try:
        obs, info = env.reset(options={"task": FEASIBLE})
        assert info["setup_ok"] and obs["screenshot"].shape == (1080, 1920, 3)
        # OSWorld's accessibility tree, as DesktopEnv offers it: the terminal the setup opened is in it.
        assert (
            obs["accessibility_tree"].startswith("<desktop-frame") and "Terminal" in obs["accessibility_tree"]
        )
        assert play(env, solution(FEASIBLE))[:2] == (1.0, True)
        env.reset(options={"task": INFEASIBLE})
        assert play(env, ["FAIL"])[:2] == (1.0, True)
    finally:
        env.close()


def test_bad_input_is_one_clear_line(
    eval_venv: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # No desktop is started for these: a pool of our own would be, so the env gets a VM URL that
    # nothing serves... which it checks first. Use a pool that cannot start instead.
    def never() -> object:
        raise RuntimeError("no desktop in this test")

    pool = SandboxPool(PoolSettings(1, "minimal", attempts=1), start=never)  # type: ignore[arg-type]
    env = OSWorldEnv(pool=pool)
    try:
        with pytest.raises(ValueError, match="no task"):
            env.reset()
        with pytest.raises(ValueError, match="no-such-task: neither a split"):
            env.reset(options={"task": "no-such-task"})
        with pytest.raises(
            ValueError, match=r"task noop cannot run on this sandbox: setup googledrive: needs a"
        ):
            env.reset(options={"task": {**NOOP_TASK, "config": [GOOGLE_DRIVE]}})
        with pytest.raises(gymnasium.error.ResetNeeded):
            env.step("WAIT")
        with pytest.raises(PoolError, match=r"no sandbox could start .*no desktop in this test"):
            env.reset(options={"task": NOOP_TASK})
    finally:
        env.close()
        pool.close()
    with pytest.raises(ValueError, match="pool_size must be 0 or more, not -1"):
        OSWorldEnv(pool_size=-1)
    monkeypatch.setenv(evalenv.VENV_VAR, str(tmp_path / "nothing"))
    with pytest.raises(evalenv.EvalEnvError, match="is not built"):
        OSWorldEnv(task=NOOP_TASK)


@needs_x
def test_a_start_that_fails_is_retried_and_reported_never_handed_out() -> None:
    tries: list[int] = []

    def flaky() -> object:
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("the first start fails")
        from env.served_sandbox import ServedSandbox

        return ServedSandbox(320, 240, desktop=None)

    with SandboxPool(PoolSettings(1, None), start=flaky) as pool:  # type: ignore[arg-type]
        box, _ = pool.take(timeout_s=30)
        assert pool.failures == ["RuntimeError: the first start fails"] and pool.stats.failed == 1
        assert box.server_process.poll() is None
        pool.give_back(box)


@needs_x
def test_max_alive_bounds_every_sandbox_of_the_pool() -> None:
    """With room for one sandbox, the one in use: no replacement starts until it is given back."""
    with SandboxPool(PoolSettings(1, None, Isolation(network=False), screen=(320, 240), max_alive=1)) as pool:
        box, _ = pool.take(timeout_s=30)
        time.sleep(0.5)
        assert pool.stats.started == 1 and pool.ready == 0
        with pytest.raises(PoolError, match=r"no sandbox was ready within 0\.2 s"):
            pool.take(timeout_s=0.2)
        pool.give_back(box)
        second, taken = pool.take(timeout_s=30)  # started once the first had closed
        assert not taken.warm and pool.stats.started == 2
        pool.give_back(second)


@needs_x
@pytest.mark.slow
def test_sigkill_of_the_pool_owner_leaves_nothing() -> None:
    """A trainer killed with a sandbox in use, two ready and two starting: the reapers clear them all."""
    parent = Path(tempfile.mkdtemp(prefix="pool-kill-"))
    parent.chmod(0o711)  # a sandbox's own user must reach its directory
    program = (
        "from tasks.osworld.pool import SandboxPool, PoolSettings\n"
        "pool = SandboxPool(PoolSettings(2, 'minimal'))\n"
        "pool.wait_ready()\n"
        "box, _ = pool.take()\n"
        "pool.take()\n"
        "print('taken', flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(parent)}
    proc = subprocess.Popen([sys.executable, "-c", program], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "taken\n"
        assert len(list(parent.glob("kimi-sandbox-*"))) >= 3
        assert marked(parent)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (any(parent.iterdir()) or marked(parent)):
            time.sleep(0.2)
        assert list(parent.iterdir()) == [] and marked(parent) == []
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(parent, ignore_errors=True)
