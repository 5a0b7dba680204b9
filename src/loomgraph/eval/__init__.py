"""Evaluate and compare strategies: datasets, evaluators, journaled runs, reports and gates.

```python
from loomgraph.eval import Dataset, evaluate

report = await evaluate(Dataset.load("cases.yaml"), {"react": agent_a, "mine": agent_b})
```
"""

from __future__ import annotations

from loomgraph.eval.dataset import Case, Dataset, DatasetError, dataset_json_schema
from loomgraph.eval.evaluators import (
    AnswerEvaluator,
    BoundsEvaluator,
    CustomEvaluator,
    DuplicateEvaluatorName,
    Evaluator,
    NotCalledEvaluator,
    Score,
    SkippingEvaluator,
    TrajectoryEvaluator,
)
from loomgraph.eval.fingerprint import UnknownCaseField
from loomgraph.eval.judge import JudgeEvaluator
from loomgraph.eval.outcome import CaseOutcome
from loomgraph.eval.report import Comparison, Report, StrategySummary, build_report, gate
from loomgraph.eval.run import evaluate
from loomgraph.eval.runner import EvalRun, Evaluation
from loomgraph.eval.trajectory import CallRecord

__all__ = [
    "AnswerEvaluator",
    "BoundsEvaluator",
    "CallRecord",
    "Case",
    "CaseOutcome",
    "Comparison",
    "CustomEvaluator",
    "Dataset",
    "DatasetError",
    "DuplicateEvaluatorName",
    "EvalRun",
    "Evaluation",
    "Evaluator",
    "JudgeEvaluator",
    "NotCalledEvaluator",
    "Report",
    "Score",
    "SkippingEvaluator",
    "StrategySummary",
    "TrajectoryEvaluator",
    "UnknownCaseField",
    "build_report",
    "dataset_json_schema",
    "evaluate",
    "gate",
]
