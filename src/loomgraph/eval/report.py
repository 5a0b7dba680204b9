"""Reports: per-strategy summaries, paired comparisons with a bootstrap interval, gates."""

from __future__ import annotations

import json
import math
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loomgraph.eval.runner import EvalRun
from loomgraph.protocols import Usage

__all__ = [
    "Comparison",
    "Report",
    "StrategySummary",
    "bootstrap_interval",
    "build_report",
    "gate",
    "missing_baselines",
    "no_baseline_message",
    "percentile",
    "read_baseline",
    "scores_usage",
    "skipped_scores",
]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def bootstrap_interval(
    diffs: Sequence[float], *, samples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """A percentile bootstrap confidence interval for the mean of paired differences."""
    if not diffs:
        return (0.0, 0.0)
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(samples))
    tail = (1 - level) / 2 * 100
    return (percentile(means, tail), percentile(means, 100 - tail))


@dataclass(slots=True)
class StrategySummary:
    """One strategy's results over every case and repeat."""

    strategy: str
    runs: int
    pass_rate: float
    score: float  # the mean of every run's mean evaluator value
    evaluators: dict[str, float]  # the mean value per evaluator (over runs it spoke on)
    tokens: float  # mean per run
    cost_usd: float  # total
    latency_p50_s: float
    latency_p95_s: float
    node_visits: float  # mean per run
    failed_runs: int  # runs that did not complete (each scores 0)
    evaluator_errors: int = 0  # scores standing for an evaluator that failed


