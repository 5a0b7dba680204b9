"""Edge conditions and prompt templates as Jinja2 in a sandbox: no Python runs from a file."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
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
# A `%` conversion's flags, width and precision, after its mapping key (`_format_sizes`).
_FORMAT_SPEC = re.compile(r"[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _too_large(what: str) -> SecurityError:
    return SecurityError(
        f"result too large: {what} (conditions and templates are limited to "
        f"{MAX_RESULT_ITEMS:,} items per operation)"
    )


def _format_sizes(text: str) -> Iterator[tuple[str, str]]:
    """The width and precision of each conversion of a `%` format (each "" when not given),
    read as Python reads them: a mapping key `(…)` may hold parentheses of its own."""
    at = text.find("%")
    while at != -1:
        start, at = at, at + 1
        if text.startswith("(", at):
            depth = 0
            for end in range(at, len(text)):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            at = end + 1
        spec = _FORMAT_SPEC.match(text, at)
        if spec is not None:
            yield spec.group(1) or "", spec.group(2) or ""
            at = spec.end()
        if text.startswith("%", at) and at == start + 1:
            at += 1  # `%%` is a literal percent sign
        at = text.find("%", at)


def _weight(value: Any) -> int:
    """What repeating `value` once makes: its length, a list's items counted with theirs."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple):
        return len(value) + sum(len(v) for v in value if isinstance(v, str | bytes | list | tuple))
    return 1


def bounded_binop(operator: str, left: Any, right: Any) -> Any:
    """`*`, `**` and `%` as Python does them, refusing a result beyond the limits first."""
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            sized = isinstance(seq, str | bytes | list | tuple) and isinstance(times, int)
            if sized and _weight(seq) * times > MAX_RESULT_ITEMS:
                raise _too_large(f"{_weight(seq):,} items times {times:,}")
        return left * right
    if operator == "**":
        ints = isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1
        if ints and right * math.log2(abs(left)) > MAX_POWER_BITS:
            raise _too_large(f"{left} ** {right} has over {MAX_POWER_BITS:,} bits")
        return left**right
    if operator == "%" and isinstance(left, str):
        for width, precision in _format_sizes(left):
            for size in (width, precision):
                if size == "*" or (size and int(size) > MAX_RESULT_ITEMS):
                    raise _too_large(f"a width or precision of {size} in a '%' format")
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
