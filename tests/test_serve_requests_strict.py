"""What the HTTP API takes and how it answers what it does not: every write reads its body
through `read_json` (a field it does not take is 422, a body-less write takes none), a name
repeated in a JSON object is 400, a query parameter a route does not take is 422, an
unexpected exception is logged and answered without its text, and a HEAD of an event stream
is answered with the headers at once."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from loomgraph.serve import create_app, pages
from loomgraph.serve.api import ENDPOINTS, QUERY
from loomgraph.serve.bodies import parse_json
from loomgraph.serve.errors import BadRequest
from loomgraph.serve.openapi import openapi
from serve_agent import PAID, make_agent
from test_serve_api import error, served
from test_serve_error_headers import uvicorn_serving

# What a custom `auth=` may have in an exception's text: a password, a path on the server.
SECRET = "postgres://admin:hunter2@10.1.2.3/users"
ERROR_ID = re.compile(r"error id ([0-9a-f]{12})")


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, **options: Any
) -> AsyncIterator[tuple[Any, httpx.AsyncClient, dict[str, str]]]:
    """The serving tests' agent behind a real uvicorn on loopback: the app, a client and
    alice's (an approver's) key header."""
    PAID.clear()
    agent = make_agent(str(tmp_path / "journal.db"))
    app = create_app(agent, **options)
    try:
        async with (
            uvicorn_serving(app) as url,
            httpx.AsyncClient(base_url=url, timeout=60) as client,
        ):
            key = await app.state.service.store.add_key("alice", approver=True)
            yield app, client, {"Authorization": f"Bearer {key}"}
    finally:
        await agent.aclose()


async def waiting_run(client: httpx.AsyncClient, auth: dict[str, str]) -> tuple[str, str]:
    """A run waiting for the approval of its `pay` call: its id and the request's key."""
    started = await client.post("/v1/runs", json={"input": "pay"}, headers=auth)
    assert started.status_code == 201, started.text
    run_id = started.json()["run_id"]
    shown = (await client.get(f"/v1/runs/{run_id}", headers=auth)).json()
    assert shown["status"] == "awaiting_approval", shown
    return run_id, shown["pending"][0]["key"]


# ---------------------------------------------------------------- 1. every write's body


