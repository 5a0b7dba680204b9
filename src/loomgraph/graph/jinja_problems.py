"""Why a condition or template is wrong, said for someone who wrote Python: the column, and
the Jinja spelling of common Python idioms (`len(x)` is `x | length`, `is None` is `is none`).

Conditions and templates are Jinja2 in a sandbox (see `conditions`); everything here runs at
load time, so a graph that validates does not fail at run time on a call or a private name:
it calls only methods of values that change nothing (`output.startswith('y')`).
"""

from __future__ import annotations

import re

from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import modifies_known_mutable

from loomgraph.graph.condition_code import LOADER_NOTE, LoaderTagError
from loomgraph.graph.conditions import compile_condition, compile_template, environment

JINJA_NOTE = "conditions and templates are Jinja expressions, not Python"

# Python builtins a condition might call, and the Jinja filter that does the same.
_FILTER_FOR_CALL = {
    "len": "length",
    "str": "string",
    "int": "int",
    "float": "float",
    "list": "list",
    "sorted": "sort",
    "sum": "sum",
    "min": "min",
    "max": "max",
    "abs": "abs",
    "round": "round",
    "reversed": "reverse",
    "set": "unique",
}
_TEST_FOR_CALL = {"isinstance": "x is string / number / mapping / sequence", "bool": "x is true"}
_LOWER_TESTS = re.compile(r"(\bis\s+(?:not\s+)?)(None|True|False)\b")
_GOT = re.compile(r"(?:got|named) '([^']*)'")
_CHAR_AT = re.compile(r"unexpected char .* at (\d+)")
# A condition written as a template: `{{ done }}`, `{% if done %}`; and one `{{ … }}` in it.
_BRACED = re.compile(r"\s*\{[{%].*[}%]\}\s*", re.DOTALL)
_OUTPUT_TAG = re.compile(r"\{\{-?(.*?)-?\}\}", re.DOTALL)


def source_problems(source: str, *, expression: bool) -> list[str]:
    """Every problem of a condition (`expression`) or template, each message complete."""
    why = _syntax_problem(source, expression=expression)
    if why is not None:
        return [why]
    try:
        tree = environment().parse("{{ " + source + " }}" if expression else source)
    except (TemplateSyntaxError, RecursionError):  # pragma: no cover - checked above
        return []
    return _call_problems(tree, source, expression=expression) + private_problems(tree, source)


# --------------------------------------------------------------------------- syntax


def _compile(source: str, *, expression: bool) -> None:
    # Both raise TemplateSyntaxError for a source nested too deeply (never RecursionError).
    if expression:
        compile_condition(source)
    else:
        compile_template(source)


def _error(source: str, *, expression: bool) -> TemplateSyntaxError | None:
    try:
        _compile(source, expression=expression)
    except TemplateSyntaxError as err:
        return err
    return None


def _syntax_problem(source: str, *, expression: bool) -> str | None:
    err = _error(source, expression=expression)
    if err is None:
        return None
    message = str(err.message or err)
    if isinstance(err, LoaderTagError):  # valid Jinja, but nothing to read the file with
        at = f" at line {err.lineno}" if err.lineno > 1 else ""
        return f"uses {{% {err.tag} %}}{at}, which reads another template, but {LOADER_NOTE}"
    where = f"line {err.lineno}" if not expression and err.lineno > 1 else None
    if expression:
        column = _column(source, message)
        where = f"column {column}" if column is not None else None
    at = f" at {where}" if where else ""
    hint = _idiom_hint(source, message, expression=expression)
    return f"is not valid Jinja ({JINJA_NOTE}){at}: {message}{hint}"


def _column(source: str, message: str) -> int | None:
    """The 1-based column of the error in a one-line expression, found by parsing prefixes."""
    if (char := _CHAR_AT.search(message)) is not None:
        return int(char.group(1)) + 1
    if len(source) > 500:
        return None
    if message.startswith("chunk after expression"):
        # The expression ended early: the error is where the longest valid prefix stops.
        for end in range(len(source), 0, -1):
            if _error(source[:end], expression=True) is None:
                return end + len(source[end:]) - len(source[end:].lstrip()) + 1
        return None
    for end in range(1, len(source) + 1):
        err = _error(source[:end], expression=True)
        if err is not None and str(err.message) == message:
            got = _GOT.search(message)
            return end - len(got.group(1)) + 1 if got else end
    return None


