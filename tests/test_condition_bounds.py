"""Conditions and templates cannot exhaust memory or CPU: every operation that grows a value,
every loop and every call is bounded, and validation refuses calls it cannot prove safe.

Anything that would blow up without the bounds runs in a subprocess with limits on its memory
and CPU, so a regression fails the test instead of taking the machine down.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from loomgraph.graph.condition_code import compile_native
from loomgraph.graph.conditions import compile_condition, compile_template, environment
from loomgraph.graph.jinja_problems import source_problems

_WORKER = textwrap.dedent(
    """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))
    resource.setrlimit(resource.RLIMIT_CPU, (20, 20))
    from loomgraph.graph.conditions import compile_condition, compile_template
    kind, source = sys.argv[1], sys.argv[2]
    scope = {"input": "x", "items": ["a", "b"]}
    try:
        if kind == "cond":
            value = compile_condition(source)(**scope)
        else:
            value = compile_template(source)(scope)
        print("VALUE", len(value) if hasattr(value, "__len__") else value)
    except Exception as err:
        print(type(err).__name__, str(err)[:300])
    """
)


def _run(kind: str, source: str) -> str:
    """What evaluating `source` prints in a bounded subprocess (its error type first)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _WORKER, kind, source],
            capture_output=True,
            text=True,
            timeout=40,
        )
    except subprocess.TimeoutExpired:
        return "TIMEOUT"
    return done.stdout.strip() or f"DIED {done.returncode}: {done.stderr[-500:]}"


GROWING_CONDITIONS = {
    "center": "'x'|center(100000000)",
    "ljust": "'x'.ljust(100000000)",
    "rjust": "'x'.rjust(100000000)",
    "zfill": "'x'.zfill(100000000)",
    "format-filter": "'%100000000d'|format(1)",
    "str-format-width": "'{:100000000}'.format(1)",
    "str-format-nested-width": "'{0:{1}}'.format(1, 100000000)",
    "str-format-precision": "'{:.100000000f}'.format(1.0)",
    "format-map": "'{a:100000000}'.format_map({'a': 1})",
    "replace-filter": "('a'*1000000)|replace('a','a'*100)",
    "replace-method": "('a'*1000000).replace('a','a'*100)",
    "join-filter": "('x'*10000)|list|join('y'*10000)",
    "join-method": "('y'*10000).join(('x'*10000)|list)",
    "indent": "'a\\nb'|indent(100000000)",
    "expandtabs": "('\\t'*1000).expandtabs(100000)",
    "slice": "[1]|slice(10000000)|list|length",
    "batch": "[1]|batch(10000000, 0)|list|length",
    "nested-string": "([[['x'*999999]]]*499999)|string|length",
    "percent-total": "('%1000000d' * 300) % ((1,) * 300)",
    "concat": "('x'*1000000) ~ ('x'*1000000)",
    "plus": "('x'*1000000) + ('x'*1000000)",
    "to-bytes": "(1).to_bytes(100000000, 'big')",
    "translate": "('x'*100000).translate({120: 'y'*1000})",
    "map-center-cpu": "('x'*1000000)|list|map('center', 1000)|map('length')|sum",
    "many-items": "[" + ", ".join(["'x'*999999"] * 30) + "]|length",
    "tojson": "([['\\x00'*999999]]*1)|tojson|length",
    "wordwrap": "('a '*400000)|wordwrap(1, wrapstring='x'*1000)",
    "truncate-end": "('a'*999999)|truncate(999998, end='x'*999999)",
}


@pytest.mark.parametrize("source", GROWING_CONDITIONS.values(), ids=GROWING_CONDITIONS)
def test_a_growing_operation_is_refused_before_it_allocates(source: str) -> None:
    out = _run("cond", source)
    assert out.startswith("SecurityError"), out
    assert "too large" in out or "at most" in out, out


GROWING_TEMPLATES = {
    "concat-doubling": "{% set a = 'x'*1000000 %}" + "{% set a = a ~ a %}" * 7 + "{{ a|length }}",
    "plus-doubling": "{% set a = 'x'*1000000 %}" + "{% set a = a + a %}" * 7 + "{{ a|length }}",
    "many-sets": "".join(f"{{% set a{i} = 'x'*999999 %}}" for i in range(40)) + "ok",
    "output-of-a-loop": "{% for c in 'x'*50000 %}{{ [['x'*999999]] }}{% endfor %}",
    "set-block-of-a-loop": "{% set s %}{% for c in 'x'*50000 %}{{ ['x'*999999] }}"
    "{% endfor %}{% endset %}{{ s|length }}",
}


@pytest.mark.parametrize("source", GROWING_TEMPLATES.values(), ids=GROWING_TEMPLATES)
def test_a_template_cannot_grow_without_bound(source: str) -> None:
    out = _run("tmpl", source)
    assert out.startswith("SecurityError"), out


