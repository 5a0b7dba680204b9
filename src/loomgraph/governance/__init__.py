"""Governance: budgets, permissions and hooks.

Importing this package does not import asyncpg: `PostgresLedger` imports it when made.
"""

from loomgraph.governance.budget import BudgetConfig, BudgetWarning, Caps, StandardBudget
from loomgraph.governance.hooks import HookError, Hooks
from loomgraph.governance.ledger import (
    NANO_USD,
    Hold,
    InMemoryLedger,
    Ledger,
    Totals,
)
from loomgraph.governance.null import AllowAll, NoBudget, NoHooks
from loomgraph.governance.permissions import Mode, Policy, StandardPermissions
from loomgraph.governance.rule_errors import (
    PermissionConfigError,
    PermissionTypeError,
    RuleSyntaxError,
)
from loomgraph.governance.rules import Rule, SetSource, canonical, parse_rule
from loomgraph.governance.sql_ledger import PostgresLedger, SqliteLedger

__all__ = [
    "NANO_USD",
    "AllowAll",
    "BudgetConfig",
    "BudgetWarning",
    "Caps",
    "Hold",
    "HookError",
    "Hooks",
    "InMemoryLedger",
    "Ledger",
    "Mode",
    "NoBudget",
    "NoHooks",
    "PermissionConfigError",
    "PermissionTypeError",
    "Policy",
    "PostgresLedger",
    "Rule",
    "RuleSyntaxError",
    "SetSource",
    "SqliteLedger",
    "StandardBudget",
    "StandardPermissions",
    "Totals",
    "canonical",
    "parse_rule",
]
