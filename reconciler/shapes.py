"""The parsers' guard against JSON of the wrong shape, shared by every view that reads a watched object."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def shape_checked(parse: Callable[P, R]) -> Callable[P, R]:
    """A field of the wrong JSON type (`spec: true`, a string where a list of objects belongs) fails deep in a
    parser as AttributeError, which the informer would not catch: it would retry the same list or watch event
    forever. Raise it as the TypeError the informer skips (and counts as INVALID) instead."""

    @functools.wraps(parse)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return parse(*args, **kwargs)
        except AttributeError as exc:
            raise TypeError(f"a field has an unexpected type: {exc}") from exc

    return checked