ENDLESS_TEMPLATES = {
    "nested-loops": "{% for a in 'x'*1000000 %}{% for b in 'x'*1000000 %}{% endfor %}"
    "{% endfor %}done",
    "one-long-loop": "{% for a in 'x'*1000000 %}{% endfor %}done",
    "exponential-macro": "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}"
    "{% endmacro %}{{ f(60) }}",
    "recursive-loop": "{% for a in 'x'*1000 recursive %}{% if loop.depth < 3 %}"
    "{{ loop('x'*1000) }}{% endif %}{% endfor %}",
    "loop-filter": "{% for a in 'x'*1000000 if a %}{% for b in 'x'*1000000 if b %}{% endfor %}"
    "{% endfor %}",
}


@pytest.mark.parametrize("source", ENDLESS_TEMPLATES.values(), ids=ENDLESS_TEMPLATES)
def test_a_template_cannot_loop_without_end(source: str) -> None:
    out = _run("tmpl", source)
    assert out.startswith("SecurityError"), out
    assert "100,000" in out, out


def test_loops_up_to_the_limit_still_work() -> None:
    render = compile_template("{% for a in 'x'*100000 %}{% endfor %}{{ items|join(',') }}")
    assert render({"items": ["a", "b"]}) == "a,b"
    over = compile_template("{% for a in 'x'*100001 %}{% endfor %}")
    with pytest.raises(Exception, match="100,000"):
        over({})


def test_the_budget_is_per_render() -> None:
    render = compile_template("{% for a in 'x'*60000 %}{% endfor %}{{ (input * 900000)|length }}")
    for _ in range(3):  # each render has its own budget
        assert render({"input": "x"}) == "900000"


def test_ordinary_templates_and_conditions_still_work() -> None:
    render = compile_template(
        "{{ input|center(9) }}|{{ 'a\\nb'|indent(2) }}|{{ '%05d'|format(42) }}|"
        "{{ '{:>4}'.format(7) }}|{{ items|join(', ') }}|{{ 'abc'|replace('b', 'XY') }}|"
        "{{ [1, 2, 3]|batch(2)|list }}|{{ [1, 2, 3]|slice(2)|list }}|{{ input ~ 'y' }}|"
        "{{ 'ab'.ljust(4, '.') }}|{{ items|tojson }}|{% for i in items %}{{ loop.index }}"
        "{{ loop.cycle('-', '+') }}{% endfor %}"
    )
    assert render({"input": "x", "items": ["a", "b"]}) == (
        '    x    |a\n  b|00042|   7|a, b|aXYc|[[1, 2], [3]]|[[1, 2], [3]]|xy|ab..|["a", "b"]|1-2+'
    )
    assert compile_condition("items|join(',') == 'a,b'")(items=["a", "b"]) is True
    assert compile_condition("'%s-%s' % (1, 2) == '1-2'")() is True
    assert compile_condition("input + 'y' == 'xy'")(input="x") is True
    assert compile_condition("visits.x + 1 < 3")(visits={"x": 1}) is True


def test_common_conditions_stay_native_and_unwrapped() -> None:
    env = environment()
    for source in ("last_message.tool_calls | length > 0", "visits.replan < 3", "a == 'b'"):
        native = compile_native(env, source)
        assert native is not None
        assert compile_condition(source).__name__ == "condition", source


# --------------------------------------------------------------------------- validation

REFUSED_CALLS = [
    "[lipsum][0](100000, false, 20, 100)|length",
    "[range][0](100000)|list|length",
    "[namespace][0](a=1)",
    "(input|attr('upper'))()",
    "{'f': input.upper}['f']()",
    "input.upper()()",
    "input.no_such_method()",
]


@pytest.mark.parametrize("source", REFUSED_CALLS)
def test_validation_refuses_a_call_it_cannot_prove_is_a_method(source: str) -> None:
    problems = source_problems(source, expression=True)
    assert problems and "call" in problems[0], problems


@pytest.mark.parametrize("method", ["append", "pop", "update", "clear", "setdefault"])
def test_validation_refuses_mutating_methods(method: str) -> None:
    problems = source_problems(f"messages.{method}('x') or true", expression=True)
    assert problems and "change" in problems[0], problems


ALLOWED_CALLS = [
    "output.startswith('yes')",
    "input.strip().lower() == 'y'",
    "d.items() | list",
    "d.get('k', 1) > 0",
    "'{}'.format(input)",
]


@pytest.mark.parametrize("source", ALLOWED_CALLS)
def test_validation_allows_methods_of_values(source: str) -> None:
    assert source_problems(source, expression=True) == []


def test_the_sandbox_has_no_callable_globals() -> None:
    for name in ("lipsum", "range", "namespace", "cycler", "joiner", "dict"):
        assert name not in environment().globals
