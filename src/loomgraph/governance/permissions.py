"""`StandardPermissions`: deny → ask → allow rules, a mode, per-user rules and a policy.

How one call is decided, first answer wins:

1. an unknown tool (no spec) is denied (`unknown_tool`), whatever else is configured;
2. the first matching deny rule denies; then the first matching ask rule asks (in `bypass`
   mode it allows instead); then the first matching allow rule allows;
3. the policy, when there is one, decides: allow, deny, ask, or `"default"` to leave the
   call to the mode; a policy that raises or returns anything else denies;
4. the mode: `default` asks for destructive tools and allows the rest, `accept_edits` and
   `bypass` allow everything, `strict` denies everything (only rules and the policy allow).

Per-user entries add their rules to the global ones (the global deny rules therefore hold
for every user); their mode and policy, when given, replace the global ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, get_args

from loomgraph.governance.rules import Rule, parse_rule
from loomgraph.protocols import Decision, ToolCall, ToolSpec

__all__ = ["Mode", "Policy", "StandardPermissions"]

Mode = Literal["default", "accept_edits", "bypass", "strict"]
MODES: tuple[str, ...] = get_args(Mode)
PolicyResult: TypeAlias = Decision | str
Policy: TypeAlias = Callable[
    [ToolCall, ToolSpec | None, str | None], PolicyResult | Awaitable[PolicyResult]
]
UserEntry: TypeAlias = "StandardPermissions | Mapping[str, Any]"
_ENTRY_KEYS = frozenset({"allow", "ask", "deny", "mode", "policy"})


@dataclass(frozen=True, slots=True)
class LabelledRule:
    """A rule and the name a Decision gives it (`deny:…`, `user:alice:allow:…`)."""

    rule: Rule
    name: str


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules, mode and policy that hold for one user, global ones merged with theirs."""

    deny: tuple[LabelledRule, ...]
    ask: tuple[LabelledRule, ...]
    allow: tuple[LabelledRule, ...]
    mode: Mode
    policy: Policy | None


class StandardPermissions:
    """Rules `tool` or `tool(arg=glob, ...)`, checked deny → ask → allow, then policy, then mode.

    Rules are parsed here: a malformed rule raises ValueError naming it. `per_user` maps a
    user id to a StandardPermissions or a dict of the same keyword arguments.
    """

    def __init__(
        self,
        allow: Iterable[str] = (),
        ask: Iterable[str] = (),
        deny: Iterable[str] = (),
        mode: Mode | None = None,
        per_user: Mapping[str, UserEntry] | None = None,
        policy: Policy | None = None,
    ) -> None:
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown permission mode {mode!r}; use one of {', '.join(MODES)}")
        if policy is not None and not callable(policy):
            raise TypeError(f"policy must be callable, not {type(policy).__name__}")
        self.allow = tuple(_parse_all(allow, "allow"))
        self.ask = tuple(_parse_all(ask, "ask"))
        self.deny = tuple(_parse_all(deny, "deny"))
        self.given_mode = mode
        self.mode: Mode = mode or "default"
        self.policy = policy
        self.per_user: dict[str, StandardPermissions] = {}
        for user_id, entry in (per_user or {}).items():
            self.per_user[user_id] = _user_entry(user_id, entry)
        self._sets: dict[str | None, RuleSet] = {}

    def __repr__(self) -> str:
        return (
            f"StandardPermissions(deny={len(self.deny)}, ask={len(self.ask)}, "
            f"allow={len(self.allow)}, mode={self.mode!r}, users={len(self.per_user)})"
        )

    def rules_for(self, user_id: str | None) -> RuleSet:
        """The merged rules, mode and policy that hold for one user."""
        found = self._sets.get(user_id)
        if found is not None:
            return found
        user = self.per_user.get(user_id) if user_id is not None else None

        def label(kind: str) -> tuple[LabelledRule, ...]:
            own = tuple(LabelledRule(r, f"{kind}:{r.text}") for r in getattr(self, kind))
            if user is None:
                return own
            return own + tuple(
                LabelledRule(r, f"user:{user_id}:{kind}:{r.text}") for r in getattr(user, kind)
            )

        mode = user.given_mode if user is not None and user.given_mode else self.mode
        policy = user.policy if user is not None and user.policy is not None else self.policy
        found = RuleSet(label("deny"), label("ask"), label("allow"), mode, policy)
        self._sets[user_id] = found
        return found

    async def check(
        self, call: ToolCall, spec: ToolSpec | None, *, user_id: str | None
    ) -> Decision:
        """allow, deny or ask for one call, naming the rule that decided."""
        if spec is None:
            return Decision("deny", "unknown_tool", f"no tool named {call.get('tool')!r}")
        rules = self.rules_for(user_id)
        for entry in rules.deny:
            if entry.rule.matches(call):
                return Decision("deny", entry.name, f"denied by rule {entry.rule.text!r}")
        for entry in rules.ask:
            if entry.rule.matches(call):
                if rules.mode == "bypass":
                    return Decision(
                        "allow", "mode:bypass", f"ask rule {entry.rule.text!r} bypassed"
                    )
                return Decision("ask", entry.name, f"rule {entry.rule.text!r} asks")
        for entry in rules.allow:
            if entry.rule.matches(call, every=True):
                return Decision("allow", entry.name, f"allowed by rule {entry.rule.text!r}")
        if rules.policy is not None:
            decided = await _ask_policy(rules.policy, call, spec, user_id)
            if decided is not None:
                if decided.verdict == "ask" and rules.mode == "bypass":
                    return Decision("allow", "mode:bypass", f"{decided.rule} asks; bypassed")
                return decided
        return _mode_default(rules.mode, spec)


