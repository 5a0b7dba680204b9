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

from loomgraph.governance.ledger import NANO_USD, Change, Charge, Hold, Ledger, LedgerView
from loomgraph.protocols import Usage

__all__ = ["charged_usage", "close_left_holds", "settled", "visit_hold"]


def visit_hold(hold: Hold) -> bool:
    """True for a node visit's hold: no effect named, nothing held but the visit."""
    return hold.effect is None and hold.amounts.keys() <= {"node_visits"}


async def close_left_holds(ledger: Ledger, run_id: str, now: float) -> int:
    """Close every hold `run_id` still has (its process died holding them): an effect's is
    charged, a node visit's given back; how many there were."""
    left = await ledger.holds(run_id)
    for hold in left:
        charge = (
            None
            if visit_hold(hold)
            else Charge(hold.id, run_id, dict(hold.amounts), now, hold.effect)
        )

        def decide(view: LedgerView, charge: Charge | None = charge) -> Change:
            hold = view.hold
            if hold is None:  # closed (or settled) by someone else meanwhile
                return Change()
            if charge is None:
                return Change(remove=hold)
            return Change(remove=hold, spend=hold.amounts, spend_scopes=hold.scopes, charge=charge)

        await ledger.transact((), hold.id, decide)
    return len(left)


def settled(view: LedgerView, spend: dict[str, int], scopes: tuple[str, ...]) -> Change:
    """What settling a reservation at `spend` does, whatever became of its hold."""
    hold = view.hold
    if hold is not None:
        return Change(remove=hold, spend=spend, spend_scopes=hold.scopes)
    if view.charged is not None:
        # A resume charged the hold in full, taking this process for dead (it was stopped
        # past its lease): only what it spent beyond that is added.
        paid = view.charged.amounts
        extra = {m: n - paid.get(m, 0) for m, n in spend.items() if n > paid.get(m, 0)}
        return Change(spend=extra, spend_scopes=scopes)
    # Without its hold (settled twice, or released) the amount was still spent: charge it
    # to the scopes the reservation's owner has now. A visit's hold given back by a resume
    # that took this process for dead is charged so too: the visit is charged twice (the
    # resume does it again), never lost when the one giving it back was the stale process.
    return Change(spend=spend, spend_scopes=scopes)


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
