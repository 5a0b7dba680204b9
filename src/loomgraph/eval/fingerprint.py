"""The fingerprints an evaluation keeps with each run and score (`runner`): digests of what
decided them, as far as it can be read (a strategy's definition and caps, an evaluator's
settings); the code behind a model, a tool or a custom evaluator is in none."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from loomgraph.agent.agent import Agent
from loomgraph.agent.pinning import graph_key
from loomgraph.errors import LoomgraphError
from loomgraph.eval.cases import Case, EvaluatorSpec
from loomgraph.eval.evaluators import Evaluator
from loomgraph.governance import Caps
from loomgraph.governance.caps import CAP_NAMES

__all__ = [
    "UnknownCaseField",
    "budget_caps",
    "case_digest",
    "case_fields",
    "digest",
    "evaluator_digests",
    "evaluator_identity",
    "strategy_fingerprint",
]


def digest(data: Any) -> str:
    """A short digest of JSON-shaped `data` (keys sorted, anything else by its `str`)."""
    text = json.dumps(data, sort_keys=True, default=str, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def strategy_fingerprint(agent: Agent) -> str:
    """What defines a strategy, as far as it can be read: the Agent's name and instructions,
    its graph (by hash, subgraphs included), its model's name, its tools' specs, and its
    budget's caps (`budget_caps`; a run stopped by a cap since raised is not reused)."""
    try:
        tools = sorted(agent.deps.tools.specs(), key=lambda spec: str(spec.get("name")))
    except Exception:  # a tool host that lists its tools only once started
        tools = []
    identity: dict[str, Any] = {
        "name": agent.name,
        "instructions": agent.instructions,
        "graph": graph_key(agent.compiled),
        "model": str(getattr(agent.deps.model, "name", type(agent.deps.model).__name__)),
        "tools": tools,
    }
    # Only with a budget: the fingerprints of unbudgeted strategies stay those kept before
    # caps were in them, so their kept runs are not run again.
    caps = budget_caps(agent.deps.budget) if agent.deps.budgeted else None
    if caps is not None:
        identity["budget"] = caps
    return digest(identity)


def budget_caps(budget: Any) -> dict[str, Any] | None:
    """The caps a budget puts on runs (global, per user, for named users), JSON-shaped; the
    budget's type for a budget of another kind, whose limits cannot be read; None for none."""
    config = getattr(budget, "config", None)
    if not isinstance(config, Caps):
        kind = type(budget)
        return {"type": f"{kind.__module__}.{kind.__qualname__}"}
    users = getattr(config, "users", None) or {}
    return {
        "caps": _caps(config),
        "per_user": _caps(getattr(config, "per_user", None)),
        "users": {str(user): _caps(caps) for user, caps in users.items()},
    }


def _caps(caps: Caps | None) -> dict[str, Any] | None:
    if caps is None:
        return None
    return {name: value for name in CAP_NAMES if (value := getattr(caps, name)) is not None}


def evaluator_identity(evaluator: Evaluator) -> dict[str, Any]:
    """What decides an evaluator's scores, as far as it can be read: its type and name, a
    custom function's import path, and what its optional `fingerprint()` says (a judge's
    rubric and model). The code behind it is not in it."""
    kind = type(evaluator)
    fn = getattr(evaluator, "fn", None)
    model = getattr(evaluator, "model", None)
    fingerprint = getattr(evaluator, "fingerprint", None)
    return {
        "type": f"{kind.__module__}.{kind.__qualname__}",
        "name": getattr(evaluator, "name", None),
        "fn": None if fn is None else f"{fn.__module__}.{getattr(fn, '__qualname__', fn)}",
        "model": None if model is None else getattr(model, "name", type(model).__name__),
        "threshold": getattr(evaluator, "threshold", None),
        "max_tokens": getattr(evaluator, "max_tokens", None),
        "fingerprint": fingerprint() if callable(fingerprint) else None,
    }


def evaluator_digests(
    evaluators: Sequence[Evaluator], specs: Sequence[EvaluatorSpec]
) -> dict[str, str]:
    """Per evaluator, by the name its scores go under: a digest of what decides its scores
    apart from the case, its identity (`evaluator_identity`) and the dataset's definition of
    it (the spec its scores are named after), so each score is scored again only when its
    own evaluator changed."""
    defined = {spec.evaluator_name(): spec.model_dump(mode="json") for spec in specs}
    out: dict[str, str] = {}
    for evaluator in evaluators:
        name = str(getattr(evaluator, "name", type(evaluator).__name__))
        out[name] = digest([evaluator_identity(evaluator), defined.get(name)])
    return out


class UnknownCaseField(LoomgraphError, ValueError):
    """An evaluator's `case_fields` names no field of a case (a typo, or one string read as
    its letters): its kept scores would stand after the fields it does read changed."""


def case_fields(evaluator: Evaluator) -> frozenset[str] | None:
    """The fields of a case an evaluator's scores depend on (its `case_fields`); None for
    every field (an evaluator that does not say: a function of yours may read any).
    UnknownCaseField when `case_fields` is a string, or names a field a case does not have."""
    fields = getattr(evaluator, "case_fields", None)
    if fields is None:
        return None
    name = str(getattr(evaluator, "name", type(evaluator).__name__))
    known = sorted(Case.model_fields)
    if isinstance(fields, str | bytes) or not isinstance(fields, Iterable):
        raise UnknownCaseField(
            f"evaluator {name!r}: case_fields is a {type(fields).__name__} ({fields!r}), not a "
            f"collection of field names; write frozenset({{{fields!r}}}) (a case's fields: "
            f"{', '.join(known)})"
        )
    items = list(fields)
    unknown = sorted(
        {repr(f) for f in items if not isinstance(f, str) or f not in Case.model_fields}
    )
    if unknown:
        raise UnknownCaseField(
            f"evaluator {name!r}: case_fields names {', '.join(unknown)}, which a case does "
            f"not have (a case's fields: {', '.join(known)})"
        )
    return frozenset(items)


def case_digest(case: Case, fields: frozenset[str] | None = None) -> str:
    """A digest of the case's `fields` (all of them for None), as JSON."""
    data = case.model_dump(mode="json")
    if fields is not None:
        data = {name: value for name, value in data.items() if name in fields}
    return digest(data)
