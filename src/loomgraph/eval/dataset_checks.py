"""What could only fail once a run is scored, checked when a dataset loads: an answer's JSON
Schema (valid, its `$ref`s followable) and a judge's rubric (a template naming only what the
judge gives)."""

from __future__ import annotations

from typing import Any

__all__ = ["RUBRIC_VARIABLES", "rubric_problems", "schema_problem"]

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
    """What is wrong with a judge's rubric: it is no Jinja2 template, or it names what the
    judge does not give (RUBRIC_VARIABLES)."""
    from jinja2 import TemplateSyntaxError, meta
    from jinja2.sandbox import SandboxedEnvironment

    try:
        parsed = SandboxedEnvironment().parse(rubric)
    except TemplateSyntaxError as err:
        return [f"the rubric is not a valid template (its line {err.lineno}): {err.message}"]
    unknown = sorted(meta.find_undeclared_variables(parsed) - RUBRIC_VARIABLES)
    if not unknown:
        return []
    names = ", ".join(unknown)
    known = ", ".join(sorted(RUBRIC_VARIABLES))
    return [f"the rubric names {names}, which the judge does not give (it gives {known})"]
