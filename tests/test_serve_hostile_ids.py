"""Text the model or an MCP server chose, in the HTTP API and the viewer: a call id holding a
`/`, an origin with a bidi override (found by a probe; each test failed before its fix)."""

from __future__ import annotations

import html
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

import pg
from loomgraph import Agent, tool
from loomgraph.models import ScriptedModel
from loomgraph.runtime import SqliteRuntime
from loomgraph.serve import create_app
from serve_agent import pay
from serve_in_process import in_process
from serve_process import Server, environment, loomgraph, start_server

pg_schema = pg.pg_schema
TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"
FLEET_AGENT = "fleet_agent:make"


# --------------------------------------------------------------------------- hostile text


def _slash_id_script(request: Any) -> Any:
    """The model names its tool call `call/1` (a provider's or a hostile model's id)."""
    if request.call_index == 0:
        call = {"id": "call/1", "tool": "pay", "args": {"to": "acme", "amount": 5}}
        return {"tool_calls": [call]}
    return "paid"


async def test_a_call_whose_id_holds_a_slash_can_be_approved_over_http(tmp_path: Path) -> None:
    """A model names a destructive call `call/1`; the run waits for approval. The approver
    answers it over HTTP as the docs say (`POST /v1/runs/{run_id}/approvals/{call_id}`, the id
    percent-encoded) and from the viewer's Approve button. Both are 404 `Not Found` from the
    router: `{call_id}` never matches a decoded `/` (Starlette's default path convertor), and
    the page's button posts to `.../approvals/call/1` (Jinja's `urlencode` keeps `/`). The run
    can only be cancelled: no HTTP route answers its approval."""
    agent = Agent(
        "You pay bills.",
        model=ScriptedModel(_slash_id_script),
        tools=[pay],
        runtime=SqliteRuntime(str(tmp_path / "journal.db")),
    )
    async with in_process(agent) as (client, key):
        headers = {"Authorization": f"Bearer {key}"}

        async def waiting() -> tuple[str, dict[str, Any]]:
            started = await client.post("/v1/runs", json={"input": "pay"}, headers=headers)
            run_id = started.json()["run_id"]
            shown = (await client.get(f"/v1/runs/{run_id}", headers=headers)).json()
            assert shown["status"] == "awaiting_approval"
            assert shown["pending"][0]["call"]["id"] == "call/1"
            return run_id, shown["pending"][0]

        run_id, pending = await waiting()
        answered = await client.post(
            f"/v1/runs/{run_id}/approvals/call%2F1",
            json={"allow": True, "key": pending["key"]},
            headers=headers,
        )
        assert answered.status_code == 202, answered.text

        # The viewer: what its Approve button posts (htmx), where the button posts it.
        run_id, pending = await waiting()
        page = (await client.get(f"/ui/runs/{run_id}", headers=headers)).text
        target = re.search(r'data-testid="approve-button"\s+hx-post="([^"]+)"', page)
        assert target is not None
        clicked = await client.post(
            html.unescape(target.group(1)),
            data={"allow": "true", "key": pending["key"], "args": ""},
            headers=headers | {"HX-Request": "true"},
        )
        assert clicked.status_code == 200 and clicked.headers.get("hx-refresh") == "true", (
            clicked.status_code,
            clicked.text,
        )


# An agent whose `wire` tool's host names its origin in words of its own (`ToolSpec.origin`):
# text from outside the agent, here ending in U+202E RIGHT-TO-LEFT OVERRIDE.
BIDI_AGENT = '''
import os

from loomgraph import Agent, tool
from loomgraph.models import ScriptedModel
from loomgraph.runtime import SqliteRuntime


@tool(destructive=True)
def wire(to: str, amount: int) -> str:
    """Wire money."""
    return f"wired {amount} to {to}"


wire.spec["origin"] = {"kind": "mcp", "name": "bank\\u202e", "reach": "0"}


def script(request):
    if request.call_index == 0:
        call = {"id": "call_1", "tool": "wire", "args": {"to": "acme", "amount": 5}}
        return {"tool_calls": [call]}
    return "done"


def make_agent(journal=None, **options):
    return Agent("You pay bills.", model=ScriptedModel(script), tools=[wire],
                 runtime=SqliteRuntime(journal or os.environ["SERVE_JOURNAL"]), **options)
'''

# Where Chromium draws the first and the last character of an element's text (x, in px).
_EDGES = """
const node = arguments[0].firstChild, range = document.createRange();
range.setStart(node, 0); range.setEnd(node, 1);
const first = range.getBoundingClientRect().left;
range.setStart(node, node.length - 1); range.setEnd(node, node.length);
return [first, range.getBoundingClientRect().left];
"""


