"""`${ENV_VAR}` substitution in agent files, and redaction of every value substituted.

A substituted value may be a key or a token, so it is remembered (in this process) and
`redact` replaces it in any text loomgraph prints: errors, reprs, command output.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["REDACTED", "has_secrets", "redact", "redact_data", "substitute_env"]

REDACTED = "***"
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_secrets: set[str] = set()


def redact(text: str) -> str:
    """`text` with every value substituted from the environment replaced by `***`."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _spellings(secret: str) -> set[str]:
    """The value as text shows it: as is, inside a `repr` (either quote escaped, as Python
    picks), inside a JSON string, and HTML-escaped: a message or a diagram that quotes the
    value still loses it to `redact`."""
    return {
        secret,
        repr(secret)[1:-1],
        repr(secret + "'\"")[1:-4],  # with both quotes, Python escapes the single one
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        html.escape(secret),
        html.escape(secret, quote=False),
    }


def has_secrets() -> bool:
    """Whether any value was substituted in this process (else `redact` changes nothing)."""
    return bool(_secrets)


def redact_data(data: Any) -> Any:
    """`data` (plain data: dicts, lists, scalars) with `redact` applied to every string
    value; keys are left alone (substitution never touches them)."""
    if isinstance(data, dict):
        return {k: redact_data(v) for k, v in data.items()}
    if isinstance(data, list):
        return [redact_data(v) for v in data]
    return redact(data) if isinstance(data, str) else data


def substitute_env(
    data: Any,
    on_missing: Callable[[str, tuple[str | int, ...]], None],
    environ: Mapping[str, str] | None = None,
    path: tuple[str | int, ...] = (),
) -> Any:
    """`data` with `${NAME}` in every string replaced by the variable's value (`$$` is a
    literal `$`); a variable that is not set is reported to `on_missing` with its path."""
    env = os.environ if environ is None else environ
    if isinstance(data, dict):
        return {k: substitute_env(v, on_missing, env, (*path, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [substitute_env(v, on_missing, env, (*path, i)) for i, v in enumerate(data)]
    if not isinstance(data, str) or "$" not in data:
        return data

    def value(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        if name not in env:
            on_missing(name, path)
            return ""
        found = env[name]
        if len(found) >= 3:  # shorter values would redact ordinary text everywhere
            _secrets.update(_spellings(found))
        return found

    return _VAR.sub(value, data)
