"""Edge conditions compiled once into plain Python closures, with Jinja's sandbox semantics.

A Jinja expression compiled by Jinja builds a fresh template `Context` (globals merged in) on
every call, ~20 µs for `last_message.tool_calls | length > 0`. For the node types conditions
are made of, this module builds a tree of closures that does exactly what Jinja's own
generated code does, and nothing else:

- names resolve from the call's variables, then the environment's globals, else to the
  environment's `Undefined` (as `resolve_or_missing` + `undefined(name=...)`);
- every `a.b` and `a[b]` goes through the sandboxed environment's `getattr` / `getitem`, the
  very checks that refuse private names and mutating methods;
- filters and tests are the environment's own functions, called as Jinja calls them;
- comparisons, `and` / `or` / `not` and arithmetic are the Python operators Jinja emits (the
  sandbox intercepts no operator by default; an environment that does is not compiled here).

Any other node — a call (`x.f()`, which the sandbox must check), a slice, `**`, `~`, a
conditional expression, a filter that wants the context — leaves the whole condition to
Jinja's compiled expression. The expression language is Jinja's parser, unchanged.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.parser import Parser
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import _PassArg

# One compiled node: the variables of one call to its value.
Eval = Callable[[Mapping[str, Any]], Any]

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gteq": operator.ge,
    "lt": operator.lt,
    "lteq": operator.le,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}
_BINARY: dict[type[nodes.BinExpr], Callable[[Any, Any], Any]] = {
    nodes.Add: operator.add,
    nodes.Sub: operator.sub,
    nodes.Mul: operator.mul,
    nodes.Div: operator.truediv,
    nodes.FloorDiv: operator.floordiv,
    nodes.Mod: operator.mod,
}


class _Unsupported(Exception):
    """A node this module does not compile: the condition stays with Jinja."""


def compile_native(env: SandboxedEnvironment, source: str) -> Callable[..., Any] | None:
    """The condition as a function of keyword variables, or None to leave it to Jinja (also
    when it does not parse: `env.compile_expression` then raises Jinja's own error)."""
    if env.intercepted_binops or env.intercepted_unops:
        return None
    parser = Parser(env, source, state="variable")
    try:
        expr = parser.parse_expression()
    except TemplateSyntaxError:
        return None
    if not parser.stream.eos:
        return None
    try:
        evaluate = _Builder(env).build(expr)
    except _Unsupported:
        return None

    def condition(**variables: Any) -> Any:
        return evaluate(variables)

    return condition


class _Builder:
    """Turns the nodes of one expression into closures."""

    def __init__(self, env: SandboxedEnvironment) -> None:
        self.env = env

    def build(self, node: nodes.Node) -> Eval:
        """The closure of one node; _Unsupported for a node left to Jinja."""
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise _Unsupported(type(node).__name__)
        evaluate: Eval = method(node)
        return evaluate

    def _Const(self, node: nodes.Const) -> Eval:
        value = node.value
        return lambda _: value

    def _Name(self, node: nodes.Name) -> Eval:
        if node.ctx != "load":
            raise _Unsupported("store")
        name, env = node.name, self.env
        globals_ = env.globals

        def resolve(variables: Mapping[str, Any]) -> Any:
            if name in variables:
                return variables[name]
            if name in globals_:
                return globals_[name]
            return env.undefined(name=name)

        return resolve

    def _Getattr(self, node: nodes.Getattr) -> Eval:
        obj, attr, getattr_ = self.build(node.node), node.attr, self.env.getattr
        # The sandbox's getattr on a plain dict tries the attribute first, fails, and then
        # takes the key: for a name no dict attribute has, the key is the same answer.
        keyed = not hasattr(dict, attr)

        def get(v: Mapping[str, Any]) -> Any:
            value = obj(v)
            if keyed and type(value) is dict and attr in value:
                return value[attr]
            return getattr_(value, attr)

        return get

    def _Getitem(self, node: nodes.Getitem) -> Eval:
        if isinstance(node.arg, nodes.Slice):
            raise _Unsupported("slice")
        obj, arg, getitem = self.build(node.node), self.build(node.arg), self.env.getitem
        return lambda v: getitem(obj(v), arg(v))

    def _Tuple(self, node: nodes.Tuple) -> Eval:
        items = [self.build(item) for item in node.items]
        return lambda v: tuple(item(v) for item in items)

    def _List(self, node: nodes.List) -> Eval:
        items = [self.build(item) for item in node.items]
        return lambda v: [item(v) for item in items]

    def _And(self, node: nodes.And) -> Eval:
        left, right = self.build(node.left), self.build(node.right)
        return lambda v: left(v) and right(v)

    def _Or(self, node: nodes.Or) -> Eval:
        left, right = self.build(node.left), self.build(node.right)
        return lambda v: left(v) or right(v)

    def _Not(self, node: nodes.Not) -> Eval:
        inner = self.build(node.node)
        return lambda v: not inner(v)

    def _Neg(self, node: nodes.Neg) -> Eval:
        inner = self.build(node.node)
        return lambda v: -inner(v)

    def _Pos(self, node: nodes.Pos) -> Eval:
        inner = self.build(node.node)
        return lambda v: +inner(v)

    def _binary(self, node: nodes.BinExpr) -> Eval:
        op = _BINARY.get(type(node))
        if op is None:
            raise _Unsupported(type(node).__name__)
        left, right = self.build(node.left), self.build(node.right)
        return lambda v: op(left(v), right(v))

    _Add = _Sub = _Mul = _Div = _FloorDiv = _Mod = _binary

    def _Compare(self, node: nodes.Compare) -> Eval:
        first = self.build(node.expr)
        ops = [(_COMPARE[o.op], self.build(o.expr)) for o in node.ops]

        def compare(v: Mapping[str, Any]) -> Any:
            # Chained as Python chains `a < b < c`: each operand evaluated once, left to right.
            left = first(v)
            result: Any = True
            for op, operand in ops:
                right = operand(v)
                result = op(left, right)
                if not result:
                    return result
                left = right
            return result

        return compare

    def _Filter(self, node: nodes.Filter) -> Eval:
        if node.node is None:
            raise _Unsupported("filter block")
        return self._call(self.env.filters, node)

    def _Test(self, node: nodes.Test) -> Eval:
        return self._call(self.env.tests, node)

    def _call(self, table: Mapping[str, Any], node: nodes.Filter | nodes.Test) -> Eval:
        func = table.get(node.name)
        if func is None or node.kwargs or node.dyn_args or node.dyn_kwargs:
            raise _Unsupported(node.name)
        passed = _PassArg.from_obj(func)
        if passed not in (None, _PassArg.environment):
            raise _Unsupported(f"{node.name} needs the context")
        value = self.build(node.node)  # type: ignore[arg-type]
        args = [self.build(a) for a in node.args]
        if passed is _PassArg.environment:
            env = self.env
            return lambda v: func(env, value(v), *[a(v) for a in args])
        if not args:
            return lambda v: func(value(v))
        return lambda v: func(value(v), *[a(v) for a in args])