@pytest.fixture(scope="module")
def bidi_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from test_serve_ui import CHROMIUM, DRIVER, browser, sign_in

    if not (shutil.which(CHROMIUM) and shutil.which(DRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/install.sh)")
    root = tmp_path_factory.mktemp("bidi")
    (root / "bidi_agent.py").write_text(BIDI_AGENT)
    env = environment(root / "journal.db")
    env["PYTHONPATH"] = os.pathsep.join([str(root), env["PYTHONPATH"]])
    made = loomgraph(env, "keys", "add", "alice", "--agent", "bidi_agent:make_agent", "--approver")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    server: Server = start_server(env, "--agent", "bidi_agent:make_agent")
    driver = browser(root / "profile")
    try:
        sign_in(driver, server.url, key)
        yield {"url": server.url, "key": key, "driver": driver}
    finally:
        driver.quit()
        server.stop()


def test_an_origin_with_a_bidi_override_does_not_reverse_the_digest_on_the_card(
    bidi_site: dict[str, Any],
) -> None:
    """A tool's host names its origin `bank` followed by U+202E (RIGHT-TO-LEFT OVERRIDE); a
    call of it waits for approval, and the approver opens the card in the viewer, which names
    the tool, its origin and its short digest: the identity the approval is bound to. The
    origin is escaped as HTML but not isolated (no `<bdi>`, no `unicode-bidi: isolate`, the
    control not shown as U+FFFD or escaped), so the override runs on to the end of the line:
    Chromium draws the digest right to left, and the approver reads another digest than
    the one the answer is bound to."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from test_serve_ui import WAIT

    headers = {"Authorization": f"Bearer {bidi_site['key']}"}
    started = httpx.post(
        bidi_site["url"] + "/v1/runs", json={"input": "wire"}, headers=headers, timeout=120
    )
    assert started.json()["status"] == "awaiting_approval", started.text
    run_id = started.json()["run_id"]
    driver = bidi_site["driver"]
    driver.get(f"{bidi_site['url']}/ui/runs/{run_id}")
    digest = WebDriverWait(driver, WAIT).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=approval-digest]"))
    )
    assert digest.text.startswith("sha256:")
    first, last = driver.execute_script(_EDGES, digest)
    assert first < last, "the digest is drawn right to left: its first character is rightmost"


def test_the_card_shows_the_override_and_isolates_the_origin(bidi_site: dict[str, Any]) -> None:
    """On the same card the origin reads `mcp:bank\\u202e` (the control shown, as the CLI shows
    it), and the origin, the digest and the node are each isolated (`unicode-bidi: isolate`):
    whatever letters an origin holds, they cannot reorder the digest beside it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from test_serve_ui import WAIT

    headers = {"Authorization": f"Bearer {bidi_site['key']}"}
    started = httpx.post(
        bidi_site["url"] + "/v1/runs", json={"input": "wire"}, headers=headers, timeout=120
    )
    run_id = started.json()["run_id"]
    driver = bidi_site["driver"]
    driver.get(f"{bidi_site['url']}/ui/runs/{run_id}")
    origin = WebDriverWait(driver, WAIT).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=approval-origin]"))
    )
    assert origin.text == "mcp:bank\\u202e"
    for testid in ("approval-origin", "approval-digest", "approval-node"):
        element = driver.find_element(By.CSS_SELECTOR, f"[data-testid={testid}]")
        style = driver.execute_script("return getComputedStyle(arguments[0]).unicodeBidi", element)
        assert style == "isolate", (testid, style)


# Call ids a model may give (they are its text): each is answered over HTTP by the documented
# route (the id percent-encoded), by the route that takes the id in the body, and from the
# viewer's card. `.` and `..` are dot segments, which URL parsers remove from a path (a
# browser's, `%2E%2E` included): the body route and the viewer answer them.
HOSTILE_IDS = [
    "call/1",
    "../x",
    "..",
    ".",
    "50%",
    "%2F",
    "a?b=1",
    "a#b",
    "a b",
    "café/☃",
    "call\u202e1",
]
_DOT_SEGMENTS = {".", ".."}


def _agent_calling(call_id: str, journal: Path) -> Agent:
    """An agent whose model asks to `pay` in a call of id `call_id`, then says it is done."""
    call = {"id": call_id, "tool": "pay", "args": {"to": "acme", "amount": 5}}
    script = ScriptedModel([{"tool_calls": [call]}, "paid"])
    return Agent("You pay bills.", model=script, tools=[pay], runtime=SqliteRuntime(str(journal)))


