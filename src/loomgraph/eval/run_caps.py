"""Per-run caps (`loomgraph eval --run-max-tokens/--run-max-cost`) added to an Agent's own
budget: each run of an evaluation is a user of its own, so per-user caps cap each run."""

from __future__ import annotations

from dataclasses import replace

from loomgraph.agent.agent import Agent
from loomgraph.agent.deps import give_budget
from loomgraph.errors import LoomgraphError
from loomgraph.governance import BudgetConfig, Caps, StandardBudget
from loomgraph.governance.caps import CAP_NAMES, check_priced

__all__ = ["RunCapsRefused", "add_run_caps", "tighter_caps"]


class RunCapsRefused(LoomgraphError, ValueError):
    """The Agent's budget is of a kind whose caps cannot be read and added to: putting the
    per-run caps in its place would drop its own."""


def tighter_caps(own: Caps | None, added: Caps) -> Caps:
    """`own` with each cap `added` sets made the smaller of the two (a cap only `added` sets
    is taken as it is); `own`'s other caps are kept. `added` never loosens a cap of `own`."""
    if own is None:
        return added
    changes = {}
    for name in CAP_NAMES:
        value = getattr(added, name)
        if value is not None:
            mine = getattr(own, name)
            changes[name] = value if mine is None else min(mine, value)
    return replace(own, **changes)


def add_run_caps(agent: Agent, caps: Caps) -> None:
    """Add `caps` to the per-user caps of `agent`'s budget, keeping everything else of it
    (global caps, named users' caps, prices, warn_at, its ledger); a cap it has already is
    made the tighter of the two. An Agent without a budget is given one of `caps` alone
    (bound as a budget given to it when it was made: the Agent is not made again).
    RunCapsRefused for a budget of another kind than `StandardBudget`; UnpricedModel when a
    cost cap is added and the budget cannot price the Agent's model."""
    if not agent.deps.budgeted:
        give_budget(agent.deps, StandardBudget(BudgetConfig(per_user=caps)))
        return
    budget = agent.deps.budget
    config = getattr(budget, "config", None)
    if not isinstance(budget, StandardBudget) or not isinstance(config, BudgetConfig):
        kind = type(budget)
        raise RunCapsRefused(
            f"agent {agent.name!r} has a budget of type {kind.__module__}.{kind.__qualname__}, "
            "whose caps cannot be read: per-run caps cannot be added to it; cap its runs in the "
            "budget itself, or give the agent a StandardBudget"
        )
    merged = replace(config, per_user=tighter_caps(config.per_user, caps))
    if merged.caps_cost():
        # As binding the budget to the Agent checks it: a cost cap on an unpriced model
        # would reserve its calls at $0 and never bind.
        check_priced(budget.model, merged.prices)
    # The Agent's own (bound) copy of the budget: every other reader of it (its ledger, its
    # warnings, the run clocks) is shared, and the caps are read from `config` at each use.
    budget.config = merged
