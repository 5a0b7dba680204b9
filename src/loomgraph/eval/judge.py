"""`JudgeEvaluator`: an LLM judge through any `Model`, with a Jinja2 rubric and its own cap."""

from __future__ import annotations

import asyncio
import json
import math
from contextlib import aclosing
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from loomgraph.engine.model_answers import (
    broken_usage,
    cancelled_usage,
    checked_call,
    reported_usage,
    unreported_usage,
)
from loomgraph.eval.cases import Case
from loomgraph.eval.evaluators import Score
from loomgraph.eval.outcome import CaseOutcome
from loomgraph.protocols import Model, ModelError, ModelRequest, ModelResponse, Usage
from loomgraph.protocols.usage import estimate_prompt_tokens

__all__ = ["JudgeEvaluator"]

_SYSTEM = (
    "You grade one run of an AI agent against a rubric. Reply with one JSON object and "
    'nothing else: {"score": <a number from 0 to 1>, "reason": "<one sentence>"}.'
)
_REPLY_TOKENS = 256
# The fewest reply tokens a call is made with: `{"score": 0.75}` and a few words. With less
# room left under the cap the run is skipped, not judged by a reply cut short.
_MIN_REPLY_TOKENS = 16
_DECODER = json.JSONDecoder()


class _CapSpent(Exception):
    """The model retries an attempt, and the cap has no room for the retry."""


class _Spent:
    """What one call cost, kept apart from the judge's total so its Score carries it."""

    def __init__(self) -> None:
        self.usage = Usage()


class JudgeEvaluator:
    """Asks `model` to grade a run by `rubric` (a Jinja2 template seeing `case`, `input`,
    `answer`, `tool_calls`, `status`).

    Its usage (every attempt, read as the engine reads a model's) is counted in `usage`, apart
    from the runs', and each score carries its own call's. With `max_tokens` each call first
    holds its prompt's estimate and its reply tokens (`held`, while it runs), so concurrent
    calls never spend past the cap together; a call the cap has no room for gives no score
    (counted in `skipped`; `verdict` gives a failing `skipped` Score for it, calling the
    judge gives None). A reply without a number from 0 to 1, a model that fails and a call
    that takes more than `timeout_s` give a failing score saying so (`failed` counts the
    calls whose model failed or timed out)."""

    def __init__(
        self,
        model: Model,
        rubric: str,
        *,
        name: str = "judge",
        max_tokens: int | None = None,
        threshold: float = 0.5,
        timeout_s: float | None = 120.0,
    ) -> None:
        if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"judge {name!r}: timeout_s {timeout_s} is not a positive number")
        self.model = model
        self.rubric = rubric
        self.name = name
        self.max_tokens = max_tokens
        self.threshold = threshold
        self.timeout_s = timeout_s
        self.usage = Usage()
        self.held = 0  # tokens the calls under way hold against `max_tokens`
        self.skipped = 0
        self.failed = 0
        self._calls = 0
        environment = SandboxedEnvironment(undefined=StrictUndefined)
        try:
            self._template = environment.from_string(rubric)
            self.case_fields = _case_fields(environment.parse(rubric))
        except TemplateError as err:
            raise ValueError(f"judge {name!r}: the rubric is not a valid template: {err}") from err

    def fingerprint(self) -> dict[str, Any]:
        """What decides its scores: the rubric, the model's name, the threshold and the cap;
        a kept score is scored again when one of them changed."""
        return {
            "rubric": self.rubric,
            "model": str(getattr(self.model, "name", type(self.model).__name__)),
            "threshold": self.threshold,
            "max_tokens": self.max_tokens,
        }

    async def __call__(self, case: Case, outcome: CaseOutcome) -> Score | None:
        """Grade one run; None when the judge's own token cap has no room for the call."""
        score = await self.verdict(case, outcome)
        return None if score.skipped else score

    async def verdict(self, case: Case, outcome: CaseOutcome) -> Score:
        """Grade one run; a failing `skipped` Score when the judge's own token cap has no
        room for the call. The Score carries the call's usage."""
        prompt = self._template.render(
            case=case,
            input=case.input,
            answer=outcome.answer or "",
            tool_calls=[c.to_dict() for c in outcome.calls],
            status=outcome.status,
        )
        request = ModelRequest(
            messages=[{"role": "user", "content": prompt}],
            system=_SYSTEM,
            # The judge's own call count: a scripted judge plays its turns in order.
            run_id=f"judge:{self.name}",
            call_index=self._calls,
        )
        hold = self._hold(request)
        if hold is None:
            return self._skip(Usage())
        self._calls += 1
        spent = _Spent()
        try:
            async with asyncio.timeout(self.timeout_s):
                text = await self._complete(request, spent)
        except _CapSpent:
            return self._skip(spent.usage)
        except Exception as err:  # ModelError, a timeout, the model's own bug: it failed
            self.failed += 1
            if isinstance(err, ModelError):
                why = str(err)
            elif isinstance(err, TimeoutError):
                why = f"no reply within timeout_s={self.timeout_s:g}"
            else:
                why = f"{type(err).__name__}: {err}"
            failed = f"the judge failed: {why}"[:500]
            # Scored again on resume.
            return Score(self.name, 0.0, False, failed, error=True, usage=spent.usage)
        finally:
            self.held -= hold
        return self._score(text, spent.usage)

    def _skip(self, usage: Usage) -> Score:
        self.skipped += 1
        reason = (
            f"skipped: the judge's max_tokens ({self.max_tokens}) had no room left for this "
            "call; no score (scored again on the next run)"
        )
        return Score(self.name, 0.0, False, reason, skipped=True, usage=usage)

    def _hold(self, request: ModelRequest) -> int | None:
        """Size the call's reply to what the cap has left and hold it with the prompt's
        estimate; None when fewer than `_MIN_REPLY_TOKENS` are left for the reply."""
        if self.max_tokens is None:
            request.max_tokens = _REPLY_TOKENS
            return 0
        prompt = estimate_prompt_tokens(request.prompt_chars())
        room = self.max_tokens - self.usage.total_tokens - self.held - prompt
        if room < _MIN_REPLY_TOKENS:
            return None
        request.max_tokens = min(_REPLY_TOKENS, room)
        hold = prompt + request.max_tokens
        self.held += hold
        return hold

    def _over_cap(self) -> bool:
        return self.max_tokens is not None and self.usage.total_tokens + self.held > self.max_tokens

    async def _complete(self, request: ModelRequest, spent: _Spent) -> str:
        """The reply's text; its usage (and every failed attempt's) is added to `usage` as the
        engine charges a model call: reported usage checked (`Usage.reported`), and floored
        to the prompt's estimate and what was streamed when the model reported none; `spent`
        gets the same, for the call's Score."""

        def charge(usage: Usage) -> None:
            self.usage += usage
            spent.usage += usage

        streamed: list[str] = []
        answer = ModelResponse()
        try:
            async with aclosing(self.model.stream(request)) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    kind = chunk.get("type")
                    if kind == "text":
                        streamed.append(chunk["text"])
                    elif kind == "tool_call":
                        answer.tool_calls.append(checked_call(chunk.get("call"), request, streamed))
                    elif kind == "usage":
                        answer.usage += reported_usage(chunk.get("usage"), request, streamed)
                    elif kind == "attempt":
                        # A failed attempt the model retries: it billed, and the retry holds
                        # the call's worst case again, so the cap must have room for both.
                        billed = reported_usage(chunk.get("usage"), request, streamed)
                        charge(billed.with_model_calls(0))
                        if self._over_cap():
                            raise _CapSpent
            text = "".join(streamed)
        except _CapSpent:
            charge(Usage(model_calls=1))
            raise
        except ModelError as err:
            usage = (
                cancelled_usage(request, streamed)  # what it billed is not known
                if err.usage_problem
                else broken_usage(request, err.usage, streamed)
            )
            charge(usage.with_model_calls(1))
            raise
        except BaseException:  # the model's own failure, or the call was cancelled
            charge(cancelled_usage(request, streamed))
            raise
        # A count the model did not report is charged its estimate, field by field, as the
        # engine charges a model call.
        charge(unreported_usage(request, streamed, answer).with_model_calls(1))
        return text

    def _score(self, text: str, usage: Usage) -> Score:
        found = _verdict(text)
        if found is None:
            why = f"the judge gave no usable score: {text[:200]!r}"
            return Score(self.name, 0.0, False, why, usage=usage)
        value, reason = found
        return Score(self.name, value, value >= self.threshold, reason, usage=usage)


