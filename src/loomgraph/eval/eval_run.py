"""`EvalRun`: one finished run of a case in an evaluation, with its evaluators' scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loomgraph.eval.evaluators import Score
from loomgraph.eval.outcome import CaseOutcome
from loomgraph.protocols import FINAL_STATUSES, RunStatus

__all__ = ["EvalRun"]

_FINAL = frozenset(str(status) for status in FINAL_STATUSES)


@dataclass(slots=True)
class EvalRun:
    """One finished run of a case: what it did and how the evaluators scored it."""

    outcome: CaseOutcome
    scores: list[Score] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        """The run completed (its status is `completed`)."""
        return self.outcome.status == str(RunStatus.COMPLETED)

    @property
    def passed(self) -> bool:
        """The run completed and every evaluator that spoke passed it."""
        return self.completed and all(s.passed for s in self.scores)

    @property
    def score(self) -> float:
        """0 when the run did not complete (whatever its evaluators said: a run that failed,
        ran out of budget or waits for an approval gave no answer); otherwise the mean of
        its evaluators' values (1 when none spoke)."""
        if not self.completed:
            return 0.0
        if not self.scores:
            return 1.0
        return sum(s.value for s in self.scores) / len(self.scores)

    @property
    def ended(self) -> bool:
        """The run ended for good (completed, hit its step limit or its budget): nothing a
        person does can change it, unlike a run waiting for an approval, or one that failed
        and may be resumed."""
        return self.outcome.status in _FINAL

    @property
    def evaluator_errors(self) -> int:
        """How many of its scores stand for an evaluator that failed."""
        return sum(s.error for s in self.scores)

    @property
    def evaluator_skips(self) -> int:
        """How many of its scores stand for a judge that could not score it (its cap)."""
        return sum(s.skipped for s in self.scores)

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped data (`score` and `passed` included, for readers of report.json)."""
        return {
            "outcome": self.outcome.to_dict(),
            "scores": [s.to_dict() for s in self.scores],
            "score": self.score,
            "passed": self.passed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalRun:
        """A run from `to_dict()`'s shape."""
        return cls(
            CaseOutcome.from_dict(data["outcome"]), [Score.from_dict(s) for s in data["scores"]]
        )
