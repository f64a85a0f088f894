"""Model profiles: the registry chooses one by name or from what is loaded, each coordinate space maps
to the screen exactly, and a profile's parts are the family's own (Kimi-VL: today's parser and rules)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from agent.model_policy import ModelPolicy
from agent.models.kimi_vl.parser import parse_reply
from agent.models.kimi_vl.variants import Variant
from agent.models.kimi_vl.vision import model_size
from agent.models.profile import to_relative, to_screen
from agent.models.registry import DEFAULT_PROFILE, PROFILES, choose_profile, profile_names
from env.actions import Click, Point
from env.geometry import OutOfScreen, ScreenGeometry

KIMI = PROFILES["kimi-vl"]


def test_a_named_profile_is_taken_and_an_unknown_name_is_one_line_listing_them() -> None:
    chosen = choose_profile("kimi-vl", served_root="some/other-model")
    assert chosen.profile is KIMI
    assert chosen.record() == {"model_profile": "kimi-vl", "model_profile_from": "--model-profile"}
    with pytest.raises(ValueError) as e:
        choose_profile("kimi_vl")
    assert str(e.value) == f"unknown model profile 'kimi_vl' (choose from {', '.join(profile_names())})"
    assert profile_names() == ["auto", "opencua", "opencua-a3b", "kimi-vl", "kimi-k2", "ui-tars-1.5"]


@pytest.mark.parametrize(
    "root", ["moonshotai/Kimi-VL-A3B-Instruct", "/models/kimi_vl-a3b-thinking-2506", "Kimi-VL-A3B-Thinking"]
)
def test_auto_recognises_kimi_vl_by_the_served_root(root: str) -> None:
    chosen = choose_profile("auto", served_root=root)
    assert chosen.profile is KIMI
    assert chosen.source == f"auto: {root!r}"


def test_auto_recognises_a_checkpoint_by_its_config(tiny_kimi: Path) -> None:
    config = json.loads((tiny_kimi / "config.json").read_text())
    # The directory's name says nothing here; its config.json does.
    chosen = choose_profile("auto", served_root="/models/tiny", checkpoint_config=config)
    assert chosen.profile is KIMI and chosen.source == "auto: the checkpoint's config.json"


def test_auto_with_nothing_to_go_on_keeps_the_default_and_says_so() -> None:
    chosen = choose_profile("auto", served_root="tiny", checkpoint_config={"model_type": "llama"})
    assert chosen.profile is DEFAULT_PROFILE is KIMI
    assert chosen.record()["model_profile_from"] == "auto: default (nothing said which family)"


@pytest.mark.parametrize(
    ("space", "xy", "model", "screen_xy"),
    [
        ("relative", (0.5, 0.5), None, (960, 540)),
        ("relative", (1.0, 1.0), None, (1919, 1079)),  # the last pixel, not off the screen
        ("thousandths", (500, 500), None, (960, 540)),
        ("thousandths", (999, 1), None, (1918, 1)),
        ("pixels_resized", (640, 360), (1280, 720), (960, 540)),
        ("pixels_resized", (1279, 0), (1280, 720), (1918, 0)),
    ],
)
def test_each_coordinate_space_lands_on_the_exact_pixel(
    space: str, xy: tuple[float, float], model: tuple[int, int] | None, screen_xy: tuple[int, int]
) -> None:
    geometry = ScreenGeometry.plain(1920, 1080)
    assert to_screen(space, *xy, geometry, model) == screen_xy  # type: ignore[arg-type]


def test_a_point_outside_its_space_is_an_error_not_a_clamp() -> None:
    with pytest.raises(ValueError, match="normalised x must lie in"):
        to_screen("thousandths", 1200, 10, ScreenGeometry.plain(100, 100))
    with pytest.raises(ValueError, match="need the size the model saw"):
        to_relative("pixels_resized", 10, 10)
    with pytest.raises(ValueError, match="normalised"):
        to_screen("pixels_resized", 1300, 10, ScreenGeometry.plain(1920, 1080), (1280, 720))
    # A point that maps inside [0, 1] but off a monitor at an offset is the geometry's to refuse.
    offset = ScreenGeometry(1920, 1080, 1920, 1080, left=1920)
    assert to_screen("relative", 0.0, 0.0, offset) == (1920, 0)
    assert issubclass(OutOfScreen, ValueError)


def test_the_kimi_vl_profile_is_todays_kimi_vl() -> None:
    reply = "## Thought: open it\n## Action: click the file\n## Code:\n```python\npyautogui.click(x=0.25, y=0.5)\n```"
    parsed = KIMI.parse_reply(reply, "stop")
    assert parsed == parse_reply(reply, finish_reason="stop")
    assert parsed.actions == [Click(point=Point.norm(0.25, 0.5))]
    cut = "◁think▷ the file is"
    assert KIMI.parse_reply(cut, "length") == parse_reply(cut, finish_reason="length")
    assert KIMI.thinking == "inline" and KIMI.think_markers == ("◁think▷", "◁/think▷")
    assert KIMI.coordinates == "relative"
    assert KIMI.model_size(3840, 2160, 4096) == model_size(3840, 2160, 4096)
    assert KIMI.variants == ("instruct", "thinking", "thinking-2506")
    resolved = KIMI.resolve_variant(
        override=None, names=[("the server's checkpoint", "Kimi-VL-A3B-Thinking-2506")]
    )
    assert resolved.variant == Variant.named("thinking-2506")


def test_a_policy_takes_its_defaults_and_parser_from_the_profile() -> None:
    class Unused:
        def generate(self, messages, params):  # type: ignore[no-untyped-def]
            raise AssertionError("not called")

    policy = ModelPolicy(Unused(), Variant.named("instruct"))
    assert policy.profile is KIMI
    assert (policy.context.cfg.max_images, policy.parse_retries) == (3, 2)  # the values before profiles
    other = dataclasses.replace(KIMI, name="other", title="Other", layouts=("osworld",), history_images=5)
    assert (
        ModelPolicy(
            Unused(), Variant.named("instruct"), profile=other, prompt_profile="osworld"
        ).context.cfg.max_images
        == 5
    )
    # No layout asked for: the profile's first, its own default.
    assert ModelPolicy(Unused(), Variant.named("instruct"), profile=other).context.cfg.profile == "osworld"
    with pytest.raises(
        ValueError, match="the Other profile has no prompt layout 'append' \\(choose from osworld\\)"
    ):
        ModelPolicy(Unused(), Variant.named("instruct"), profile=other, prompt_profile="append")
    with pytest.raises(ValueError, match="inline thinking needs its markers"):
        dataclasses.replace(KIMI, think_markers=None)
    with pytest.raises(ValueError, match="unknown coordinate space"):
        dataclasses.replace(KIMI, coordinates="pixels")  # type: ignore[arg-type]


def test_profiles_import_nothing_from_the_backends() -> None:
    """The policy stands above both: a profile never reaches for how the model is served."""
    import ast

    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "agent" / "models").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not [n for n in names if n.startswith("agent.backends")], path


def test_the_cli_lists_the_registrys_profiles() -> None:
    from tasks.cli_common import MODEL_PROFILES

    assert profile_names() == MODEL_PROFILES


@pytest.mark.parametrize(
    "command",
    [
        ["t"],
        ["bench", "osworld", "run"],
        ["rollout", "somewhere", "--group", "2"],
        ["bench", "screenspot", "run"],
    ],
)
def test_an_unknown_profile_is_one_line_naming_the_profiles(command: list[str], capsys) -> None:  # type: ignore[no-untyped-def]
    from tasks.cli import main

    with pytest.raises(SystemExit) as e:
        main([*command, "--model-profile", "no-such-model"])
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    # One line says what was wrong and what there is (rollout's parser shows its usage above it, as
    # for every bad flag there).
    choices = ", ".join(repr(n) for n in profile_names())
    assert f"--model-profile: invalid choice: 'no-such-model' (choose from {choices})" in err[-1]
    assert len(err) == 1 or err[0].startswith("usage: kimi-agent rollout"), err


def test_run_json_records_the_profile_and_how_it_was_chosen(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from cli_args import openai_task
    from fake_openai_server import FakeOpenAI, Reply

    from tasks.cli import main

    end = "## Action:\nend\n## Code:\n```python\ncomputer.terminate(status='success')\n```"
    server = FakeOpenAI(
        models=("kimi", "tiny"), roots={"kimi": "moonshotai/Kimi-VL-A3B-Instruct", "tiny": "tiny"}
    )
    try:
        runs = {
            "auto": ["--model", "kimi"],
            "named": ["--model", "tiny", "--model-profile", "kimi-vl"],
            "unsaid": ["--model", "tiny"],
        }
        recorded = {}
        for name, flags in runs.items():
            server.replies.append(Reply(end))
            out = tmp_path / name
            args = openai_task(server.url, "--size", "640x480", "--out", str(out))
            assert main([*args, *flags]) == 0, capsys.readouterr().out
            model = json.loads((out / "run.json").read_text())["model"]
            recorded[name] = (model["model_profile"], model["model_profile_from"])
        assert recorded == {
            "auto": ("kimi-vl", "auto: 'moonshotai/Kimi-VL-A3B-Instruct'"),
            "named": ("kimi-vl", "--model-profile"),
            "unsaid": ("kimi-vl", "auto: default (nothing said which family)"),
        }
    finally:
        server.close()


def test_a_local_checkpoint_is_recognised_by_its_config(tiny_kimi: Path, tmp_path: Path) -> None:
    import argparse
    import shutil

    from tasks.model import checkpoint_profile, server_profile

    renamed = tmp_path / "my-model"  # its name says nothing; its config.json says kimi_vl
    shutil.copytree(tiny_kimi, renamed, ignore=shutil.ignore_patterns("*.safetensors"))
    args = argparse.Namespace(model=str(renamed), model_profile="auto")
    assert checkpoint_profile(args, renamed).source == "auto: the checkpoint's config.json"
    (renamed / "config.json").write_text('["a list, not an object"]')
    assert checkpoint_profile(args, renamed).source == "auto: default (nothing said which family)"
    # A Namespace made before the flag existed chooses as auto does.
    assert server_profile(argparse.Namespace(model="Kimi-VL-A3B-Thinking"), None).source == (
        "auto: 'Kimi-VL-A3B-Thinking'"
    )


def test_the_history_counts_a_screenshot_by_the_profiles_own_image_rule() -> None:
    """The context budget counts what the served model's processor makes of a screenshot: 28-px cells
    of Qwen2.5-VL's smart_resize for OpenCUA-7B (min_pixels 3136) and UI-TARS (78400, so a small image
    grows), MoonViT's cells for the Kimi families; not Kimi-VL's rule for everyone."""
    from PIL import Image

    class Unused:
        def generate(self, messages, params):  # type: ignore[no-untyped-def]
            raise AssertionError("not called")

    def prompt_tokens(name: str, size: tuple[int, int]) -> int:
        profile = PROFILES[name]
        variant = profile.resolve_variant(override=None, names=[]).variant
        policy = ModelPolicy(Unused(), variant, profile=profile, max_context=200_000)
        tokens = policy.context.build("open the file", [], Image.new("RGB", size), 1).tokens
        return tokens if size != (28, 28) else tokens - profile.image_tokens(28, 28, variant.in_token_limit)

    # 200x100: OpenCUA 196x112 -> 7*4 cells; UI-TARS grows it to 420x224 -> 15*8; MoonViT 8*4.
    # 1280x800: 1288x812 -> 46*29 (Qwen), 46*29 (K2, limit 16384), Kimi-VL Instruct shrinks it (4096).
    expected = {
        "opencua": (28, 1334),
        "ui-tars-1.5": (120, 1334),
        "kimi-k2": (32, 1334),
        "kimi-vl": (32, 1066),
    }
    for name, counts in expected.items():
        text = prompt_tokens(name, (28, 28))  # the same prompt less its (tiny) image's tokens
        assert (
            prompt_tokens(name, (200, 100)) - text,
            prompt_tokens(name, (1280, 800)) - text,
        ) == counts


@pytest.mark.slow
@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)], ids=["1280x800", "1920x1080"])
def test_cli_with_a_kimi_vl_server_clicks_the_intended_pixels(
    size: tuple[int, int], tmp_path: Path, kept_sandboxes, capsys
) -> None:  # type: ignore[no-untyped-def]
    """The first profile as the others are checked: a loopback server reporting
    moonshotai/Kimi-VL-A3B-Instruct answers in Kimi-VL's format, a fraction and then screenshot
    pixels (both values above 1); the clickpad in the sandbox records where the pointer went."""
    from cli_args import clickpad_task, pad_downs
    from conftest import kept_home
    from fake_openai_server import FakeOpenAI, Reply

    from tasks.cli import main

    width, height = size
    reply = (
        "## Thought\nthe target\n## Action:\nclick it\n## Code:\n```python\npyautogui.click({x}, {y})\n```"
    )
    done = (
        "## Thought\ndone\n## Action:\nfinish\n## Code:\n```python\ncomputer.terminate(status='success')\n```"
    )
    server = FakeOpenAI(models=("kimi-vl",), roots={"kimi-vl": "moonshotai/Kimi-VL-A3B-Instruct"})
    try:
        server.replies.extend(
            [Reply(reply.format(x=0.75, y=0.5)), Reply(reply.format(x=100, y=50)), Reply(done)]
        )
        out = tmp_path / "run"
        assert main(clickpad_task(server.url, "kimi-vl", out, size)) == 0, capsys.readouterr().out
        # 0.75, 0.5 -> floor(f * W); values above 1 are the screenshot's own pixels (Kimi-VL's parser).
        assert pad_downs(kept_home(kept_sandboxes)) == [(int(0.75 * width), height // 2), (100, 50)]
        model = json.loads((out / "run.json").read_text())["model"]
        assert (model["model_profile"], model["variant"]) == ("kimi-vl", "instruct")
    finally:
        server.close()
