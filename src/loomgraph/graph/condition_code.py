"""Edge conditions compiled once into plain Python closures, with Jinja's sandbox semantics.

A Jinja expression compiled by Jinja builds a fresh template `Context` (globals merged in) on
every call, ~20 µs for `last_message.tool_calls | length > 0`. For the node types conditions
are made of, this module builds a tree of closures that does exactly what Jinja's own
generated code does, and nothing else:

- names resolve from the call's variables, then the environment's globals, else to the
  environment's `Undefined` (as `resolve_or_missing` + `undefined(name=...)`);
- every `a.b` and `a[b]` goes through the sandboxed environment's `getattr` / `getitem`, the
  very checks that refuse private names and mutating methods (a plain dict's key is read
  directly when that is what the environment's `getattr` would return);
- filters and tests are the environment's own functions, called as Jinja calls them;
- comparisons, `and` / `or` / `not` and arithmetic are the Python operators Jinja emits; an
  operator the environment intercepts (`intercepted_binops`: loomgraph bounds `*`, `**`, `%`
  and `+`) goes through its `call_binop`, as Jinja's generated code does (an environment that
  intercepts unary operators is not compiled here);
- a condition with such an operator, or with a filter marked `charges_budget`, runs through
  the environment's `run_budgeted` (one budget per evaluation: `condition_bounds`); the
  others (`x | length > 0`, comparisons, `visits.x < 3`) run with nothing added.

Conditions cannot loop: there is no statement in an expression, and a call (the only way to
run a macro) is left to Jinja, whose environment counts it.

Nesting is bounded before anything recursive sees it (`parse_bounded`): brackets by the
lexer's tokens, then the depth of the parse tree, so no condition or template can exhaust
the stack of Jinja's parser, its code generator or these closures (`TemplateSyntaxError`).

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

from loomgraph.errors import GraphError

# One compiled node: the variables of one call to its value.
Eval = Callable[[Mapping[str, Any]], Any]

MAX_BRACKETS = 20  # `(`, `[`, `{` open at once in one condition or template
MAX_NESTING = 50  # depth of its parse tree: operators, filters, `.attr` chains, `not`s
_OPENING, _CLOSING = frozenset("([{"), frozenset(")]}")

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


def too_deep(what: str) -> TemplateSyntaxError:
    """The error of a condition or template nested beyond the limits."""
    return TemplateSyntaxError(
        f"{what} is nested too deeply: at most {MAX_BRACKETS} brackets inside each other "
        f"and {MAX_NESTING} levels of operators, filters and attributes",
        lineno=1,
    )


# Tags that read another template through the environment's loader; loomgraph's has none.
_LOADER_TAGS: dict[type[nodes.Node], str] = {
    nodes.Include: "include",
    nodes.Extends: "extends",
    nodes.Import: "import",
    nodes.FromImport: "from",
}


LOADER_NOTE = (
    "templates are rendered without a loader (no file is read), so every render would fail: "
    "inline the text, or read it in a `function` node into a state field the template uses"
)


class LoaderTagError(TemplateSyntaxError, GraphError):
    """A template tag that reads another template (`{% include %}`, `{% extends %}`,
    `{% import %}`, `{% from %}`): the sandbox has no loader, so every render would fail.
    A `TemplateSyntaxError` (what callers of `compile_template` catch) and a `GraphError`."""

    def __init__(self, tag: str, lineno: int) -> None:
        self.tag = tag
        super().__init__(f"{{% {tag} %}} reads another template, but {LOADER_NOTE}", lineno)


def refuse_loader_tags(tree: nodes.Template) -> None:
    """Raise `LoaderTagError` for the first tag of a parsed template that needs a loader."""
    for node in tree.find_all(tuple(_LOADER_TAGS)):
        raise LoaderTagError(_LOADER_TAGS[type(node)], node.lineno)


def _tree_depth(root: nodes.Node, limit: int) -> int:
    """The depth of a parse tree, walked without recursion (stops once past `limit`)."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())
    return deepest


def parse_bounded(env: SandboxedEnvironment, source: str, *, expression: bool) -> Any:
    """Parse a condition (its expression node) or a template (its `Template` node); raise
    `TemplateSyntaxError` when it does not parse or is nested beyond the limits. Jinja's
    parser recurses once per bracket (about fifteen frames each), so brackets are counted
    on the lexer's tokens first; the tree's depth bounds what walks it later."""
    what = "the condition" if expression else "the template"
    state = "variable" if expression else None
    depth = 0
    try:
        for _, token, value in env.lexer.tokeniter(source, None, state=state):
            if token == "operator" and value in _OPENING:
                depth += 1
                if depth > MAX_BRACKETS:
                    raise too_deep(what)
            elif token == "operator" and value in _CLOSING:
                depth -= 1
    except TemplateSyntaxError as err:
        if "nested too deeply" in str(err.message):
            raise
        # A lexing error: the parser below reports it as Jinja does.
    try:
        if expression:
            parser = Parser(env, source, state="variable")
            tree: nodes.Node = parser.parse_expression()
            if not parser.stream.eos:
                parser.fail(f"unexpected {parser.stream.current.type!r}")
        else:
            tree = env.parse(source)
    except RecursionError:
        raise too_deep(what) from None
    limit = MAX_NESTING + (0 if expression else 8)  # a template's own statements nest too
    if _tree_depth(tree, limit) > limit:
        raise too_deep(what)
    return tree