def _usable(value: Any) -> bool:
    """A score a reply may give: a finite number from 0 to 1 (a bool is no number here)."""
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and 0 <= value <= 1
    )


def _verdict(text: str) -> tuple[float, str] | None:
    """The score and reason of the first JSON object in `text` with a usable `score`; None
    when there is none. Read from each `{` in turn, so braces around it (reasoning before,
    a note after, a placeholder like `{x}`) never hide it. An object read whole is passed
    over as a whole: a `score` nested in another object is not the judge's verdict."""
    start = text.find("{")
    while start != -1:
        try:
            data, end = _DECODER.raw_decode(text, start)
        except (ValueError, RecursionError):  # no JSON from here (or too long, too deep)
            end = start + 1
        else:
            if isinstance(data, dict) and _usable(data.get("score")):
                return float(data["score"]), str(data.get("reason", ""))
        start = text.find("{", end)
    return None


def _case_fields(tree: Any) -> frozenset[str] | None:
    """The fields of the case a rubric reads (`case.expect`, `case["metadata"]`, and `input`),
    or None when it uses `case` otherwise (whole, in a loop, under another name, through a
    method such as `case.model_dump_json()`): then its scores depend on the whole case."""
    from jinja2 import nodes

    every = [tree, *tree.find_all(nodes.Node)]
    parent_of = {id(child): node for node in every for child in node.iter_child_nodes()}
    fields = {"input"}
    for name in tree.find_all(nodes.Name):
        if name.name != "case":
            continue
        parent = parent_of.get(id(name))
        field = None
        if isinstance(parent, nodes.Getattr) and parent.node is name:
            field = parent.attr
        elif isinstance(parent, nodes.Getitem) and parent.node is name:
            field = parent.arg.value if isinstance(parent.arg, nodes.Const) else None
        # Anything but a field (a method of the model reads them all): the whole case.
        if not isinstance(field, str) or field not in Case.model_fields:
            return None
        fields.add(field)
    return frozenset(fields)
