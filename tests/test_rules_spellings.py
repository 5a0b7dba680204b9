"""Spellings that slipped past permission rules: per-user keys YAML reads as other values,
URLs of a special scheme without their `//`, and a mistyped comparison or quantifier read as
a literal glob. Each is refused where it is written or read as the client reads it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loomgraph.governance import PermissionConfigError, RuleSyntaxError, StandardPermissions
from loomgraph.governance.addresses import network_readings
from loomgraph.protocols import ToolCall, ToolSpec

FETCH: ToolSpec = {"name": "fetch"}
SHELL: ToolSpec = {"name": "shell"}


def call(tool_name: str, **args: Any) -> ToolCall:
    return {"id": "c1", "tool": tool_name, "args": args}


async def verdict(perms: StandardPermissions, spec: ToolSpec, user: str | None, **args: Any) -> str:
    return (await perms.check(call(spec["name"], **args), spec, user_id=user)).verdict


# ------------------------------------------------------------------ 1. per-user keys in YAML


async def test_per_user_keys_of_a_permission_file_are_the_user_ids_written(tmp_path: Path) -> None:
    # YAML 1.1 reads `on:` as True, `007:` as 7, `12:30:` as 750: the loader str()ed them, so
    # rules written for users "on", "007", "12:30" landed on users "True", "7", "750".
    file = tmp_path / "perms.yaml"
    file.write_text(
        "per_user:\n  on: {deny: [shell]}\n  007: {deny: [shell]}\n  12:30: {deny: [shell]}\n"
    )
    try:
        perms = StandardPermissions.from_file(file)
    except PermissionConfigError as err:
        assert err.line is not None, f"refused without a line: {err}"
        return
    got = {u: await verdict(perms, SHELL, u) for u in ("on", "007", "12:30", "True", "7", "750")}
    assert got == {
        "on": "deny",
        "007": "deny",
        "12:30": "deny",
        "True": "allow",
        "7": "allow",
        "750": "allow",
    }, f"per-user deny rules went to other users than written: {got}"


@pytest.mark.parametrize(
    ("key", "read_as"),
    [
        ("on", "a boolean"),
        ("007", "an integer"),
        ("12:30", "an integer"),
        ("null", "null"),
        ("~", "null"),
        ("1.0e+3", "a number"),
        ("2024-01-02", "a date"),
    ],
)
async def test_a_key_yaml_reads_as_no_text_is_refused_and_quoted_is_the_id(
    tmp_path: Path, key: str, read_as: str
) -> None:
    file = tmp_path / "perms.yaml"
    file.write_text(f"per_user:\n  alice: {{deny: [shell]}}\n  {key}: {{deny: [shell]}}\n")
    with pytest.raises(PermissionConfigError) as caught:
        StandardPermissions.from_file(file)
    err = caught.value
    assert (err.file, err.line) == (str(file), 3), str(err)
    assert repr(key) in err.message and read_as in err.message, err.message
    assert "quote" in err.message, err.message
    # Quoted (or tagged !!str), the key is the user id written, and only that one.
    for written in (f"'{key}'", f"!!str {key}"):
        file.write_text(f"per_user:\n  {written}: {{deny: [shell]}}\n")
        perms = StandardPermissions.from_file(file)
        assert await verdict(perms, SHELL, key) == "deny", written
        assert await verdict(perms, SHELL, "True") == "allow", written


def test_a_set_name_yaml_reads_as_no_text_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "perms.yaml"
    file.write_text("sets:\n  yes: [a@x.example]\ndeny: [shell]\n")
    with pytest.raises(PermissionConfigError) as caught:
        StandardPermissions.from_file(file)
    assert caught.value.line == 2 and "'yes'" in caught.value.message, str(caught.value)


@pytest.mark.parametrize("uid", [True, 7, 750, None, 1.5])
def test_a_user_id_in_data_that_is_no_text_is_refused(uid: Any) -> None:
    # An agent file's inline permissions arrive as data its own YAML reader made.
    with pytest.raises(PermissionConfigError) as caught:
        StandardPermissions.from_dict(
            {"per_user": {uid: {"deny": ["shell"]}}},
        )
    assert repr(uid) in caught.value.message, caught.value.message


def test_a_non_text_key_in_data_is_located_at_its_line() -> None:
    from loomgraph.governance.permission_files import kwargs_from_data

    lines = {(): 1, ("per_user",): 1, ("per_user", 7): 4}
    with pytest.raises(PermissionConfigError) as caught:
        kwargs_from_data({"per_user": {7: {"deny": ["shell"]}}}, file="agent.yaml", lines=lines)
    assert (caught.value.file, caught.value.line) == ("agent.yaml", 4), str(caught.value)


def test_an_agent_files_inline_user_id_that_is_no_text_is_refused_at_its_line(
    tmp_path: Path,
) -> None:
    # Inline permissions are read by the agent file's own YAML reader, then checked as data.
    from loomgraph.agent.from_file import validate_agent_file
    from loomgraph.authoring.agent_file import AgentFileError

    file = tmp_path / "bot.yaml"
    file.write_text(
        "schema_version: 1\nname: bot\npermissions:\n  per_user:\n"
        "    alice: {deny: [shell]}\n    007: {deny: [shell]}\n"
    )
    with pytest.raises(AgentFileError) as caught:
        validate_agent_file(file)
    shown = [str(problem) for problem in caught.value.problems]
    assert any(f"{file}:6:" in p and "'007'" in p for p in shown), shown


# ------------------------------------------------------------------ 2. URLs without //


@pytest.mark.parametrize(
    "url",
    [
        "https:/evil.example/x",  # Node's fetch/undici, browsers and curl fetch evil.example
        "https:evil.example/x",  # WHATWG: a special scheme needs no slashes
        "https:///evil.example/x",  # WHATWG skips extra slashes
        "http:/2130706433/x",  # ... and 127.0.0.1 under `url=http://127.0.0.1*`
    ],
)
async def test_a_url_without_its_double_slash_does_not_dodge_a_deny_rule(url: str) -> None:
    perms = StandardPermissions(
        deny=["fetch(url=https://evil.example/*)", "fetch(url=http://127.0.0.1*)"]
    )
    got = await verdict(perms, FETCH, None, url=url)
    assert got == "deny", f"{url!r}: {got}"


@pytest.mark.parametrize(
    "url",
    [
        "HTTPS:evil.example",  # scheme in any case, an empty path is `/`
        "https:\\evil.example\\x",  # `\` is `/` in a special URL
        "https:/\\/evil.example/x",
        "https:/u:p@evil.example:443/x",  # user info and port
        " https:/evil.example/x",  # leading blanks and controls are stripped
        "https:/evil.exa\tmple/x",  # tabs and newlines are removed anywhere
        "https:/evil.example/a/../x",  # dot segments resolved
        "https:/evil.example/%2e%2e/x",
        "wss:/evil.example/x",
    ],
)
async def test_a_special_url_is_read_as_a_whatwg_parser_reads_it(url: str) -> None:
    perms = StandardPermissions(
        deny=["fetch(url=https://evil.example/*)", "fetch(url=wss://evil.example/*)"]
    )
    assert await verdict(perms, FETCH, None, url=url) == "deny", url


def test_other_schemes_and_non_urls_get_no_url_reading() -> None:
    # `mailto:`, `file:` and `javascript:` are not special in this way; a time is no URL.
    for text in ("mailto:x", "javascript:evil.example/x", "12:30", "note: https is on"):
        assert not any(r.startswith(("https://", "http://")) for r in network_readings(text) or [])
    assert "https://evil.example/x" in (network_readings("https:/evil.example/x") or [])


@pytest.mark.parametrize(
    "shape",
    ["https:/{}/x", "https:{}/x", "https:///{}/x", "https:\\{}/x", "https:/{}/a/../x"],
)
async def test_the_new_readings_deny_more_and_never_allow_more(shape: str) -> None:
    # Readings are any-match for deny and ask, every-match for allow: a URL without its `//`
    # is denied by a deny rule on its host, and still not allowed by an allow rule on its own.
    deny = StandardPermissions(deny=["fetch(url=https://evil.example/*)"])
    assert await verdict(deny, FETCH, None, url=shape.format("evil.example")) == "deny"
    allow = StandardPermissions(mode="strict", allow=["fetch(url=https://corp.example/*)"])
    for host in ("corp.example", "corp.example@evil.example", "evil.example"):
        assert await verdict(allow, FETCH, None, url=shape.format(host)) == "deny", host


@pytest.mark.parametrize(
    ("rule", "url"),
    [
        # fits as written, fetched from evil.example (the user info is dropped)
        ("https://corp.example*", "https://corp.example@evil.example/"),
        ("https://corp.example*", "https://corp.example:x@evil.example/pay"),
        # the `*` before the host's name spans the path as written: the host is evil.example
        ("https://*.corp.example/*", "https://evil.example/.corp.example/x"),
        # fits as written, fetched as /admin
        ("https://corp.example/public/*", "https://corp.example/public/../admin"),
        ("https://corp.example/public/*", "https://corp.example/public/%2e%2e/admin"),
        ("https://corp.example/public/*", "https://corp.example/public/..\\admin"),
    ],
)
async def test_an_allow_rule_on_a_url_holds_for_what_is_fetched(rule: str, url: str) -> None:
    allow = StandardPermissions(mode="strict", allow=[f"fetch(url={rule})"])
    assert await verdict(allow, FETCH, None, url=url) == "deny", url


@pytest.mark.parametrize(
    ("rule", "url"),
    [
        ("https://corp.example*", "https://corp.example"),
        ("https://corp.example*", "https://corp.example/a/b?c=1#d"),
        ("https://corp.example*", "https://corp.example:8443/a"),
        ("https://*.corp.example/*", "https://api.corp.example/a/b"),
        ("https://corp.example/public/*", "https://corp.example/public/a/../b"),
        ("HTTPS://corp.example/*", "HTTPS://corp.example/a"),
        ("https://{a,b}.corp.example/*", "https://b.corp.example/x"),
    ],
)
async def test_an_allow_rule_on_a_url_still_allows_what_it_names(rule: str, url: str) -> None:
    allow = StandardPermissions(mode="strict", allow=[f"fetch(url={rule})"])
    assert await verdict(allow, FETCH, None, url=url) == "allow", url


SEPARATORS = st.text(alphabet="/\\", max_size=4)
SCHEMES = st.sampled_from(["https", "HTTPS", "Https", "http", "wss", "ws", "ftp"])
HOSTS = st.sampled_from(
    ["evil.example", "EVIL.example", "evil.example.", "evil。example", "corp.example@evil.example"]
)
PATHS = st.text(alphabet="abc/\\.?#%2e", max_size=12)
DENY_EVIL = {
    scheme: StandardPermissions(deny=[f"fetch(url={scheme}://evil.example*)"])
    for scheme in ("https", "http", "wss", "ws", "ftp")
}
ALLOW_CORP = StandardPermissions(mode="strict", allow=["fetch(url=https://corp.example*)"])


@settings(max_examples=300, deadline=None)
@given(
    scheme=SCHEMES,
    slashes=SEPARATORS,
    user=st.sampled_from(["", "u@", "u:p@", "a@b@", "corp.example@"]),
    host=HOSTS,
    port=st.sampled_from(["", ":443", ":8080", ":"]),
    path=PATHS,
)
def test_every_spelling_of_a_denied_host_is_denied_and_none_allowed_for_another(
    scheme: str, slashes: str, user: str, host: str, port: str, path: str
) -> None:
    # The host a WHATWG parser finds: after `scheme:` and any run of `/` or `\`, up to the
    # next `/`, `\`, `?` or `#`, after the last `@`, before the port.
    tail = path if path[:1] in ("", "/", "\\", "?", "#") else "/" + path
    url = f"{scheme}:{slashes}{user}{host}{port}{tail}"
    denied = asyncio.run(
        DENY_EVIL[scheme.lower()].check(call("fetch", url=url), FETCH, user_id=None)
    )
    assert denied.verdict == "deny", url
    allowed = asyncio.run(ALLOW_CORP.check(call("fetch", url=url), FETCH, user_id=None))
    assert allowed.verdict == "deny", url


# ------------------------------------------------------------------ 3. `=>` as a glob


async def test_a_mistyped_comparison_is_refused_not_read_as_a_literal_glob() -> None:
    transfer: ToolSpec = {"name": "transfer", "parameters": {"properties": {"amount": {}}}}
    try:
        perms = StandardPermissions(deny=["transfer(amount=>5000)"])
    except RuleSyntaxError:
        return
    got = await verdict(perms, transfer, None, amount=9000)
    assert got == "deny", f"parsed as {perms.to_data()['deny']}, {got}s amount=9000"


@pytest.mark.parametrize(
    ("rule", "meant", "quoted"),
    [
        ("transfer(amount=>5000)", "amount>=5000", 'transfer(amount=">5000")'),
        ("transfer(amount=<0)", "amount<=0", "transfer(amount='<0')"),
        ("transfer(amount=!0)", "amount!=0", 'transfer(amount="!0")'),
        ("transfer(amount= =5)", "amount==5", 'transfer(amount="=5")'),
        ("transfer(amount=>=5)", "amount>=5", 'transfer(amount=">=5")'),
        ("transfer(amount=any(>5))", "amount>5", 'transfer(amount=any(">5"))'),
    ],
)
async def test_a_bare_value_starting_like_a_comparison_is_refused(
    rule: str, meant: str, quoted: str
) -> None:
    with pytest.raises(RuleSyntaxError) as caught:
        StandardPermissions(deny=[rule])
    assert meant in caught.value.problem and "quote" in caught.value.problem, caught.value
    # Quoted, the same text is a glob: `memo=">5000"` matches the text ">5000".
    literal = quoted[quoted.index("=") + 1 :].removeprefix("any(").strip("\"')")
    perms = StandardPermissions(deny=[quoted])
    assert await verdict(perms, {"name": "transfer"}, None, amount=literal) == "deny", literal


@pytest.mark.parametrize(
    ("rule", "meant", "quoted", "value"),
    [
        ("send(to=ANY(*@evil.example))", "any(", 'send(to="ANY(*)")', "ANY(x)"),
        ("send(to=anyy(*@evil.example))", "any(", 'send(to="anyy(*)")', "anyy(x)"),
        ("send(to=Al(*@corp.example))", "all(", "send(to='Al(*)')", "Al()"),
        (
            "send(to=every(*@corp.example))",
            "all(...) or any(...)",
            'send(to="every(*)")',
            "every(1)",
        ),
        ("send(to=any(all(x)))", "not another quantifier", 'send(to=any("all(x)"))', "all(x)"),
        ("run(code=eval(*))", "quote", 'run(code="eval(*)")', "eval(1)"),
    ],
)
async def test_a_misspelt_quantifier_is_refused_with_a_did_you_mean(
    rule: str, meant: str, quoted: str, value: str
) -> None:
    with pytest.raises(RuleSyntaxError) as caught:
        StandardPermissions(deny=[rule])
    assert meant in caught.value.problem and "quote" in caught.value.problem, caught.value
    perms = StandardPermissions(deny=[quoted])
    tool_name = quoted.split("(", 1)[0]
    arg = quoted.split("(", 1)[1].split("=", 1)[0]
    assert await verdict(perms, {"name": tool_name}, None, **{arg: value}) == "deny"
