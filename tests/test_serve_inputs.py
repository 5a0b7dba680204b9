"""What the server takes in: the viewer's cookie authorises reads only on `/v1`, a `/v1` write
is a JSON body, a list cursor is one the server gave, and text that is not Unicode is refused
(the viewer still renders runs that hold some, written through the Python API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loomgraph.serve import pages
from serve_agent import PAID
from test_serve_api import error, served

JSON = {"Content-Type": "application/json"}
FOREIGN = {"Origin": "http://127.0.0.1:9999"}


async def test_the_viewer_cookie_authorises_no_v1_write(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        signed = await s.client.post("/ui/login", data={"key": s.keys["alice"]})
        assert signed.status_code == 303 and "loomgraph_key" in s.client.cookies
        # What a cross-site <form enctype="text/plain"> sends with the cookie: refused, unpaid.
        forged = await s.client.post(
            f"/v1/runs/{run_id}/approvals/call_pay",
            content=b'{"allow": true, "x": "=1"}',
            headers={"Content-Type": "text/plain", **FOREIGN},
        )
        assert forged.status_code == 401, forged.text
        assert forged.json()["error"]["type"] == "unauthorized"
        assert "writes need an API key" in forged.json()["error"]["message"]
        started = await s.client.post(
            "/v1/runs",
            content=b'{"input": "started by a form", "x": "="}',
            headers={"Content-Type": "application/x-www-form-urlencoded", **FOREIGN},
        )
        assert started.status_code == 401
        as_json = await s.client.post(f"/v1/runs/{run_id}/cancel", json={}, headers=JSON)
        assert as_json.status_code == 401  # a JSON body does not make the cookie a key
        assert PAID == []
        # Reads (what a signed-in browser may fetch) still take the cookie.
        read = await s.client.get(f"/v1/runs/{run_id}")
        assert read.status_code == 200 and read.json()["status"] == "awaiting_approval"
        assert (await s.client.get("/v1/runs")).json()["runs"][0]["run_id"] == run_id
        # The viewer's own pages still change things with the cookie (htmx only).
        (pending,) = (await s.get("alice", f"/v1/runs/{run_id}")).json()["pending"]
        done = await s.client.post(
            f"/ui/runs/{run_id}/approvals/call_pay",
            data={"allow": "true", "key": pending["key"]},
            headers={"HX-Request": "true"},
        )
        assert done.headers.get("hx-refresh") == "true", done.text
        assert (await s.settled(run_id))["status"] == "completed" and len(PAID) == 1


async def test_the_dev_cookie_authorises_no_v1_write(tmp_path: Path) -> None:
    async with served(tmp_path, dev=True, host="127.0.0.1") as s:
        await s.client.post("/ui/login", data={"user": "eve"})
        assert "loomgraph_user" in s.client.cookies
        forged = await s.client.post(
            "/v1/runs", content=b'{"input": "hi"}', headers={"Content-Type": "text/plain"}
        )
        assert forged.status_code == 401 and "API key" in forged.json()["error"]["message"]
        assert (await s.client.get("/v1/runs")).json()["runs"] == []
        mine = await s.client.post("/v1/runs", json={"input": "hi"}, headers={"X-User-Id": "eve"})
        assert mine.status_code == 201 and mine.json()["user_id"] == "eve"


async def test_a_v1_write_with_a_body_must_be_json(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        h = s.auth("alice")
        for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            refused = await s.client.post(
                "/v1/runs", content=b'{"input": "hi"}', headers={**h, "Content-Type": kind}
            )
            assert refused.status_code == 415, (kind, refused.text)
            assert refused.json()["error"]["type"] == "unsupported_media_type"
            assert "application/json" in refused.json()["error"]["message"]
        nameless = await s.client.post(
            "/v1/runs", content=b'{"input": "hi"}', headers={**h, "Content-Type": ";;;"}
        )
        assert nameless.status_code == 415  # was "the body is ''"
        assert "Content-Type ';;;' names no type" in nameless.json()["error"]["message"]
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        cancel = await s.client.post(
            f"/v1/runs/{run_id}/cancel", content=b"x", headers={**h, "Content-Type": "text/plain"}
        )
        assert cancel.status_code == 415
        assert [r["run_id"] for r in (await s.get("alice", "/v1/runs")).json()["runs"]] == [run_id]
        charset = await s.client.post(
            "/v1/runs",
            content=b'{"input": "hi"}',
            headers={**h, "Content-Type": "Application/JSON; charset=utf-8"},
        )
        assert charset.status_code == 201, charset.text
        assert (await s.post("alice", f"/v1/runs/{run_id}/cancel")).status_code == 200  # no body


@pytest.mark.parametrize(
    "cursor",
    ["99999999999999999999", "9223372036854775808", "\u00b2", "\u0663", "-1", " 1", "1e3"],
)
async def test_a_cursor_this_server_did_not_give_is_400(tmp_path: Path, cursor: str) -> None:
    async with served(tmp_path) as s:
        answer = await s.get("alice", "/v1/runs", params={"cursor": cursor})
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["type"] == "bad_request"
        assert "is not one this server gave" in answer.json()["error"]["message"]


async def test_a_cursor_naming_no_run_is_refused(tmp_path: Path) -> None:
    """A listing's cursor is the last run id of a page; a number (the old cursors) names none."""
    async with served(tmp_path) as s:
        await s.post("alice", "/v1/runs", {"input": "hi"})
        page = await s.get("alice", "/v1/runs", params={"cursor": str(2**63 - 1)})
        assert page.status_code == 400, page.text
        assert page.json()["error"]["type"] == "bad_request"
        assert "names no run of yours" in page.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"input": "\\ud800 x"}',
        b'{"input": "x \\udfff"}',
        b'{"input": "x", "session_id": "\\udc00"}',
        b'{"input": "x", "\\ud800": 1}',
        b'{"input": "ok \\ude00\\ud83d"}',  # a pair the wrong way round
    ],
)
async def test_a_body_holding_a_lone_surrogate_is_refused(tmp_path: Path, body: bytes) -> None:
    async with served(tmp_path) as s:
        refused = await s.client.post("/v1/runs", content=body, headers={**s.auth("alice"), **JSON})
        assert refused.status_code == 400, refused.text
        message = refused.json()["error"]["message"]
        assert refused.json()["error"]["type"] == "bad_request"
        assert "not valid Unicode text" in message
        assert (await s.get("alice", "/v1/runs")).json()["runs"] == []  # nothing stored


