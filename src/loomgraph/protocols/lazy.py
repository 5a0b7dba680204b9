"""Public names of a package imported on first use (PEP 562), so importing the package costs
nothing for the parts a program never touches."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    package: str,
    modules: Mapping[str, str],
    namespace: dict[str, Any],
    *,
    submodules: Sequence[str] = (),
) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: each name in `modules` (name -> the module that
    defines it) is imported when first used, then kept in `namespace` (the package's globals).

    `submodules` are public names that are also submodules of the package: importing such a
    submodule binds the package attribute to the module, so each is imported now and the
    attribute dropped, and the name then resolves to what `modules` says (a function)."""
    for name in submodules:
        importlib.import_module(f"{package}.{name}")
        del namespace[name]

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
