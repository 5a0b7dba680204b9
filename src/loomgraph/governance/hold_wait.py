"""Waiting for holds that end by themselves instead of refusing a reservation at once.

With a small cap, one model call's hold takes all the room the cap has left (its
`max_tokens` is sized to it: see `fit`) for the few milliseconds the call lasts. A
reservation that does not fit *only* because other calls hold room now — it would fit if
their holds were gone: spent + the holds that stand (below) + this ≤ cap, for every cap it
fails — waits for those holds to be settled or released and is decided again, for at most
`BudgetConfig.hold_wait_s` (and never past the run's deadline, which the budget passes in
as the bound). A refusal by spending is immediate, as is one by the holds on the waiting
call's own path, which end only after it does (`_Path.stands`): the run's node visits (a visit
holds its place while its child graph's visits reserve theirs), a hold for the same effect,
and every hold of the runs it was started from (`BudgetScope.ancestors`: an Agent run by
another run's tool). The run's other model and tool calls are waited for like other runs':
a parallel branch's call ends by itself, and a small cap is shared by branches as by runs.

No ledger transaction or lock is held while waiting. In this process a settlement or
release rings a bell (`ring`: an asyncio.Event per ledger place and event loop), which wakes
the waiters at once; a ledger other processes share (an SQLite file, a Postgres schema) is
also read again after 20 ms, doubling to 500 ms, since their settlements ring no bell here.
A hold whose run died stays until the run is resumed (then it is charged), so its waiters
give up at the bound, naming the holds they waited for.

The first try is a plain transaction: a reservation that fits costs nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

from loomgraph.governance.ledger import Change, Hold, Ledger, LedgerView, Totals
from loomgraph.protocols import BudgetExceeded, BudgetScope
from loomgraph.protocols.governance import EffectRef

__all__ = ["BACKOFF_FIRST_S", "BACKOFF_MAX_S", "Check", "hold_or_wait", "ring"]

Check = Callable[[Mapping[str, Totals]], Change]
"""Decides a reservation from its scopes' totals: the change to make (a hold), or it raises
BudgetExceeded. Pure: it is also asked whether the reservation would fit without other runs'
holds."""

SPENT_COUNTS = ("model_calls", "tool_calls")
"""What the engine's hold of a call always turns into spending: the call is charged when it
ends, whatever it used. A reservation refused by these counts of its own run's other calls
(parallel branches) has nothing to wait for. (Other runs' holds are waited for whatever
they hold: a budget's caller may release any hold.)"""

BACKOFF_FIRST_S = 0.02
BACKOFF_MAX_S = 0.5


async def hold_or_wait(
    ledger: Ledger,
    scopes: tuple[str, ...],
    run: BudgetScope,
    check: Check,
    *,
    durable: bool,
    bound: Callable[[], float],
    effect: EffectRef | None = None,
) -> dict[str, Totals]:
    """Make `check`'s change in one ledger transaction; when it refuses only because of
    holds that end by themselves (not those on the path of `run`'s call for `effect`, see
    `_stands`), wait for them (at most `bound()` seconds) and decide again.

    Returns the totals the change touched; raises the last BudgetExceeded when the refusal
    is not for holds alone, or the wait ran out (then naming the holds waited for)."""
    seen: list[Mapping[str, Totals]] = []
    path = _Path(run, effect)

    def decide(view: LedgerView) -> Change:
        try:
            return check(view.totals)
        except BudgetExceeded:
            seen.append(view.totals)  # what the refusal was decided on (read only then)
            raise

    try:
        return await _transact(ledger, scopes, decide, durable)
    except BudgetExceeded:
        seconds = bound()
        if seconds <= 0 or not seen or not await _only_held(ledger, path, seen[-1], check):
            raise
    return await _wait(ledger, scopes, path, (check, decide, seen), durable, seconds)


async def _wait(
    ledger: Ledger,
    scopes: tuple[str, ...],
    path: _Path,
    deciding: tuple[Check, Callable[[LedgerView], Change], list[Mapping[str, Totals]]],
    durable: bool,
    seconds: float,
) -> dict[str, Totals]:
    """Try again each time a hold may have ended, until the reservation fits, is refused for
    good, or `seconds` have passed."""
    check, decide, seen = deciding
    give_up = time.monotonic() + seconds
    delay = BACKOFF_FIRST_S
    place = _place(ledger)
    bell = _join(place)
    try:
        while True:
            woken = bell.event  # taken before the read: a ring from now on is not missed
            seen.clear()
            try:
                return await _transact(ledger, scopes, decide, durable)
            except BudgetExceeded as refused:
                if not seen or not await _only_held(ledger, path, seen[-1], check):
                    raise
                left = give_up - time.monotonic()
                if left <= 0:
                    raise await _waited_in_vain(ledger, path, refused, seconds) from None
            # Nothing but this process changes a local ledger: its bell is enough.
            timeout = left if getattr(ledger, "local", False) else min(delay, left)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await woken.wait()
            delay = min(delay * 2, BACKOFF_MAX_S)
    finally:
        _leave(place, bell)


async def _transact(
    ledger: Ledger, scopes: tuple[str, ...], decide: Callable[[LedgerView], Change], durable: bool
) -> dict[str, Totals]:
    if durable or not _relaxes(ledger):
        return await ledger.transact(scopes, None, decide)
    return await ledger.transact(scopes, None, decide, durable=False)


@dataclass(frozen=True, slots=True)
class _Path:
    """The waiting call: its run (with the runs it was started from) and its effect."""

    run: BudgetScope
    effect: EffectRef | None

    def stands(self, hold: Hold) -> bool:
        """Whether `hold` lasts as long as the wait would: one of its own run or of a run it
        was started from without an effect (a node visit's, held while its child graphs or
        the tool running this run go on), one for the same effect, one of the call of a run
        it was started from that started it (every hold of such a run when the call is not
        known: `BudgetScope.callers`). Other holds end by themselves."""
        run = self.run
        if hold.run_id == run.run_id:
            mine = self.effect.key if self.effect is not None else None
        elif hold.run_id in run.ancestors:
            callers = dict(zip(run.ancestors, run.callers, strict=False))
            mine = callers.get(hold.run_id)
            if mine is None:
                return True
        else:
            return False
        return hold.effect is None or hold.effect.key == mine


async def _only_held(
    ledger: Ledger, path: _Path, totals: Mapping[str, Totals], check: Check
) -> bool:
    """Whether the refused reservation would fit if only the holds that stand while it
    waits (`_Path.stands`) were held — and the counts (`SPENT_COUNTS`) of the other calls
    of its run and of the runs it was started from, charged when they end, whatever they
    used."""
    standing: dict[str, dict[str, int]] = {}
    for run_id in (path.run.run_id, *path.run.ancestors):
        for hold in await ledger.holds(run_id):
            stands = path.stands(hold)
            for name in hold.scopes:
                held = standing.setdefault(name, {})
                for metric, value in hold.amounts.items():
                    if stands or metric in SPENT_COUNTS:
                        held[metric] = held.get(metric, 0) + value
    alone = {name: Totals(dict(t.spent), standing.get(name, {})) for name, t in totals.items()}
    try:
        check(alone)
    except BudgetExceeded:
        return False
    return True


async def _waited_in_vain(
    ledger: Ledger, path: _Path, refused: BudgetExceeded, seconds: float
) -> BudgetExceeded:
    """The refusal, naming the holds waited for: those that do not stand (other runs', the
    run's other calls) of the refusing metric (a node visit's hold, of no capped metric,
    stood in no one's way)."""
    scope, _, metric = refused.cap.rpartition(":")
    count = sum(
        not path.stands(h) and scope in h.scopes and h.amounts.get(metric, 0) > 0
        for h in await ledger.holds()
    )
    held = f"held by {count} other reservation{'' if count == 1 else 's'}"
    return BudgetExceeded(refused.cap, f"{refused.detail}; {held}; waited {seconds:.3g} s")


# ---------------------------------------------------------------------------- bells


class _Bell:
    """Rung when a hold of one ledger place may have ended, for one event loop's waiters."""

    __slots__ = ("event", "waiters")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.waiters = 0

    def ring(self) -> None:
        # A fresh event for the next wait: those who took this one wake.
        event, self.event = self.event, asyncio.Event()
        event.set()


# Bells by ledger place and event loop, while someone waits (a ledger may be used from
# several loops and threads, as an InMemoryLedger is).
_BELLS: dict[Hashable, dict[asyncio.AbstractEventLoop, _Bell]] = {}
_LOCK = threading.Lock()


def _place(ledger: Ledger) -> Hashable:
    """The ledger's place; a ledger of its own kind (not a `Ledger`) is its own place."""
    place = getattr(ledger, "place", None)
    return ("ledger", id(ledger)) if place is None else place


def _join(place: Hashable) -> _Bell:
    loop = asyncio.get_running_loop()
    with _LOCK:
        bell = _BELLS.setdefault(place, {}).setdefault(loop, _Bell())
        bell.waiters += 1
    return bell


def _leave(place: Hashable, bell: _Bell) -> None:
    with _LOCK:
        bell.waiters -= 1
        bells = _BELLS.get(place, {})
        if not bell.waiters:
            for loop, found in list(bells.items()):
                if found is bell:
                    del bells[loop]
        if not bells:
            _BELLS.pop(place, None)


def ring(ledger: Ledger) -> None:
    """A hold of `ledger` was settled, released or charged: wake this process's waiters."""
    if not _BELLS:
        return  # nobody waits: the common case, one check
    with _LOCK:
        bells = list(_BELLS.get(_place(ledger), {}).items())
    try:
        here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    for loop, bell in bells:
        if loop is here:
            bell.ring()
        else:
            with contextlib.suppress(RuntimeError):  # that loop closed meanwhile
                loop.call_soon_threadsafe(bell.ring)


# ---------------------------------------------------------------------------- old ledgers


def _relaxes(ledger: Ledger) -> bool:
    """Whether `ledger.transact` takes `durable` (a ledger written before it did not)."""
    kind = type(ledger)
    known = _RELAXES.get(kind)
    if known is None:
        known = _RELAXES[kind] = "durable" in inspect.signature(kind.transact).parameters
    return known


_RELAXES: dict[type, bool] = {}
