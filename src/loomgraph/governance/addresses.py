"""Readings of network names for deny and ask rules: a host in its other spellings, a URL with
its host so spelled, and the addresses an e-mail address list holds.

One host has several spellings that resolvers and clients treat alike: with its root dot
(`x.example.`), with an ideographic full stop IDNA maps to a dot (`x。example`), and in
punycode (`xn--…`, the ASCII form of a Unicode name, whose lookalike letters then read as the
Latin ones they imitate). A mail library delivers `Bob <bob@x.example>` to `bob@x.example`,
and an HTTP client given `https://u@x.example:443/a` talks to `x.example`, as a WHATWG URL
parser does given `https:/x.example/a`, `https:x.example/a` or `https:\\\\x.example\\a` (a
special scheme needs no `//`). An IP address has
spellings of its own that the C resolver (`inet_aton`, behind every client's `getaddrinfo`)
connects to alike: `2130706433`, `0x7f000001`, `0177.0.0.1` and `127.1` are all `127.0.0.1`,
and so is the IPv4-mapped IPv6 `[::ffff:127.0.0.1]`. These readings only
ever make a deny or ask rule match more; an allow rule naming an address must match every
address of a list as well as the value (`addr_specs`): it only ever matches less.
"""

from __future__ import annotations

import contextlib
import inspect
import ipaddress
import re
import socket
import unicodedata
from email.utils import getaddresses
from encodings import idna
from urllib.parse import urlsplit

from loomgraph.protocols.spellings import as_latin

__all__ = ["addr_specs", "fetched_url", "host_spellings", "ip_spellings", "network_readings"]

# The full stops IDNA (UTS #46, RFC 3490) maps to ".": ideographic, fullwidth, halfwidth.
_STOPS = str.maketrans("\u3002\uff0e\uff61", "...")
_STOP_CHARS = frozenset(".\u3002\uff0e\uff61")
# getaddresses reads up to about 3 µs a character (in Python): a longer text is read only as
# its words with an `@`, which misses an address with a comment or quotes inside.
ADDRESS_SCAN = 8192
# What ends a word that may be an address: blanks, and the specials of RFC 5322 but `@`, `.`.
_NOT_IN_ADDRESS = re.compile(r"[\s<>()\[\],;:\"]+")
_AFTER_DOMAIN = re.compile(r"[/\\?#]")
# A value that may be a host with a port (`db.internal:5432`, a Host header). Linear: the
# host part cannot hold the `:` the port starts with, so backtracking never retries it.
_HOST_PORT = re.compile(r"([^\s/\\@?#:<>\"'\[\]]+)(?::(\d*))?")
# What may be an IP address literal, maybe in brackets with a port (`[::1]:80`), read as one
# only up to IP_SCAN characters (the longest IPv6 form with a zone is shorter).
IP_SCAN = 96
_IPV4 = re.compile(r"[0-9A-Fa-fXx.]+")
_IPV6 = re.compile(r"\[?[0-9A-Fa-f:.]+(?:%[\w.-]+)?\]?(?::\d*)?")
_DECIMAL_PARTS = re.compile(r"(\d+)\.(\d+)\.(\d+)\.(\d+)")
# The special schemes of the WHATWG URL standard (`file:` aside: its host is a path's).
# Their URLs need no `//`: `https:/x.example`, `https:x.example` and `https:\\\\x.example` are
# fetched from x.example by browsers, Node's fetch and curl, though `urlsplit` finds no host.
_SPECIAL = re.compile(r"(https?|wss?|ftp):", re.IGNORECASE)
_C0_OR_SPACE = "".join(map(chr, range(0x21)))
_TAB_NEWLINE = str.maketrans("", "", "\t\n\r")
_AUTHORITY_END = re.compile(r"[/\\?#]")
_QUERY_START = re.compile(r"[?#]")
_SINGLE_DOT = frozenset({".", "%2e"})
_DOUBLE_DOT = frozenset({"..", ".%2e", "%2e.", "%2e%2e"})
# Python 3.11.10+ and 3.12.6+ read an address list strictly by default, giving ('', '') where
# a mail library may still find a recipient: the lenient reading finds more.
_LENIENT: dict[str, bool] = (
    {"strict": False} if "strict" in inspect.signature(getaddresses).parameters else {}
)


def network_readings(text: str) -> list[str] | None:
    """The other readings of a value that may be an address list, a URL or a host (and port);
    None when it holds an address list the parser cannot read (nested a thousand deep)."""
    out: list[str] = []
    if "@" in text:
        found = _address_readings(text)
        if found is None:
            return None
        out += found
    out += _special_url_readings(text)
    if "://" in text:
        out += _url_readings(text)
    elif (m := _HOST_PORT.fullmatch(text)) is not None:
        host, port = m.groups()
        if port is None or not host.isdigit() or _address_number(host):
            # `12:30` is no host and port; `167772165:5432` is (10.0.0.5).
            out += _with_port(host_spellings(host), port or "")
    elif len(text) <= IP_SCAN and _IPV6.fullmatch(text):
        # An IPv6 literal (`::ffff:10.0.0.5`), or one in brackets with a port.
        host, port = _host_and_port(text) if text.startswith("[") else (text, "")
        out += _with_port(host_spellings(host), port)
    return out


