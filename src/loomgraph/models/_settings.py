"""Checks of an adapter's own settings, its API key and its server's URL, before anything is
sent: a mistake there is a `ModelConfigError` naming the setting, raised once, never a raw
error of the HTTP library (or one retried as if the network were down).

Messages never show a key, nor the user and password a URL may carry.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from loomgraph.models.errors import ModelConfigError

__all__ = ["check_key", "check_url", "shown"]

# What a message shows of a value it quotes (a URL, a content type, a body's first bytes).
MAX_SHOWN = 160
_USERINFO = re.compile(r"^([^:/?#]*://)[^/?#@]*@")


def check_key(key: str, setting: str, label: str) -> None:
    """ModelConfigError unless `key` can be sent in a header: printable ASCII, no spaces."""
    _text(key, setting, label)
    for at, char in enumerate(key):
        if not "!" <= char <= "~":
            raise ModelConfigError(
                f"{label}: {setting} has {_described(char)} at character {at + 1} of "
                f"{len(key)}; an API key is printable ASCII without spaces or line breaks "
                "(was it copied with a line break, or shortened with an ellipsis?)"
            )


def check_url(url: str, setting: str, label: str) -> None:
    """ModelConfigError unless `url` is an http(s) URL with a host and a usable port."""
    _text(url, setting, label)
    problem = _url_problem(url)
    if problem:
        without_password = _USERINFO.sub(r"\1…@", url)
        raise ModelConfigError(
            f"{label}: {setting} {shown(without_password)} is not a server's "
            f"address: {problem} (write http://HOST:PORT/PATH or https://…)"
        )


def shown(text: str) -> str:
    """`text` for a message: quoted and escaped (`repr`), at most `MAX_SHOWN` characters."""
    return repr(text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "…")


def _text(value: object, setting: str, label: str) -> None:
    if not isinstance(value, str):
        raise ModelConfigError(f"{label}: {setting} is a {type(value).__name__}, not text")


def _url_problem(url: str) -> str:
    if any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        return "it has a space, a line break or a control character"
    try:
        parts = urlsplit(url)
        port = parts.port  # (out of range, or not a number: ValueError)
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https"):
        return f"its scheme is {parts.scheme!r}, not http or https"
    if not parts.hostname:
        return "it names no host"
    if port == 0:
        return "port 0 is no server's"
    return ""


def _described(char: str) -> str:
    if char in "\r\n":
        return "a line break"
    if char in " \t":
        return "a space" if char == " " else "a tab"
    code = f"U+{ord(char):04X}"
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return f"a control character ({code})"
    return f"the non-ASCII character {char!r} ({code})"
