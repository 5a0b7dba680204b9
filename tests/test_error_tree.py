"""Every public exception class loomgraph defines descends from `LoomgraphError`."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import loomgraph
from loomgraph.errors import LoomgraphError

# Raised and caught inside one module, never seen by a caller.
INTERNAL = {"loomgraph._storage.cursor.Constraint"}


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(loomgraph.__path__, "loomgraph."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
            ):
                found[f"{module.__name__}.{name}"] = obj
    return found


def test_every_public_exception_is_a_loomgraph_error() -> None:
    classes = _exception_classes()
    public = {
        path: cls
        for path, cls in classes.items()
        if not path.rpartition(".")[2].startswith("_") and path not in INTERNAL
    }
    assert len(public) > 40  # the walk found the tree, not nothing
    outside = sorted(path for path, cls in public.items() if not issubclass(cls, LoomgraphError))
    assert outside == []


def test_the_internal_exceptions_still_exist() -> None:
    # So the exemption list cannot outlive what it exempts.
    assert set(_exception_classes()) >= INTERNAL


def test_stdlib_bases_are_kept_where_callers_catch_them() -> None:
    from loomgraph.agent.checkpoints import ResumeError
    from loomgraph.agent.config_errors import ConfigError
    from loomgraph.graph.state import TypeSyntaxError
    from loomgraph.memory.extract import ExtractionError
    from loomgraph.models.scripted import ScriptExhausted
    from loomgraph.nodes.structured import OutputValidationError
    from loomgraph.protocols import UnknownRun
    from loomgraph.runtime.errors import JournalEncodingError, UnknownEffect

    for cls in (ResumeError, ConfigError, TypeSyntaxError, ExtractionError, OutputValidationError):
        assert issubclass(cls, ValueError)
    assert issubclass(ScriptExhausted, RuntimeError)
    assert issubclass(UnknownRun, KeyError)
    assert issubclass(UnknownEffect, KeyError)
    assert issubclass(JournalEncodingError, TypeError)
