"""What one condition or template evaluation may make and do, measured before it is made.

- An operation that grows a value (`*`, `+`, `~`, `%`, `str.format`, the filters and string
  methods that take a size) may make at most `MAX_RESULT_ITEMS` items (characters, list
  entries); its size is computed from its operands first (`text_size`, `*_size`).
- One evaluation or render (a `Budget`, held in a context variable by `run_budgeted`) makes
  at most `MAX_ITEMS_PER_RUN` items in all, its rendered text included, and takes at most
  `MAX_STEPS` steps: loop iterations and calls (macros, methods, `loop(...)`).

Past a limit the operation raises the sandbox's `SecurityError` naming it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from jinja2.exceptions import SecurityError

MAX_RESULT_ITEMS = 1_000_000  # items one operation may make
MAX_POWER_BITS = 100_000  # bits of one `**`
MAX_ITEMS_PER_RUN = 10_000_000  # items one evaluation or render may make, its text included
MAX_STEPS = 100_000  # loop iterations and calls of one evaluation or render (as Jinja's range)
_FLOAT_DIGITS = 330  # the most characters a float or a formatted number adds beyond its spec
# A `%` conversion after its mapping key: flags, width, precision, length modifier, type.
_PERCENT_SPEC = re.compile(r"[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)?")
# A `str.format` spec: fill and align, sign, `z`, `#`, `0`, width, grouping, precision, type.
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[_,]?(?:\.(\d+))?")


class Budget:
    """What is left to one evaluation or render: items to make and steps to take."""

    __slots__ = ("items", "steps")

    def __init__(self) -> None:
        self.items = MAX_ITEMS_PER_RUN
        self.steps = MAX_STEPS


_CURRENT: ContextVar[Budget | None] = ContextVar("loomgraph_jinja_budget", default=None)


def run_budgeted(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call `function` as one evaluation: with a fresh `Budget` of its own."""
    token = _CURRENT.set(Budget())
    try:
        return function(*args, **kwargs)
    finally:
        _CURRENT.reset(token)


def too_large(what: str, size: int | None = None) -> SecurityError:
    """The error of an operation whose result would be over `MAX_RESULT_ITEMS`."""
    made = f" would make {size:,} items" if size is not None else ""
    return SecurityError(
        f"result too large: {what}{made} (conditions and templates are limited to "
        f"{MAX_RESULT_ITEMS:,} items per operation)"
    )


def charge(size: int, what: str, *, per_operation: bool = True) -> None:
    """Count `size` items made by one operation, refusing it past a limit."""
    if per_operation and size > MAX_RESULT_ITEMS:
        raise too_large(what, size)
    budget = _CURRENT.get()
    if budget is not None:
        budget.items -= size
        if budget.items < 0:
            raise SecurityError(
                f"result too large: {what} (one condition or template evaluation makes at "
                f"most {MAX_ITEMS_PER_RUN:,} items in all, its rendered text included)"
            )


def remaining_items() -> int:
    """How many items the current evaluation may still make."""
    budget = _CURRENT.get()
    return MAX_ITEMS_PER_RUN if budget is None else max(budget.items, 0)


def _too_much(what: str) -> SecurityError:
    return SecurityError(
        f"too much work: {what} (one condition or template evaluation takes at most "
        f"{MAX_STEPS:,} loop iterations and calls)"
    )


def step(what: str) -> None:
    """Count one call of the current evaluation."""
    budget = _CURRENT.get()
    if budget is not None:
        budget.steps -= 1
        if budget.steps < 0:
            raise _too_much(what)


def counted(iterable: Iterable[Any]) -> Iterator[Any]:
    """The items of a `{% for %}` loop, each one step of the current evaluation (of this
    loop alone when it runs outside `run_budgeted`)."""
    budget = _CURRENT.get() or Budget()
    for item in iterable:
        budget.steps -= 1
        if budget.steps < 0:
            raise _too_much("a {% for %} loop")
        yield item


# --------------------------------------------------------------------------- sizes


def _str_size(text: str | bytes, *, quoted: bool, as_json: bool = False) -> int:
    """The length of `text` as `str()` (not `quoted`), `repr()` or `json.dumps` writes it."""
    if not quoted:
        return len(text)
    if isinstance(text, bytes):
        return 4 * len(text) + 3
    if text.isascii() and text.isprintable():
        specials = text.count("\\") + text.count("'") + text.count('"')
        if as_json:  # Jinja's tojson also escapes < > & ' as \u00XX
            specials += 5 * sum(text.count(c) for c in "<>&'")
        return len(text) + 2 + specials
    return len(json.dumps(text) if as_json else repr(text))