async def test_a_surrogate_pair_is_text_and_answers_are_checked_too(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        h = {**s.auth("alice"), **JSON}
        made = await s.client.post("/v1/runs", content=b'{"input": "\\ud83d\\ude00"}', headers=h)
        assert made.status_code == 201 and made.json()["output"] == "done: \U0001f600"
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        body = b'{"allow": true, "args": {"to": "\\ud800", "amount": 1}}'
        url = f"/v1/runs/{run_id}/approvals/call_pay"
        assert (await s.client.post(url, content=body, headers=h)).status_code == 400
        await s.client.post("/ui/login", data={"key": s.keys["alice"]})
        ui_answer = await s.client.post(
            f"/ui/runs/{run_id}/approvals/call_pay",
            data={"allow": "true", "args": '{"to": "\\ud800", "amount": 1}'},
            headers={"HX-Request": "true"},
        )
        assert "not valid Unicode text" in ui_answer.text
        assert (await s.get("alice", f"/v1/runs/{run_id}")).json()["status"] == "awaiting_approval"
        assert PAID == []


async def test_pages_of_a_run_holding_a_lone_surrogate_render(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        result = await s.agent.run("\ud800 x", user_id="alice")  # the Python API takes it
        run_id = result.run_id
        await s.client.post("/ui/login", data={"key": s.keys["alice"]})
        page = await s.client.get(f"/ui/runs/{run_id}")
        assert page.status_code == 200, page.text
        assert "\ufffd x" in page.text
        live = await s.client.get(f"/ui/runs/{run_id}/live", params={"status": "x", "n": "0"})
        assert live.status_code == 200
        point = await s.client.get(f"/ui/runs/{run_id}/checkpoint", params={"seq": "1"})
        assert point.status_code == 200 and 'data-testid="checkpoint-state"' in point.text
        assert (await s.client.get("/ui")).status_code == 200
        assert (await s.get("alice", f"/v1/runs/{run_id}")).status_code == 200


async def test_a_page_that_fails_to_render_is_not_the_clients_fault(
    tmp_path: Path, monkeypatch: Any
) -> None:
    def broken(value: Any) -> str:
        raise ValueError("a filter broke")

    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "hi"})).json()["run_id"]
        await s.client.post("/ui/login", data={"key": s.keys["alice"]})
        monkeypatch.setitem(pages.TEMPLATES.env.filters, "pretty", broken)
        point = await s.client.get(f"/ui/runs/{run_id}/checkpoint", params={"seq": "1"})
        assert point.status_code == 500, point.text
        fragment = await s.client.get(
            f"/ui/runs/{run_id}/checkpoint", params={"seq": "1"}, headers={"HX-Request": "true"}
        )
        assert "could not be rendered" in fragment.text


