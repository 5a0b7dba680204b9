"""What the server takes in, from an outside probe's findings: no U+0000 in a body (a run
journaled with one through the Python API still lists and shows on Postgres), one size limit
on every body it reads (forms too), `--dev` answering only loopback Host names, a nesting
limit, paging in the viewer, a journal that is down at start, and strict `limit`s."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import pg
from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.runtime import PostgresRuntime
from loomgraph.serve import ui
from serve_agent import PAID, pay, script, step
from serve_process import Server, environment, free_port, loomgraph, start_server
from test_serve_api import error, served

pg_schema = pg.pg_schema

JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
LIMIT = 1 << 20  # the server's default `max_body`


def pg_agent(schema: str, name: str = "payer") -> Agent:
    runtime = PostgresRuntime(pg.postgres_dsn(), schema=schema)
    return Agent(
        "You pay bills.", model=ScriptedModel(script), tools=[pay, step], runtime=runtime, name=name
    )


# ---------------------------------------------------------------- 1. U+0000


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"input": "hello\\u0000world"}', "['input']"),
        (b'{"input": "hi", "session_id": "s\\u0000"}', "['session_id']"),
        (b'{"input": "hi", "\\u0000": 1}', "a key of the body"),
    ],
)
async def test_a_nul_in_a_body_is_422_naming_it_and_nothing_is_stored(
    tmp_path: Path, body: bytes, named: str
) -> None:
    async with served(tmp_path) as s:
        refused = await s.client.post("/v1/runs", content=body, headers={**s.auth("alice"), **JSON})
        assert error(refused) == (422, "validation"), refused.text
        message = refused.json()["error"]["message"]
        assert named in message and "U+0000" in message
        assert (await s.get("alice", "/v1/runs")).json()["runs"] == []


async def test_a_nul_over_http_on_postgres_is_422_and_the_listing_stays_up(
    tmp_path: Path, pg_schema: str
) -> None:
    async with served(tmp_path, pg_agent(pg_schema)) as s:
        for body in ({"input": "hello\u0000world"}, {"input": "ok", "session_id": "s\u0000"}):
            assert error(await s.post("alice", "/v1/runs", body)) == (422, "validation")
        assert (await s.get("alice", "/v1/runs")).json()["runs"] == []
        assert (await s.client.get("/ui", headers=s.auth("alice"))).status_code == 200


async def test_runs_journaled_with_a_nul_list_and_show_on_postgres(
    tmp_path: Path, pg_schema: str
) -> None:
    other = pg_agent(pg_schema, name="other")
    try:
        async with served(tmp_path, pg_agent(pg_schema)) as s:
            # The Python API takes any str: the journal keeps U+0000 in its JSON (the text
            # columns, session_id, refuse it), and reads it back.
            prompts = ["hello\x00world", "a \\u0000 spelt out, and \\\x00", "plain"]
            mine = [(await s.agent.run(p, user_id="alice")).run_id for p in prompts]
            theirs = (await other.run("other\x00agent", user_id="alice")).run_id
            listed = await s.get("alice", "/v1/runs")
            assert listed.status_code == 200, listed.text
            assert [r["run_id"] for r in listed.json()["runs"]] == mine[::-1]
            for run_id, prompt in zip(mine, prompts, strict=True):
                got = await s.get("alice", f"/v1/runs/{run_id}")
                assert got.status_code == 200 and got.json()["input"] == prompt, got.text
                events = await s.get("alice", f"/v1/runs/{run_id}/events")
                assert events.status_code == 200 and "run_completed" in events.text
                page = await s.client.get(f"/ui/runs/{run_id}", headers=s.auth("alice"))
                assert page.status_code == 200, page.text
            page = await s.client.get(f"/ui/runs/{mine[0]}", headers=s.auth("alice"))
            assert "hello\ufffdworld" in page.text and "\x00" not in page.text
            runs_page = await s.client.get("/ui", headers=s.auth("alice"))
            assert runs_page.status_code == 200 and all(r in runs_page.text for r in mine)
            # Another agent's run stays another agent's, NUL or not.
            assert error(await s.get("alice", f"/v1/runs/{theirs}")) == (404, "not_found")
            assert theirs not in runs_page.text
            # Ids and filters holding a NUL name nothing (Postgres text cannot hold one).
            assert error(await s.get("alice", "/v1/runs/x%00")) == (404, "not_found")
            by_graph = await s.get("alice", "/v1/runs", params={"graph": "react\x00"})
            assert by_graph.status_code == 200 and by_graph.json()["runs"] == []
    finally:
        await other.aclose()


# ---------------------------------------------------------------- 2. one body limit


class Pulled:
    """A request body sent in chunks, counting how many the server pulled."""

    def __init__(self, chunks: int, size: int, first: bytes = b"key=") -> None:
        self.chunks, self.size, self.first, self.pulled = chunks, size, first, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(self.chunks):
            self.pulled += 1
            yield (self.first if i == 0 else b"") + b"a" * self.size


async def test_a_sign_in_form_over_the_body_limit_is_413_while_it_is_read(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        body = Pulled(40, 128 << 10)  # 5 MiB, no credentials
        refused = await s.client.post("/ui/login", content=body, headers=FORM)
        assert refused.status_code == 413, refused.text
        assert str(LIMIT) in refused.text and "set-cookie" not in refused.headers
        assert body.pulled <= LIMIT // (128 << 10) + 2  # refused while reading, not after
        declared = await s.client.post("/ui/login", content=b"key=" + b"a" * LIMIT, headers=FORM)
        assert declared.status_code == 413 and str(LIMIT) in declared.text


async def test_the_viewers_forms_take_few_fields_and_no_files(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        key = s.keys["alice"]
        many = "&".join(f"f{i}=x" for i in range(50))
        refused = await s.client.post("/ui/login", content=f"key={key}&{many}", headers=FORM)
        assert refused.status_code == 400 and "fields" in refused.text.lower(), refused.text
        files: dict[str, tuple[str | None, bytes | str]] = {
            "key": (None, key),
            "f": ("f.txt", b"x" * 100),
        }
        assert (await s.client.post("/ui/login", files=files)).status_code == 400
        assert "loomgraph_key" not in s.client.cookies
        signed = await s.client.post("/ui/login", files={"key": (None, key)})
        assert signed.status_code == 303  # a multipart form without a file still signs in


async def test_the_approve_and_fork_forms_have_the_body_limit(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        hx = {**s.auth("alice"), **FORM, "HX-Request": "true"}
        for path in (f"/ui/runs/{run_id}/approvals/call_pay", f"/ui/runs/{run_id}/fork"):
            body = Pulled(40, 128 << 10, b"allow=true&args=")
            answer = await s.client.post(path, content=body, headers=hx)
            assert answer.headers.get("hx-retarget") == "#notice", answer.text
            assert str(LIMIT) in answer.text and body.pulled < 40
        assert (await s.get("alice", f"/v1/runs/{run_id}")).json()["status"] == (
            "awaiting_approval"
        )
        assert PAID == []


# ---------------------------------------------------------------- 3. --dev and Host


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = environment(tmp_path_factory.mktemp("dev") / "journal.db")
    running = start_server(env, "--dev")
    try:
        yield running
    finally:
        running.stop()


def test_dev_mode_answers_only_loopback_host_names(dev_server: Server) -> None:
    port = dev_server.url.rsplit(":", 1)[1]
    as_alice = {"X-User-Id": "alice"}
    with httpx.Client(base_url=dev_server.url, timeout=60) as http:
        for host in ("attacker.example", f"attacker.example:{port}", f"127.0.0.1:{free_port()}"):
            foreign = {"Host": host, **as_alice}
            listed = http.get("/v1/runs", headers=foreign)
            assert listed.status_code == 403, (host, listed.text)
            assert host in listed.json()["error"]["message"]
            started = http.post("/v1/runs", json={"input": "pay acme"}, headers=foreign)
            assert started.status_code == 403
            signed = http.post("/ui/login", data={"user": "alice"}, headers={"Host": host})
            assert signed.status_code == 403 and "set-cookie" not in signed.headers
            page = http.get("/ui", headers={"Host": host, "Cookie": "loomgraph_user=alice"})
            assert page.status_code == 403 and host in page.text
        assert http.get("/v1/runs", headers=as_alice).json()["runs"] == []  # nothing started
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
            mine = http.get("/v1/runs", headers={"Host": host, **as_alice})
            assert mine.status_code == 200, (host, mine.text)


# ---------------------------------------------------------------- 4. nesting


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("depth", [65, 100_000])
async def test_a_body_nested_too_deeply_is_400_everywhere(tmp_path: Path, depth: int) -> None:
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        deep = nested(depth)
        h = {**s.auth("alice"), **JSON}
        for path, body in [
            ("/v1/runs", deep),
            ("/v1/runs", b'{"input": "x", "session_id": ' + deep + b"}"),
            (f"/v1/runs/{run_id}/fork", b'{"at": 0, "patch": {"x": ' + deep + b"}}"),
            (f"/v1/runs/{run_id}/approvals/call_pay", b'{"allow": true, "args": ' + deep + b"}"),
            (f"/v1/runs/{run_id}/resume", b'{"value": ' + deep + b"}"),
        ]:
            refused = await s.client.post(path, content=body, headers=h)
            assert error(refused) == (400, "bad_request"), (path, refused.text)
            assert "nested" in refused.json()["error"]["message"]
        form = {"allow": "true", "args": '{"to": ' + deep.decode() + "}"}
        answer = await s.client.post(
            f"/ui/runs/{run_id}/approvals/call_pay",
            data=form,
            headers={**s.auth("alice"), "HX-Request": "true"},
        )
        assert "nested" in answer.text, answer.text
        assert [r["run_id"] for r in (await s.get("alice", "/v1/runs")).json()["runs"]] == [run_id]
        assert PAID == []


async def test_edited_args_within_the_body_limit_but_over_the_models_are_422(
    tmp_path: Path,
) -> None:
    """A body may nest 64 levels; edited arguments meet the model's limit of 32, named."""
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        memo: Any = []
        for _ in range(40):
            memo = [memo]
        edit = {"allow": True, "args": {"to": "acme", "amount": 1, "memo": memo}}
        refused = await s.answer("alice", run_id, "call_pay", edit)
        assert error(refused) == (422, "validation"), refused.text
        assert "nested deeper than the limit of 32" in refused.json()["error"]["message"]
        [run] = (await s.get("alice", "/v1/runs")).json()["runs"]
        assert run["status"] == "awaiting_approval" and PAID == []