async def _waiting(client: httpx.AsyncClient, headers: dict[str, str]) -> tuple[str, str]:
    """A new run that waits for the approval of its call; its id and the request's key."""
    started = await client.post("/v1/runs", json={"input": "pay"}, headers=headers)
    assert started.status_code == 201, started.text
    run_id = started.json()["run_id"]
    shown = (await client.get(f"/v1/runs/{run_id}", headers=headers)).json()
    assert shown["status"] == "awaiting_approval", shown
    return run_id, shown["pending"][0]["key"]


async def _ended(client: httpx.AsyncClient, headers: dict[str, str], run_id: str) -> str:
    """The run's status once it stops (its event stream ends when it does)."""
    stream = await client.get(f"/v1/runs/{run_id}/events", headers=headers)
    assert stream.status_code == 200
    return str((await client.get(f"/v1/runs/{run_id}", headers=headers)).json()["status"])


@pytest.mark.parametrize("call_id", HOSTILE_IDS)
async def test_a_call_of_any_id_is_answered_by_each_route_and_the_viewer(
    tmp_path: Path, call_id: str
) -> None:
    """The approver answers three runs that each wait on a call of id `call_id`: one over the
    documented route with the id percent-encoded in the path (a dot segment cannot be: it is
    refused or lands elsewhere, never on another call), one naming the id in the body, one
    from the viewer's Approve button. Each answer is taken and the run completes; an answer
    naming another id (the id cut at its `/`, `?` or `#`) is refused."""
    async with in_process(_agent_calling(call_id, tmp_path / "journal.db")) as (client, key):
        headers = {"Authorization": f"Bearer {key}"}

        run_id, request_key = await _waiting(client, headers)
        answer = {"allow": True, "key": request_key}
        for wrong in {call_id[:1] or "x", call_id + "x"} - {call_id}:
            refused = await client.post(
                f"/v1/runs/{run_id}/approvals", json=answer | {"call_id": wrong}, headers=headers
            )
            assert refused.status_code == 409, (wrong, refused.text)
        if call_id not in _DOT_SEGMENTS:
            path = f"/v1/runs/{run_id}/approvals/{quote(call_id, safe='')}"
            answered = await client.post(path, json=answer, headers=headers)
            assert answered.status_code == 202, answered.text
            assert await _ended(client, headers, run_id) == "completed"

            run_id, request_key = await _waiting(client, headers)
        body = {"call_id": call_id, "allow": True, "key": request_key}
        answered = await client.post(f"/v1/runs/{run_id}/approvals", json=body, headers=headers)
        assert answered.status_code == 202, answered.text
        assert await _ended(client, headers, run_id) == "completed"

        run_id, request_key = await _waiting(client, headers)
        page = (await client.get(f"/ui/runs/{run_id}", headers=headers)).text
        target = re.search(r'data-testid="approve-button"\s+hx-post="([^"]+)"', page)
        assert target is not None
        sent = re.search(r'id="request-key-0" name="key" value="([^"]*)"', page)
        assert sent is not None and html.unescape(sent.group(1)) == request_key
        clicked = await client.post(
            html.unescape(target.group(1)),
            data={"allow": "true", "key": html.unescape(sent.group(1)), "args": ""},
            headers=headers | {"HX-Request": "true"},
        )
        assert clicked.headers.get("hx-refresh") == "true", (clicked.status_code, clicked.text)
        assert await _ended(client, headers, run_id) == "completed"


# Text from outside the agent in every place the viewer shows it: the prompt, the user, the
# call id, the tool's origin, the model's words and the tool's result, each holding a bidi
# override, a right-to-left mark and an escape character.
DISGUISED = "\u202e\u200f\x1b"


@tool(destructive=True)
def wire(to: str, amount: int) -> str:
    """Wire money."""
    return f"wired {amount} to {to}"


# The tool's host names its origin (`ToolSpec.origin`): text from outside the agent.
wire.spec["origin"] = {"kind": "mcp", "name": f"bank{DISGUISED}", "reach": "0"}


def _disguised_script(request: Any) -> Any:
    if request.call_index == 0:
        call = {
            "id": f"c{DISGUISED}1",
            "tool": "wire",
            "args": {"to": f"x{DISGUISED}", "amount": 1},
        }
        return {"text": f"paying{DISGUISED}", "tool_calls": [call]}
    return f"done{DISGUISED}"


