"""`StandardPermissions`: deny → ask → allow rules, a mode, per-user rules and a policy.

How one call is decided, first answer wins:

1. an unknown tool (no spec) is denied (`unknown_tool`), whatever else is configured;
2. the first matching deny rule denies; then the first matching ask rule asks (in `bypass`
   mode it allows instead); then the first matching allow rule allows;
3. the policy, when there is one, decides: allow, deny, ask, or `"default"` to leave the
   call to the mode; a policy that raises or returns anything else denies;
4. the mode: `default` asks for destructive tools and allows the rest, `accept_edits` and
   `bypass` allow everything, `strict` denies everything (only rules and the policy allow).

An ask rule may carry `unless` rules: when every ask rule that matches a call is excused by
one of its `unless` rules (matched as strictly as an allow rule), the call is allowed.

Per-user entries add their rules to the global ones (the global deny rules therefore hold
for every user); their mode and policy, when given, replace the global ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeAlias, get_args

from loomgraph.governance import permission_files
from loomgraph.governance.permission_args import (
    check_set_names,
    checked_sets,
    checked_timeout,
    parse_rules,
    rule_list,
)
from loomgraph.governance.permission_decisions import LabelledRule, Mode, Policy, RuleSet, decide
from loomgraph.governance.permission_fingerprint import (
    FORMAT,
    described,
    pinnable,
    qualname,
    set_data,
)
from loomgraph.governance.rule_errors import PermissionConfigError, PermissionTypeError
from loomgraph.governance.rules import Rule, SetSource
from loomgraph.protocols import Decision, ToolCall, ToolSpec, Verdict

# `Mode` and `Policy` live in `permission_decisions`: re-exported, as the public names.
__all__ = ["Mode", "Policy", "StandardPermissions"]

MODES: tuple[str, ...] = get_args(Mode)
assert MODES == permission_files.MODES  # one list of modes, spelled twice for the type
UserEntry: TypeAlias = "StandardPermissions | Mapping[str, Any]"
RuleEntry: TypeAlias = "str | Mapping[str, Any]"
_ENTRY_KEYS = frozenset({"allow", "ask", "deny", "mode", "policy", "sets", "approval_timeout_s"})


class StandardPermissions:
    """Rules checked deny → ask (with `unless`) → allow, then the policy, then the mode.

    Rules are parsed here: a malformed one raises RuleSyntaxError (a ValueError) naming it and
    the position. `per_user` maps a user id to a StandardPermissions or a dict of the same
    keyword arguments; `sets` maps a name used as `$name` in rules to strings or to a
    callable returning them (called at each check). `approval_timeout_s` is kept for the
    engine: see `approval_timeout`.
    """

    def __init__(
        self,
        allow: Iterable[str] = (),
        ask: Iterable[RuleEntry] = (),
        deny: Iterable[str] = (),
        mode: Mode | None = None,
        per_user: Mapping[str, UserEntry] | None = None,
        policy: Policy | None = None,
        sets: Mapping[str, SetSource] | None = None,
        approval_timeout_s: float | None = None,
        on_tainted: Verdict | None = None,
    ) -> None:
        if mode is not None and mode not in MODES:
            raise PermissionConfigError(
                f"unknown permission mode {mode!r}; use one of {', '.join(MODES)}"
            )
        if policy is not None and not callable(policy):
            raise PermissionTypeError(f"policy must be callable, not {type(policy).__name__}")
        if on_tainted is not None and on_tainted not in ("ask", "deny", "allow"):
            raise PermissionConfigError(
                f"on_tainted must be 'ask', 'deny' or 'allow', not {on_tainted!r}"
            )
        # What an egress tool's call gets when its arguments carry untrusted text.
        self.on_tainted: Verdict = on_tainted or "ask"
        # Set on purpose: a per-user entry may not (it holds for the whole agent).
        self.given_on_tainted = on_tainted
        self.sets: dict[str, SetSource] = checked_sets(sets)
        self.approval_timeout_s = checked_timeout(approval_timeout_s, "approval_timeout_s")
        self.allow = tuple(parse_rules(allow, "allow"))
        self.rule_timeouts: dict[str, float] = {}
        self.ask = tuple(self._parse_ask(ask))
        self.deny = tuple(parse_rules(deny, "deny"))
        self.given_mode = mode
        self.mode: Mode = mode or "default"
        self.policy = policy
        for rule in (*self.allow, *self.ask, *self.deny):
            check_set_names(rule, self.sets)
        if per_user is not None and not isinstance(per_user, Mapping):
            raise PermissionTypeError(
                f"per_user must map a user id to its permissions, not {type(per_user).__name__} "
                f"{per_user!r}"
            )
        self.per_user: dict[str, StandardPermissions] = {}
        for user_id, entry in (per_user or {}).items():
            self.per_user[user_id] = _user_entry(user_id, entry, self.sets)
        self._rule_sets: dict[str | None, RuleSet] = {}
        # to_data() as JSON text and its fingerprint, made once: every run pins the policy,
        # and like the merged rule sets above, the policy is not changed once made.
        self._described: tuple[str, str] | None = None

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, policy: Policy | None = None
    ) -> StandardPermissions:
        """Permissions from plain data shaped like a permission file; unknown keys are errors."""
        return cls(**permission_files.kwargs_from_data(data), policy=policy)

    @classmethod
    def from_file(cls, path: str | Path, *, policy: Policy | None = None) -> StandardPermissions:
        """Permissions from a YAML file; errors name the file and line."""
        return cls(**permission_files.kwargs_from_file(path), policy=policy)

    def __repr__(self) -> str:
        return (
            f"StandardPermissions(deny={len(self.deny)}, ask={len(self.ask)}, "
            f"allow={len(self.allow)}, mode={self.mode!r}, users={len(self.per_user)})"
        )

    def _parse_ask(self, entries: Iterable[RuleEntry]) -> list[Rule]:
        out = []
        for entry in rule_list(entries, "ask"):
            rule, timeout = permission_files.ask_entry(entry)
            out.append(rule)
            if timeout is not None:
                self.rule_timeouts[rule.text] = timeout
        return out

    def rules_for(self, user_id: str | None) -> RuleSet:
        """The merged rules, mode, policy and sets that hold for one user."""
        found = self._rule_sets.get(user_id)
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
        sets = {**self.sets, **(user.sets if user is not None else {})}
        found = RuleSet(label("deny"), label("ask"), label("allow"), mode, policy, sets)
        self._rule_sets[user_id] = found
        return found

    @property
    def reads_arguments(self) -> bool:
        """Whether a decision may depend on a call's arguments: a rule with conditions (an
        `unless` one too), or a policy, here or for a user."""
        parts = (self, *self.per_user.values())
        return any(
            p.policy is not None
            or any(r.conds or any(u.conds for u in r.unless) for r in (*p.allow, *p.ask, *p.deny))
            for p in parts
        )

    def approval_timeout(self, rule: str, *, user_id: str | None = None) -> float | None:
        """Seconds an ask decided by `rule` (a Decision's rule name) for `user_id`'s call may
        wait, or None: the rule's own timeout, else its user's, else the global one."""
        # Given the call's user, only her rules can have decided it: matching every user's
        # prefix let a user id holding ":ask:" take another user's timeout.
        users = (
            self.per_user.items() if user_id is None else [(user_id, self.per_user.get(user_id))]
        )
        for uid, user in users:
            prefix = f"user:{uid}:ask:"
            if user is not None and rule.startswith(prefix):
                found = user.rule_timeouts.get(rule[len(prefix) :], user.approval_timeout_s)
                return found if found is not None else self.approval_timeout_s
        if rule.startswith("ask:") and rule[4:] in self.rule_timeouts:
            return self.rule_timeouts[rule[4:]]
        # Any other ask of the user's call (a global rule, the mode, the policy, a taint).
        own = self.per_user.get(user_id) if user_id is not None else None
        if own is not None and own.approval_timeout_s is not None:
            return own.approval_timeout_s
        return self.approval_timeout_s

    async def check(
        self, call: ToolCall, spec: ToolSpec | None, *, user_id: str | None
    ) -> Decision:
        """allow, deny or ask for one call, naming the rule that decided."""
        if spec is None:
            return Decision("deny", "unknown_tool", f"no tool named {call.get('tool')!r}")
        return await decide(self.rules_for(user_id), call, spec, user_id=user_id)

    def to_data(self) -> dict[str, Any]:
        """Everything that decides, as canonical JSON-shaped data (what `fingerprint` hashes)."""
        data: dict[str, Any] = json.loads(self._description()[0])  # a fresh copy each time
        return data

    def fingerprint(self) -> str:
        """`sha256:<hex>` of `to_data()`: equal for policies that decide every call alike."""
        return self._description()[1]

    def _description(self) -> tuple[str, str]:
        if self._described is None:
            self._described = described(self._data())  # to_data() keeps its key order
        return self._described

    def _data(self) -> dict[str, Any]:
        data = self._own_data(top=True)
        data["per_user"] = {}
        for uid, user in sorted(self.per_user.items()):
            own = user._own_data(top=False)
            # A dict entry inherits the global sets: list only what the user adds or changes.
            own["sets"] = {k: v for k, v in own["sets"].items() if data["sets"].get(k) != v}
            data["per_user"][uid] = own
        data["pinnable"] = pinnable(data)
        return data

    def _own_data(self, *, top: bool) -> dict[str, Any]:
        ask = [
            {"rule": r.canonical_text, "approval_timeout_s": self.rule_timeouts[r.text]}
            if r.text in self.rule_timeouts
            else r.canonical_text
            for r in self.ask
        ]
        return {
            **({"format": FORMAT} if top else {}),
            "mode": self.mode if top else self.given_mode,
            "deny": [r.canonical_text for r in self.deny],
            "ask": ask,
            "allow": [r.canonical_text for r in self.allow],
            "policy": None if self.policy is None else {"callable": qualname(self.policy)},
            "sets": {name: set_data(source) for name, source in sorted(self.sets.items())},
            "approval_timeout_s": self.approval_timeout_s,
            **({"on_tainted": self.on_tainted} if top else {}),
        }


def _user_entry(
    user_id: str, entry: UserEntry, sets: Mapping[str, SetSource]
) -> StandardPermissions:
    if isinstance(entry, StandardPermissions):
        found = entry
    elif isinstance(entry, Mapping):
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            raise PermissionConfigError(
                f"per_user[{user_id!r}]: unknown keys {sorted(unknown)}; use "
                f"{', '.join(sorted(_ENTRY_KEYS))}"
            )
        found = StandardPermissions(**{**entry, "sets": {**sets, **(entry.get("sets") or {})}})
    else:
        raise PermissionTypeError(
            f"per_user[{user_id!r}] must be StandardPermissions or a dict, not "
            f"{type(entry).__name__}"
        )
    if found.per_user:
        raise PermissionConfigError(
            f"per_user[{user_id!r}] cannot have per-user entries of its own"
        )
    if found.given_on_tainted is not None:
        raise PermissionConfigError(
            f"per_user[{user_id!r}] sets on_tainted, which holds for the whole agent: "
            "set it on the top-level permissions"
        )
    return found
