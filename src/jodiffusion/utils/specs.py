"""Rebuilding a component from its ``{"kind": ..., ...}`` spec (the form ``to_dict()`` writes into a
model folder's jodiffusion.json), by a registry of builders per kind."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from jodiffusion.errors import ConfigError

T = TypeVar("T")


def build_from_spec(builders: Mapping[str, Callable[[dict[str, Any]], T]], spec: dict[str, Any], what: str) -> T:
    """``builders[spec["kind"]](spec)``; an unknown kind is a ConfigError listing the valid ones."""
    kind = spec.get("kind")
    if kind not in builders:
        raise ConfigError(f"unknown {what} kind {kind!r}; valid kinds: {', '.join(sorted(builders))}")
    return builders[kind](dict(spec))
