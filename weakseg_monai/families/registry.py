"""One registry of model families: id -> how to build its model, its planner and its default training config.

A family registers itself from its own module (``register_family(ModelFamily(...))`` at import), so adding one
touches no other module. ``weakseg_monai.networks`` imports the built-in families (``nuclei``, ``baseline``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

_FAMILIES: dict[str, ModelFamily] = {}


@dataclass(frozen=True)
class ModelFamily:
    """A registered model family.

    Args:
        id: the name checkpoints carry (``InstanceModel.family``).
        build: ``() -> InstanceModel`` with default arguments; a checkpoint's state dict then loads into it (what
            the plan chose, e.g. anchor shapes, travels as buffers).
        planner: dotted path of the planner class ``train_config`` instantiates (``""``: the config plans nothing);
            a path, not the class, so registering a family imports no planning code.
        train_config: the family's default training config in ``bundle/configs``.
    """

    id: str
    build: Callable[[], nn.Module]
    planner: str = ""
    train_config: str = ""


def register_family(family: ModelFamily) -> ModelFamily:
    """Add ``family`` (a second registration of the same id replaces the first: re-imports, tests)."""
    if not family.id or not family.id.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"a family id is a plain name (letters, digits, '-', '_'), got {family.id!r}")
    _FAMILIES[family.id] = family
    return family


def get_family(family_id: str) -> ModelFamily:
    """The registered family ``family_id``; the error lists the known ones. The built-in families register when
    ``weakseg_monai.networks`` is imported (``families.loading`` does; the registry itself sits below the networks)."""
    if family_id not in _FAMILIES:
        raise KeyError(f"unknown model family {family_id!r}; registered: {', '.join(family_ids())}")
    return _FAMILIES[family_id]


def family_ids() -> list[str]:
    return sorted(_FAMILIES)


__all__ = ["ModelFamily", "family_ids", "get_family", "register_family"]
