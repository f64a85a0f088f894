"""Which variant of a family a run uses, and where each part of it came from: the one rule every
model profile follows (``--variant``, else the first checkpoint name that says its variant, else the
family's default; the patch limit from ``--in-token-limit``, else the checkpoint's, else the
variant's). The families keep only their data: their variant table and how a name says a variant."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from agent.models.profile import VariantSettings

V = TypeVar("V", bound=VariantSettings)


@dataclass(frozen=True)
class ResolvedVariant(Generic[V]):
    """The variant a run uses and where each part of it came from (recorded in run.json)."""

    variant: V
    source: str
    in_token_limit_source: str
    extra_record: tuple[str, ...] = ()  # further fields of the variant a family records (K2: top_p)

    def record(self) -> dict[str, Any]:
        v = self.variant
        return {
            "variant": v.name,
            "variant_from": self.source,
            "in_token_limit": v.in_token_limit,
            "in_token_limit_from": self.in_token_limit_source,
            **{key: getattr(v, key) for key in self.extra_record},
        }


@dataclass(frozen=True)
class Family(Generic[V]):
    """A family's variant data: how to build one, how a name says one, its default."""

    make: Callable[[str], V]  # the variant of that name, with its defaults
    guess: Callable[[str], str | None]  # the variant a checkpoint name says, or None
    default: str
    default_source: str = "default (no name said which variant)"
    allowed: Collection[str] | None = None  # what --variant and a guess may be; None: anything
    bad_override: Callable[[Any], str] = str  # the one-line error for a --variant not in allowed
    limit_default_source: Callable[[str], str] = lambda name: f"the {name} default"
    extra_record: tuple[str, ...] = ()


def resolve_variant(
    family: Family[V],
    *,
    override: Any,
    names: Sequence[tuple[str, str]],
    in_token_limit: int | None = None,
    in_token_limit_source: str = "",
    in_token_limit_override: int | None = None,
) -> ResolvedVariant[V]:
    """``override`` (``--variant``; ValueError naming it when the family has no such variant), else
    the first of ``names`` ((what, value), most reliable first: the checkpoint the server loaded, the
    checkpoint directory, the served name) that says a variant of the family, else its default."""
    allowed = family.allowed
    if override is not None:
        if allowed is not None and override not in allowed:
            raise ValueError(family.bad_override(override))
        name, source = str(override), "--variant"
    else:
        found = next(
            (
                (g, f"{what} {v!r}")
                for what, v in names
                if v and (g := family.guess(v)) and (allowed is None or g in allowed)
            ),
            None,
        )
        name, source = found if found else (family.default, family.default_source)
    variant = family.make(name)
    limit_source = family.limit_default_source(variant.name)
    if in_token_limit_override is not None:
        variant = dataclasses.replace(variant, in_token_limit=in_token_limit_override)  # type: ignore[type-var]
        limit_source = "--in-token-limit"
    elif in_token_limit is not None:
        variant = dataclasses.replace(variant, in_token_limit=in_token_limit)  # type: ignore[type-var]
        limit_source = in_token_limit_source
    return ResolvedVariant(variant, source, limit_source, family.extra_record)