def _idiom_hint(source: str, message: str, *, expression: bool = False) -> str:
    """The Jinja spelling of a Python idiom the source (or the error) shows, or ''."""
    hints = []
    if expression and _BRACED.fullmatch(source):
        # `{{ done }}` parses as a dict literal missing its ':': Jinja's error says no more.
        bare = _OUTPUT_TAG.sub(lambda t: t.group(1).strip(), source).strip()
        shown = f" (`{bare}`)" if bare and not re.search(r"[{}%]", bare) else ""
        hints.append(
            "a condition is an expression already: write it without `{{ }}` or `{% %}`" + shown
        )
    if (m := re.search(r"No test named '(\w+)'", message)) and m.group(1) in (
        "None",
        "True",
        "False",
    ):
        fixed = _LOWER_TESTS.sub(lambda t: t.group(1) + t.group(2).lower(), source)
        hints.append(f"write `{fixed}` (Jinja tests are lower case)")
    if (m := re.search(r"No filter named '(\w+)'", message)) and m.group(1) in _FILTER_FOR_CALL:
        hints.append(f"the filter is `| {_FILTER_FOR_CALL[m.group(1)]}`")
    if re.search(r"\bfor\b", source):
        hints.append(
            "comprehensions are Python; use filters such as `select`, `selectattr` or `map`"
        )
    if "&&" in source or "||" in source:
        hints.append("write `and` / `or`")
    if re.search(r"!(?!=)", source):
        hints.append("write `not x`")
    if re.search(r"\blambda\b", source):
        hints.append("there are no lambdas; use filters and tests")
    return "; " + "; ".join(hints) if hints else ""


# --------------------------------------------------------------------------- calls, names


def _text(node: nodes.Node) -> str:
    """Source-like text of a simple expression (a name, an attribute chain, a constant)."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        return f"{_text(node.node)}.{node.attr}"
    if isinstance(node, nodes.Const):
        return repr(node.value)
    return "x"


def _find(source: str, pattern: str) -> str:
    match = re.search(pattern, source)
    return f" at column {match.start() + 1}" if match and "\n" not in source else ""


def _pure_methods() -> tuple[frozenset[str], frozenset[str]]:
    """The public methods of strings, numbers, lists, tuples, dicts and sets that change
    nothing, and those that change their value (which the sandbox refuses)."""
    pure: set[str] = set()
    mutating: set[str] = set()
    for kind in (str, int, float, list, tuple, dict, set, frozenset):
        for name in dir(kind):
            if not name.startswith("_"):
                (mutating if modifies_known_mutable(kind(), name) else pure).add(name)
    return frozenset(pure), frozenset(mutating - pure)


_PURE_METHODS, _MUTATING_METHODS = _pure_methods()
_LOOP_METHODS = frozenset({"cycle", "changed"})  # `loop.cycle('odd', 'even')` in a for loop


def _call_problems(tree: nodes.Template, source: str, *, expression: bool) -> list[str]:
    """Every call but of a method of a value (`output.startswith('y')`, `loop.cycle(…)`):
    a call of anything else — a name, an item, a filter's or a call's result — is refused,
    so a graph that validates calls nothing but those methods."""
    out = []
    what = "condition" if expression else "template"
    for call in tree.find_all(nodes.Call):
        target = call.node
        if isinstance(target, nodes.Getattr):
            attr = target.attr
            on_loop = isinstance(target.node, nodes.Name) and target.node.name == "loop"
            if attr in _PURE_METHODS or (on_loop and attr in _LOOP_METHODS):
                continue
            at = _find(source, r"\." + re.escape(attr) + r"\s*\(")
            if attr in _MUTATING_METHODS:
                out.append(
                    f"calls {attr!r}{at}, which would change {_text(target.node)}: a {what} "
                    "cannot change anything (use a reducer or a `function` node)"
                )
            else:
                out.append(
                    f"calls {attr!r}{at}, which is no method of a string, number, list or "
                    f"dict: a {what} can call only those ({JINJA_NOTE})"
                )
            continue
        if not isinstance(target, nodes.Name):
            called = "a " + type(target).__name__.lower() + " expression"
            out.append(
                f"calls {called}, which is not a method of a value: a {what} can call only "
                f"methods of strings, numbers, lists and dicts ({JINJA_NOTE})"
            )
            continue
        name = target.name
        arg = _text(call.args[0]) if call.args else "x"
        if name in _FILTER_FOR_CALL:
            hint = f"; write `{arg} | {_FILTER_FOR_CALL[name]}`"
        elif name in _TEST_FOR_CALL:
            hint = f"; write `{_TEST_FOR_CALL[name].replace('x', arg, 1)}`"
        else:
            hint = "; use a Jinja filter or test, or compute the value in a `function` node"
        at = _find(source, r"\b" + re.escape(name) + r"\s*\(")
        out.append(f"calls {name!r}{at}, but a {what} can call no functions ({JINJA_NOTE}){hint}")
    return out


def private_problems(tree: nodes.Template, source: str) -> list[str]:
    """A problem for each name starting with `_` the template reads (`x.__class__`,
    `x['_y']`, `x | attr('_z')`): a sandbox refuses them when it renders."""
    names: list[str] = [n.attr for n in tree.find_all(nodes.Getattr)]
    for item in tree.find_all(nodes.Getitem):
        if isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str):
            names.append(item.arg.value)
    for flt in tree.find_all(nodes.Filter):
        if flt.name == "attr" and flt.args and isinstance(flt.args[0], nodes.Const):
            names.append(str(flt.args[0].value))
    return [
        f"reads {name!r}{_find(source, re.escape(name))}: names starting with _ are not "
        "reachable from conditions and templates (the sandbox refuses them)"
        for name in dict.fromkeys(names)
        if name.startswith("_")
    ]
