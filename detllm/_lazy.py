"""Names a package exports without importing their modules until first used.

``import detllm`` and ``detllm diff`` stay light: capture, and the report kinds a plain diff
never meets (replay, bisect, pack), load when a name of theirs is first read.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(exporter: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for the module ``exporter``: ``homes[name]`` is the module
    (absolute, or relative to ``exporter``'s package) that defines ``name``; the value is kept
    once imported."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {exporter!r} has no attribute {name!r}")
        module = sys.modules[exporter]
        value = getattr(importlib.import_module(home, module.__package__), name)
        setattr(module, name, value)
        return value

    return __getattr__