def _address_number(digits: str) -> bool:
    """Whether a number is an IPv4 address with a first part (24 to 32 bits): no time."""
    return len(digits) <= 10 and 1 << 24 <= int(digits) < 1 << 32


def _with_port(spellings: list[str], port: str) -> list[str]:
    """The spellings of a host, and with its port (a port chooses a service, not the host)."""
    return spellings + [f"{h}:{port}" for h in spellings] if port else spellings


def host_spellings(host: str) -> list[str]:
    """One host's spellings: full stops as dots, one root dot dropped, punycode decoded, then
    folded (NFKC, lookalikes as Latin), and a Unicode name also in punycode; an IP address
    also as `ip_spellings` reads it."""
    dotted = host.translate(_STOPS) if not _STOP_CHARS.isdisjoint(host) else host
    if len(dotted) > 1 and dotted.endswith("."):
        dotted = dotted[:-1]
    if dotted.isascii() and "xn--" not in dotted.lower():
        # Already one spelling of a name: nothing to decode or fold; an address has others.
        return [dotted, *ip_spellings(dotted)]
    decoded = ".".join(_unicode_label(label) for label in dotted.split("."))
    folded = as_latin(unicodedata.normalize("NFKC", decoded))
    out = [dotted, decoded, folded]
    if not decoded.isascii():
        # A rule may name the domain in its ASCII form (`*@xn--bcher-kva.example`).
        out.append(".".join(_ascii_label(label) for label in decoded.split(".")))
    return list(dict.fromkeys(out))


def ip_spellings(host: str) -> list[str]:
    """The spellings of an IP address host that clients connect to alike: what `inet_aton`
    reads (one number, hex or octal parts, short forms) as a dotted quad, and four decimal
    parts without leading zeros; an IPv6 literal (in brackets, as in a URL, or not) in its
    compressed form, and an IPv4-mapped or -compatible one as its IPv4 address. Nothing for
    a name or a host longer than `IP_SCAN`."""
    if len(host) > IP_SCAN:
        return []
    if _IPV4.fullmatch(host):
        return _ipv4_spellings(host)
    bracketed = host.startswith("[") and host.endswith("]")
    inner = host[1:-1] if bracketed else host
    if ":" not in inner or not _IPV6.fullmatch(inner):
        return []
    try:
        address = ipaddress.IPv6Address(inner)
    except ValueError:
        return []
    out = [f"[{address.compressed}]" if bracketed else address.compressed]
    v4 = address.ipv4_mapped
    if v4 is None and address.packed[:12] == bytes(12) and int(address) > 1:
        v4 = ipaddress.IPv4Address(address.packed[12:])  # compatible (`::a.b.c.d`)
    if v4 is not None:
        out.append(str(v4))
    return [spelling for spelling in out if spelling != host]


def _ipv4_spellings(host: str) -> list[str]:
    """A host of digits, dots and hex as the resolver reads it, and as decimal parts."""
    out = []
    with contextlib.suppress(OSError):  # not an address: a name of hex letters, a part too large
        out.append(socket.inet_ntoa(socket.inet_aton(host)))
    if (m := _DECIMAL_PARTS.fullmatch(host)) and all(int(part) < 256 for part in m.groups()):
        # `010.0.0.5`: octal to the resolver, decimal to a parser that drops leading zeros.
        out.append(".".join(str(int(part)) for part in m.groups()))
    return [spelling for spelling in dict.fromkeys(out) if spelling != host]


def addr_specs(text: str) -> list[str] | None:
    """Every addr-spec in an address list (`Bob <b@x>, c@y (C)`) and every word with an `@`,
    as found; None when unreadable. An allow rule naming addresses must match each of them:
    `x@evil.example, y@corp.example` is not an address at `corp.example`."""
    found: list[str] = []
    if len(text) <= ADDRESS_SCAN:
        try:
            found = [addr for _, addr in getaddresses([text], **_LENIENT) if addr]
        except Exception:  # RecursionError on deeply nested comments or groups
            return None
    for word in _NOT_IN_ADDRESS.split(text):
        if "@" in word:
            local, _, domain = word.rpartition("@")
            found.append(f"{local}@{_AFTER_DOMAIN.split(domain, 1)[0]}")
    return list(dict.fromkeys(found))


