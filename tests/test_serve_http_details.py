"""Small HTTP details a client relies on, found probing `loomgraph serve`: a 405 says which
methods the path takes (`Allow`), a JSON body is UTF-8 (RFC 8259), `null` for an optional
field is the field left out (for every field alike), and a query parameter given empty is
refused, not read as absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loomgraph.serve.api import ENDPOINTS
from loomgraph.serve.openapi import openapi
from test_serve_api import error, served


def allowed(header: str) -> set[str]:
    return {m.strip() for m in header.split(",")}


async def test_a_405_names_every_method_its_path_takes(tmp_path: Path) -> None:
    """Each method of a path is its own route: the `Allow` of a 405 is theirs together."""
    taken: dict[str, set[str]] = {}
    for method, path, _, _, _ in ENDPOINTS:
        taken.setdefault(path, set()).add(method)
    async with served(tmp_path) as s:
        for path, methods in taken.items():
            url = path.replace("{run_id}", "r1").replace("{call_id}", "c1").replace("{seq}", "0")
            refused = await s.client.request("PATCH", url, headers=s.auth("alice"))
            assert error(refused) == (405, "method_not_allowed"), (path, refused.text)
            want = methods | ({"HEAD"} if "GET" in methods else set())
            assert allowed(refused.headers["allow"]) == want, path
        runs = await s.client.delete("/v1/runs", headers=s.auth("alice"))
        assert allowed(runs.headers["allow"]) == {"GET", "HEAD", "POST"}
        login = await s.client.put("/ui/login")
        assert login.status_code == 405 and allowed(login.headers["allow"]) == {
            "GET",
            "HEAD",
            "POST",
        }
        health = await s.client.post("/healthz")
        assert health.status_code == 405 and allowed(health.headers["allow"]) == {"GET", "HEAD"}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
async def test_a_body_not_in_utf8_is_400_and_starts_nothing(tmp_path: Path, encoding: str) -> None:
    body = json.dumps({"input": "hi"}).encode(encoding)
    async with served(tmp_path) as s:
        headers = s.auth("alice") | {"Content-Type": "application/json"}
        refused = await s.client.post("/v1/runs", content=body, headers=headers)
        assert error(refused) == (400, "bad_request"), refused.text
        assert "UTF-8" in refused.json()["error"]["message"]
        assert (await s.get("alice", "/v1/runs")).json()["runs"] == []
        # UTF-8, with or without the byte order mark a parser may ignore, is read.
        for sent in (b'{"input": "hi"}', b'\xef\xbb\xbf{"input": "hi"}'):
            taken = await s.client.post("/v1/runs", content=sent, headers=headers)
            assert taken.status_code == 201, taken.text


async def test_a_raw_nul_in_a_json_string_is_named_as_json_names_it(tmp_path: Path) -> None:
    """A raw NUL byte inside a string of a UTF-8 body was answered "not UTF-8 text (UTF-16
    or UTF-32?)": it is UTF-8, with a control character JSON wants escaped."""
    async with served(tmp_path) as s:
        headers = s.auth("alice") | {"Content-Type": "application/json"}
        refused = await s.client.post("/v1/runs", content=b'{"input": "h\x00i"}', headers=headers)
        assert error(refused) == (400, "bad_request"), refused.text
        message = refused.json()["error"]["message"]
        assert "Invalid control character" in message and "UTF-16" not in message, message
        assert (await s.get("alice", "/v1/runs")).json()["runs"] == []


async def test_null_for_an_optional_field_is_the_field_left_out(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        body = {"input": "hi", "session_id": None, "stream": None, "background": None}
        started = await s.post("alice", "/v1/runs", body)
        assert started.status_code == 201, started.text
        assert started.json()["status"] == "completed"
        required = await s.post("alice", "/v1/runs", {"input": None})
        assert error(required) == (422, "validation")
        assert "'input' is required" in required.json()["error"]["message"]
        wrong = await s.post("alice", "/v1/runs", {"input": "hi", "stream": "yes"})
        assert error(wrong) == (422, "validation") and "'stream'" in wrong.text


async def test_an_optional_schema_in_the_openapi_document_takes_null() -> None:
    spec = openapi("t")
    body = spec["paths"]["/v1/runs"]["post"]["requestBody"]["content"]["application/json"]
    fields = body["schema"]["properties"]
    assert fields["session_id"]["type"] == ["string", "null"]
    assert fields["stream"]["type"] == ["boolean", "null"]
    assert fields["input"]["type"] == "string"  # required: a string


@pytest.mark.parametrize("name", ["cursor", "graph", "status", "limit"])
async def test_a_query_parameter_given_empty_is_400_naming_it(tmp_path: Path, name: str) -> None:
    async with served(tmp_path) as s:
        await s.post("alice", "/v1/runs", {"input": "hi"})
        empty = await s.get("alice", f"/v1/runs?{name}=")
        assert error(empty) == (400, "bad_request"), empty.text
        assert f"{name!r} is empty" in empty.json()["error"]["message"]
        if name in ("cursor", "limit"):
            empty = await s.get("alice", f"/v1/approvals?{name}=")
            assert error(empty) == (400, "bad_request"), empty.text


async def test_two_different_keys_are_refused_not_one_of_them_chosen(tmp_path: Path) -> None:
    """`Authorization: Bearer <bob's>` with `X-API-Key: <alice's>` was taken as bob's
    request: two callers claimed it, and the server picked one."""
    async with served(tmp_path) as s:
        both = {"Authorization": f"Bearer {s.keys['dave']}", "X-API-Key": s.keys["alice"]}
        refused = await s.client.get("/v1/runs", headers=both)
        assert error(refused) == (401, "unauthorized")
        assert "two different API keys" in refused.json()["error"]["message"]
        wrote = await s.client.post("/v1/runs", json={"input": "hi"}, headers=both)
        assert error(wrote) == (401, "unauthorized")
        same = {"Authorization": f"Bearer {s.keys['dave']}", "X-API-Key": s.keys["dave"]}
        assert (await s.client.get("/v1/runs", headers=same)).status_code == 200
        assert (await s.get("dave", "/v1/runs")).json()["runs"] == []
