"""Permission files: YAML (or plain data) checked key by key into StandardPermissions arguments.

    mode: strict
    approval_timeout_s: 600
    sets:
      payees: [alice@bank.example, bob@bank.example]
      team: {file: team.txt}          # one entry a line; `#` starts a comment
    deny:  ["send_email(to=any(*@evil.example))"]
    ask:
      - "transfer unless transfer(amount<=100, to in $payees)"
      - {rule: wire, unless: ["wire(amount<=10)"], approval_timeout_s: 60}
    allow: ["read_inbox", "send_email(to=all(*@corp.example), cc=<absent>)"]
    per_user:
      alice: {mode: default, allow: ["transfer(amount<=1000)"]}

Every error is a PermissionConfigError (a RuleSyntaxError for a rule) naming file and line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loomgraph.governance.permission_args import checked_timeout
from loomgraph.governance.rule_errors import (
    PermissionConfigError,
    PermissionTypeError,
    RuleSyntaxError,
)
from loomgraph.governance.rule_syntax import parse_text
from loomgraph.governance.rules import Rule, parse_rule

if TYPE_CHECKING:
    from loomgraph.protocols.safe_yaml import Lines

__all__ = ["MODES", "ask_entry", "kwargs_from_data", "kwargs_from_file"]

TOP_KEYS = ("mode", "allow", "ask", "deny", "per_user", "sets", "approval_timeout_s", "on_tainted")
USER_KEYS = ("mode", "allow", "ask", "deny", "sets", "approval_timeout_s")
ASK_KEYS = ("rule", "unless", "approval_timeout_s")
MODES = ("default", "accept_edits", "bypass", "strict")
TAINT_VERDICTS = ("ask", "deny", "allow")
_MAX_BYTES = 1_000_000


def ask_entry(entry: Any) -> tuple[Rule, float | None]:
    """An ask rule, as text or `{rule:, unless: [...], approval_timeout_s:}`, and its timeout."""
    if isinstance(entry, str):
        return parse_rule(entry), None
    if not isinstance(entry, Mapping):
        raise PermissionTypeError(f"an ask rule must be text or a mapping, not {entry!r}")
    unknown = sorted(set(entry) - set(ASK_KEYS))
    if unknown or "rule" not in entry:
        raise PermissionConfigError(
            f"an ask mapping takes {', '.join(ASK_KEYS)} (rule required); got {sorted(entry)}"
        )
    base = parse_rule(entry["rule"], unless=False)
    unless = entry.get("unless") or []
    if isinstance(unless, str) or not isinstance(unless, list):
        raise PermissionTypeError("unless must be a list of rules")
    extra = tuple(parse_rule(u, unless=False) for u in unless)
    rule = Rule(base.text, base.tool, base.conds, extra)
    text = rule.canonical_text if extra else base.text
    timeout = checked_timeout(entry.get("approval_timeout_s"), "approval_timeout_s")
    return Rule(text, rule.tool, rule.conds, extra), timeout


def kwargs_from_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML permission file into StandardPermissions keyword arguments."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PermissionConfigError(f"cannot read permission file: {err}", file=file) from err
    if len(text) > _MAX_BYTES:
        raise PermissionConfigError(f"larger than {_MAX_BYTES} bytes", file=file)
    data, lines = _parse_yaml(text, file)
    return kwargs_from_data(data, file=file, lines=lines, base_dir=Path(path).parent)


def kwargs_from_data(
    data: Any,
    *,
    file: str | None = None,
    lines: Lines | None = None,
    base_dir: Path | None = None,
) -> dict[str, Any]:
    """Check plain data key by key and return StandardPermissions keyword arguments."""
    lines = lines or {}

    def fail(err: PermissionConfigError, path: tuple[str | int, ...]) -> PermissionConfigError:
        for cut in range(len(path), -1, -1):
            if path[:cut] in lines:
                return err.at(file, lines[path[:cut]])
        return err.at(file, None)

    def entry(value: Any, path: tuple[str | int, ...], keys: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            named = f"{'.'.join(str(p) for p in path)} " if path else ""  # per_user.alice
            raise fail(PermissionTypeError(f"{named}expected a mapping"), path)
        out: dict[str, Any] = {}
        for key, item in value.items():
            where = (*path, key)
            if key not in keys:
                raise fail(
                    PermissionConfigError(f"unknown key {key!r}; use {', '.join(keys)}"), where
                )
            if key in ("allow", "deny", "ask"):
                out[key] = rules(item, where, key)
            elif key == "sets":
                out[key] = sets(item, where)
            else:
                out[key] = item
        return out

    def rules(value: Any, path: tuple[str | int, ...], kind: str) -> list[Any]:
        if not isinstance(value, list):
            raise fail(PermissionTypeError(f"{kind} must be a list of rules"), path)
        for i, item in enumerate(value):
            try:
                if kind == "ask":
                    ask_entry(item)
                elif not isinstance(item, str):
                    raise PermissionTypeError(f"a {kind} rule must be text, not {item!r}")
                else:
                    parse_text(item, unless_allowed=False)
            except (PermissionConfigError, RuleSyntaxError) as err:
                raise fail(err, (*path, i)) from None
        return list(value)

    def sets(value: Any, path: tuple[str | int, ...]) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise fail(PermissionTypeError("sets must map names to lists"), path)
        out: dict[str, Any] = {}
        for name, items in value.items():
            if isinstance(items, Mapping) and set(items) == {"file"}:
                items = _set_file(base_dir, items["file"], fail, (*path, name))
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise fail(
                    PermissionTypeError(f"set {name!r}: a list of strings or {{file: PATH}}"),
                    (*path, name),
                )
            out[_text_key(name, "set name", fail, (*path, name))] = items
        return out

    top = entry(data, (), TOP_KEYS)
    users = top.get("per_user") or {}
    if not isinstance(users, Mapping):
        raise fail(PermissionTypeError("per_user must map user ids to entries"), ("per_user",))
    if users:
        top["per_user"] = {
            _text_key(uid, "user id", fail, ("per_user", uid)): entry(
                u, ("per_user", uid), USER_KEYS
            )
            for uid, u in users.items()
        }
    _check_values(top, fail, {})
    for uid, user in (top.get("per_user") or {}).items():
        _check_values(
            user, lambda err, p, uid=uid: fail(err, ("per_user", uid, *p)), top.get("sets") or {}
        )
    return top


def _text_key(key: Any, what: str, fail: Any, path: tuple[str | int, ...]) -> str:
    """A user id or set name as given; one that is no text is refused, since str() of it is
    not what was written (YAML reads `007:` as 7, `on:` as True)."""
    if isinstance(key, str):
        return key
    problem = f"{what} {key!r} is {type(key).__name__}, not text; quote it as written"
    raise fail(PermissionTypeError(problem), path)


def _check_values(kwargs: dict[str, Any], fail: Any, sets: Mapping[str, Any]) -> None:
    """Mode, timeouts and set names, checked here so the error can show a line."""
    path: tuple[str | int, ...] = ()
    mode = kwargs.get("mode")
    if mode is not None and mode not in MODES:
        raise fail(
            PermissionConfigError(f"unknown mode {mode!r}; use {', '.join(MODES)}"), ("mode",)
        )
    tainted = kwargs.get("on_tainted", "ask")
    if tainted not in TAINT_VERDICTS:
        problem = f"on_tainted must be 'ask', 'deny' or 'allow', not {tainted!r}"
        raise fail(PermissionConfigError(problem), ("on_tainted",))
    try:
        checked_timeout(kwargs.get("approval_timeout_s"), "approval_timeout_s")
    except PermissionConfigError as err:
        raise fail(err, ("approval_timeout_s",)) from None
    known = {**sets, **(kwargs.get("sets") or {})}
    for kind in ("deny", "ask", "allow"):
        for i, item in enumerate(kwargs.get(kind) or []):
            rule = ask_entry(item)[0] if kind == "ask" else parse_rule(item, unless=False)
            unknown = sorted(rule.set_names - set(known))
            if unknown:
                problem = f"rule uses unknown set(s) {', '.join('$' + u for u in unknown)}"
                raise fail(PermissionConfigError(problem), (*path, kind, i))


def _set_file(base: Path | None, name: Any, fail: Any, path: tuple[str | int, ...]) -> list[str]:
    if not isinstance(name, str):
        raise fail(PermissionTypeError("file must be a path"), path)
    target = (base or Path.cwd()) / name
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise fail(
            PermissionConfigError(f"cannot read set file {str(target)!r}: {err}"), path
        ) from None
    return [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]


def _parse_yaml(text: str, file: str) -> tuple[Any, Lines]:
    """The file's data, and its lines with each key at its own line (`key_first`)."""
    # Imported here: permissions given in code never need a YAML parser.
    import yaml

    from loomgraph.protocols.safe_yaml import BoundedLoader, YamlRefused, key_first, locate

    try:
        loader = BoundedLoader(text)  # checks every character first: a NUL raises here
    except yaml.reader.ReaderError as err:
        where = text.count("\n", 0, err.position) + 1
        problem = f"unacceptable character #x{err.character:04x}: not allowed in YAML"
        raise PermissionConfigError(problem, file=file, line=where) from None
    try:
        # Every key of a permission file is text (a name, a user id): `locate` refuses
        # `on:`, `007:`, `12:30:` and `null:`, which would become other ids.
        located = locate(loader)
    except YamlRefused as refused:
        raise PermissionConfigError(str(refused), file=file, line=refused.line) from None
    except RecursionError:  # the depth limit should stop it first; never a traceback
        raise PermissionConfigError(str(YamlRefused("depth", None)), file=file) from None
    except yaml.MarkedYAMLError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else None
        raise PermissionConfigError(str(err.problem or err), file=file, line=line) from None
    except yaml.YAMLError as err:  # any other error of the YAML library, still located
        raise PermissionConfigError(str(err), file=file) from None
    finally:
        loader.dispose()
    if located.duplicates:
        first = located.duplicates[0]
        raise PermissionConfigError(f"key {first.key!r} appears twice", file=file, line=first.line)
    return located.data, key_first(located.lines)
