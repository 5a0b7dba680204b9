"""Charging the holds a crashed attempt left behind.

A hold exists only between an effect's reserve and its settle, and both the model call and
the tool call journal their intent before they reserve; so a hold that outlives its process
is an effect in flight: its outcome is unknown (it may have run, and may have been billed),
or was journaled just before the process died (the engine journals an outcome before it
settles). When the run is opened again the hold is charged in full (its reserved amount
becomes spent) and a `Charge` is recorded under the hold's id in the same ledger
transaction: the charge is made once, however many times the resume itself crashes. It
keeps the hold's `EffectRef` (the effect and its execution), so the run's usage can leave
out a charge whose journaled outcome counts it (`agent.recovery.crashed_usage`).
"""

from __future__ import annotations

from loomgraph.governance.ledger import NANO_USD, Change, Charge, Ledger, LedgerView
from loomgraph.protocols import Usage

__all__ = ["charge_left_holds", "charged_usage"]


async def charge_left_holds(ledger: Ledger, run_id: str, now: float) -> list[Charge]:
    """Charge every hold `run_id` still has (its process died holding them); the charges."""
    made = []
    for left in await ledger.holds(run_id):
        charge = Charge(left.id, run_id, dict(left.amounts), now, left.effect)

        def decide(view: LedgerView, charge: Charge = charge) -> Change:
            hold = view.hold
            if hold is None:  # charged (or settled) by someone else meanwhile
                return Change()
            return Change(remove=hold, spend=hold.amounts, spend_scopes=hold.scopes, charge=charge)

        await ledger.transact((), left.id, decide)
        made.append(charge)
    return made


def charged_usage(charges: list[Charge]) -> Usage:
    """What crash charges add to a run's usage (node visits have no place in a Usage)."""
    total = Usage()
    for charge in charges:
        amounts = charge.amounts
        total += Usage(
            input_tokens=amounts.get("input_tokens", 0),
            output_tokens=amounts.get("output_tokens", 0),
            cost_usd=amounts.get("cost_usd", 0) / NANO_USD,
            model_calls=amounts.get("model_calls", 0),
            tool_calls=amounts.get("tool_calls", 0),
        )
    return total