def _address_readings(text: str) -> list[str] | None:
    """`addr_specs`, each also with its domain in each of its spellings; None when
    unreadable."""
    found = addr_specs(text)
    if found is None:
        return None
    out: list[str] = []
    for addr in found:
        local, at, domain = addr.rpartition("@")
        if at:
            out.append(addr)
            out += [f"{local}@{spelling}" for spelling in host_spellings(domain)]
    return out


def _url_readings(text: str) -> list[str]:
    """The URL as its client fetches it: no user info, the host in each spelling, with and
    without its port, an empty path as `/`."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return []  # not one URL (a bad IPv6 literal): read as written only
    if not parts.scheme or not parts.netloc:
        return []
    host, port = _host_and_port(parts.netloc.rpartition("@")[2])
    tail = parts.path or "/"
    tail += f"?{parts.query}" if parts.query else ""
    tail += f"#{parts.fragment}" if parts.fragment else ""
    out = []
    for spelling in host_spellings(host):
        out.append(f"{parts.scheme}://{spelling}{tail}")
        if port:
            out.append(f"{parts.scheme}://{spelling}:{port}{tail}")
    return out


def _special_url_readings(text: str) -> list[str]:
    """A URL of a special scheme as a WHATWG parser reads it (browsers, Node's fetch, curl):
    tabs and newlines dropped, blanks and controls at the ends stripped, any run of `/` or
    `\\` after `scheme:` (none too) starting the host, `\\` as `/`, dot segments resolved.
    The host in each spelling, with and without its port; nothing for another value."""
    if (parts := _special_parts(text)) is None:
        return []
    scheme, authority, tail = parts
    scheme = scheme.lower()
    host, port = _host_and_port(authority)
    if not host:
        return []
    tails = list(dict.fromkeys([_whatwg_path(tail), tail or "/"]))
    out = []
    for spelling in host_spellings(host):
        for path in tails:
            out.append(f"{scheme}://{spelling}{path}")
            if port:
                out.append(f"{scheme}://{spelling}:{port}{path}")
    return out


def fetched_url(text: str) -> tuple[str, str] | None:
    """What a client fetches for a URL of a special scheme, as (authority, URL): the user
    info dropped, the scheme, host and port as written, the path as a
    WHATWG parser resolves it. None for another value (or one with no host)."""
    if (parts := _special_parts(text)) is None or not parts[1]:
        return None
    scheme, authority, tail = parts
    return authority, f"{scheme}://{authority}{_whatwg_path(tail)}"


def _special_parts(text: str) -> tuple[str, str, str] | None:
    """A special URL's scheme, authority without user info, and the rest, as
    a WHATWG parser splits them; None for another value."""
    clean = text.strip(_C0_OR_SPACE).translate(_TAB_NEWLINE)
    if (m := _SPECIAL.match(clean)) is None:
        return None
    rest = clean[m.end() :].lstrip("/\\")
    end = _AUTHORITY_END.search(rest)
    authority, tail = (rest[: end.start()], rest[end.start() :]) if end else (rest, "")
    return m.group(1), authority.rpartition("@")[2], tail


def _whatwg_path(tail: str) -> str:
    """A special URL's path, query and fragment as parsed: `\\` as `/` in the path, `.` and
    `..` segments (also as `%2e`) resolved, an empty path as `/`."""
    cut = _QUERY_START.search(tail)
    path, after = (tail[: cut.start()], tail[cut.start() :]) if cut else (tail, "")
    segments = path.replace("\\", "/").split("/")[1:]
    kept: list[str] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment.lower() in _DOUBLE_DOT:
            if kept:
                kept.pop()
            if last:
                kept.append("")
        elif segment.lower() in _SINGLE_DOT:
            if last:
                kept.append("")
        else:
            kept.append(segment)
    return "/" + "/".join(kept) + after


def _host_and_port(hostport: str) -> tuple[str, str]:
    """`host:port` split; an IPv6 literal keeps its brackets; a port not all digits stays."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            return hostport, ""
        rest = hostport[end + 1 :]
        return hostport[: end + 1], rest[1:] if rest.startswith(":") else ""
    host, colon, port = hostport.rpartition(":")
    if colon and (port.isdigit() or not port):
        return host, port
    return hostport, ""


def _unicode_label(label: str) -> str:
    """A punycode label (`xn--…`, any case) decoded; any other label, or a bad one, as is."""
    if label[:4].lower() != "xn--":
        return label
    try:
        return idna.ToUnicode(label.lower())
    except UnicodeError:
        return label


def _ascii_label(label: str) -> str:
    """A Unicode label in punycode (IDNA ToASCII); an ASCII one, or one IDNA refuses, as is."""
    if label.isascii():
        return label
    try:
        return idna.ToASCII(label).decode("ascii")
    except UnicodeError:
        return label
