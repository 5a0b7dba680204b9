"""A real `loomgraph serve` process over its life: SIGTERM while clients follow runs over SSE
(the runs it drives are cancelled, every stream ends, the process exits), forks driven and
cancelled like any run, the security headers of real answers, and an OpenAPI document that
names what every route reads."""

from __future__ import annotations

import ast
import asyncio
import base64
import hashlib
import inspect
import re
import shutil
import signal
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loomgraph.serve.api import ENDPOINTS
from loomgraph.serve.hub import SHUTDOWN_REASON
from serve_process import Server, Sse, add_key, environment, sse_events, start_server

BOUND = 30.0  # seconds: the runs below would go on for minutes; a shutdown must not wait


def journal_status(journal: Path, run_id: str) -> tuple[str, str]:
    db = sqlite3.connect(journal, isolation_level=None)
    try:
        row = db.execute("SELECT status, reason FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    finally:
        db.close()
    return str(row[0]), str(row[1])


def client(url: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=BOUND * 4
    )


async def exited(server: Server) -> int:
    """The server process's exit code; fails if it is still running after BOUND seconds."""
    return await asyncio.to_thread(server.process.wait, BOUND)


async def rest_of(events: AsyncIterator[Sse]) -> list[Sse]:
    """Every event until the server ends the stream; fails after BOUND seconds."""

    async def drain() -> list[Sse]:
        return [event async for event in events]

    return await asyncio.wait_for(drain(), BOUND)


async def first_transition(http: httpx.AsyncClient, run_id: str) -> None:
    """Until the run journaled its first transition (its events say so)."""
    async with http.stream("GET", f"/v1/runs/{run_id}/events") as stream:
        async for event in sse_events(stream):
            if event.event == "node_completed":
                return


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A journal, a key for alice, and the environment of servers on it (runs of `steps N`
    take 3 s a step: a minute)."""
    journal = tmp_path / "journal.db"
    env = environment(journal, SERVE_STEP_DELAY="3")
    started: list[Server] = []
    yield {"journal": journal, "env": env, "key": add_key(env, "alice", "--approver")} | {
        "servers": started
    }
    for server in started:
        server.stop()


def serve(site: dict[str, Any]) -> Server:
    server = start_server(site["env"])
    site["servers"].append(server)
    return server


# --------------------------------------------------------------------------- SIGTERM


async def test_sigterm_cancels_a_followed_run_and_ends_its_stream(site: dict[str, Any]) -> None:
    server = serve(site)
    async with client(server.url, site["key"]) as http:
        started = await http.post("/v1/runs", json={"input": "steps 20", "background": True})
        run_id = started.json()["run_id"]
        async with http.stream("GET", f"/v1/runs/{run_id}/events") as stream:
            events = sse_events(stream)
            assert (await anext(events)).event == "run_started"  # followed, and live
            server.process.send_signal(signal.SIGTERM)
            rest = await rest_of(events)
    await exited(server)
    assert rest[-1].event == "run_completed"
    assert rest[-1].data["payload"]["status"] == "cancelled"
    assert journal_status(site["journal"], run_id) == ("cancelled", SHUTDOWN_REASON)


async def test_sigterm_ends_the_streams_of_runs_another_process_drives(
    site: dict[str, Any],
) -> None:
    driver, watcher = serve(site), serve(site)
    async with client(driver.url, site["key"]) as a, client(watcher.url, site["key"]) as b:
        started = await a.post("/v1/runs", json={"input": "steps 20", "background": True})
        run_id = started.json()["run_id"]
        async with b.stream("GET", f"/v1/runs/{run_id}/events") as stream:
            events = sse_events(stream)
            assert (await anext(events)).event == "run_started"
            watcher.process.send_signal(signal.SIGTERM)
            rest = await rest_of(events)  # ends: the watcher does not wait for the run
        await exited(watcher)
        assert all(e.event != "run_completed" for e in rest)
        # Not its run: the process that drives it goes on with it.
        assert (await a.get(f"/v1/runs/{run_id}")).json()["status"] == "running"


# --------------------------------------------------------------------------- forks


async def _forking(http: httpx.AsyncClient) -> tuple[str, asyncio.Task[httpx.Response], str]:
    """A long run forked from its first checkpoint: the parent, the fork request (in
    flight while the fork runs) and the fork's run id."""
    started = await http.post("/v1/runs", json={"input": "steps 20", "background": True})
    parent = started.json()["run_id"]
    await first_transition(http, parent)
    stopped = await http.post(f"/v1/runs/{parent}/cancel")
    assert stopped.json()["status"] == "cancelled", stopped.text
    fork = asyncio.create_task(http.post(f"/v1/runs/{parent}/fork", json={"at": 1}))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND
    while loop.time() < deadline:  # until the fork's run is journaled (bounded)
        listed = (await http.get("/v1/runs", params={"limit": 5})).json()["runs"]
        child = next((r for r in listed if r["parent_run_id"] == parent), None)
        if child is not None:
            return parent, fork, child["run_id"]
        assert not fork.done(), fork.result().text
    raise AssertionError("the fork's run never appeared")


async def test_a_fork_is_driven_like_any_run_and_can_be_cancelled(site: dict[str, Any]) -> None:
    server = serve(site)
    async with client(server.url, site["key"]) as http:
        parent, fork, child = await _forking(http)
        assert (await http.get(f"/v1/runs/{child}")).json()["status"] == "running"
        cancelled = await http.post(f"/v1/runs/{child}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        answer = await asyncio.wait_for(fork, BOUND)  # the fork's request answers at once
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert body["run_id"] == child and body["status"] == "cancelled"
        record = (await http.get(f"/v1/runs/{child}")).json()
        assert record["parent_run_id"] == parent and record["parent_seq"] == 1


async def test_sigterm_cancels_a_fork_in_flight(site: dict[str, Any]) -> None:
    server = serve(site)
    async with client(server.url, site["key"]) as http:
        _, fork, child = await _forking(http)
        server.process.send_signal(signal.SIGTERM)
        await exited(server)
        fork.cancel()
    assert journal_status(site["journal"], child)[0] == "cancelled"


# --------------------------------------------------------------------------- headers


def _signed_in(url: str, key: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/ui/login",
        data={"key": key},
        headers={"Origin": url, **headers},
        follow_redirects=False,
        timeout=BOUND,
    )


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_every_answer_has_security_headers_and_the_cookie_is_secure_over_https(
    site: dict[str, Any],
) -> None:
    server = serve(site)
    key, url = site["key"], server.url
    auth = {"Authorization": f"Bearer {key}"}
    made = httpx.post(f"{url}/v1/runs", json={"input": "hi"}, headers=auth, timeout=BOUND)
    run_id = made.json()["run_id"]
    plain = _signed_in(url, key)
    assert plain.status_code == 303
    cookie = plain.headers["set-cookie"]
    assert "HttpOnly" in cookie and "Secure" not in cookie  # http on loopback: still signs in
    # Behind a proxy on loopback (trusted by uvicorn) that says the browser used https.
    secure = _signed_in(url, key, **{"X-Forwarded-Proto": "https"})
    assert "; Secure" in secure.headers["set-cookie"]
    cookies = {"loomgraph_key": key}
    pages = ["/ui/login", "/ui", f"/ui/runs/{run_id}", "/ui/rows"]
    api = [f"/v1/runs/{run_id}", "/v1/runs", f"/v1/runs/{run_id}/graph.svg", "/openapi.json"]
    inline: set[str] = set()
    for path in [*pages, *api, "/v1/runs/nope", "/ui/static/htmx.min.js", "/no/such/page"]:
        answer = httpx.get(url + path, cookies=cookies, timeout=BOUND)
        assert answer.status_code in (200, 404), (path, answer.status_code)
        h = answer.headers
        csp = h.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp, (path, csp)
        assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
        assert h.get("x-frame-options") == "DENY", path
        assert h.get("x-content-type-options") == "nosniff", path
        assert h.get("referrer-policy") == "same-origin", path
        if not path.startswith("/ui/static/"):
            assert h.get("cache-control") == "no-store", path
        for script in re.findall(r"<script>(.*?)</script>", answer.text, re.S):
            inline.add(script)
            assert _hash(script) in csp, (path, "an inline script the policy would block")
        for handler in re.findall(r"\son[a-z]+=\"([^\"]*)\"", answer.text):
            inline.add(handler)
            assert _hash(handler) in csp and "'unsafe-hashes'" in csp, (path, handler)
    assert inline, "the pages have inline scripts: their hashes must be in the policy"


CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(DRIVER)),
    reason="needs Debian's chromium and chromium-driver (scripts/install.sh)",
)
def test_the_viewer_runs_under_its_policy_in_a_real_browser(
    site: dict[str, Any], tmp_path: Path
) -> None:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    server = serve(site)
    made = httpx.post(
        f"{server.url}/v1/runs",
        json={"input": "pay acme"},
        headers={"Authorization": f"Bearer {site['key']}"},
        timeout=BOUND,
    )
    run_id = made.json()["run_id"]
    policy = httpx.get(server.url + "/ui/login", timeout=BOUND).headers
    assert "script-src 'self'" in policy.get("content-security-policy", "")  # under it
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}/p"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    try:
        driver.get(server.url + "/ui/login")
        driver.find_element(By.ID, "key").send_keys(site["key"])
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        # The rows' inline script turns each start time into local time: it ran.
        WebDriverWait(driver, BOUND).until(
            lambda d: (
                d.find_elements(By.CSS_SELECTOR, "[data-testid=run-row]")
                and not d.find_elements(By.CSS_SELECTOR, "td.time[data-ts]")
            )
        )
        # The filters' inline `onchange` handlers (allowed by hash) submit their form.
        Select(driver.find_element(By.NAME, "status")).select_by_value("awaiting_approval")
        WebDriverWait(driver, BOUND).until(lambda d: "status=awaiting_approval" in d.current_url)
        driver.get(f"{server.url}/ui/runs/{run_id}")
        WebDriverWait(driver, BOUND).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=approval-card]")
        )
        logs = [entry["message"] for entry in driver.get_log("browser")]
    finally:
        driver.quit()
    assert not [m for m in logs if "Content Security Policy" in m], logs