async def test_the_viewer_shows_every_bidi_control_of_a_run_escaped(tmp_path: Path) -> None:
    """A run whose prompt, call id, arguments, tool origin, model text and result hold
    U+202E, U+200F and ESC: no page, fragment or error of the viewer carries one as such
    (each is shown as `\\u202e`, `\\u200f`, `\\x1b`), but for the request's key the card
    sends back exactly (it holds the call id), and the approval from the card is taken."""
    agent = Agent(
        "You pay bills.",
        model=ScriptedModel(_disguised_script),
        tools=[wire],
        runtime=SqliteRuntime(str(tmp_path / "journal.db")),
    )
    async with in_process(agent) as (client, key):
        headers = {"Authorization": f"Bearer {key}"}
        started = await client.post(
            "/v1/runs", json={"input": f"pay {DISGUISED}now"}, headers=headers
        )
        run_id = started.json()["run_id"]
        shown_run = (await client.get(f"/v1/runs/{run_id}", headers=headers)).json()
        assert shown_run["status"] == "awaiting_approval", shown_run
        request_key = shown_run["pending"][0]["key"]

        page = (await client.get(f"/ui/runs/{run_id}", headers=headers)).text
        hidden = f'value="{html.escape(request_key, quote=True)}"'
        assert hidden in page  # the key as it is: the answer must name it exactly
        shown = page.replace(hidden, "")
        assert not set(DISGUISED) & set(shown), "a control reached the page as such"
        assert "pay \\u202e\\u200f\\x1bnow" in shown  # the prompt, visibly
        assert "c\\u202e\\u200f\\x1b1" in shown  # the call id on the card
        assert "bank\\u202e\\u200f\\x1b" in shown  # the tool's origin

        for url in (
            f"/ui/runs/{run_id}/live?status=x&n=0",
            f"/ui/runs/{run_id}/checkpoint?seq=1",
            "/ui",
            "/ui/rows",
        ):
            fragment = (await client.get(url, headers=headers)).text
            assert not set(DISGUISED) & set(fragment), url

        # An error naming the run's text (a stale key: the request it names is not pending).
        target = re.search(r'data-testid="approve-button"\s+hx-post="([^"]+)"', page)
        assert target is not None
        url = html.unescape(target.group(1))
        stale = await client.post(
            url,
            data={"allow": "true", "key": request_key + DISGUISED},
            headers=headers | {"HX-Request": "true"},
        )
        assert stale.headers.get("hx-retarget") == "#notice", stale.text
        assert not set(DISGUISED) & set(stale.text)
        assert "\\u202e" in stale.text

        clicked = await client.post(
            url,
            data={"allow": "true", "key": request_key},
            headers=headers | {"HX-Request": "true"},
        )
        assert clicked.headers.get("hx-refresh") == "true", clicked.text
        assert await _ended(client, headers, run_id) == "completed"
        done = (await client.get(f"/ui/runs/{run_id}", headers=headers)).text
        assert not set(DISGUISED) & set(done)
        assert "done\\u202e\\u200f\\x1b" in done


async def test_the_body_route_answers_only_an_approver(
    tmp_path: Path,
) -> None:
    """The route naming the call in the body is held as the path route is: another user's
    run is 404 (as an unknown one) to a user without the approver role, her own 403, a body without
    `call_id` is 422 naming it; none of them answers the call."""
    agent = _agent_calling("call/1", tmp_path / "journal.db")
    app = create_app(agent)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as client,
    ):
        store = app.state.service.store
        headers = {"Authorization": f"Bearer {await store.add_key('alice', approver=True)}"}
        run_id, request_key = await _waiting(client, headers)
        body = {"call_id": "call/1", "allow": True, "key": request_key}
        # A user without the role: an approver may answer any user's call.
        others = {"Authorization": f"Bearer {await store.add_key('bob')}"}
        plain = {"Authorization": f"Bearer {await store.add_key('alice')}"}
        url = f"/v1/runs/{run_id}/approvals"
        assert (await client.post(url, json=body, headers=others)).status_code == 404
        assert (await client.post(url, json=body, headers=plain)).status_code == 403
        unnamed = await client.post(url, json={"allow": True, "key": request_key}, headers=headers)
        assert unnamed.status_code == 422 and "'call_id'" in unnamed.json()["error"]["message"]
        shown = (await client.get(f"/v1/runs/{run_id}", headers=headers)).json()
        assert shown["status"] == "awaiting_approval"
    await agent.aclose()
