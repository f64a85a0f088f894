"""The context budget is never exceeded, token counts are exact, and each prompt profile keeps its
layout: ``append`` only appends between chunked evictions, ``osworld`` is the reference layout."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
from PIL import Image
from prompt_tokens import GENERATION, common_prefix, layout

from agent.history import (
    PROFILES,
    BuiltPrompt,
    ContextBuilder,
    HistoryConfig,
    load_templates,
    utf8_upper_bound,
)
from agent.messages import ImagePart, Message, TextPart
from agent.models.kimi_vl.chat import KimiChat
from agent.models.kimi_vl.tokenizer import load_tokenizer
from agent.policy import Decision, StepView
from env.actions import Click, Point

SIZES = [(1920, 1080), (1280, 800), (2560, 1440), (800, 600)]
TASK = "rename every file in ~/docs to lower case"
ROOT = Path(__file__).resolve().parents[1]


def _view(k: int, error: str | None = None) -> StepView:
    d = Decision(
        thought=f"step {k}: the dialog shows {'x' * (k % 37)}",
        action_text=f"click item {k}",
        actions=[Click(point=Point.norm(0.5, 0.5))],
        error=error,
        notes=["2 calls after computer.terminate() were ignored"] if k % 13 == 0 else [],
    )
    return StepView(step=k, decision=d, results=["not executed: off screen"] if k % 11 == 0 else [None])


def _run(cfg: HistoryConfig, steps: int) -> list[tuple[BuiltPrompt, int, int]]:
    builder = ContextBuilder(cfg)
    history: list[StepView] = []
    images = {s: Image.new("RGB", s, (k * 40 % 255, 90, 160)) for k, s in enumerate(SIZES)}
    out = []
    for n in range(1, steps + 1):
        shot = images[SIZES[n % len(SIZES)]]
        built = builder.build(TASK, history, shot, n)
        out.append((built, builder.image_cutoff, builder.text_cutoff))
        history.append(_view(n, error="no ## Code block" if n % 17 == 0 else None))
    return out


def _text(built: BuiltPrompt) -> str:
    return "\n".join(p.text for m in built.messages for p in m.parts if isinstance(p, TextPart))


CONFIGS = [
    HistoryConfig(max_images=3),
    HistoryConfig(max_images=None, max_context=32768),
    HistoryConfig(max_images=None, max_context=131072, in_token_limit=16384, thinking=True),
    HistoryConfig(max_images=5, max_context=8192, max_new_tokens=2048),  # text must be dropped too
]


@pytest.mark.parametrize("profile", [*PROFILES, "ui-tars"])
@pytest.mark.parametrize("cfg", CONFIGS)
def test_200_steps_stay_within_budget(cfg: HistoryConfig, profile: str) -> None:
    cfg = dataclasses.replace(cfg, profile=profile)
    runs = _run(cfg, 200)
    evictions = 0
    for n, (built, cut, tcut) in enumerate(runs, 1):
        flat = layout(built.messages, cfg.in_token_limit)
        assert built.tokens <= cfg.budget, (n, built.tokens)
        assert len(flat) + GENERATION == built.tokens  # the count matches the rendered layout
        assert built.image_steps[-1] == n  # the current screen is always there
        if cfg.max_images:
            assert len(built.image_steps) <= cfg.max_images
        if n == 1 or profile != "append":
            continue
        prev, pcut, ptcut = runs[n - 2]
        if (cut, tcut) == (pcut, ptcut):
            # No eviction: everything but the previous step's closing line is reused verbatim.
            prev_flat = layout(prev.messages, cfg.in_token_limit)
            closing = len(prev.messages[-1].parts[-1].text.encode()) + 1
            assert flat[: len(prev_flat) - closing] == prev_flat[:-closing]
        else:
            evictions += 1
    # Evictions come in chunks: far fewer than one per step once the history is full.
    assert evictions <= 200 * 0.55


@pytest.fixture(scope="module")
def chat(tiny_kimi: Path) -> KimiChat:
    return KimiChat(load_tokenizer(tiny_kimi), 4096)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("thinking", [False, True])
@pytest.mark.parametrize(
    ("max_images", "max_context"),
    [(3, 32768), (1, 32768), (None, 6144)],  # the cap; past turns without images; evictions of both kinds
)
def test_token_count_equals_the_rendered_ids(
    chat: KimiChat, profile: str, thinking: bool, max_images: int | None, max_context: int
) -> None:
    """The count is exact with the real tokenizer layout, whose words for roles and ``image`` are
    several tokens in the tiny vocabulary (the old count took them as one each)."""
    cfg = HistoryConfig(
        thinking=thinking,
        max_images=max_images,
        max_context=max_context,
        max_new_tokens=512,
        count_text_tokens=chat.count_text_tokens,
        profile=profile,
    )
    runs = _run(cfg, 40)
    for built, _, _ in runs:
        assert len(chat.render(built.messages).ids) == built.tokens
    if max_images is None:
        assert runs[-1][1] > 0 and runs[-1][2] > 0  # screenshots and text were both evicted


@pytest.mark.parametrize("profile", PROFILES)
def test_retry_only_appends_in_the_profiles_wording(chat: KimiChat, profile: str) -> None:
    builder = ContextBuilder(HistoryConfig(profile=profile, count_text_tokens=chat.count_text_tokens))
    built = builder.build(TASK, [_view(1)], Image.new("RGB", (1280, 800)), 2)
    again = builder.retry(built.messages, "I will click", "no ## Code block with an action")
    before = chat.render(built.messages, add_generation_prompt=False).ids
    assert chat.render(again).ids[: len(before)] == before
    assert [m.role for m in again[-2:]] == ["assistant", "user"]
    assert again[-2].parts[0].text == "I will click"
    assert "could not be executed: no ## Code block with an action" in again[-1].parts[0].text


@pytest.mark.parametrize("profile", PROFILES)
def test_retries_stay_within_the_budget_without_the_thinking(chat: KimiChat, profile: str) -> None:
    """A reply that hit max_new_tokens, appended whole, would leave the next try no room."""
    cfg = HistoryConfig(
        profile=profile,
        thinking=True,
        max_context=4096,
        max_new_tokens=512,
        count_text_tokens=chat.count_text_tokens,
    )
    builder = ContextBuilder(cfg)
    messages = builder.build(TASK, [_view(1)], Image.new("RGB", (1280, 800)), 2).messages
    answer = "## Thought\nI will look for the menu " + "and then the button " * 2000
    for attempt in range(3):
        messages = builder.retry(
            messages, "◁think▷" + "hmm " * 3000 + "◁/think▷" + answer, "no ## Code block"
        )
        assert len(chat.render(messages).ids) <= cfg.budget, attempt
    reply = messages[-2].parts[0].text
    assert reply.startswith("## Thought\nI will look") and reply.endswith(" [...]") and "hmm" not in reply
    short = builder.retry(messages[:3], "◁think▷hmm◁/think▷## Action:\nclick", "x")
    assert short[-2].parts[0].text == "## Action:\nclick"


def test_osworld_layout_is_the_reference_one() -> None:
    """Past user turns hold the screenshot only, older steps are one text-only assistant message,
    the task comes with the current screenshot in the last user turn; min(3, n) screenshots."""
    for n, (built, _, _) in enumerate(_run(HistoryConfig(profile="osworld"), 8), 1):
        assert built.image_steps == list(range(max(1, n - 2), n + 1))
        roles = [m.role for m in built.messages]
        last = built.messages[-1]
        assert isinstance(last.parts[0], ImagePart) and TASK in last.parts[-1].text
        assert all(
            TASK not in p.text for m in built.messages[:-1] for p in m.parts if isinstance(p, TextPart)
        )
        if n >= 4:
            merged = built.messages[1]
            assert roles[:2] == ["system", "assistant"]
            assert [f"# Step {k}:" in merged.parts[0].text for k in range(1, n)] == [
                k <= n - 3 for k in range(1, n)
            ]
            assert roles[2:] == ["user", "assistant", "user", "assistant", "user"]
        for m in built.messages[2:-1]:
            if m.role == "user":
                assert [type(p) for p in m.parts] == [ImagePart]  # no feedback in these steps
    step = built.messages[-2].parts[0].text
    assert step.startswith("# Step 7:\n## Thought:\nstep 7: ") and "\n\n## Action:\nclick item 7" in step
    thinking = _run(HistoryConfig(profile="osworld", thinking=True), 3)[-1][0]
    assert thinking.messages[-2].parts[0].text.startswith("# Step 2:\n◁think▷step 2: ")
    assert "◁/think▷## Action:\nclick item 2" in thinking.messages[-2].parts[0].text


def test_uitars_layout_is_the_reference_one() -> None:
    """As OSWorld's UI-TARS-1.5 agent lays it out (mm_agents/uitars15_v1.py, mrwwk/DeskCraft
    @ 4893b45ee51b57b2c1279d0e140aee02a7d0f6a6): a plain system turn, the prompt with the task as the
    first user turn, min(5, n) screenshots each alone in a user turn before its step's reply, older
    replies as assistant turns of their own, the current screenshot alone last; no empty turn."""
    system = "You are a helpful assistant."
    runs = _run(HistoryConfig(profile="ui-tars", max_images=5), 20)
    for n, (built, _, _) in enumerate(runs[:9], 1):
        assert built.image_steps == list(range(max(1, n - 4), n + 1))
        roles = [m.role for m in built.messages]
        past = [r for k in range(1, n) for r in ["user"] * (k >= n - 4) + ["assistant"]]
        assert roles == ["system", "user", *past, "user"]
        assert built.messages[0].parts == (TextPart(system),)
        task = built.messages[1].parts[0].text
        assert task.startswith("You are a GUI agent.") and task.endswith(f"## User Instruction\n{TASK}")
        replies = [m.parts[0].text for m in built.messages if m.role == "assistant"]
        assert replies == [
            f"Thought: {_view(k).decision.thought}\nAction: click item {k}" for k in range(1, n)
        ]
        for m in built.messages[2:]:
            if m.role == "user":
                assert [type(p) for p in m.parts] == [ImagePart]  # no feedback in these steps, no caption
    # What the model hears about a step rides with the next screenshot (17: a reply that did not parse).
    last = runs[17][0].messages[-1]
    assert (
        isinstance(last.parts[0], ImagePart)
        and "could not be executed: no ## Code block" in last.parts[1].text
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_every_past_step_stays_as_text_and_feedback_reaches_the_model(profile: str) -> None:
    runs = _run(HistoryConfig(max_images=2, profile=profile), 20)
    text = _text(runs[-1][0])
    for k in range(1, 20):
        assert f"# Step {k}:" in text and f"click item {k}" in text
    assert runs[-1][0].messages[0].role == "system" and "## Code:" in runs[-1][0].messages[0].parts[0].text
    # What the model hears about step k is in the next turn: a parse error (17), an action that
    # failed (11), notes on a reply that parsed (13); in osworld only while that turn has its screen.
    for k, words in [
        (17, "could not be executed: no ## Code block"),
        (11, "failed: not executed: off screen"),
        (13, "Note on your last reply: 2 calls after computer.terminate() were ignored"),
    ]:
        assert words in _text(runs[k][0])  # the prompt of step k + 1
        assert words not in _text(runs[k - 1][0])


@pytest.mark.parametrize("profile", [*PROFILES, "ui-tars"])
def test_text_overflow_drops_old_steps_and_says_so(profile: str) -> None:
    cfg = HistoryConfig(
        max_images=1,
        max_context=4096,
        max_new_tokens=512,
        count_text_tokens=utf8_upper_bound,
        profile=profile,
    )
    built = _run(cfg, 120)[-1][0]
    assert built.tokens <= cfg.budget and built.first_text_step > 1
    assert f"1-{built.first_text_step - 1} are " in _text(built)
    assert f"# Step {built.first_text_step - 1}:" not in _text(built)


def test_budget_too_small_for_one_screen_is_a_clear_error() -> None:
    builder = ContextBuilder(HistoryConfig(max_context=1500, max_new_tokens=512))
    with pytest.raises(ValueError, match="even with no history; the budget is"):
        builder.build("t", [], Image.new("RGB", (1920, 1080)), 1)


def _shares(profile: str, **kw: object) -> float:
    runs = _run(HistoryConfig(profile=profile, **kw), 50)  # type: ignore[arg-type]
    shares = []
    for (a, *_), (b, *_) in itertools.pairwise(runs):
        fa, fb = layout(a.messages, 4096), layout(b.messages, 4096)
        shares.append(common_prefix(fa, fb) / len(fb))
    return sum(shares) / len(shares)


def test_prefix_share_over_50_steps() -> None:
    """The figure the benchmark reports, held as a floor for the budget-driven setting."""
    assert _shares("append", max_images=None, max_context=131072) >= 0.9
    assert _shares("append") > _shares("osworld")  # why append is the cache-friendly default


# ------------------------------------------------------------------ templates


def _user_dir(tmp_path: Path, **templates: str) -> Path:
    for name, text in templates.items():
        (tmp_path / f"{name}.md").write_text(text, encoding="utf-8")
    return tmp_path


def test_a_users_directory_replaces_templates_by_name(tmp_path: Path) -> None:
    d = _user_dir(
        tmp_path,
        agent_current="## Task Instruction:\n{task}\nNext move? {{literal braces}}",
        agent_system="SYSTEM AS PUBLISHED",
    )
    built = _run(HistoryConfig(profile="osworld", prompt_dir=d), 2)[-1][0]
    assert built.messages[0].parts[0].text == "SYSTEM AS PUBLISHED"
    assert built.messages[-1].parts[-1].text == f"## Task Instruction:\n{TASK}\nNext move? {{literal braces}}"
    assert "# Step 1:\n## Thought:" in _text(built)  # the rest stays packaged


@pytest.mark.parametrize(
    ("templates", "message"),
    [
        ({"agent_current": "{task} {screen}"}, r"agent_current.md: unknown placeholder \{screen\}"),
        ({"agent_current": "What next?"}, r"agent_current.md: lacks the placeholder \{task\}"),
        ({"parse_feedback": "Bad reply."}, r"parse_feedback.md: lacks the placeholder \{error\}"),
        (
            {"agent_step": "{action} {step.__class__}"},
            r"agent_step.md: \{step.__class__\} is not a placeholder",
        ),
        ({"agent_step": "{action} {0}"}, r"agent_step.md: \{0\} is not a placeholder"),
        ({"agent_step": "{action!r}"}, r"agent_step.md: \{action!r\} is not a placeholder"),
        ({"agent_system": "a { b"}, r"agent_system.md: .*brace"),
        ({"agent_stpe": "{action}"}, r"agent_stpe.md is not a template name"),
    ],
)
def test_bad_templates_are_one_line_errors_at_start_up(
    tmp_path: Path, templates: dict[str, str], message: str
) -> None:
    d = _user_dir(tmp_path, **templates)
    with pytest.raises(ValueError, match=message) as e:
        ContextBuilder(HistoryConfig(profile="osworld", prompt_dir=d))
    assert "\n" not in str(e.value) and str(d) in str(e.value)


def test_a_copy_of_the_packaged_tree_works_as_a_users_directory(tmp_path: Path) -> None:
    """`cp -r prompts mine`, edit mine/osworld/agent_current.md: the profile folder is read first."""
    import shutil

    mine = tmp_path / "mine"
    shutil.copytree(ROOT / "prompts", mine, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (mine / "osworld" / "agent_current.md").write_text("EDITED {task}")
    built = _run(HistoryConfig(profile="osworld", prompt_dir=mine), 1)[-1][0]
    assert built.messages[-1].parts[-1].text == f"EDITED {TASK}"
    (mine / "osworld" / "agent_current.md").write_text("EDITED {instruction}")
    with pytest.raises(ValueError, match=r"osworld/agent_current.md: unknown placeholder \{instruction\}"):
        ContextBuilder(HistoryConfig(profile="osworld", prompt_dir=mine))
    (mine / "osworld" / "agent_current.md").write_bytes(b"\xff{task}")
    with pytest.raises(ValueError, match=r"osworld/agent_current.md is not UTF-8 text"):
        ContextBuilder(HistoryConfig(profile="osworld", prompt_dir=mine))
    (mine / "osworld" / "agent_current.md").write_text("  \n")
    with pytest.raises(ValueError, match=r"osworld/agent_current.md is empty"):
        ContextBuilder(HistoryConfig(profile="osworld", prompt_dir=mine))


def test_unknown_profile_and_missing_directory_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown prompt profile 'kimi' \\(choose from append, osworld\\)"):
        load_templates("kimi")
    with pytest.raises(ValueError, match="does not exist or is not a directory"):
        load_templates("append", tmp_path / "nowhere")


def test_every_packaged_template_ships_with_the_package() -> None:
    """Every template in the checkout is among the installed distribution's files (its RECORD): what
    `pip install .` really shipped, not what pyproject.toml is meant to say."""
    from importlib import metadata

    shipped = {str(f) for f in metadata.files("kimi-agent") or []}
    for path in (ROOT / "prompts").rglob("*.md"):
        assert path.relative_to(ROOT).as_posix() in shipped, path


def test_messages_render_as_the_count_says_with_text_runs(chat: KimiChat) -> None:
    """Adjacent text parts render as one string; the count joins them the same way."""
    builder = ContextBuilder(HistoryConfig(count_text_tokens=chat.count_text_tokens))
    builder.build("t", [], Image.new("RGB", (800, 600)), 1)
    m = Message("user", (TextPart("Screen"), TextPart("shot"), builder._keep(1, []), TextPart("after")))  # type: ignore[arg-type]
    system = Message.text("system", "s")
    assert builder._tokens(system) + builder._tokens(m) + 2 + builder.count("assistant") == len(
        chat.render([system, m]).ids
    )