def text_size(value: Any, limit: int = MAX_RESULT_ITEMS, *, as_json: bool = False) -> int:
    """The length of `str(value)` (or its JSON), or a bound on it; once over `limit` it stops
    and returns what it has counted (so a value shared many times costs at most `limit`)."""
    if isinstance(value, str):
        return _str_size(value, quoted=as_json, as_json=as_json)
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += _str_size(item, quoted=True, as_json=as_json)
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            if total <= limit:
                stack.extend(item)
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif item is None or isinstance(item, bool | float):
            total += 24
        elif isinstance(item, int):
            total += int(item.bit_length() * 0.30103) + 2
        else:  # a value of another type (an Undefined, a state object): measured
            total += len(str(item) if item is value else repr(item))
        if total > limit:
            break
    return total


def _count(text: Any, part: Any) -> int:
    return len(text) + 1 if not part else text.count(part)


def replace_size(text: Any, old: Any, new: Any, count: Any = -1) -> int:
    """The length of `text.replace(old, new, count)`."""
    times = _count(text, old)
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    return len(text) + times * max(len(new) - len(old), 0)


def join_size(separator: Any, items: list[Any]) -> int:
    """The length of `separator.join(items)` (or Jinja's `join`, which calls str on each)."""
    total = max(len(items) - 1, 0) * len(separator)
    for item in items:
        total += text_size(item, MAX_RESULT_ITEMS - total)
        if total > MAX_RESULT_ITEMS:
            break
    return total


def _percent_conversions(text: str) -> Iterator[tuple[str, str, str, str]]:
    """Each conversion of a `%` format: its mapping key (or ""), width, precision and type,
    read as Python reads them: a mapping key `(…)` may hold parentheses of its own."""
    at = text.find("%")
    while at != -1:
        at += 1
        key = ""
        if text.startswith("(", at):
            depth, end = 0, at
            for end in range(at, len(text)):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            key, at = text[at + 1 : end], end + 1
        spec = _PERCENT_SPEC.match(text, at)
        if spec is None:  # pragma: no cover - the pattern matches the empty string
            break
        width, precision, kind = spec.group(1) or "", spec.group(2) or "", spec.group(3) or ""
        at = spec.end()
        if kind != "%":
            yield key, width, precision, kind
        at = text.find("%", at)


def percent_size(text: str, values: Any) -> int:
    """A bound on the length of `text % values`, refusing a `*` width or precision."""
    positional = list(values) if isinstance(values, tuple) else [values]
    total, index = len(text), 0
    for key, width, precision, _ in _percent_conversions(text):
        if "*" in (width, precision):
            raise too_large("a width or precision of * in a '%' format")
        if key and isinstance(values, dict):
            value = values.get(key)
        else:
            value = positional[index] if index < len(positional) else None
            index += 1
        size = text_size(value, MAX_RESULT_ITEMS) + int(precision or 0) + _FLOAT_DIGITS
        total += max(int(width or 0), size)
        if total > MAX_RESULT_ITEMS:
            break
    return total


def format_field_size(value: Any, spec: str) -> int:
    """A bound on the length of `format(value, spec)`."""
    match = _FORMAT_SPEC.match(spec)
    width = int(match.group(1) or 0) if match else 0
    precision = int(match.group(2) or 0) if match and match.group(2) else None
    if isinstance(value, str):
        size = len(value) if precision is None else min(len(value), precision)
    else:
        size = text_size(value) * 4 // 3 + (precision or 0) + _FLOAT_DIGITS
    return max(width, size)


def binop_size(operator: str, left: Any, right: Any) -> int:
    """The number of items `left <operator> right` makes (0 for numbers); raises for a power
    of more than `MAX_POWER_BITS` bits."""
    sized = (str, bytes, list, tuple)
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, sized) and isinstance(times, int) and not isinstance(times, bool):
                return len(seq) * max(times, 0)
        return 0
    if operator == "**":
        ints = isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1
        if ints and right * math.log2(abs(left)) > MAX_POWER_BITS:
            raise too_large(f"{left} ** {right} has over {MAX_POWER_BITS:,} bits")
        return 0
    if operator == "%":
        return percent_size(left, right) if isinstance(left, str) else 0
    if operator == "+" and isinstance(left, sized) and isinstance(right, sized):
        return len(left) + len(right)
    return 0


def bounded_binop(operator: str, left: Any, right: Any) -> Any:
    """`*`, `**`, `%` and `+` as Python does them, refusing a result beyond the limits first."""
    size = binop_size(operator, left, right)
    if size:
        charge(size, f"{type(left).__name__} {operator} {type(right).__name__}")
    if operator == "*":
        return left * right
    if operator == "**":
        return left**right
    if operator == "%":
        return left % right
    if operator == "+":
        return left + right
    raise SecurityError(f"operator {operator!r} is not bounded")  # pragma: no cover


