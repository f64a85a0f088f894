"""What differs between model families, as one typed unit: a ``ModelProfile``.

A profile says how to talk to a family (its prompt layouts and their templates in prompts/, its
variants' sampling and step defaults), how to read it (the reply parser, where thinking goes, the
coordinate space of its points, its image size rule) and how to recognise it (``matches``, from a
served model's root or a checkpoint's name and config.json). The policy (agent/model_policy.py)
combines one profile with one backend; a profile imports nothing from agent/backends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal, Protocol

from agent.models.reply import ParsedReply
from env.actions import Action, Drag, Point
from env.geometry import ScreenGeometry

# How a family's point coordinates are meant:
# "relative": fractions of the screenshot's width and height, in [0, 1] (Kimi-VL);
# "pixels_resized": pixels of the image as the model saw it, after its own resize (model_size);
# "thousandths": 0..1000 across the screenshot, whatever its size.
CoordinateSpace = Literal["relative", "pixels_resized", "thousandths"]
COORDINATE_SPACES: tuple[CoordinateSpace, ...] = ("relative", "pixels_resized", "thousandths")

# Where a reply's thinking is: between markers in the text (``inline``), or in the server's separate
# ``reasoning_content`` field.
ThinkingStyle = Literal["inline", "reasoning_content"]

ReplyParser = Callable[[str, str], ParsedReply]  # (text, finish_reason) -> the parsed reply
ModelSize = Callable[[int, int, int], tuple[int, int]]  # (width, height, in_token_limit) -> model's size
ImageTokens = Callable[[int, int, int], int]  # (width, height, in_token_limit) -> LLM tokens of one image


class VariantSettings(Protocol):
    """One checkpoint of a family, as the policy uses it (Kimi-VL's Variant is one)."""

    @property
    def name(self) -> str: ...
    @property
    def thinking(self) -> bool: ...
    @property
    def temperature(self) -> float: ...
    @property
    def in_token_limit(self) -> int: ...
    @property
    def max_new_tokens(self) -> int: ...


class ResolvedSettings(Protocol):
    """The variant a run uses and where it came from, with its run.json entries."""

    @property
    def variant(self) -> VariantSettings: ...
    def record(self) -> dict[str, Any]: ...


class VariantResolver(Protocol):
    def __call__(
        self,
        *,
        override: Any,
        names: Sequence[tuple[str, str]],
        in_token_limit: int | None = None,
        in_token_limit_source: str = "",
        in_token_limit_override: int | None = None,
    ) -> ResolvedSettings: ...


@dataclass(frozen=True)
class ModelProfile:
    name: str  # what --model-profile takes
    title: str  # for people: "Kimi-VL"
    variants: tuple[str, ...]  # what --variant takes
    resolve_variant: VariantResolver  # --variant, else the checkpoint's names, else the family's default
    layouts: tuple[str, ...]  # the prompt layouts (--prompt-profile; templates in prompts/) it can use
    parse_reply: ReplyParser
    coordinates: CoordinateSpace
    thinking: ThinkingStyle
    think_markers: tuple[str, str] | None  # (open, close) where thinking is inline
    history_images: int  # screenshots kept in context by default
    parse_retries: int  # further tries within a step after a reply that does not parse
    model_size: ModelSize  # the size an image is resized to before the model sees it
    # What one screenshot costs in the served model's context (the history's budget counts it).
    image_tokens: ImageTokens
    matches: Callable[[str, Mapping[str, Any] | None], bool]  # (served root or checkpoint name, config.json)
    # The family's own templates (prompts/models/<prompt_family>/), layered above the layout's and
    # the shared ones; None: the shared wording (Kimi-VL's).
    prompt_family: str | None = None
    # The temperature of the tries after an unparsable reply; None: the first try's. UI-TARS's OSWorld
    # agent resamples at 1 (it would repeat the same greedy reply at 0).
    retry_temperature: float | None = None
    max_context: int = 32768  # the context budget a run gets unless --max-context says otherwise
    # Published OSWorld success rates (%) of this family's checkpoints: a fragment of the served model's
    # name (lower case, e.g. "opencua-7b") -> [(source, value)], printed beside a run of that model.
    published: Mapping[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)

    def read_reply(
        self, text: str, finish_reason: str, shot_size: tuple[int, int], in_token_limit: int
    ) -> ParsedReply:
        """The parsed reply with its points on the screenshot the model saw (``shot_size``). A parser
        of a ``pixels_resized`` family gives pixels of the model's image (Point.px); they are mapped
        here, where the image's size is known. Other families' replies are returned as parsed."""
        parsed = self.parse_reply(text, finish_reason)
        if self.coordinates != "pixels_resized" or parsed.error is not None:
            return parsed
        size = self.model_size(*shot_size, in_token_limit)
        try:
            parsed.actions = [resized_to_shot(a, size, shot_size) for a in parsed.actions]
        except ValueError as e:
            parsed.error, parsed.actions, parsed.notes = str(e), [], []
        return parsed

    def __post_init__(self) -> None:
        if self.coordinates not in COORDINATE_SPACES:
            raise ValueError(f"profile {self.name}: unknown coordinate space {self.coordinates!r}")
        if (self.thinking == "inline") != (self.think_markers is not None):
            raise ValueError(f"profile {self.name}: inline thinking needs its markers, and only it")


def to_relative(
    space: CoordinateSpace, x: float, y: float, model_size: tuple[int, int] | None = None
) -> tuple[float, float]:
    """A point in ``space`` as fractions of the screenshot. ``model_size``: the (width, height) the
    model saw the screenshot at, needed for ``pixels_resized``. Exact: no rounding here; the
    screen's pixel is chosen once, by ScreenGeometry.to_screen."""
    if space == "relative":
        return x, y
    if space == "thousandths":
        return x / 1000, y / 1000
    if space == "pixels_resized":
        if model_size is None:
            raise ValueError("pixels_resized coordinates need the size the model saw the screenshot at")
        width, height = model_size
        return x / width, y / height
    raise ValueError(f"unknown coordinate space {space!r}")


def to_screen(
    space: CoordinateSpace,
    x: float,
    y: float,
    geometry: ScreenGeometry,
    model_size: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """The input-system pixel a point in ``space`` lands on (OutOfScreen / ValueError off it)."""
    fx, fy = to_relative(space, x, y, model_size)
    return geometry.to_screen(Point.norm(fx, fy))


def shot_pixel(x: float, y: float, model_size: tuple[int, int], shot_size: tuple[int, int]) -> Point:
    """A point in pixels of the model's image (``model_size``, e.g. smart_resize's) -> the screenshot
    pixel it lies in: floor(x * W / w'), exactly (rational arithmetic, so a point on a pixel boundary
    goes to the pixel starting there). A point beyond the model's image is an error, never clamped."""
    (mw, mh), (sw, sh) = model_size, shot_size
    if x >= mw or y >= mh:
        raise ValueError(f"point ({x:g}, {y:g}) lies outside the {mw}x{mh} image the model saw")
    return Point.px(int(Fraction(x) * sw / mw), int(Fraction(y) * sh / mh))


def resized_to_shot(action: Action, model_size: tuple[int, int], shot_size: tuple[int, int]) -> Action:
    """``action`` with every pixel point mapped by ``shot_pixel`` (normalised points stay)."""

    def m(p: Point | None) -> Point | None:
        return shot_pixel(p.x, p.y, model_size, shot_size) if p is not None and p.space == "pixel" else p

    if isinstance(action, Drag):
        return action.model_copy(update={"start": m(action.start), "end": m(action.end)})
    point = getattr(action, "point", None)
    return action.model_copy(update={"point": m(point)}) if point is not None else action