@pytest.mark.parametrize("word", ["NaN", "Infinity", "-Infinity"])
async def test_a_body_with_a_number_json_does_not_have_is_400(tmp_path: Path, word: str) -> None:
    async with served(tmp_path) as s:
        body = '{"input": "pay acme", "n": ' + word + "}"
        headers = {**s.auth("alice"), "Content-Type": "application/json"}
        refused = await s.client.post("/v1/runs", content=body, headers=headers)
        assert error(refused) == (400, "bad_request")
        assert word in refused.json()["error"]["message"]
        assert (await s.get("alice", "/v1/runs")).json()["runs"] == []


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("/v1/runs", {"input": "hi", "sesion_id": "s1"}, "'sesion_id'"),
        ("/v1/runs", {"input": "hi", "x": 1, "y": 2}, "'x', 'y'"),
    ],
)
async def test_a_body_field_the_endpoint_does_not_take_is_named(
    tmp_path: Path, path: str, body: dict[str, Any], named: str
) -> None:
    async with served(tmp_path) as s:
        refused = await s.post("alice", path, body)
        assert error(refused) == (422, "validation"), refused.text
        message = refused.json()["error"]["message"]
        assert named in message and "'session_id'" in message  # what it does take
        assert (await s.get("alice", "/v1/runs")).json()["runs"] == []


async def test_an_answer_naming_its_request_settles_it_or_nothing(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        (pending,) = (await s.get("alice", f"/v1/runs/{run_id}")).json()["pending"]
        assert pending["key"] and pending["call"]["id"] == "call_pay"
        # An answer to a request this run no longer waits for (a same-id call's, earlier).
        stale = {"allow": True, "key": pending["key"] + ":earlier"}
        refused = await s.post("alice", f"/v1/runs/{run_id}/approvals/call_pay", stale)
        assert error(refused) == (409, "approval_refused"), refused.text
        assert (await s.get("alice", f"/v1/runs/{run_id}")).json()["status"] == (
            "awaiting_approval"
        )
        from_page = await s.client.post(
            f"/ui/runs/{run_id}/approvals/call_pay",
            data={"allow": "true", "key": "another request"},
            headers={**s.auth("alice"), "HX-Request": "true"},
        )
        # The viewer shows the refusal in its notice (htmx keeps the page as it is).
        assert from_page.headers.get("hx-retarget") == "#notice", from_page.text
        assert "not at request" in from_page.text and PAID == []
        answer = {"allow": True, "key": pending["key"]}
        done = await s.post("alice", f"/v1/runs/{run_id}/approvals/call_pay", answer)
        assert done.status_code == 202, done.text
        assert (await s.settled(run_id))["status"] == "completed" and len(PAID) == 1


async def test_signing_out_is_a_post_from_this_site(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        await s.client.post("/ui/login", data={"key": s.keys["alice"]})
        assert (await s.client.get("/ui/logout")).status_code == 405
        foreign = await s.client.post("/ui/logout", headers=FOREIGN)
        assert foreign.status_code == 403 and "loomgraph_key" in s.client.cookies
        page = await s.client.get("/ui")
        assert 'action="/ui/logout"' in page.text  # the viewer's own sign-out form
        out = await s.client.post("/ui/logout")
        assert out.status_code == 303 and "loomgraph_key" not in s.client.cookies


async def test_a_run_driven_elsewhere_is_409_without_naming_that_process(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        runtime = s.app.state.service.agent.deps.runtime
        await runtime.acquire_lease(run_id, "build-7.internal:4242:1700000000:feed")
        taken = await s.answer("alice", run_id, "call_pay", {"allow": True})
        assert error(taken) == (409, "run_conflict"), taken.text
        message = taken.json()["error"]["message"]
        assert "another process" in message and run_id in message
        assert "build-7" not in taken.text and "4242" not in taken.text
        assert PAID == []