# --------------------------------------------------------------------------- OpenAPI


def _reads(handler: Any) -> tuple[set[str], set[str]]:
    """The body fields and query parameters a handler reads, from its source."""
    tree = ast.parse(inspect.getsource(handler))
    body: set[str] = set()
    query: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        if name == "read_json":
            body |= {e.value for e in node.args[2].elts}  # type: ignore[attr-defined]
        elif name == "int_param":
            query.add(node.args[1].value)  # type: ignore[attr-defined]
        elif name == "get" and isinstance(node.func, ast.Attribute):
            owner = ast.unparse(node.func.value)
            if owner in ("q", "request.query_params") and node.args:
                query.add(node.args[0].value)  # type: ignore[attr-defined]
    return body, query


def test_the_openapi_document_names_what_every_route_reads(site: dict[str, Any]) -> None:
    server = serve(site)
    spec = httpx.get(server.url + "/openapi.json", timeout=BOUND).json()
    schemes = spec["components"]["securitySchemes"]
    assert {"type": "apiKey", "in": "header", "name": "X-API-Key"} in [
        {k: v for k, v in s.items() if k in ("type", "in", "name")} for s in schemes.values()
    ]
    assert any(s.get("scheme") == "bearer" for s in schemes.values())
    for method, path, handler, _, _ in ENDPOINTS:
        operation = spec["paths"][path][method.lower()]
        assert len(operation["security"]) == len(schemes), path  # either credential
        body, query = _reads(handler)
        query -= {name for name in query if "{" + name + "}" in path}
        named = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
        assert query <= named, (method, path, query - named)
        if body:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            assert set(schema["properties"]) == body, (method, path)
        else:
            assert "requestBody" not in operation, (method, path)
    create = spec["paths"]["/v1/runs"]["post"]
    assert {"201", "202"} <= set(create["responses"])
    assert "text/event-stream" in create["responses"]["200"]["content"]
    events = spec["paths"]["/v1/runs/{run_id}/events"]["get"]["parameters"]
    assert {"name": "Last-Event-ID", "in": "header"} in [
        {"name": p["name"], "in": p["in"]} for p in events
    ]
    # The fields are what the API really takes: an unknown one is refused naming them.
    key = {"Authorization": f"Bearer {site['key']}"}
    refused = httpx.post(server.url + "/v1/runs", json={"zz": 1}, headers=key, timeout=BOUND)
    assert refused.status_code == 422
    schema = create["requestBody"]["content"]["application/json"]["schema"]
    for name in schema["properties"]:
        assert repr(name) in refused.json()["error"]["message"]
