"""Where an audit log's HMAC key comes from: the constructor, a key file or the environment.

A log without a key is a configuration error, found when the log is made, not after a
run wrote entries anybody could recompute. `unsigned=True` opts out explicitly (tests,
throwaway logs); every entry of such a log then carries `"unsigned": true`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .audit_chain import AuditLogError

DEFAULT_KEY_ENV = "LOOMGRAPH_AUDIT_KEY"
"""The environment variable read when no key, key file or key variable is given."""

_MAX_KEY_FILE = 64 * 1024


class AuditConfigError(AuditLogError, ValueError):
    """The audit log is configured wrongly: no key, two sources of key, an unreadable key file."""


class AuditKeyMissing(AuditConfigError):
    """No key was given for a log that is not explicitly `unsigned=True`. Which remedy
    applies, as data for a caller that words it in its own terms (the command line's
    options): `variable`, the environment variable looked in, and `named`, whether the
    caller named it (`key_env=`: set it) or it is the default (give any key source)."""

    def __init__(self, message: str, *, variable: str = "", named: bool = False) -> None:
        super().__init__(message)
        self.variable = variable or DEFAULT_KEY_ENV
        self.named = named


def resolve_audit_key(
    key: bytes | str | None = None,
    *,
    key_file: str | os.PathLike[str] | None = None,
    key_env: str | None = None,
    unsigned: bool = False,
) -> bytes | None:
    """The HMAC key from exactly one source, or None for an explicitly unsigned log.

    With no source given, `$LOOMGRAPH_AUDIT_KEY` is used when set; otherwise
    `AuditKeyMissing` is raised. `str` keys are UTF-8 encoded; a key file's bytes are used
    with surrounding whitespace (a trailing newline) stripped; a variable's bytes as the
    environment holds them (UTF-8 text or not).
    """
    sources = [
        name
        for name, v in (("key", key), ("key_file", key_file), ("key_env", key_env))
        if v is not None
    ]
    if len(sources) > 1:
        raise AuditConfigError(f"give one audit key source, not {' and '.join(sources)}")
    if unsigned:
        if sources:
            raise AuditConfigError(f"unsigned=True contradicts {sources[0]}=")
        return None
    if key is not None:
        if isinstance(key, str):
            raw = key.encode("utf-8")
        elif isinstance(key, bytes | bytearray | memoryview):
            raw = bytes(key)
        else:  # `bytes(123)` is 123 zero bytes: a key anybody could guess
            raise AuditConfigError(f"key= must be bytes or text, not {type(key).__name__}")
        return _non_empty(raw, "the key= argument")
    if key_file is not None:
        return _read_key_file(Path(key_file))
    env = key_env if key_env is not None else DEFAULT_KEY_ENV
    value = _env_bytes(env)
    if value is None:
        if key_env is not None:
            raise AuditKeyMissing(
                f"the audit key variable ${key_env} is not set", variable=key_env, named=True
            )
        raise AuditKeyMissing(
            "the audit log has no key: pass key=, key_file= or key_env=, set "
            f"${DEFAULT_KEY_ENV}, or pass unsigned=True for a log anyone can rewrite",
            variable=DEFAULT_KEY_ENV,
        )
    return _non_empty(value, f"${env}")


def _env_bytes(name: str) -> bytes | None:
    """The variable's value as the environment holds it, or None when unset. Raw bytes: a
    key from `head -c 32 /dev/urandom` is rarely UTF-8, and is the key as a key file of the
    same bytes would be (a value that is UTF-8 text is its UTF-8 bytes either way)."""
    try:
        if os.supports_bytes_environ:
            return os.environb.get(os.fsencode(name))
        value = os.environ.get(name)
        return None if value is None else value.encode("utf-8")
    except UnicodeError:  # a name (or, without bytes environ, a value) that is not text
        raise AuditConfigError(
            f"the audit key variable {name!r} cannot be read as bytes: a name or value that "
            "is not valid text"
        ) from None


def _read_key_file(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise AuditConfigError(f"cannot read the audit key file {path}: {exc}") from None
    if len(raw) > _MAX_KEY_FILE:
        raise AuditConfigError(f"the audit key file {path} is over {_MAX_KEY_FILE} bytes")
    return _non_empty(raw.strip(), f"the key file {path}")


def _non_empty(raw: bytes, where: str) -> bytes:
    if not raw:
        raise AuditConfigError(f"the audit key from {where} is empty, which protects nothing")
    return raw
