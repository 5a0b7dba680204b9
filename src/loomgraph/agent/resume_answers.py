"""What a resume brings (`answer_for`): a value or an approval, checked against what the run
waits for, and bound to the request it answers (`bound`); `NO_VALUE` when none is given."""

from __future__ import annotations

from typing import Any

from loomgraph.agent.checkpoints import approval, not_answered, resume_value
from loomgraph.agent.defaults import NO_VALUE
from loomgraph.engine.effects import BoundApproval, BoundValue, ResumeInput, ResumeValue
from loomgraph.protocols import RunRecord

__all__ = ["NO_VALUE", "answer_for", "bound"]


async def answer_for(
    runtime: Any, record: RunRecord, value: Any, approve: Any
) -> ResumeInput | None:
    """The answer a resume brings, checked against what the run waits for: an answer for a
    run that does not wait for it is refused, not ignored."""
    if value is not NO_VALUE:
        asked = resume_value(record, value)
        await not_answered(runtime, record)
        return asked
    if approve is not NO_VALUE:
        answer = approval(record, approve)
        await not_answered(runtime, record, answer.call_id)
        return answer
    return None


def bound(value: Any, approve: Any, answer: ResumeInput | None) -> tuple[Any, Any]:
    """`value` and `approve` bound to the request `answer`, their first check, answers."""
    if isinstance(answer, ResumeValue) and answer.key:
        value = BoundValue(value.value if isinstance(value, BoundValue) else value, answer.key)
    return value, answer if isinstance(answer, BoundApproval) else approve
