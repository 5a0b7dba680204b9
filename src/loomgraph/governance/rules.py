"""Permission rules: parsed strictly (`rule_syntax`), matched on canonical readings.

A rule names a tool (a glob, so `mcp_*` works) and optionally constrains arguments: globs
(`path=/data/**`, `to=*@{corp.com,corp.org}`), list quantifiers (`to=all(*@corp.com)`),
absent/present (`cc=<absent>`), sets (`to in [a@x.com, b@x.com]`, `to in $team`) and numeric
comparisons (`amount<=100`). An ask rule may carry `unless` rules that excuse it.

Matching follows one principle: an ambiguity can make a call be denied or asked about, never
make it allowed. A deny or ask rule (`every=False`) matches when any element of a list (at
any depth) and any reading of a value matches, and an argument the call leaves out counts as
"could be anything" (unless the tool's schema shows it does not take it, or gives its
default). An allow rule (`every=True`) needs every element and every reading to match, never
matches a list holding a list or object, never matches an absent argument except with
`<absent>`, and never matches a value `canonical.strict_readings` refuses (lookalikes, shell
operators in paths and commands, ...). A dotted name
(`headers.host`) is read both as the nested value and as a literal key of that name when the
call has one, and the same any/every rule applies to the two readings.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from loomgraph.governance.addresses import addr_specs, fetched_url
from loomgraph.governance.canonical import (
    Reading,
    generous_readings,
    readings,
    strict_readings,
)
from loomgraph.governance.globs import glob_regex
from loomgraph.governance.rule_errors import PermissionConfigError
from loomgraph.governance.rule_syntax import Cond, ParsedRule, parse_text, render
from loomgraph.protocols import ToolCall, ToolSpec

__all__ = ["Rule", "SetSource", "canonical", "glob_regex", "parse_rule", "readings"]

# A glob naming a URL of a special scheme, and its authority part (up to its first `/`).
_URL_GLOB = re.compile(r"(?:https?|wss?|ftp)://([^/]*)", re.IGNORECASE)

SetSource = Collection[str] | Callable[[], Iterable[str]]
_MISSING = object()
_NOT_TAKEN = object()
# Argument names read as shell commands when neither the rule nor the tool says otherwise.
COMMAND_NAMES = frozenset({"cmd", "command", "commands", "script", "cmdline", "command_line"})
_CMP: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True, slots=True)
class Rule:
    """One parsed rule: its text, tool glob, argument conditions and `unless` rules."""

    text: str
    tool: str
    conds: tuple[Cond, ...] = ()
    unless: tuple[Rule, ...] = ()

    @property
    def args(self) -> tuple[tuple[str, str], ...]:
        """The (argument, glob) pairs of the glob conditions."""
        return tuple((c.name, c.glob) for c in self.conds if c.op == "glob")

    @property
    def canonical_text(self) -> str:
        """One spelling per meaning: what the fingerprint hashes."""
        return render(_to_parsed(self))

    @property
    def set_names(self) -> frozenset[str]:
        """The named sets (`$team`) this rule and its `unless` rules use."""
        own = {c.set_name for c in self.conds if c.set_name is not None}
        return frozenset(own).union(*(u.set_names for u in self.unless))

    def matches(
        self,
        call: ToolCall,
        *,
        every: bool = False,
        spec: ToolSpec | None = None,
        sets: Mapping[str, SetSource] | None = None,
    ) -> bool:
        """Whether the call is covered; `every` (for allow rules): in all elements and readings.
        The tool's name is compared ignoring case except under `every`: a server names its
        tools, and `Transfer` must not dodge a deny rule written for `transfer`."""
        if not glob_regex(self.tool, path=False, fold=not every).fullmatch(
            str(call.get("tool", ""))
        ):
            return False
        args = call.get("args") or {}
        view = cast(Mapping[str, Any], spec or {})
        return all(_cond_matches(c, args, view, every, sets or {}) for c in self.conds)

    def excused_by(
        self,
        call: ToolCall,
        *,
        spec: ToolSpec | None = None,
        sets: Mapping[str, SetSource] | None = None,
    ) -> Rule | None:
        """The first `unless` rule that matches the call as strictly as an allow rule."""
        for rule in self.unless:
            if rule.matches(call, every=True, spec=spec, sets=sets):
                return rule
        return None


def parse_rule(text: str, *, unless: bool = True) -> Rule:
    """Parse a rule; a RuleSyntaxError names the rule, the problem and its position."""
    parsed = parse_text(text, unless_allowed=unless)
    return _from_parsed(text.strip(), parsed)


def canonical(value: Any) -> str:
    """The main reading of an argument: path-like words normalised, non-strings as JSON."""
    return readings(value)[0][0]


def _from_parsed(text: str, parsed: ParsedRule) -> Rule:
    unless = tuple(_from_parsed(render(u), u) for u in parsed.unless)
    return Rule(text, parsed.tool, parsed.conds, unless)


def _to_parsed(rule: Rule) -> ParsedRule:
    return ParsedRule(rule.tool, rule.conds, tuple(_to_parsed(u) for u in rule.unless))


def _cond_matches(
    cond: Cond, args: Any, spec: Mapping[str, Any], every: bool, sets: Mapping[str, SetSource]
) -> bool:
    hits = (_value_matches(cond, v, spec, every, sets) for v in _values(args, cond.name, spec))
    return all(hits) if every else any(hits)


def _value_matches(
    cond: Cond, value: Any, spec: Mapping[str, Any], every: bool, sets: Mapping[str, SetSource]
) -> bool:
    if cond.op == "absent" or cond.op == "present":
        return (value is _MISSING) == (cond.op == "absent")
    if value is _MISSING:
        if every:
            return False  # an allow rule's pattern never covers an argument left out
        value = _absent_value(spec, cond.name)
        if value is _NOT_TAKEN:
            return False
        if value is _MISSING:
            return True  # its value is unknown: it could be anything the pattern names
    kind = cond.kind or _declared_kind(spec, cond.name)
    quant = cond.quant or ("all" if every else "any")
    if not isinstance(value, list | tuple):
        items: Sequence[Any] = [value]
    elif every:
        if any(isinstance(item, list | tuple | dict) for item in value):
            return False  # which element a tool takes from a nested one is not for us to say
        items = value
    else:
        # A nested list must not hide an element: any element at any depth, and for `any`
        # also each nested list as a whole (its JSON), so no reading is lost.
        items = _nested(value, lists=quant == "any")
    hits = (_element(cond, item, kind, every, sets) for item in items)
    return all(hits) if quant == "all" else any(hits)


def _nested(value: list[Any] | tuple[Any, ...], *, lists: bool) -> list[Any]:
    """The elements of a list at every depth: its scalars and objects, and its nested lists
    too when `lists`. Iterative (a model's JSON may nest deeper than Python recurses), and
    each list read once (a list built in Python may hold itself)."""
    out: list[Any] = []
    seen = {id(value)}
    stack = list(value)
    while stack:
        item = stack.pop()
        if not isinstance(item, list | tuple):
            out.append(item)
        elif id(item) not in seen:
            seen.add(id(item))
            stack.extend(item)
            if lists:
                out.append(item)
    return out


def _with_addresses(
    item: Any, kind: str | None, spellings: list[list[Reading]], named: bool
) -> list[list[Reading]] | None:
    """An allow rule's readings of `item` when the rule `named` addresses: each spelling
    also holds every address of the list (`addresses.addr_specs`), since a `*` spans commas
    and `x@evil.example, y@corp.example` fits `*@corp.example` as written while a mail
    library sends to both. None (no allow match) for an address list no parser reads."""
    if not named or kind is not None or not isinstance(item, str) or "@" not in item:
        return spellings
    addresses = addr_specs(item)
    if addresses is None:
        return None
    return [[*found, *((a, False) for a in addresses)] for found in spellings]


def _fetched_fits(glob: str, item: Any, kind: str | None, text_re: re.Pattern[str]) -> bool:
    """For an allow rule whose glob is a URL of a special scheme: whether what a client
    fetches for `item` fits too, its host and port the glob's authority (`*` in it does not
    span `/`). `https://corp.example@evil.example/` is fetched from evil.example, though it
    fits `https://corp.example*` as written; `https://evil.example/.corp.example/` fits
    `https://*.corp.example/*` only as written, and `/public/../admin` fits `/public/*`."""
    named = _URL_GLOB.match(glob)
    if named is None or kind is not None or not isinstance(item, str):
        return True
    fetched = fetched_url(item)
    if fetched is None:
        return True  # not a URL a client fetches: matched as written only
    authority, url = fetched
    host_re = glob_regex(named.group(1), path=True)
    return host_re.fullmatch(authority) is not None and text_re.fullmatch(url) is not None


def _element(
    cond: Cond, item: Any, kind: str | None, every: bool, sets: Mapping[str, SetSource]
) -> bool:
    if cond.op == "cmp":
        number = _number(item, strict=every)
        if number is None:
            return not every  # not comparable: a deny or ask rule cannot rule it out
        return _CMP[cond.cmp](number, cond.number)
    # An allow rule must match every reading of one spelling; a deny or ask rule any reading.
    if every:
        spellings = strict_readings(item, kind)
        if spellings is None:
            return False
    else:
        found = generous_readings(item, kind)
        if found is None:
            return True  # a command too costly to read: a deny or ask rule cannot rule it out
        spellings = [found]
    if cond.op == "in":
        try:
            members = _members(cond, sets)
        except PermissionConfigError:
            raise
        except Exception:
            return not every  # a set that cannot be read: deny and ask rules still hold
        if every:
            named = any("@" in member for member in members)
            if (strict := _with_addresses(item, kind, spellings, named)) is None:
                return False
            return any(all(text in members for text, _ in found) for found in strict)
        folded = {m.casefold() for m in members}
        return any(text in members or text.casefold() in folded for text, _ in spellings[0])
    text_re = glob_regex(cond.glob, path=False, fold=not every)
    path_re = glob_regex(cond.glob, path=True, fold=not every)

    def hit(text: str, one_path: bool) -> bool:
        return (path_re if one_path else text_re).fullmatch(text) is not None

    if every:
        if (strict := _with_addresses(item, kind, spellings, "@" in cond.glob)) is None:
            return False
        if not _fetched_fits(cond.glob, item, kind, text_re):
            return False
        return any(all(hit(*reading) for reading in found) for found in strict)
    return any(hit(*reading) for reading in spellings[0])


def _members(cond: Cond, sets: Mapping[str, SetSource]) -> frozenset[str]:
    if cond.items is not None:
        source: Any = cond.items
    else:
        name = cast(str, cond.set_name)
        if name not in sets:
            raise PermissionConfigError(f"unknown set ${name}; define it in sets=")
        source = sets[name]
        if callable(source):
            source = source()
    return frozenset(canonical(m) for m in source)


def _number(item: Any, *, strict: bool) -> float | None:
    """A number to compare: an int as itself (compared exactly, however large), a finite float;
    for a deny or ask rule also a numeric string. None when it is not comparable."""
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        return item  # no float(): 10**400 would overflow, 2**53 + 1 would round
    if isinstance(item, float):
        return item if math.isfinite(item) else None
    if isinstance(item, str) and not strict:
        text = item.strip()
        try:
            return int(text)  # "9007199254740993" exactly, as a tool's int() reads it
        except ValueError:
            pass  # not an integer, or more digits than int() converts: read as a float
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None  # "1e400" cannot be ruled out
    return None


def _declared_kind(spec: Mapping[str, Any], name: str) -> str | None:
    """path or command, from the tool's spec (`path_params`, `command_params`, schema format)."""
    if name in (spec.get("path_params") or ()):
        return "path"
    if name in (spec.get("command_params") or ()):
        return "command"
    prop = _schema_property(spec, name)
    if isinstance(prop, Mapping) and prop.get("format") in ("path", "file-path"):
        return "path"
    return "command" if name.rsplit(".", 1)[-1] in COMMAND_NAMES else None


