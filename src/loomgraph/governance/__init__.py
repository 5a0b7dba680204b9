"""Governance: budgets, permissions and hooks."""

from loomgraph.governance.null import AllowAll, NoBudget, NoHooks

__all__ = ["AllowAll", "NoBudget", "NoHooks"]
