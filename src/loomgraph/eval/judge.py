"""`JudgeEvaluator`: an LLM judge through any `Model`, with a Jinja2 rubric and its own cap."""

from __future__ import annotations

import json
import re
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from loomgraph.eval.dataset import Case
from loomgraph.eval.evaluators import Score
from loomgraph.eval.outcome import CaseOutcome
from loomgraph.protocols import Model, ModelRequest, Usage

__all__ = ["JudgeEvaluator"]

_SYSTEM = (
    "You grade one run of an AI agent against a rubric. Reply with one JSON object and "
    'nothing else: {"score": <a number from 0 to 1>, "reason": "<one sentence>"}.'
)
_REPLY_TOKENS = 256
_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


class JudgeEvaluator:
    """Asks `model` to grade a run by `rubric` (a Jinja2 template seeing `case`, `input`,
    `answer`, `tool_calls`, `status`); its usage is counted in `usage`, apart from the runs',
    and once `max_tokens` are spent it gives no more scores (counted in `skipped`)."""

    def __init__(
        self,
        model: Model,
        rubric: str,
        *,
        name: str = "judge",
        max_tokens: int | None = None,
        threshold: float = 0.5,
    ) -> None:
        self.model = model
        self.name = name
        self.max_tokens = max_tokens
        self.threshold = threshold
        self.usage = Usage()
        self.skipped = 0
        try:
            self._template = SandboxedEnvironment(undefined=StrictUndefined).from_string(rubric)
        except TemplateError as err:
            raise ValueError(f"judge {name!r}: the rubric is not a valid template: {err}") from err

    async def __call__(self, case: Case, outcome: CaseOutcome) -> Score | None:
        """Grade one run; None once the judge's own token cap is spent."""
        budget = _REPLY_TOKENS
        if self.max_tokens is not None:
            budget = min(budget, self.max_tokens - self.usage.total_tokens)
            if budget <= 0:
                self.skipped += 1
                return None
        prompt = self._template.render(
            case=case,
            input=case.input,
            answer=outcome.answer or "",
            tool_calls=[c.to_dict() for c in outcome.calls],
            status=outcome.status,
        )
        request = ModelRequest(
            messages=[{"role": "user", "content": prompt}], system=_SYSTEM, max_tokens=budget
        )
        text, usage = await _complete(self.model, request)
        self.usage = self.usage + usage
        return self._score(text)

    def _score(self, text: str) -> Score:
        found = _OBJECT.search(text)
        try:
            data: Any = json.loads(found.group(0)) if found else None
            value = float(data["score"])
        except (ValueError, TypeError, KeyError):
            return Score(self.name, 0.0, False, f"the judge gave no score: {text[:200]!r}")
        value = min(max(value, 0.0), 1.0)
        return Score(self.name, value, value >= self.threshold, str(data.get("reason", "")))


async def _complete(model: Model, request: ModelRequest) -> tuple[str, Usage]:
    parts: list[str] = []
    usage = Usage()
    async for chunk in model.stream(request):
        if chunk.get("type") == "text":
            parts.append(chunk.get("text", ""))
        elif chunk.get("type") == "usage":
            usage = usage + chunk["usage"]
    return "".join(parts), usage
