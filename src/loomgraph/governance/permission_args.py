"""StandardPermissions' arguments read and checked: rule lists, named sets, timeouts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from typing import Any

from loomgraph._storage.seconds import checked_seconds
from loomgraph.governance.rule_errors import PermissionConfigError, PermissionTypeError
from loomgraph.governance.rules import Rule, SetSource, parse_rule

__all__ = ["check_set_names", "checked_sets", "checked_timeout", "parse_rules", "rule_list"]


def rule_list(rules: object, kind: str) -> list[Any]:
    """The entries of one rule list (`kind`: `allow`, `ask` or `deny`), in the order they are
    tried; PermissionTypeError for a lone string, a mapping, a set (it has no order) or
    anything that is no list."""
    if isinstance(rules, str | Mapping | Set) or not isinstance(rules, Iterable):
        raise PermissionTypeError(
            f"{kind} must be a list of rules, in the order they are tried, not "
            f"{type(rules).__name__} {rules!r}"
        )
    return list(rules)


def parse_rules(rules: Iterable[str], kind: str) -> list[Rule]:
    """The rules of one list (`kind`: `allow` or `deny`), parsed (`rule_list`)."""
    return [parse_rule(r, unless=False) for r in rule_list(rules, kind)]


def checked_sets(sets: Mapping[str, SetSource] | None) -> dict[str, SetSource]:
    """Named sets as kept: a callable as given, an iterable of strings as a frozenset."""
    if sets is not None and not isinstance(sets, Mapping):
        raise PermissionTypeError(
            f"sets must map a set's name to its strings, not {type(sets).__name__} {sets!r}"
        )
    out: dict[str, SetSource] = {}
    for name, source in (sets or {}).items():
        if callable(source):
            out[name] = source
        elif isinstance(source, str) or not isinstance(source, Iterable):
            raise PermissionTypeError(
                f"set {name!r} must be a list of strings or a callable returning them"
            )
        else:
            items = list(source)
            if not all(isinstance(i, str) for i in items):
                raise PermissionTypeError(f"set {name!r} must hold only strings")
            out[name] = frozenset(items)
    return out


def check_set_names(rule: Rule, sets: Mapping[str, SetSource]) -> None:
    """Refuse a rule naming a `$set` that `sets` does not hold."""
    unknown = sorted(rule.set_names - set(sets))
    if unknown:
        raise PermissionConfigError(
            f"rule {rule.text!r} uses unknown set(s) {', '.join('$' + u for u in unknown)}"
        )


def checked_timeout(value: Any, what: str) -> float | None:
    """A positive, finite number of seconds (`what` names the argument) as a float, or None
    (infinity is no time: the journals could not keep the run's policy)."""
    if value is None:
        return None
    return checked_seconds(what, value, error=PermissionConfigError)