def bounded_concat(join: Callable[[Iterable[Any]], str], values: tuple[Any, ...]) -> str:
    """`a ~ b ~ …`: Jinja's `join` of the values, refused first when too long."""
    size = 0
    for value in values:
        size += text_size(value, MAX_RESULT_ITEMS - size)
        if size > MAX_RESULT_ITEMS:
            break
    charge(size, "a '~' concatenation")
    return join(values)


# --------------------------------------------------------------------------- methods


def method_size(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The items a call of a growing method of a string or number makes (`'x'.ljust(n)`),
    or None for any other callable."""
    owner, name = getattr(method, "__self__", None), getattr(method, "__name__", "")
    if isinstance(owner, str | bytes):
        if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
            return max(len(owner), args[0])
        if name == "expandtabs":
            tab = args[0] if args else kwargs.get("tabsize", 8)
            tabs = owner.count(b"\t") if isinstance(owner, bytes) else owner.count("\t")
            return len(owner) + tabs * max(tab, 1) if isinstance(tab, int) else None
        if name == "replace" and len(args) >= 2:
            return replace_size(owner, *args[:3])
        if name == "join" and args and isinstance(args[0], list):
            return join_size(owner, args[0])
        if name == "translate" and args:
            table = args[0]
            values = table.values() if isinstance(table, dict) else ()
            longest = max((len(v) for v in values if isinstance(v, str | bytes)), default=1)
            return len(owner) * max(longest, 1)
    if isinstance(owner, int) and name == "to_bytes":
        length = args[0] if args else kwargs.get("length", 1)
        return length if isinstance(length, int) else None
    return None


# --------------------------------------------------------------------------- filters


def _lines(text: Any) -> int:
    return text.count("\n") + 1 if isinstance(text, str) else text_size(text)


def _width(width: Any) -> int:
    return len(width) if isinstance(width, str) else int(width)


def _indent_size(s: Any, width: Any = 4, *_: Any, **__: Any) -> int:
    return text_size(s) + _lines(s) * _width(width)


def _wordwrap_size(
    s: Any, width: int = 79, _breaks: Any = True, wrap: Any = None, *_: Any, **kwargs: Any
) -> int:
    wrap = kwargs.get("wrapstring", wrap)
    size = text_size(s)
    lines = 2 * size // max(int(width), 1) + _lines(s) + 1  # a line and the next exceed width
    return size + lines * (1 if wrap is None else len(wrap))


def _truncate_size(
    s: Any, _length: Any = 255, _kill: Any = False, end: Any = "...", *_: Any, **kwargs: Any
) -> int:
    return text_size(s) + len(str(kwargs.get("end", end)))


def _batch_size(_value: Any, linecount: Any, fill_with: Any = None) -> int:
    return int(linecount) if fill_with is not None else 0


def _slice_size(value: Any, slices: Any, *_: Any, **__: Any) -> int:
    return int(slices) + (len(value) if hasattr(value, "__len__") else 0)


def _tojson_size(value: Any, indent: Any = None) -> int:
    return text_size(value, as_json=True) * (1 + int(indent or 0))


def _replace_filter_size(s: Any, old: Any, new: Any, count: Any = None) -> int:
    text = s if isinstance(s, str) else str(s)
    return replace_size(text, str(old), str(new), -1 if count is None else count)


# Filters that grow a value: the items each call makes, from its arguments (after the value
# Jinja passes first, and after the environment or context a filter may take before it).
FILTER_SIZES: dict[str, Callable[..., int]] = {
    "center": lambda value, width=80: max(text_size(value), int(width)),
    "indent": _indent_size,
    "format": lambda value, *args, **kwargs: percent_size(str(value), kwargs or args),
    "wordwrap": _wordwrap_size,
    "truncate": _truncate_size,
    "batch": _batch_size,
    "slice": _slice_size,
    "string": lambda value: text_size(value),
    "tojson": _tojson_size,
    "replace": _replace_filter_size,
}
# Filters that copy their input: what they return counts towards the evaluation's budget.
COPYING_FILTERS = frozenset(
    {
        "list",
        "sort",
        "reverse",
        "upper",
        "lower",
        "title",
        "capitalize",
        "trim",
        "striptags",
        "escape",
        "e",
        "forceescape",
        "urlencode",
        "dictsort",
        "xmlattr",
        "groupby",
    }
)
# Filters whose output cannot be bounded cheaply and that no prompt or condition needs.
REMOVED_FILTERS = frozenset({"pprint", "urlize"})
