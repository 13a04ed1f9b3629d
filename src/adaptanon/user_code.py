"""The user's own code named as ``package.module:function`` (``--model``, ``--verify-with``,
``--black-box`` score functions): imported and checked once, here."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def import_function(spec: str, what: str = "function") -> Callable[..., Any]:
    """``package.module:function`` -> the function; ``what`` names it in messages
    (``model factory``, ``score function``, ...). A module file created since the last
    import is found.

    Raises:
        ValueError: not of that form, not importable, or not callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} {spec!r}: expected package.module:function")
    importlib.invalidate_caches()
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load {what} {spec!r}: {exc}") from exc
    if not callable(function):
        raise ValueError(f"{what} {spec!r} is not callable")
    return function
