"""What a dataset's schema cannot see, checked when it loads: cases sharing an id, evaluators
sharing a name, and what could only fail once a run is scored — an answer's regular
expression or JSON Schema (valid, its `$ref`s followable), a judge's rubric (a template naming
only what the judge gives), a custom evaluator's `call`."""

from __future__ import annotations

import re
from typing import Any

from loomgraph.authoring.loader import nearest_line
from loomgraph.errors import Problem
from loomgraph.eval.cases import BUILT_IN_EVALUATORS, Case, EvaluatorSpec

__all__ = ["RUBRIC_VARIABLES", "item_problems", "rubric_problems", "schema_problem"]

# What a judge's rubric may name (the Jinja2 variables `JudgeEvaluator` renders it with).
RUBRIC_VARIABLES = frozenset({"case", "input", "answer", "tool_calls", "status"})


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why `schema` cannot check an answer (completing "json_schema ..."), or None: it is
    no JSON Schema, a `$ref` leads nowhere inside it (the answer evaluator follows none
    outside: `local_validator`), or its `$ref`s loop. The checks tools' schemas get."""
    import jsonschema

    from loomgraph.tools.json_schema import unresolvable_ref
    from loomgraph.tools.mcp.schema_refs import ref_problem

    cls = jsonschema.Draft202012Validator
    try:
        cls.check_schema(schema)
        ref = unresolvable_ref(cls, schema)
        if ref is not None:
            return (
                f"has a $ref {ref!r} that does not resolve inside the schema; a $ref is "
                "followed only within the schema (put what it names under $defs), never fetched"
            )
        loop = ref_problem(cls, schema)
    except jsonschema.exceptions.SchemaError as err:
        where = "/".join(str(p) for p in err.absolute_path)
        return f"is not a JSON Schema: {where + ': ' if where else ''}{err.message}"
    except RecursionError:
        return "is not a JSON Schema: it nests too deeply"
    return loop


def rubric_problems(rubric: str) -> list[str]:
    """What is wrong with a judge's rubric: it is no Jinja2 template, reads a name starting
    with `_` (its sandbox refuses it at every score), or names what the judge does not give
    (RUBRIC_VARIABLES)."""
    from jinja2 import TemplateSyntaxError, meta
    from jinja2.sandbox import SandboxedEnvironment

    from loomgraph.graph.jinja_problems import private_problems

    try:
        parsed = SandboxedEnvironment().parse(rubric)
    except TemplateSyntaxError as err:
        return [f"the rubric is not a valid template (its line {err.lineno}): {err.message}"]
    problems = [f"the rubric {why}" for why in private_problems(parsed, rubric)]
    unknown = sorted(meta.find_undeclared_variables(parsed) - RUBRIC_VARIABLES)
    if unknown:
        names = ", ".join(unknown)
        known = ", ".join(sorted(RUBRIC_VARIABLES))
        problems.append(
            f"the rubric names {names}, which the judge does not give (it gives {known})"
        )
    return problems


def item_problems(
    cases: list[tuple[int, Case]],
    specs: list[tuple[int, EvaluatorSpec]],
    lines: dict[tuple[str | int, ...], int],
    file: str,
) -> list[Problem]:
    """What the schema cannot see: cases sharing an id, answer checks that cannot work,
    evaluators that cannot be made or share a name."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, case in cases:
        if case.id in seen:
            problems.append(
                Problem(
                    "duplicate-case",
                    f"case id {case.id!r} is used twice (first by cases.{seen[case.id]})",
                    file,
                    nearest_line(lines, ("cases", index)),
                )
            )
        seen.setdefault(case.id, index)
    for index, case in cases:
        problems.extend(_answer_problems(case, lines, file, index))
    for index, spec in specs:
        where = nearest_line(lines, ("evaluators", index))
        problems.extend(
            Problem("evaluator", f"evaluators.{index}: {message}", file, where)
            for message in _evaluator_problems(spec)
        )
    problems.extend(_name_problems(specs, lines, file))
    return problems


def _answer_problems(
    case: Case, lines: dict[tuple[str | int, ...], int], file: str, index: int
) -> list[Problem]:
    """The answer checks that could only fail when a run is scored: a regular expression
    that does not compile, a JSON Schema that is not one or whose `$ref`s cannot be
    followed."""
    check = case.expect.answer
    if check is None:
        return []
    at = ("cases", index, "expect", "answer")
    problems: list[Problem] = []
    if check.regex is not None:
        try:
            re.compile(check.regex)
        except (re.error, OverflowError, RecursionError) as err:
            where = nearest_line(lines, (*at, "regex"))
            message = f"cases.{index}.expect.answer.regex is not a regular expression: {err}"
            problems.append(Problem("answer-check", message, file, where))
    if check.json_schema is not None:
        why = schema_problem(check.json_schema)
        if why is not None:
            where = nearest_line(lines, (*at, "json_schema"))
            message = f"cases.{index}.expect.answer.json_schema {why}"
            problems.append(Problem("answer-check", message, file, where))
    return problems


def _evaluator_problems(spec: EvaluatorSpec) -> list[str]:
    """What is wrong with an evaluator the dataset adds: a missing or misplaced key, a
    rubric that is no template or names what the judge does not give, a malformed `call`."""
    problems: list[str] = []
    if spec.kind == "judge":
        if not spec.rubric:
            problems.append("a judge evaluator needs `rubric`")
        else:
            problems.extend(rubric_problems(spec.rubric))
        if spec.call is not None:
            problems.append("a judge evaluator takes no `call` (that is a custom evaluator's)")
        return problems
    if not spec.call:
        problems.append("a custom evaluator needs `call`")
    else:
        module, _, attr = spec.call.partition(":")
        if not module or not attr:
            problems.append(f"`call` {spec.call!r} is not an import path MODULE:ATTR")
    misplaced = [k for k in ("rubric", "model", "max_tokens") if getattr(spec, k) is not None]
    if misplaced:
        problems.append(f"a custom evaluator takes no {', '.join(f'`{k}`' for k in misplaced)}")
    return problems


def _name_problems(
    specs: list[tuple[int, EvaluatorSpec]], lines: dict[tuple[str | int, ...], int], file: str
) -> list[Problem]:
    """Evaluators sharing a name (a built-in's included): their scores would be merged."""
    problems: list[Problem] = []
    seen: dict[str, str] = {name: "a built-in evaluator" for name in BUILT_IN_EVALUATORS}
    for index, spec in specs:
        name = spec.evaluator_name()
        if name in seen:
            named = "" if spec.name else " (its default name)"
            message = (
                f"evaluators.{index}: the name {name!r}{named} is taken by {seen[name]}; "
                "give each evaluator its own `name`, or their scores are merged"
            )
            where = nearest_line(lines, ("evaluators", index))
            problems.append(Problem("duplicate-evaluator", message, file, where))
        seen.setdefault(name, f"evaluators.{index}")
    return problems