def _schema_property(spec: Mapping[str, Any], name: str) -> Any:
    """The schema of the parameter `name` (a literal dotted name first), or of the object a
    dotted name walks into; _NOT_TAKEN when the schema lists neither, _MISSING without one."""
    params = spec.get("parameters")
    props = params.get("properties") if isinstance(params, Mapping) else None
    if not isinstance(props, Mapping):
        return _MISSING
    return props[name] if name in props else props.get(name.split(".")[0], _NOT_TAKEN)


def _absent_value(spec: Mapping[str, Any], name: str) -> Any:
    """What an argument left out stands for: its schema default, not taken, or unknown."""
    prop = _schema_property(spec, name)
    if prop is _NOT_TAKEN or prop is _MISSING:
        return prop
    if "." not in name and isinstance(prop, Mapping) and "default" in prop:
        return prop["default"]
    return _MISSING


def _values(args: Any, name: str, spec: Mapping[str, Any]) -> list[Any]:
    """The readings of an argument: a dotted name (`headers.host`) walks into nested objects,
    and is also read as a literal key of that name when the call has one (a tool may take
    either). The nested reading may be _MISSING; it is dropped only when the tool's schema
    shows it takes no object by the first part (`headers`). Never empty."""
    nested = _lookup(args, name)
    if "." not in name or not isinstance(args, dict) or name not in args:
        return [nested]
    literal = args[name]
    if nested is _MISSING and _schema_property(spec, name.split(".")[0]) is _NOT_TAKEN:
        return [literal]
    return [nested, literal]


def _lookup(args: Any, name: str) -> Any:
    """An argument by name; a dotted name walks into nested objects (`headers.host`)."""
    current = args
    for part in name.split("."):
        if not isinstance(current, dict) or part not in current:
            return _MISSING
        current = current[part]
    return current
