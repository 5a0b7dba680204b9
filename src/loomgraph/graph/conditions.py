"""Edge conditions and prompt templates as Jinja2 in a sandbox: no Python runs from a file."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cache
from typing import Any

from jinja2 import Template, TemplateSyntaxError, meta, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.filters import make_attrgetter
from jinja2.runtime import LoopContext
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import _PassArg
from markupsafe import Markup

from loomgraph.graph import condition_bounds as bounds
from loomgraph.graph.condition_bounds import (
    MAX_ITEMS_PER_RUN,
    MAX_POWER_BITS,
    MAX_RESULT_ITEMS,
    MAX_STEPS,
    bounded_binop,
    charge,
    run_budgeted,
)
from loomgraph.graph.condition_code import (
    compile_native,
    constant_truth,
    parse_bounded,
    refuse_loader_tags,
    too_deep,
)
from loomgraph.graph.condition_visits import VISITS, VisitCounts

__all__ = ["MAX_ITEMS_PER_RUN", "MAX_POWER_BITS", "MAX_RESULT_ITEMS", "MAX_STEPS", "bounded_binop"]
_SIZED = (str, bytes, list, tuple, dict)


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with every loop counted and `~` bounded."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        """A loop over `environment.loop_items(iterable)` (a call the sandbox makes)."""
        lineno = node.lineno
        items = nodes.Call(
            nodes.EnvironmentAttribute("loop_items", lineno=lineno),
            [node.iter],
            [],
            None,
            None,
            lineno=lineno,
        )
        counted = nodes.For(
            node.target, items, node.body, node.else_, node.test, node.recursive, lineno=lineno
        )
        super().visit_For(counted, frame)

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        """`a ~ b` as `environment.concat_values(join, (a, b))`, sized before it is made."""
        join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        self.write(f"environment.concat_values({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _BoundedFormatting:
    """`str.format` that sizes each field before it formats it."""

    made = 0

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        """Format, counting from the length of the format itself."""
        self.made = len(format_string)
        return super().vformat(format_string, args, kwargs)  # type: ignore[misc,no-any-return]

    def format_field(self, value: Any, format_spec: str) -> Any:
        """One field, refused first when the whole would be too large."""
        self.made += bounds.format_field_size(value, format_spec)
        if self.made > MAX_RESULT_ITEMS:
            raise bounds.too_large("a str.format", self.made)
        return super().format_field(value, format_spec)  # type: ignore[misc]


class _Formatter(_BoundedFormatting, SandboxedFormatter):
    """The sandbox's formatter, bounded."""


class _EscapeFormatter(_BoundedFormatting, SandboxedEscapeFormatter):
    """The sandbox's formatter of `Markup` strings, bounded."""


