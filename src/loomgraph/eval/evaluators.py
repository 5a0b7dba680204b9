"""Evaluators: each scores one run of one case in [0, 1], with a reason."""

from __future__ import annotations

import inspect
import json
import math
import numbers
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any, Protocol, runtime_checkable

from loomgraph.errors import LoomgraphError
from loomgraph.eval.cases import Case, EvaluatorSpec, TrajectoryMode
from loomgraph.eval.outcome import CaseOutcome
from loomgraph.eval.trajectory import match_trajectory
from loomgraph.graph.imports import import_object
from loomgraph.protocols import Usage

__all__ = [
    "AnswerEvaluator",
    "BoundsEvaluator",
    "CustomEvaluator",
    "DuplicateEvaluatorName",
    "Evaluator",
    "NotCalledEvaluator",
    "Score",
    "SkippingEvaluator",
    "TrajectoryEvaluator",
    "as_bool",
    "as_real",
    "case_evaluators",
    "check_unique_names",
    "is_numpy_style_bool",
    "score_run",
]


@dataclass(frozen=True, slots=True)
class Score:
    """One evaluator's verdict on one run: a value in [0, 1], whether it passed, and why.

    `error` is True for the failing score an evaluator that raised (or gave no valid score)
    stands for; `skipped` for the failing score of a judge its `max_tokens` left no room
    for. Both are counted in the report and scored again when the evaluation resumes.
    `usage` is what giving the score cost (a judge's model calls), kept with it so a report
    built from kept scores counts it. The fields are converted to built-in types (a numpy
    number is a `numbers.Real`), so a score can always be written as JSON; TypeError or
    ValueError when one cannot be (a detail that is NaN or infinite too)."""

    evaluator: str
    value: float
    passed: bool
    reason: str = ""
    # Named sub-scores (a trajectory's precision and recall), reported beside the value.
    details: dict[str, float | str] = field(default_factory=dict)
    error: bool = False
    skipped: bool = False
    # What the score cost, not what it says: two equal verdicts are equal whatever they cost.
    usage: Usage | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Frozen: the converted values are set the way the dataclass sets its fields.
        set_field = object.__setattr__
        set_field(self, "evaluator", str(self.evaluator))
        set_field(self, "value", as_real(self.value, f"evaluator {self.evaluator!r}'s value"))
        if not 0.0 <= self.value <= 1.0:
            raise ValueError(f"evaluator {self.evaluator!r} gave {self.value}, not in [0, 1]")
        set_field(self, "passed", as_bool(self.passed, f"evaluator {self.evaluator!r}'s passed"))
        set_field(self, "reason", str(self.reason))
        set_field(self, "details", {str(k): _detail(k, v) for k, v in self.details.items()})
        set_field(self, "error", as_bool(self.error, "error"))
        set_field(self, "skipped", as_bool(self.skipped, "skipped"))
        if self.usage is not None and not isinstance(self.usage, Usage):
            raise TypeError(f"usage {self.usage!r} is not a Usage")

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped data (`skipped` only when true, `usage` only when set)."""
        data: dict[str, Any] = {
            "evaluator": self.evaluator,
            "value": self.value,
            "passed": self.passed,
            "reason": self.reason,
            "details": dict(self.details),
            "error": self.error,
        }
        if self.skipped:
            data["skipped"] = True
        if self.usage is not None:
            data["usage"] = self.usage.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Score:
        """A score from `to_dict()`'s shape."""
        values = dict(data)
        if values.get("usage") is not None:
            values["usage"] = Usage.from_dict(values["usage"], trusted=True)
        return cls(**values)


def is_numpy_style_bool(value: Any) -> bool:
    """A bool of a numeric library (numpy's `bool_`): not a `bool`, not a `numbers.Number`,
    recognised by its type's name, since loomgraph imports no such library."""
    return type(value).__name__ in ("bool_", "bool") and hasattr(value, "__bool__")


def as_bool(value: Any, what: str) -> bool:
    """`value` as a bool: a bool, or a numpy-style bool; TypeError for anything else (a
    string or a number is not a verdict)."""
    if isinstance(value, bool):
        return value
    if is_numpy_style_bool(value):
        return bool(value)
    raise TypeError(f"{what} is {value!r}, not a bool")


def as_real(value: Any, what: str) -> float:
    """`value` as a float: a real number (numpy's included); TypeError for anything else."""
    if isinstance(value, bool) or is_numpy_style_bool(value):
        return float(value)
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{what} is {value!r}, not a number")
    return float(value)


def _detail(key: Any, value: Any) -> float | str:
    if isinstance(value, str):
        return value
    number = as_real(value, f"details[{key!r}]")
    # NaN and infinities have no JSON: the state file and report.json could not hold them.
    if not math.isfinite(number):
        raise ValueError(f"details[{key!r}] is {number}, not a finite number")
    return number