async def test_a_cancel_with_a_body_field_it_does_not_take_is_422_and_changes_nothing(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as (_, client, auth):
        run_id, _ = await waiting_run(client, auth)
        answer = await client.post(
            f"/v1/runs/{run_id}/cancel", json={"reason": "fraud suspected"}, headers=auth
        )
        run = (await client.get(f"/v1/runs/{run_id}", headers=auth)).json()
        assert answer.status_code == 422 and "reason" in answer.text, (answer.text, run)
        assert "takes no body" in answer.json()["error"]["message"]
        assert run["status"] == "awaiting_approval", "a refused cancel must change nothing"
        # No body, or an empty object, is still a cancel.
        done = await client.post(f"/v1/runs/{run_id}/cancel", json={}, headers=auth)
        assert done.status_code == 200 and done.json()["status"] == "cancelled", done.text


async def test_every_write_refuses_a_field_it_does_not_take_and_changes_nothing(
    tmp_path: Path,
) -> None:
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        writes = [(m, p) for m, p, _, _, _ in ENDPOINTS if m == "POST"]
        assert len(writes) == 6, writes  # a new write is checked here too
        for _, path in writes:
            url = path.replace("{run_id}", run_id).replace("{call_id}", "call_pay")
            refused = await s.post("alice", url, {"zz_unknown": 1})
            assert error(refused) == (422, "validation"), (path, refused.text)
            assert "'zz_unknown'" in refused.json()["error"]["message"], (path, refused.text)
        runs = (await s.get("alice", "/v1/runs")).json()["runs"]
        assert [(r["run_id"], r["status"]) for r in runs] == [(run_id, "awaiting_approval")]
        assert PAID == []


# ---------------------------------------------------------------- 2. a 500 names nothing


async def test_an_exception_in_a_route_is_logged_and_its_text_is_not_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def auth(request: Request) -> str:  # a custom auth whose user store is down
        raise RuntimeError(f"user store {SECRET} unreachable (see /srv/app/settings.py)")

    caplog.set_level(logging.WARNING)
    async with serving(tmp_path, auth=auth) as (_, client, _key):
        api = await client.get("/v1/runs")
        page = await client.get("/ui")
        fragment = await client.get("/ui/rows", headers={"HX-Request": "true"})
    assert api.status_code == 500 and page.status_code == 500, (api.text, page.text)
    for answer in (api, page, fragment):
        assert SECRET not in answer.text and "settings.py" not in answer.text, answer.text
        assert "RuntimeError" not in answer.text, answer.text
    assert api.json()["error"]["type"] == "internal"
    # Each answer names an error id the operator finds in the log, with the traceback.
    told = [ERROR_ID.search(a.text) for a in (api, page, fragment)]
    assert all(told), [a.text for a in (api, page, fragment)]
    for match in told:
        assert match is not None
        (record,) = [r for r in caplog.records if match[1] in r.getMessage()]
        assert record.exc_info is not None and SECRET in str(record.exc_info[1])
        assert record.levelno == logging.ERROR


async def test_a_page_that_fails_to_render_logs_why_and_shows_only_an_error_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(value: Any) -> str:
        raise ValueError(f"cannot read {SECRET}")

    caplog.set_level(logging.WARNING)
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "hi"})).json()["run_id"]
        await s.client.post("/ui/login", data={"key": s.keys["alice"]})
        monkeypatch.setitem(pages.TEMPLATES.env.filters, "pretty", broken)
        point = await s.client.get(f"/ui/runs/{run_id}/checkpoint", params={"seq": "1"})
    assert point.status_code == 500 and "could not be rendered" in point.text, point.text
    assert SECRET not in point.text and "ValueError" not in point.text, point.text
    match = ERROR_ID.search(point.text)
    assert match is not None, point.text
    (record,) = [r for r in caplog.records if match[1] in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[1] is not None
    assert SECRET in str(record.exc_info[1].__cause__)  # the render's own error, chained


# ---------------------------------------------------------------- 3. a name given twice


async def test_a_body_naming_a_field_twice_is_refused_not_read_as_its_last(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as (app, client, auth):
        run_id, key = await waiting_run(client, auth)
        body = f'{{"allow": false, "key": {json.dumps(key)}, "allow": true}}'
        answer = await client.post(
            f"/v1/runs/{run_id}/approvals/call_pay",
            content=body,
            headers=auth | {"Content-Type": "application/json"},
        )
        await app.state.service.hub.wait(run_id)
        run = (await client.get(f"/v1/runs/{run_id}", headers=auth)).json()
        assert answer.status_code == 400, (answer.text, run["status"], PAID)
        assert answer.json()["error"]["type"] == "bad_request"
        assert "'allow' twice" in answer.json()["error"]["message"], answer.text
        assert run["status"] == "awaiting_approval" and PAID == []


async def test_edited_arguments_naming_a_field_twice_are_refused_by_the_viewer(
    tmp_path: Path,
) -> None:
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        (pending,) = (await s.get("alice", f"/v1/runs/{run_id}")).json()["pending"]
        await s.client.post("/ui/login", data={"key": s.keys["alice"]})
        answer = await s.client.post(
            f"/ui/runs/{run_id}/approvals",
            params={"call_id": "call_pay"},
            data={
                "allow": "true",
                "key": pending["key"],
                "args": '{"to": "acme", "amount": {"n": 5, "n": 500}}',
            },
            headers={"HX-Request": "true"},
        )
        assert "'n' twice" in answer.text and answer.headers.get("hx-retarget") == "#notice"
        assert (await s.settled(run_id))["status"] == "awaiting_approval" and PAID == []


@pytest.mark.parametrize(
    "allow",
    [[], ["maybe"], ["TRUE "], ["yes"], ["true", "false"]],
    ids=["missing", "maybe", "spaced", "yes", "twice"],
)
async def test_the_viewers_answer_takes_allow_true_or_false_once_and_nothing_else(
    tmp_path: Path, allow: list[str]
) -> None:
    """Found by probing: anything but 1/true/yes/on (a missing field, a typo, the field
    given twice) was read as a denial, the request used up. The page's buttons send `true`
    or `false`: anything else is refused naming the field, and the run still waits."""
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        (pending,) = (await s.get("alice", f"/v1/runs/{run_id}")).json()["pending"]
        await s.client.post("/ui/login", data={"key": s.keys["alice"]})
        answer = await s.client.post(
            f"/ui/runs/{run_id}/approvals",
            params={"call_id": "call_pay"},
            data={"allow": allow, "key": pending["key"]},  # type: ignore[dict-item]
            headers={"HX-Request": "true"},
        )
        # (a notice the page shows: htmx swaps in 200 answers only)
        assert "field 'allow' must be given once" in answer.text, answer.text
        assert answer.headers.get("hx-retarget") == "#notice"
        assert (await s.settled(run_id))["status"] == "awaiting_approval" and PAID == []
        (still,) = (await s.get("alice", f"/v1/runs/{run_id}")).json()["pending"]
        assert still["key"] == pending["key"]


async def test_a_denial_with_edited_arguments_is_refused_not_read_without_them(
    tmp_path: Path,
) -> None:
    """Found by probing: `{"allow": false, "args": {...}}` was taken as a denial, the args
    not even checked. As over MCP, edited arguments go only with an approval: 422 naming
    both fields, and the run still waits for the same request."""
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        (pending,) = (await s.get("alice", f"/v1/runs/{run_id}")).json()["pending"]
        body = {"allow": False, "key": pending["key"], "args": {"to": "zz", "amount": 1e9}}
        refused = await s.post("alice", f"/v1/runs/{run_id}/approvals/call_pay", body)
        assert error(refused) == (422, "validation"), refused.text
        said = refused.json()["error"]["message"]
        assert "'args'" in said and "'allow'" in said, said
        (still,) = (await s.get("alice", f"/v1/runs/{run_id}")).json()["pending"]
        assert still["key"] == pending["key"] and PAID == []


class Obj(tuple[tuple[str, Any], ...]):
    """A JSON object as its pairs, in order, a name possibly repeated."""


def _text(tree: Any) -> str:
    if isinstance(tree, Obj):
        return "{" + ",".join(f"{json.dumps(k)}:{_text(v)}" for k, v in tree) + "}"
    if isinstance(tree, list):
        return "[" + ",".join(_text(v) for v in tree) + "]"
    return json.dumps(tree)


def _repeated(tree: Any) -> set[str]:
    """The names some object of `tree` gives more than once."""
    found: set[str] = set()
    if isinstance(tree, Obj):
        names = [k for k, _ in tree]
        found |= {k for k in names if names.count(k) > 1}
        children: list[Any] = [v for _, v in tree]
    else:
        children = tree if isinstance(tree, list) else []
    for child in children:
        found |= _repeated(child)
    return found


_NAMES = st.text(alphabet="abé\u202e", max_size=2)
_TREES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet="xy\u00e9", max_size=3),
    lambda kids: (
        st.lists(kids, max_size=3) | st.lists(st.tuples(_NAMES, kids), max_size=4).map(Obj)
    ),
    max_leaves=16,
)