def _mode_default(mode: Mode, spec: ToolSpec) -> Decision:
    if mode == "strict":
        return Decision("deny", "mode:strict:deny", "strict mode: no rule allows this call")
    if mode == "default" and spec.get("destructive"):
        return Decision(
            "ask", "mode:default:destructive", f"tool {spec.get('name')!r} is destructive"
        )
    return Decision("allow", f"mode:{mode}:allow")


async def _ask_policy(
    policy: Policy, call: ToolCall, spec: ToolSpec, user_id: str | None
) -> Decision | None:
    """The policy's Decision, None for "default", a deny when it raises or returns junk."""
    name = getattr(policy, "__qualname__", None) or type(policy).__name__
    try:
        result: Any = policy(call, spec, user_id)
        if inspect.isawaitable(result):
            result = await result
    except Exception as err:
        return Decision("deny", "policy:error", f"policy {name} raised {type(err).__name__}: {err}")
    if isinstance(result, Decision) and result.verdict in ("allow", "deny", "ask"):
        rule = f"policy:{result.rule}" if result.rule else f"policy:{name}"
        return Decision(result.verdict, rule, result.reason)
    if isinstance(result, str) and result in ("allow", "deny", "ask"):
        return Decision(result, f"policy:{name}")  # type: ignore[arg-type]
    if result == "default":
        return None
    return Decision(
        "deny",
        "policy:error",
        f"policy {name} returned {result!r}, not a "
        "Decision or one of 'allow', 'deny', 'ask', 'default'",
    )


def _parse_all(rules: Iterable[str], kind: str) -> list[Rule]:
    if isinstance(rules, str):
        raise TypeError(f"{kind} must be a list of rules, not one string ({rules!r})")
    return [parse_rule(r) for r in rules]


def _user_entry(user_id: str, entry: UserEntry) -> StandardPermissions:
    if isinstance(entry, StandardPermissions):
        found = entry
    elif isinstance(entry, Mapping):
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            raise ValueError(
                f"per_user[{user_id!r}]: unknown keys {sorted(unknown)}; use "
                f"{', '.join(sorted(_ENTRY_KEYS))}"
            )
        found = StandardPermissions(**entry)
    else:
        raise TypeError(
            f"per_user[{user_id!r}] must be StandardPermissions or a dict, not "
            f"{type(entry).__name__}"
        )
    if found.per_user:
        raise ValueError(f"per_user[{user_id!r}] cannot have per-user entries of its own")
    return found