@dataclass(slots=True)
class Comparison:
    """Strategy `b` against `a`, case by case: mean score difference and its interval."""

    a: str
    b: str
    cases: int
    mean_diff: float
    low: float
    high: float
    per_case: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Report:
    """Everything an evaluation found: summaries, comparisons and each case's scores."""

    dataset: str
    strategies: list[StrategySummary]
    comparisons: list[Comparison]
    case_scores: dict[str, dict[str, float]]  # case id -> strategy -> mean score
    runs: list[dict[str, Any]]
    judge_usage: dict[str, Any] = field(default_factory=dict)

    def summary(self, strategy: str) -> StrategySummary:
        """The summary of one strategy."""
        for summary in self.strategies:
            if summary.strategy == strategy:
                return summary
        raise KeyError(strategy)

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped data (what `report.json` holds)."""
        return asdict(self)

    def write_json(self, path: str | Path) -> Path:
        """Write the report as JSON; ValueError (nothing written) when a number in it is NaN
        or infinite, which JSON cannot hold (a Score refuses them: this is a backstop)."""
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False)
        path.write_text(text + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """A report from `to_dict()`'s shape."""
        return cls(
            data["dataset"],
            [StrategySummary(**s) for s in data["strategies"]],
            [Comparison(**c) for c in data["comparisons"]],
            data["case_scores"],
            data["runs"],
            data.get("judge_usage", {}),
        )

    @classmethod
    def read_json(cls, path: str | Path) -> Report:
        """Read a report written by `write_json`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def read_baseline(path: str | Path) -> Report:
    """A report.json to gate against, checked for what the gate reads: each strategy's name,
    score and evaluator means (finite numbers). ValueError names the file and the problem."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"--baseline {path}: cannot read it ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise ValueError(f"--baseline {path}: not a report.json (not UTF-8 text)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"--baseline {path}: not a report.json (not JSON: {err.msg})") from None
    problem = _baseline_problem(data)
    if problem is None:
        try:
            return Report.from_dict(data)
        except (KeyError, TypeError, ValueError) as err:
            problem = f"{type(err).__name__}: {err}"
    raise ValueError(f"--baseline {path}: not a report.json ({problem})")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _baseline_problem(data: Any) -> str | None:
    if not isinstance(data, dict) or not isinstance(data.get("strategies"), list):
        return "no list of `strategies`"
    for index, summary in enumerate(data["strategies"]):
        where = f"strategies.{index}"
        if not isinstance(summary, dict) or not isinstance(summary.get("strategy"), str):
            return f"{where} has no `strategy` name"
        if not _number(summary.get("score")):
            return f"{where}.score is not a finite number"
        evaluators = summary.get("evaluators")
        if not isinstance(evaluators, dict) or not all(_number(v) for v in evaluators.values()):
            return f"{where}.evaluators is not a mapping of names to finite numbers"
    return None


def _summary(strategy: str, runs: Sequence[EvalRun]) -> StrategySummary:
    per_evaluator: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        for score in run.scores:
            per_evaluator[score.evaluator].append(score.value)
    latencies = [r.outcome.latency_s for r in runs]
    n = len(runs) or 1
    return StrategySummary(
        strategy=strategy,
        runs=len(runs),
        pass_rate=sum(r.passed for r in runs) / n,
        score=sum(r.score for r in runs) / n,
        evaluators={k: statistics.fmean(v) for k, v in sorted(per_evaluator.items())},
        tokens=sum(r.outcome.usage.total_tokens for r in runs) / n,
        cost_usd=sum(r.outcome.usage.cost_usd for r in runs),
        latency_p50_s=percentile(latencies, 50),
        latency_p95_s=percentile(latencies, 95),
        node_visits=sum(sum(r.outcome.node_visits.values()) for r in runs) / n,
        failed_runs=sum(not r.completed for r in runs),
        evaluator_errors=sum(r.evaluator_errors for r in runs),
    )


def _case_scores(runs: Sequence[EvalRun]) -> dict[str, dict[str, float]]:
    grouped: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        grouped[run.outcome.case_id][run.outcome.strategy].append(run.score)
    return {
        case: {s: statistics.fmean(v) for s, v in by_strategy.items()}
        for case, by_strategy in grouped.items()
    }


def compare(
    case_scores: dict[str, dict[str, float]], a: str, b: str, *, seed: int = 0
) -> Comparison:
    """Paired comparison of `b` against `a` over the cases both ran."""
    per_case = {
        case: scores[b] - scores[a]
        for case, scores in case_scores.items()
        if a in scores and b in scores
    }
    diffs = list(per_case.values())
    low, high = bootstrap_interval(diffs, seed=seed)
    mean = statistics.fmean(diffs) if diffs else 0.0
    return Comparison(a, b, len(diffs), mean, low, high, per_case)


def scores_usage(runs: Sequence[EvalRun]) -> dict[str, Any]:
    """Per evaluator whose scores cost something (a judge): the usage behind the scores
    `runs` hold, kept ones included, and how many of them it skipped (its cap)."""
    usage: dict[str, Usage] = {}
    skipped: Counter[str] = Counter()
    for run in runs:
        for score in run.scores:
            if score.usage is None and not score.skipped:
                continue
            usage[score.evaluator] = usage.get(score.evaluator, Usage()) + (score.usage or Usage())
            skipped[score.evaluator] += score.skipped
    return {
        name: {"usage": usage[name].to_dict(), "skipped": skipped[name]} for name in sorted(usage)
    }


def build_report(
    dataset: str,
    strategies: Sequence[str],
    runs: Sequence[EvalRun],
    judge_usage: dict[str, Any] | None = None,
) -> Report:
    """Summaries per strategy, a paired comparison of each strategy against the first.
    `judge_usage` defaults to what the runs' scores cost (`scores_usage`)."""
    by_strategy: dict[str, list[EvalRun]] = {s: [] for s in strategies}
    for run in runs:
        by_strategy[run.outcome.strategy].append(run)
    case_scores = _case_scores(runs)
    base = strategies[0] if strategies else ""
    comparisons = [compare(case_scores, base, other) for other in strategies[1:]]
    return Report(
        dataset,
        [_summary(s, by_strategy[s]) for s in strategies],
        comparisons,
        case_scores,
        [r.to_dict() for r in runs],
        scores_usage(runs) if judge_usage is None else judge_usage,
    )


def check_gate_values(*, fail_under: float | None = None, max_drop: float = 0.0) -> None:
    """ValueError unless `fail_under` (when given) and `max_drop` are numbers in [0, 1]: a
    NaN would pass every comparison, and scores are never outside [0, 1]."""
    for name, value in (("--fail-under", fail_under), ("--max-drop", max_drop)):
        if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"{name} {value}: give a number from 0 to 1 (scores are in [0, 1])")