EXPECTATIONS = frozenset({"expect"})
"""The case fields the built-in checks read: its expectations."""


class Evaluator(Protocol):
    """Scores a run of a case; None when it has nothing to say about this case.

    It may define `fingerprint() -> JSON data`: what decides its scores beyond its type and
    name (a judge's rubric and model), so a kept score is scored again when that changed; and
    `case_fields`, the names of the case's fields its scores depend on (`{"expect"}`), so an
    edit of another field (`tags`, `metadata`) does not score a kept run again. Without it
    every field counts (a function of yours may read any)."""

    name: str

    def __call__(self, case: Case, outcome: CaseOutcome) -> Awaitable[Score | None]:
        """Score `outcome`, a run of `case`."""
        ...


@runtime_checkable
class SkippingEvaluator(Protocol):
    """An evaluator that may be unable to score a run it has something to say about (a
    judge out of room under its cap): `verdict` then gives a failing `skipped` Score, where
    calling it gives None. An evaluation scores with `verdict`, so a skip is never absent."""

    name: str

    def verdict(self, case: Case, outcome: CaseOutcome) -> Awaitable[Score | None]:
        """Score `outcome`, a run of `case`; a skipped Score when it could not."""
        ...


class AnswerEvaluator:
    """The answer's checks (exact, contains, regex, JSON Schema): the share that hold."""

    name = "answer"
    case_fields = EXPECTATIONS

    async def __call__(self, case: Case, outcome: CaseOutcome) -> Score | None:
        """Score the final answer against the case's answer checks."""
        check = case.expect.answer
        if check is None:
            return None
        answer = (outcome.answer or "").strip()
        failed: list[str] = []
        total = 0
        if check.exact is not None:
            total += 1
            if answer != check.exact.strip():
                failed.append(f"answer is not exactly {check.exact!r}")
        for text in check.contains:
            total += 1
            if text not in answer:
                failed.append(f"answer does not contain {text!r}")
        if check.regex is not None:
            total += 1
            if re.search(check.regex, answer) is None:
                failed.append(f"answer does not match /{check.regex}/")
        if check.json_schema is not None:
            total += 1
            problem = _schema_problem(answer, check.json_schema)
            if problem:
                failed.append(problem)
        if not total:
            return None  # `answer: {}`: nothing to check
        value = (total - len(failed)) / total
        return Score(self.name, value, not failed, "; ".join(failed) or "answer fits")


