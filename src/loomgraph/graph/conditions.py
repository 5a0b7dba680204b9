"""Edge conditions and prompt templates as Jinja2 in a sandbox: no Python runs from a file."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from loomgraph.graph.condition_code import compile_native, parse_bounded, too_deep

# The most items (characters, list entries) one `*` or `%` may make, and the most bits of
# one `**`: a condition or template cannot allocate gigabytes with `'x' * 10**9`.
MAX_RESULT_ITEMS = 1_000_000
MAX_POWER_BITS = 100_000
# A width or precision in a `%` format: `'%1000000000s' % x` is as large as a product.
_FORMAT_SIZES = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _too_large(what: str) -> SecurityError:
    return SecurityError(
        f"result too large: {what} (conditions and templates are limited to "
        f"{MAX_RESULT_ITEMS:,} items per operation)"
    )


def bounded_binop(operator: str, left: Any, right: Any) -> Any:
    """`*`, `**` and `%` as Python does them, refusing a result beyond the limits first."""
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            sized = isinstance(seq, str | bytes | list | tuple) and isinstance(times, int)
            if sized and len(seq) * times > MAX_RESULT_ITEMS:
                raise _too_large(f"{len(seq):,} items times {times:,}")
        return left * right
    if operator == "**":
        ints = isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1
        if ints and right * math.log2(abs(left)) > MAX_POWER_BITS:
            raise _too_large(f"{left} ** {right} has over {MAX_POWER_BITS:,} bits")
        return left**right
    if operator == "%" and isinstance(left, str):
        for match in _FORMAT_SIZES.finditer(left):
            for size in match.groups():
                if size == "*" or (size is not None and int(size) > MAX_RESULT_ITEMS):
                    raise _too_large(f"the format {match.group(0)!r} in a '%'")
    if operator == "%":
        return left % right
    raise SecurityError(f"operator {operator!r} is not bounded")  # pragma: no cover


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with `*`, `**` and `%` bounded (`bounded_binop`)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        return bounded_binop(operator, left, right)


@cache
def environment() -> ImmutableSandboxedEnvironment:
    """The one sandboxed environment for conditions and templates (immutable: no .append;
    `*`, `**` and `%` bounded)."""
    return _BoundedEnvironment(autoescape=False, keep_trailing_newline=True)


def compile_condition(expression: str) -> Callable[..., Any]:
    """Compile an edge condition; raises jinja2.TemplateSyntaxError when it does not parse
    or is nested too deeply (`condition_code.parse_bounded`).

    It runs as plain closures with the sandbox's semantics when it parses and is made only
    of the nodes `condition_code` knows; otherwise Jinja compiles it (and raises its own
    syntax and unknown-filter errors) and it runs as Jinja's compiled expression."""
    env = environment()
    try:
        native = compile_native(env, expression)
        if native is not None:
            return native
        return env.compile_expression(expression, undefined_to_none=False)
    except RecursionError:  # the bounds should stop it first; never a traceback
        raise too_deep("the condition") from None


def compile_template(source: str) -> Callable[[Mapping[str, Any]], str]:
    """Compile a prompt template into a function of the state; raises TemplateSyntaxError
    when it does not parse or is nested too deeply."""
    env = environment()
    try:
        template = env.from_string(parse_bounded(env, source, expression=False))
    except RecursionError:
        raise too_deep("the template") from None
    return template.render


def names_used(source: str, *, expression: bool) -> set[str]:
    """The top-level names a condition or template refers to (for read checks); a name called
    like a function (`len(x)`) is no state field, and validation reports the call."""
    text = "{{ " + source + " }}" if expression else source
    try:
        tree = parse_bounded(environment(), text, expression=False)
    except (TemplateSyntaxError, RecursionError):
        return set()
    called = {c.node.name for c in tree.find_all(nodes.Call) if isinstance(c.node, nodes.Name)}
    return set(meta.find_undeclared_variables(tree)) - called


def condition_scope(
    state: Mapping[str, Any], visits: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """What a condition or template sees: every state field, `state`, `last_message`, and
    `visits` (how often each node ran so far, e.g. `visits.replan < 3`)."""
    messages = state.get("messages") or ()
    return {
        **state,
        "state": state,
        "last_message": messages[-1] if messages else {},
        "visits": visits or {},
    }