@given(_TREES)
def test_a_text_is_refused_exactly_when_an_object_in_it_repeats_a_name(tree: Any) -> None:
    text, repeated = _text(tree), _repeated(tree)
    if not repeated:
        assert parse_json(text, "the body") == json.loads(text)
        return
    with pytest.raises(BadRequest) as refused:
        parse_json(text, "the body")
    message = str(refused.value)
    assert message.startswith("the body names ")
    assert any(f"{n!a} twice" in message for n in repeated), (message, repeated)


# ---------------------------------------------------------------- 4. HEAD of a stream


async def test_a_head_of_a_live_runs_events_does_not_hold_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVE_STEP_DELAY", "0.5")  # 40 steps: a run of 20 s
    async with serving(tmp_path) as (_, client, auth):
        started = await client.post(
            "/v1/runs", json={"input": "steps 40", "background": True}, headers=auth
        )
        run_id = started.json()["run_id"]
        one = httpx.Limits(max_connections=1)  # as a browser or a pool reuses its connection
        async with httpx.AsyncClient(base_url=str(client.base_url), limits=one) as probe:
            head = await probe.head(f"/v1/runs/{run_id}/events", headers=auth, timeout=5)
            assert head.status_code == 200, head.text
            assert head.headers["content-type"].startswith("text/event-stream")
            assert head.content == b""
            after = await probe.get("/healthz", timeout=5)
            assert after.status_code == 200
            # A HEAD still answers what the GET would: 404 for a run nobody has.
            missing = await probe.head("/v1/runs/nope/events", headers=auth, timeout=5)
            assert missing.status_code == 404
        status = (await client.get(f"/v1/runs/{run_id}", headers=auth)).json()["status"]
        assert status == "running"  # the run went on meanwhile


# ---------------------------------------------------------------- 5. query parameters


async def test_a_query_parameter_a_route_does_not_take_is_422_naming_it(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "hi"})).json()["run_id"]
        misspelt = await s.get("alice", "/v1/runs", params={"stauts": "completed"})
        assert error(misspelt) == (422, "validation"), misspelt.text
        message = misspelt.json()["error"]["message"]
        assert "'stauts'" in message and "'status'" in message, message
        for method, path, _, _, _ in ENDPOINTS:
            url = path.replace("{run_id}", run_id).replace("{call_id}", "call_pay")
            url = url.replace("{seq}", "0")
            refused = await s.client.request(
                method, url, params={"zz": "1"}, headers=s.auth("alice")
            )
            assert error(refused) == (422, "validation"), (method, path, refused.text)
            assert "'zz'" in refused.json()["error"]["message"]
        afer = await s.get("alice", f"/v1/runs/{run_id}/events", params={"afer": "1.0"})
        assert error(afer) == (422, "validation") and "'after'" in afer.text
        # What the routes do take still works.
        assert (await s.get("alice", "/v1/runs", params={"status": "completed"})).status_code == 200
        diff = await s.get("alice", f"/v1/runs/{run_id}/diff", params={"a": "0", "b": "1"})
        assert diff.status_code == 200, diff.text
        assert (await s.get("alice", "/v1/runs")).json()["runs"][0]["run_id"] == run_id


async def test_a_query_parameter_given_twice_is_400_naming_it(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        await s.post("alice", "/v1/runs", {"input": "hi"})
        twice = await s.get("alice", "/v1/runs?status=failed&status=completed")
        assert error(twice) == (400, "bad_request"), twice.text
        assert "'status' twice" in twice.json()["error"]["message"]


def test_the_query_parameters_taken_are_those_the_openapi_document_names() -> None:
    spec = openapi("t")
    for method, path, handler, _, _ in ENDPOINTS:
        named = {
            p["name"]
            for p in spec["paths"][path][method.lower()]["parameters"]
            if p["in"] == "query"
        }
        assert set(QUERY.get(handler, ())) == named, (method, path)