def missing_baselines(baseline: Report, strategies: Sequence[str]) -> list[str]:
    """The strategies (of `strategies`, in order) that `baseline` has no summary for."""
    have = {summary.strategy for summary in baseline.strategies}
    return [name for name in strategies if name not in have]


def no_baseline_message(baseline: Report, missing: Sequence[str], where: str) -> str:
    """What to say when `baseline` (read from `where`) lacks strategies: no verdict."""
    names = ", ".join(repr(name) for name in missing)
    have = ", ".join(repr(s.strategy) for s in baseline.strategies) or "none"
    return (
        f"no baseline for strategy {names} in {where} (it has {have}): a regression gate "
        "needs every strategy in the baseline; gate a new strategy with --fail-under alone"
    )


def skipped_scores(report: Report) -> dict[str, Counter[str]]:
    """Per strategy, how many scores each evaluator skipped (a judge out of room under its
    cap: a failing score, not a verdict)."""
    found: dict[str, Counter[str]] = defaultdict(Counter)
    for run in report.runs:
        for score in run["scores"]:
            if score.get("skipped"):
                found[run["outcome"]["strategy"]][score["evaluator"]] += 1
    return dict(found)


def _no_verdict(report: Report) -> str | None:
    """Why `report` can give no verdict: no strategy, or a strategy with no run."""
    if not report.strategies:
        return "the report has no strategy: a gate on it would check nothing"
    empty = [s.strategy for s in report.strategies if not s.runs]
    if empty:
        names = ", ".join(repr(name) for name in empty)
        return f"strategy {names} has no run: a gate on it would check nothing"
    return None


def gate(
    report: Report,
    *,
    baseline: Report | None = None,
    max_drop: float = 0.0,
    fail_under: float | None = None,
) -> list[str]:
    """What fails the gate: a strategy's score under `fail_under`, or more than `max_drop`
    below the same strategy's score (or any evaluator's mean) in `baseline`, or an evaluator
    the baseline has a mean for that gave no score now. A run that did not complete scores
    0, so runs that failed lower the score the gate reads; a skipped judge score is a
    failing 0 too. ValueError (no verdict, not a failed gate) when the report has no
    strategy or a strategy without runs, or `baseline` lacks one of the report's
    strategies."""
    check_gate_values(fail_under=fail_under, max_drop=max_drop)
    why = _no_verdict(report)
    if why is not None:
        raise ValueError(why)
    if baseline is not None:
        missing = missing_baselines(baseline, [s.strategy for s in report.strategies])
        if missing:
            raise ValueError(no_baseline_message(baseline, missing, "the baseline"))
    skips = skipped_scores(report)
    failures: list[str] = []
    for summary in report.strategies:
        incomplete = (
            f" ({summary.failed_runs} of {summary.runs} run(s) did not complete)"
            if summary.failed_runs
            else ""
        )
        if fail_under is not None and summary.score < fail_under:
            failures.append(
                f"{summary.strategy}: score {summary.score:.3f} is under {fail_under:.3f}"
                + incomplete
            )
        if baseline is None:
            continue
        skipped = skips.get(summary.strategy, Counter())
        before = baseline.summary(summary.strategy)
        pairs = [("score", before.score, summary.score, incomplete)]
        for name, value in before.evaluators.items():
            if name not in summary.evaluators:
                # Silence is no pass: the gate would check nothing of this evaluator.
                failures.append(
                    f"{summary.strategy}: {name} gave no score now (the baseline has "
                    f"{value:.3f}); gate against a baseline without it to drop it"
                )
                continue
            note = f" ({skipped[name]} skipped for its cap)" if skipped[name] else ""
            pairs.append((f"{name} score", value, summary.evaluators[name], note))
        for what, old, new, note in pairs:
            if old - new > max_drop + 1e-12:
                failures.append(
                    f"{summary.strategy}: {what} dropped from {old:.3f} to {new:.3f} "
                    f"(more than {max_drop:.3f})" + note
                )
    return failures