class _Template(Template):
    """A template whose every render has a budget of its own."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        """Render with a fresh budget (`condition_bounds.run_budgeted`)."""
        rendered: str = run_budgeted(super().render, *args, **kwargs)
        return rendered


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with every growing operation, loop and call bounded (`condition_bounds`)
    and no callable globals (`range`, `lipsum`, `dict`, `namespace`, `cycler`, `joiner`)."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _CodeGenerator
    template_class = _Template

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self._finalize, **options)
        self.globals.clear()
        for name in bounds.REMOVED_FILTERS:
            self.filters.pop(name, None)
        for name, size in bounds.FILTER_SIZES.items():
            self.filters[name] = _bounded_filter(name, self.filters[name], size)
        for name in bounds.COPYING_FILTERS:
            self.filters[name] = _bounded_filter(name, self.filters[name], None)
        self.filters["join"] = _bounded_join(self.filters["join"])
        self.filters["sum"] = _bounded_sum(self.filters["sum"])

    # A state field typed with a pydantic model holds a dict: `cart.items` must read its
    # field `items`, as `plan.steps` reads `steps`, not the dict's method (Jinja's order).
    # `condition_code` reads this to take a dict's key directly for any name.
    mapping_keys_first = True

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`obj.attribute`: a mapping's key of that name first (`cart.items`, `d.keys`), else
        the sandbox's lookup with its checks. A key is what `obj['attribute']` reads, data
        and never an attribute, so nothing the sandbox refuses becomes reachable."""
        if type(obj) is dict or isinstance(obj, Mapping):
            try:
                if attribute in obj:
                    return obj[attribute]
            except (TypeError, LookupError):
                pass
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """`*`, `**`, `%` and `+`, bounded."""
        return bounded_binop(operator, left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """A call (one step), refused first when it would make too much."""
        if getattr(obj, "__func__", None) is _BoundedEnvironment.loop_items:
            return obj(*args)  # a loop's start: its iterations are the steps
        name = getattr(obj, "__name__", type(obj).__name__)
        bounds.step(f"a call of {name!r}")
        if isinstance(obj, LoopContext) and args:  # `loop(children)` of a recursive loop
            args = (bounds.counted(args[0]), *args[1:])
        elif name == "join" and isinstance(getattr(obj, "__self__", None), str | bytes):
            args = (list(args[0]), *args[1:]) if args else args
        size = bounds.method_size(obj, args, kwargs)
        if size is not None:
            charge(size, f"the method {name!r}")
        result = super().call(context, obj, *args, **kwargs)
        if size is None and isinstance(result, _SIZED):
            charge(len(result), f"the method {name!r}", per_operation=False)
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` and `format_map` through the bounded formatter."""
        if getattr(value, "__name__", None) not in ("format", "format_map"):
            return None
        owner = getattr(value, "__self__", None)
        if not isinstance(owner, str):
            return None
        formatter = (
            _EscapeFormatter(self, escape=owner.escape)
            if isinstance(owner, Markup)
            else _Formatter(self)
        )
        text_type, is_map = type(owner), value.__name__ == "format_map"

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                return text_type(formatter.vformat(owner, (), args[0]))
            return text_type(formatter.vformat(owner, args, kwargs))

        bounded_format.__name__ = value.__name__
        return bounded_format

    def run_budgeted(self, function: Callable[..., Any], *args: Any) -> Any:
        """`function(*args)` as one evaluation with a budget of its own."""
        return run_budgeted(function, *args)

    def loop_items(self, iterable: Any) -> Iterator[Any]:
        """A loop's items, counted (`condition_bounds.counted`)."""
        return bounds.counted(iterable)

    def concat_values(self, join: Callable[[Any], str], values: tuple[Any, ...]) -> str:
        """`a ~ b`, bounded."""
        return bounds.bounded_concat(join, values)

    def concat(self, pieces: Iterable[str]) -> str:
        """A template's rendered text (or a block's), counted piece by piece."""
        out = []
        for piece in pieces:
            charge(len(piece), "the rendered text", per_operation=False)
            out.append(piece)
        return "".join(out)

    @staticmethod
    def _finalize(value: Any) -> Any:
        """What `{{ value }}` writes: a value that is not a string counts as its text."""
        if type(value) is not str:
            size = bounds.text_size(value, bounds.remaining_items() + 1)
            charge(size, "the text of a value", per_operation=False)
        return value


def _bounded_filter(name: str, func: Any, size: Callable[..., int] | None) -> Any:
    """`func` refused first when `size` of its arguments is too large; when `size` is None,
    what it returns counts towards the evaluation's budget."""
    skip = 1 if _PassArg.from_obj(func) is not None else 0
    what = f"the filter {name!r}"

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if size is not None:
            charge(size(*args[skip:], **kwargs), what)
        result = func(*args, **kwargs)
        if size is None and isinstance(result, _SIZED):
            charge(len(result), what, per_operation=False)
        return result

    bounded.charges_budget = True  # type: ignore[attr-defined]
    return bounded


def _bounded_join(func: Any) -> Any:
    """The `join` filter, sized before it joins."""

    @functools.wraps(func)
    def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
        items = list(value)
        if attribute is not None:
            items = list(map(make_attrgetter(eval_ctx.environment, attribute), items))
        charge(bounds.join_size(str(d), items), "the filter 'join'")
        joined: str = func(eval_ctx, items, d)
        return joined

    join.charges_budget = True  # type: ignore[attr-defined]
    return join


def _bounded_sum(func: Any) -> Any:
    """The `sum` filter: summing strings or lists copies the sum so far at each item."""

    @functools.wraps(func)
    def sum_(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
        items = list(iterable)
        if attribute is not None:
            items = list(map(make_attrgetter(environment, attribute), items))
        if isinstance(start, str | bytes | list | tuple):
            size = work = len(start)
            for item in items:
                size += len(item) if isinstance(item, _SIZED) else 0
                work += size
                if size > MAX_RESULT_ITEMS or work > MAX_ITEMS_PER_RUN:
                    break
            charge(size, "the filter 'sum'")
            charge(work, "the filter 'sum'", per_operation=False)
        return func(environment, items, start=start)

    sum_.charges_budget = True  # type: ignore[attr-defined]
    return sum_


@cache
def environment() -> ImmutableSandboxedEnvironment:
    """The one sandboxed environment for conditions and templates (immutable: no .append;
    every growing operation, loop and call bounded: `condition_bounds`)."""
    return _BoundedEnvironment(autoescape=False, keep_trailing_newline=True)


def compile_condition(expression: str) -> Callable[..., Any]:
    """Compile an edge condition; raises jinja2.TemplateSyntaxError when it does not parse
    or is nested too deeply (`condition_code.parse_bounded`).

    It runs as plain closures with the sandbox's semantics when it parses and is made only
    of the nodes `condition_code` knows; otherwise Jinja compiles it (and raises its own
    syntax and unknown-filter errors) and it runs as Jinja's compiled expression. Either
    way `visits.x` of a node not visited yet is 0 (validation refuses a name that is no
    node): the closures read it so when compiled, Jinja's form gets `VisitCounts`."""
    env = environment()
    try:
        native = compile_native(env, expression, counts=VISITS)
        if native is not None:
            return native
        # Compiled under a budget: Jinja folds constant filters at compile time.
        compiled = run_budgeted(env.compile_expression, expression, undefined_to_none=False)
    except RecursionError:  # the bounds should stop it first; never a traceback
        raise too_deep("the condition") from None

    def evaluate(**variables: Any) -> Any:
        counts = variables.get(VISITS)
        if type(counts) is dict:
            variables[VISITS] = VisitCounts(counts)
        return run_budgeted(compiled, **variables)

    return evaluate


def compile_template(source: str) -> Callable[[Mapping[str, Any]], str]:
    """Compile a prompt template into a function of the state; raises TemplateSyntaxError
    when it does not parse, is nested too deeply, or reads another template (`{% include %}`:
    `LoaderTagError`). Each render has its own budget."""
    env = environment()
    try:
        tree = parse_bounded(env, source, expression=False)
        refuse_loader_tags(tree)  # else a TypeError ("no loader") at every render
        template = run_budgeted(env.from_string, tree)
    except RecursionError:
        raise too_deep("the template") from None
    render: Callable[[Mapping[str, Any]], str] = template.render
    return render


def constant_condition(expression: str) -> bool | None:
    """True for a condition that holds at every run, False for one that holds at none
    (`"false"`, `"1 > 2"`), None when its value depends on the run (or it does not parse)."""
    return constant_truth(environment(), expression)


def names_used(source: str, *, expression: bool) -> set[str]:
    """The top-level names a condition or template refers to (for read checks); a name called
    like a function (`len(x)`) is no state field, and validation reports the call."""
    text = "{{ " + source + " }}" if expression else source
    try:
        tree = parse_bounded(environment(), text, expression=False)
        undeclared = meta.find_undeclared_variables(tree)  # compiles: `x is None` fails here
    except (TemplateSyntaxError, RecursionError):
        return set()
    called = {c.node.name for c in tree.find_all(nodes.Call) if isinstance(c.node, nodes.Name)}
    return (set(undeclared) | _self_read(tree)) - called


def _self_read(tree: nodes.Template) -> set[str]:
    """{"self"} when the source reads `self` without setting it: Jinja declares `self` in
    every template (a reference to its blocks, empty here), so it is never "undeclared"."""
    names = [(n.name, n.ctx) for n in tree.find_all(nodes.Name) if n.name == "self"]
    return {"self"} if ("self", "load") in names and ("self", "store") not in names else set()


def keys_read(of: str, source: str, *, expression: bool) -> list[str]:
    """The keys a condition or template reads of the name `of` (`of.x`, `of['x']`), in
    order; a method called on it (`visits.get('x')`) is not one. [] when it does not parse
    (reported on its own)."""
    try:
        tree = parse_bounded(environment(), source, expression=expression)
    except (TemplateSyntaxError, RecursionError):
        return []
    # An expression's root may itself be the read or the call (`visits.x`, `visits.get('x')`):
    # find_all skips the root.
    every = [tree, *tree.find_all((nodes.Call, nodes.Getattr, nodes.Getitem))]
    called = {id(c.node) for c in every if isinstance(c, nodes.Call)}
    names = []
    for node in every:
        if not isinstance(node, nodes.Getattr | nodes.Getitem) or id(node) in called:
            continue
        if not (isinstance(node.node, nodes.Name) and node.node.name == of):
            continue
        if isinstance(node, nodes.Getattr):
            names.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            names.append(node.arg.value)
    return list(dict.fromkeys(names))


def visit_names(source: str) -> list[str]:
    """The node names a condition reads the visit counts of (`visits.x`, `visits['x']`)."""
    return keys_read(VISITS, source, expression=True)


def condition_scope(
    state: Mapping[str, Any], visits: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """What a condition or template sees: every state field, `state`, `last_message`, and
    `visits` (how often each node ran so far, e.g. `visits.replan < 3`; a compiled condition
    reads a node not run yet as 0: `compile_condition`)."""
    messages = state.get("messages") or ()
    return {
        **state,
        "state": state,
        "last_message": messages[-1] if messages else {},
        "visits": visits or {},
    }