# ---------------------------------------------------------------- 5. viewer paging


async def test_the_viewer_pages_to_older_runs(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(ui, "PAGE_ROWS", 2, raising=False)
    async with served(tmp_path) as s:
        ids = [
            (await s.post("alice", "/v1/runs", {"input": f"r{i}"})).json()["run_id"]
            for i in range(5)
        ]
        await s.post("alice", "/v1/runs", {"input": "pay acme"})  # awaiting approval: filtered out
        h = s.auth("alice")
        seen: list[str] = []
        url: str | None = "/ui?status=completed"
        while url is not None:
            page = await s.client.get(url, headers=h)
            assert page.status_code == 200, page.text
            rows = re.findall(r'data-testid="run-row" data-run-id="(\w+)"', page.text)
            assert 1 <= len(rows) <= 2, rows
            # The rows the page refreshes every 2 s are that page's rows.
            query = url.partition("?")[2]
            fragment = await s.client.get(f"/ui/rows?{query}", headers=h)
            assert re.findall(r'data-run-id="(\w+)"', fragment.text) == rows
            assert f"/ui/rows?{query}" in page.text.replace("&amp;", "&")
            assert ('data-testid="newest-runs"' in page.text) == bool(seen)
            seen += rows
            older = re.search(r'data-testid="older-runs" href="([^"]+)"', page.text)
            url = older.group(1).replace("&amp;", "&") if older else None
            assert url is None or ("status=completed" in url and "cursor=" in url)
        assert seen == ids[::-1]
        bad = await s.client.get("/ui", params={"cursor": "not one"}, headers=h)
        assert bad.status_code == 400 and "not one this server gave" in bad.text


# ---------------------------------------------------------------- 6. journal down at start


def test_serve_with_an_unreachable_journal_exits_2_in_one_line(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    agent_file = tmp_path / "agent.yaml"
    agent_file.write_text(
        "schema_version: 1\nname: down\ninstructions: hi\nmodel: echo\n"
        f"runtime: postgres://postgres:S3cret@127.0.0.1:{closed}/test\n"
    )
    env = environment(tmp_path / "unused.db")
    done = loomgraph(env, "serve", "--agent", str(agent_file), "--port", str(free_port()))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "serving on" not in done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("loomgraph:")]
    assert len(said) == 1, done.stderr
    assert f"127.0.0.1:{closed}" in said[0] and "unavailable" in said[0]
    assert "S3cret" not in done.stderr
    assert not [line for line in done.stderr.splitlines() if line.startswith("ERROR")]


# ---------------------------------------------------------------- 7. strict numbers


@pytest.mark.parametrize("raw", ["1_0", " 5", "5 ", "+5", "\u0663", "\u00b2", "-1"])
async def test_a_limit_or_seq_that_is_not_plain_digits_is_400(tmp_path: Path, raw: str) -> None:
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "hi"})).json()["run_id"]
        for path, params in [
            ("/v1/runs", {"limit": raw}),
            (f"/v1/runs/{run_id}/diff", {"a": "0", "b": raw}),
        ]:
            refused = await s.get("alice", path, params=params)
            assert error(refused) == (400, "bad_request"), (raw, refused.text)
            assert repr(raw) in refused.json()["error"]["message"]
        seq = await s.get("alice", f"/v1/runs/{run_id}/checkpoints/1_0")
        assert error(seq) == (400, "bad_request")
        assert (await s.get("alice", "/v1/runs", params={"limit": "007"})).status_code == 200


