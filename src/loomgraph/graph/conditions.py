"""Edge conditions and prompt templates as Jinja2 in a sandbox: no Python runs from a file."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from loomgraph.graph.condition_code import compile_native


@cache
def environment() -> ImmutableSandboxedEnvironment:
    """The one sandboxed environment for conditions and templates (immutable: no .append)."""
    return ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=True)


def compile_condition(expression: str) -> Callable[..., Any]:
    """Compile an edge condition; raises jinja2.TemplateSyntaxError when it does not parse.

    It runs as plain closures with the sandbox's semantics when it parses and is made only
    of the nodes `condition_code` knows; otherwise Jinja compiles it (and raises its own
    syntax and unknown-filter errors) and it runs as Jinja's compiled expression."""
    env = environment()
    native = compile_native(env, expression)
    if native is not None:
        return native
    return env.compile_expression(expression, undefined_to_none=False)


def compile_template(source: str) -> Callable[[Mapping[str, Any]], str]:
    """Compile a prompt template into a function of the state."""
    template = environment().from_string(source)
    return template.render


def names_used(source: str, *, expression: bool) -> set[str]:
    """The top-level names a condition or template refers to (for read checks); a name called
    like a function (`len(x)`) is no state field, and validation reports the call."""
    text = "{{ " + source + " }}" if expression else source
    try:
        tree = environment().parse(text)
    except TemplateSyntaxError:
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