def constant_truth(env: SandboxedEnvironment, source: str) -> bool | None:
    """Whether a condition holds at every run (True) or at none (False) because its value
    depends on nothing (`false`, `1 > 2`, `true or x`); None when it depends on the run or
    does not parse. Jinja folds it as its compiler does (`as_const`): the sandbox's getattr,
    the environment's filters and tests, no call, no intercepted operator; under the
    environment's budget (`run_budgeted`), since a filter may be run to fold it."""
    try:
        expr = parse_bounded(env, source, expression=True)
    except TemplateSyntaxError:
        return None
    context = nodes.EvalContext(env)
    run = getattr(env, "run_budgeted", None)
    try:
        value = run(expr.as_const, context) if run else expr.as_const(context)
        # What the interpreter does with it (`if holds:`).
        return bool(value)
    except Exception:  # nodes.Impossible: not constant; anything else is left to the run
        return None


def compile_native(
    env: SandboxedEnvironment, source: str, *, counts: str | None = None
) -> Callable[..., Any] | None:
    """The condition as a function of keyword variables, or None to leave it to Jinja (also
    when it does not parse: `env.compile_expression` then raises Jinja's own error). One
    nested beyond the limits raises `TemplateSyntaxError` (`too_deep`).

    `counts` names a variable holding a dict of counts (`visits`): `counts.x` and
    `counts['x']` read its key, and 0 for a key it does not hold (Jinja's own semantics
    would give `Undefined`), decided here once, at no cost per evaluation."""
    try:
        expr = parse_bounded(env, source, expression=True)
    except TemplateSyntaxError as err:
        if "nested too deeply" in str(err.message):
            raise
        return None
    if env.intercepted_unops:
        return None
    builder = _Builder(env, counts)
    try:
        evaluate = builder.build(expr)
    except _Unsupported:
        return None
    run = getattr(env, "run_budgeted", None)
    if builder.budgeted and run is not None:
        # An operation that counts what it makes (`*`, a sizing filter): one budget per call.
        def budgeted_condition(**variables: Any) -> Any:
            return run(evaluate, variables)

        return budgeted_condition

    def condition(**variables: Any) -> Any:
        return evaluate(variables)

    return condition


class _Builder:
    """Turns the nodes of one expression into closures."""

    def __init__(self, env: SandboxedEnvironment, counts: str | None = None) -> None:
        self.env = env
        self.counts = counts  # the variable whose missing keys read as 0 (`compile_native`)
        self.budgeted = False  # whether a node counts against the environment's budget

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

    def _count(self, node: nodes.Node, key: Any) -> Eval | None:
        """`counts.key` as the count under `key`, 0 when absent; None for another node."""
        name = node.name if isinstance(node, nodes.Name) else None
        if name is None or name != self.counts or not isinstance(key, str):
            return None
        obj, getitem = self.build(node), self.env.getitem

        def count(v: Mapping[str, Any]) -> Any:
            value = obj(v)
            if type(value) is dict:
                return value.get(key, 0)
            return getitem(value, key)

        return count

    def _Getattr(self, node: nodes.Getattr) -> Eval:
        if (count := self._count(node.node, node.attr)) is not None:
            return count
        obj, attr, getattr_ = self.build(node.node), node.attr, self.env.getattr
        # A plain dict's key is the environment's answer for a name no dict attribute has
        # (the sandbox tries the attribute, fails, takes the key), and for every name in an
        # environment that reads a mapping's keys first (`mapping_keys_first`: `d.items`).
        keyed = getattr(self.env, "mapping_keys_first", False) or not hasattr(dict, attr)

        def get(v: Mapping[str, Any]) -> Any:
            value = obj(v)
            if keyed and type(value) is dict and attr in value:
                return value[attr]
            return getattr_(value, attr)

        return get

    def _Getitem(self, node: nodes.Getitem) -> Eval:
        if isinstance(node.arg, nodes.Slice):
            raise _Unsupported("slice")
        key = node.arg.value if isinstance(node.arg, nodes.Const) else None
        if (count := self._count(node.node, key)) is not None:
            return count
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
        symbol = node.operator
        if symbol in self.env.intercepted_binops:
            # As Jinja's generated code: `environment.call_binop(context, "*", l, r)`; the
            # closures have no template context, and loomgraph's environment needs none.
            call, self.budgeted = self.env.call_binop, True
            return lambda v: call(None, symbol, left(v), right(v))  # type: ignore[arg-type]
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
        self.budgeted = self.budgeted or getattr(func, "charges_budget", False)
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