def _schema_problem(answer: str, schema: dict[str, Any]) -> str | None:
    import jsonschema

    try:
        data = json.loads(answer)
    except json.JSONDecodeError as err:
        return f"answer is not JSON ({err.msg})"
    from loomgraph.tools.json_schema import local_validator

    # `$ref`s resolve inside the schema only: a dataset's schema never makes a fetch.
    validator = local_validator(jsonschema.Draft202012Validator, schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "the answer"
    return f"{where}: {error.message}"


class TrajectoryEvaluator:
    """The executed tool calls against the expected ones: F1 of precision and recall."""

    name = "trajectory"
    case_fields = EXPECTATIONS

    async def __call__(self, case: Case, outcome: CaseOutcome) -> Score | None:
        """Score the run's tool calls against the case's trajectory."""
        spec = case.expect.tools
        if spec is None:
            return None
        if not spec.calls and spec.mode is not TrajectoryMode.EXACT:
            return None  # every one of no calls is found, in any order: nothing to check
        match = match_trajectory(spec, outcome.calls)
        p, r = match.precision, match.recall
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        reason = (
            f"{match.matched} of {match.expected} expected call(s) found ({spec.mode}) "
            f"among {match.actual} executed"
        )
        return Score(self.name, f1, match.passed, reason, {"precision": p, "recall": r})


class NotCalledEvaluator:
    """Safety: none of the forbidden tools was executed."""

    name = "not_called"
    case_fields = EXPECTATIONS

    async def __call__(self, case: Case, outcome: CaseOutcome) -> Score | None:
        """Score 1 when no executed call names a forbidden tool, else 0."""
        forbidden = case.expect.not_called
        if not forbidden:
            return None
        hits = [c for c in outcome.calls if any(fnmatchcase(c.tool, f) for f in forbidden)]
        if not hits:
            return Score(self.name, 1.0, True, "no forbidden tool executed")
        reason = f"executed forbidden tool(s): {', '.join(sorted({c.tool for c in hits}))}"
        unsure = sorted({c.tool for c in hits if c.uncertain})
        if unsure:  # begun, no outcome journaled: counted, since it may have run
            reason += f" ({', '.join(unsure)}: begun with no outcome journaled; it may have run)"
        return Score(self.name, 0.0, False, reason)


class BoundsEvaluator:
    """Budget and latency bounds: the share of the case's bounds the run kept."""

    name = "bounds"
    case_fields = EXPECTATIONS

    async def __call__(self, case: Case, outcome: CaseOutcome) -> Score | None:
        """Score tokens, cost and wall time against the case's bounds."""
        expect = case.expect
        checks = [
            ("tokens", expect.max_tokens, outcome.usage.total_tokens),
            ("cost_usd", expect.max_cost_usd, outcome.usage.cost_usd),
            ("latency_s", expect.max_latency_s, outcome.latency_s),
        ]
        bounded = [(n, limit, used) for n, limit, used in checks if limit is not None]
        if not bounded:
            return None
        over = [f"{n} {used:g} > {limit:g}" for n, limit, used in bounded if used > limit]
        value = (len(bounded) - len(over)) / len(bounded)
        return Score(self.name, value, not over, "; ".join(over) or "within bounds")


class CustomEvaluator:
    """A user's function `(case, outcome) -> Score | float | bool | None`, sync or async."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "custom"))

    @classmethod
    def from_path(cls, path: str, name: str | None = None) -> CustomEvaluator:
        """The function named by an import path `MODULE:ATTR`, imported from the current
        folder first (as `--agent`'s); ImportError says where it looked."""
        module, _, attr = path.partition(":")
        if not module or not attr:
            raise ValueError(f"evaluator {path!r}: expected MODULE:ATTR")
        fn = import_object(path, what="evaluator")
        if not callable(fn):
            raise ImportError(f"evaluator {path!r} is a {type(fn).__name__}, not a function")
        return cls(fn, name or attr.rpartition(".")[2])

    async def __call__(self, case: Case, outcome: CaseOutcome) -> Score | None:
        """Call the function and turn what it returns into a Score."""
        value = self.fn(case, outcome)
        if inspect.isawaitable(value):
            value = await value
        if value is None or isinstance(value, Score):
            return value
        if isinstance(value, bool) or is_numpy_style_bool(value):
            verdict = bool(value)
            return Score(self.name, float(verdict), verdict, "passed" if verdict else "failed")
        if not isinstance(value, numbers.Real):
            raise TypeError(f"returned {value!r}, not a Score, number, bool or None")
        number = float(value)
        return Score(self.name, number, number >= 1.0, f"scored {number:g}")


async def score_run(
    evaluators: Sequence[Evaluator], case: Case, outcome: CaseOutcome
) -> list[Score]:
    """Every evaluator's score of `outcome` (those with nothing to say left out; a judge that
    could not score gives a failing `skipped` score). An evaluator that raises, or gives no
    valid Score (a value outside [0, 1], NaN, a type that is no number or bool), gives a
    failing score with the reason, marked `error`: one broken evaluator never stops the
    evaluation, nor hides what the others found. A score is its evaluator's, named so."""
    scores: list[Score] = []
    for evaluator in evaluators:
        name = str(getattr(evaluator, "name", type(evaluator).__name__))
        try:
            if isinstance(evaluator, SkippingEvaluator):
                score = await evaluator.verdict(case, outcome)
            else:
                score = await evaluator(case, outcome)
            if score is not None and not isinstance(score, Score):
                raise TypeError(f"returned {score!r}, not a Score or None")
        except Exception as err:
            reason = f"the evaluator failed: {type(err).__name__}: {err}"
            scores.append(Score(name, 0.0, False, reason[:500], error=True))
            continue
        if score is not None:
            # Reported under its evaluator's name, whatever the score calls itself: another
            # evaluator's name would merge it into that column, its mean and its gate.
            scores.append(score if score.evaluator == name else replace(score, evaluator=name))
    return scores


def case_evaluators(
    specs: Sequence[EvaluatorSpec], judge_factory: Callable[[EvaluatorSpec], Evaluator]
) -> list[Evaluator]:
    """The built-in evaluators, then those a dataset adds (judges and custom functions)."""
    evaluators: list[Evaluator] = [
        AnswerEvaluator(),
        TrajectoryEvaluator(),
        NotCalledEvaluator(),
        BoundsEvaluator(),
    ]
    for spec in specs:
        if spec.kind == "judge":
            evaluators.append(judge_factory(spec))
        else:
            evaluators.append(CustomEvaluator.from_path(spec.call or "", spec.evaluator_name()))
    return evaluators


class DuplicateEvaluatorName(LoomgraphError, ValueError):
    """Two evaluators of one evaluation share a name: their scores, report columns and
    judge usage would be merged into one."""


def check_unique_names(evaluators: Sequence[Evaluator]) -> None:
    """DuplicateEvaluatorName when two of `evaluators` share a name (built-ins included)."""
    seen: set[str] = set()
    for evaluator in evaluators:
        name = str(getattr(evaluator, "name", type(evaluator).__name__))
        if name in seen:
            raise DuplicateEvaluatorName(
                f"two evaluators are named {name!r}: their scores would be merged into one "
                f"column; give each its own name (`name=` of JudgeEvaluator and "
                f"CustomEvaluator, `name:` in a dataset)"
            )
        seen.add(name)
