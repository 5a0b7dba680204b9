"""A budget's soft warnings: once per cap and scope, when spending (or a run's time) passes
`warn_at` of a cap. The given warnings are kept (the latest 1,000) and handed to the
budget's `on_warning` callback; a budget's bound copies share them."""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Mapping

from loomgraph.governance.caps import BudgetWarning, WarningCallback
from loomgraph.governance.ledger import Totals
from loomgraph.protocols import BudgetScope

__all__ = ["Warnings"]

log = logging.getLogger("loomgraph.governance.budget")


class Warnings:
    """The warnings one budget (and its bound copies) gave, and which it gave already."""

    def __init__(self) -> None:
        self.given: deque[BudgetWarning] = deque(maxlen=1000)
        self._warned: set[str] = set()

    async def spending(
        self,
        warn_at: float | None,
        scopes: list[tuple[str, dict[str, int]]],
        updated: Mapping[str, Totals],
        scope: BudgetScope,
        callback: WarningCallback | None,
    ) -> None:
        """Warn of every capped metric whose spending passed `warn_at` of its cap."""
        if warn_at is None:
            return
        for name, limits in scopes:
            totals = updated.get(name)
            if totals is None:
                continue
            for metric, cap in limits.items():
                spent = totals.spent.get(metric, 0)
                if cap > 0 and spent >= warn_at * cap:
                    cap_name = f"{name}:{metric}"
                    warning = BudgetWarning(cap_name, spent / cap, scope.run_id, scope.user_id)
                    await self.emit(cap_name, warning, callback)

    async def emit(
        self, key: str, warning: BudgetWarning, callback: WarningCallback | None
    ) -> None:
        """Give `warning` unless one was given under `key`."""
        if key in self._warned:
            return
        self._warned.add(key)
        self.given.append(warning)
        if callback is None:
            return
        try:
            result = callback(warning)
            if inspect.isawaitable(result):
                await result
        except Exception:
            # A broken callback must not break the accounting of an effect that happened.
            log.exception("budget on_warning callback failed for %s", warning.cap)

    def forget_run(self, run_id: str) -> None:
        """A run finished: its wall-clock warning may be given again to a run of that id."""
        self._warned -= {k for k in self._warned if k.startswith(f"{run_id}\n")}
