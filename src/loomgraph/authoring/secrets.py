"""`${ENV_VAR}` substitution in agent files, and redaction of every value substituted.

A substituted value may be a key or a token, so it is remembered (in this process) and
`redact` replaces it in any text loomgraph prints: errors, reprs, command output.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["REDACTED", "redact", "substitute_env"]

REDACTED = "***"
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_secrets: set[str] = set()


def redact(text: str) -> str:
    """`text` with every value substituted from the environment replaced by `***`."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


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
            _secrets.add(found)
        return found

    return _VAR.sub(value, data)
