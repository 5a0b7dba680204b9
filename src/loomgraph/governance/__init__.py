"""Governance: budgets, permissions and hooks.

Importing this package imports none of its modules: each name is imported on first use
(a run with the default no-op governance never loads budgets, ledgers or rule files), and
`PostgresLedger` imports asyncpg only when made.
"""

from typing import TYPE_CHECKING

from loomgraph.protocols.lazy import lazy_names

if TYPE_CHECKING:
    from loomgraph.governance.budget import BudgetConfig, BudgetWarning, Caps, StandardBudget
    from loomgraph.governance.caps import BudgetConfigError, UnpricedModel
    from loomgraph.governance.hooks import HookError, Hooks
    from loomgraph.governance.ledger import (
        NANO_USD,
        Hold,
        InMemoryLedger,
        Ledger,
        LedgerUnavailable,
        Totals,
    )
    from loomgraph.governance.ledger_sites import AmbiguousLedger
    from loomgraph.governance.null import AllowAll, NoBudget, NoHooks
    from loomgraph.governance.permissions import Mode, Policy, StandardPermissions
    from loomgraph.governance.pg_ledger import PostgresLedger
    from loomgraph.governance.rule_errors import (
        PermissionConfigError,
        PermissionTypeError,
        RuleSyntaxError,
    )
    from loomgraph.governance.rules import Rule, SetSource, canonical, parse_rule
    from loomgraph.governance.sqlite_ledger import SqliteLedger

# Each public name and the module that defines it.
_MODULES = {
    "BudgetConfig": "loomgraph.governance.budget",
    "BudgetConfigError": "loomgraph.governance.caps",
    "UnpricedModel": "loomgraph.governance.caps",
    "BudgetWarning": "loomgraph.governance.budget",
    "Caps": "loomgraph.governance.budget",
    "StandardBudget": "loomgraph.governance.budget",
    "HookError": "loomgraph.governance.hooks",
    "Hooks": "loomgraph.governance.hooks",
    "NANO_USD": "loomgraph.governance.ledger",
    "Hold": "loomgraph.governance.ledger",
    "InMemoryLedger": "loomgraph.governance.ledger",
    "Ledger": "loomgraph.governance.ledger",
    "LedgerUnavailable": "loomgraph.governance.ledger",
    "Totals": "loomgraph.governance.ledger",
    "AmbiguousLedger": "loomgraph.governance.ledger_sites",
    "AllowAll": "loomgraph.governance.null",
    "NoBudget": "loomgraph.governance.null",
    "NoHooks": "loomgraph.governance.null",
    "Mode": "loomgraph.governance.permissions",
    "Policy": "loomgraph.governance.permissions",
    "StandardPermissions": "loomgraph.governance.permissions",
    "PermissionConfigError": "loomgraph.governance.rule_errors",
    "PermissionTypeError": "loomgraph.governance.rule_errors",
    "RuleSyntaxError": "loomgraph.governance.rule_errors",
    "Rule": "loomgraph.governance.rules",
    "SetSource": "loomgraph.governance.rules",
    "canonical": "loomgraph.governance.rules",
    "parse_rule": "loomgraph.governance.rules",
    "PostgresLedger": "loomgraph.governance.pg_ledger",
    "SqliteLedger": "loomgraph.governance.sqlite_ledger",
}


# `canonical` is also a submodule (stdlib only): the name means the function.
__getattr__ = lazy_names(__name__, _MODULES, globals(), submodules=["canonical"])


__all__ = [
    "NANO_USD",
    "AllowAll",
    "AmbiguousLedger",
    "BudgetConfig",
    "BudgetConfigError",
    "BudgetWarning",
    "Caps",
    "Hold",
    "HookError",
    "Hooks",
    "InMemoryLedger",
    "Ledger",
    "LedgerUnavailable",
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
    "UnpricedModel",
    "canonical",
    "parse_rule",
]
