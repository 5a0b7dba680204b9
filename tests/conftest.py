"""Shared test set-up: async test functions run on a fresh event loop each."""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run `async def` tests with asyncio.run (no plugin needed)."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        funcargs = pyfuncitem.funcargs
        args: dict[str, Any] = {a: funcargs[a] for a in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(pyfuncitem.obj(**args))
        return True
    return None


@pytest.fixture
def restore_env() -> Iterator[None]:
    """`os.environ` as it was before the test, whatever the test set in it."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