@pytest.mark.parametrize("raw", ["-1", " 1", "1 ", "+1", "1_0", "\u0663", "1.-2", "1.x", "1."])
async def test_an_event_id_that_is_not_plain_digits_is_400(tmp_path: Path, raw: str) -> None:
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "hi"})).json()["run_id"]
        path = f"/v1/runs/{run_id}/events"
        auth = s.auth("alice")
        tries: list[dict[str, Any]] = [{"params": {"after": raw}}]
        if raw.isascii():  # an HTTP header holds ASCII only
            tries.append({"headers": {**auth, "Last-Event-ID": raw}})
        for sent in tries:
            refused = await s.client.get(path, **{"headers": auth, **sent})
            assert error(refused) == (400, "bad_request"), (raw, sent, refused.text)
            assert repr(raw) in refused.json()["error"]["message"]
        for good in ("0", "1", "1.0", "1.end", "007"):
            assert (await s.get("alice", path, params={"after": good})).status_code == 200


# ------------------------------------------- 6. numbers too large, another user's status


async def test_a_number_too_large_for_a_double_is_400_never_null_or_500(tmp_path: Path) -> None:
    """`1e400` reads as infinity in Python: refused as `Infinity` is, wherever a body goes
    (a fork's patch here; a resume's value, approval args alike), and nothing is kept."""
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "steps 1"})).json()["run_id"]
        h = {**s.auth("alice"), **JSON}
        for path, body in [
            (f"/v1/runs/{run_id}/fork", b'{"at": 0, "patch": {"messages": [{"n": 1e400}]}}'),
            (f"/v1/runs/{run_id}/resume", b'{"value": {"a": -1E+999}, "key": "k"}'),
            ("/v1/runs", b'{"input": "x", "session_id": 1.5e309}'),
        ]:
            refused = await s.client.post(path, content=body, headers=h)
            assert error(refused) == (400, "bad_request"), (path, refused.text)
            assert "too large" in refused.json()["error"]["message"]
        assert [r["run_id"] for r in (await s.get("alice", "/v1/runs")).json()["runs"]] == [run_id]


async def test_an_approver_learns_nothing_of_another_users_run_that_waits_for_none(
    tmp_path: Path,
) -> None:
    """Answering, or sending on, another user's run that waits for no approval is 404, as an
    unknown run is: its existence and status are not told."""
    async with served(tmp_path) as s:
        done = (await s.post("alice", "/v1/runs", {"input": "hello"})).json()["run_id"]
        for run_id in (done, "no-such-run"):
            for path, body in [
                (f"/v1/runs/{run_id}/resume", {}),
                (f"/v1/runs/{run_id}/approvals/call_pay", {"allow": False, "key": "x"}),
            ]:
                answered = await s.post("bob", path, body)
                assert error(answered) == (404, "not_found"), (run_id, path, answered.text)
                assert "completed" not in answered.text
