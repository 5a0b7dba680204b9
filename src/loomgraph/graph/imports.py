"""Objects named by import path (`module:attr`), found next to the file that names them.

Graph and agent files name functions, tools and models as `module:attr`. A user keeps those
modules beside the file (`judge_fn.py` next to `graph.yaml`) or in the directory they run
from, so both are searched before the installed packages, and a failed import says where
it looked. A module is the user's code: whatever importing it raises (an exception,
`sys.exit`; not Ctrl-C) is an ImportError naming the module and the error, so a file that
names it reports one problem instead of a traceback or a silent exit.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["import_object", "search_folders"]


def search_folders(near: str | Path | None = None) -> list[Path]:
    """Where a `module:attr` name is looked for first: the naming file's folder, then the
    current directory (before the installed packages)."""
    folders: list[Path] = []
    if near is not None:
        folder = Path(near)
        folders.append((folder if folder.is_dir() else folder.parent).resolve())
    cwd = Path(os.getcwd()).resolve()
    if cwd not in folders:
        folders.append(cwd)
    return folders


@contextmanager
def _on_path(folders: list[Path]) -> Iterator[None]:
    # Put for the import only: a module once imported stays in sys.modules, so what it
    # names keeps working; a later file's folder does not shadow installed packages for good.
    added = [str(f) for f in folders if str(f) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for entry in added:
            if entry in sys.path:
                sys.path.remove(entry)


def import_object(path: str, *, near: str | Path | None = None, what: str = "object") -> Any:
    """The object at `module:attr` (attr may be dotted; `module.attr` works too), importing
    the module from `near`'s folder or the current directory first. ImportError says where
    it looked, suggests an attribute for a misspelt one, and stands for anything importing
    the module raised (an exception or SystemExit; KeyboardInterrupt passes)."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    folders = search_folders(near)
    _refuse_a_file(path, module_name, attr, what, folders)
    if not module_name or not attr:
        raise ImportError(f"{what} {path!r} is not an import path like module:name")
    try:
        with _on_path(folders):
            target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        looked = ", ".join(str(f) for f in folders)
        raise ImportError(
            f"cannot import {what} {path!r}: {err} (looked in {looked} and the installed "
            f"packages; `{module_name}` must be a Python module there, e.g. "
            f"{module_name.replace('.', '/')}.py)"
        ) from None
    except ImportError:
        raise
    except (Exception, SystemExit) as err:  # the module's own code failed as it ran
        raise ImportError(
            f"cannot import {what} {path!r}: importing {module_name} raised {_said(err)}"
        ) from err
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except (Exception, SystemExit) as err:
            if not isinstance(err, AttributeError):  # a module `__getattr__` that failed
                raise ImportError(
                    f"cannot import {what} {path!r}: getting {part!r} raised {_said(err)}"
                ) from err
            names = [n for n in dir(target) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ImportError(
                f"cannot import {what} {path!r}: {module_name} has no {part!r}{hint}"
            ) from None
    return target


def _refuse_a_file(path: str, module: str, attr: str, what: str, folders: list[Path]) -> None:
    """Refuse a module part written as a file (`mytools.py`, `./mytools.py`, `pkg/mytools`,
    `/srv/app/mytools.py`), saying how to name the module: importing it would fail with a
    hint to make `mytools/py.py`, or with Python's own relative-import error."""
    if ":" not in path and path.endswith(".py"):
        module, attr = path, "NAME"  # `mytools.py`: the file alone, nothing in it named
    slashed = "/" in module or "\\" in module
    if not (slashed or module.endswith(".py") or module.startswith("~")):
        return
    parts = [p for p in module.removesuffix(".py").replace("\\", "/").split("/") if p != "."]
    if module.startswith(("/", "~", "\\")) or ".." in parts:
        parts = parts[-1:]  # outside the folders searched: the module by its own name
    name = ".".join(p for p in parts if p) or "MODULE"
    raise ImportError(
        f"cannot import {what} {path!r}: name the module, not its file: write `{name}:{attr}` "
        f"(a module is looked for in {', '.join(map(str, folders))} and the installed "
        "packages: run from the folder that holds it, or add that folder to PYTHONPATH)"
    )


def _said(err: BaseException) -> str:
    """`Type: message` of an error, as one line (`SystemExit: 3`)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
