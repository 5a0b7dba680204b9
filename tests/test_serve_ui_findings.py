"""The run viewer (`/ui` of `loomgraph serve`) as a demanding user uses it: over plain HTTP
with the in-process app where the behaviour is the server's, in real headless Chromium
(Debian's chromium + chromedriver, Selenium) where it is the browser's.

What went wrong before: **Fork from here** answered only once the forked run had finished
(the button did nothing visible meanwhile; a second click forked again); arguments and
states showed every non-ASCII letter as a JSON escape (`M\\u00fcller`); an error answering
a card low on the approvals page went to the one notice at the page's top, out of sight; a
late timeline item's checkpoint loaded thousands of pixels above; and an error of the live
poll replaced the page's `#notice` (`HX-Retarget` with the poll's `outerHTML` swap), so
every later error had nowhere to be shown.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loomgraph import Agent, tool
from loomgraph.errors import ServiceUnavailable
from loomgraph.models import ScriptedModel
from loomgraph.runtime import SqliteRuntime
from serve_agent import script
from serve_process import Server, add_key, environment, in_process, start_server
from test_serve_api import served

# The browser, its bound and its skip mark (no Chromium) as tests/test_serve_ui.py has them.
from test_serve_ui import WAIT, browser, sign_in
from test_serve_ui import pytestmark as needs_chromium

pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

# Where an element is against the window: [top, bottom, the window's height].
RECT = "const r = arguments[0].getBoundingClientRect(); return [r.top, r.bottom, innerHeight];"


def ui(s: Any, user: str) -> dict[str, str]:
    """The headers of a request the viewer's own page (htmx) sends, signed in as `user`."""
    return {**s.auth(user), "HX-Request": "true"}


def gated_agent(journal: Path, gate: asyncio.Event) -> Agent:
    """The serving tests' agent, whose `step` tool waits for `gate`: a run that stays live
    as long as the test wants, with no sleep."""

    @tool(trusted=True)
    async def step(n: int) -> str:
        """One step of a long task."""
        await gate.wait()
        return f"step {n} done"

    return Agent(
        "You pay bills.",
        model=ScriptedModel(script),
        tools=[step],
        runtime=SqliteRuntime(str(journal)),
    )


# ---------------------------------------------------------------------- fork


async def test_fork_from_here_answers_once_the_fork_started_not_when_it_ended(
    tmp_path: Path,
) -> None:
    """A user opens a finished run of several steps, picks a checkpoint and clicks **Fork
    from here**: the browser is sent to the new run's page (which follows it live) once the
    fork started, while its tool still waits. (It used to answer only once the forked run
    had finished: for a long fork the button did nothing visible, a second click forked
    again.) The button is disabled while its request is out."""
    gate = asyncio.Event()
    gate.set()
    async with served(tmp_path, gated_agent(tmp_path / "journal.db", gate)) as s:
        done = (await s.post("alice", "/v1/runs", {"input": "steps 2"})).json()
        assert done["status"] == "completed", done
        gate.clear()  # from now on a step waits: the fork stays live until the test opens it
        posted = asyncio.ensure_future(
            s.client.post(
                f"/ui/runs/{done['run_id']}/fork", data={"at": "1"}, headers=ui(s, "alice")
            )
        )
        try:
            answer = await asyncio.wait_for(asyncio.shield(posted), 30)
        except TimeoutError:
            answer = None
        finally:
            gate.set()
        if answer is None:
            answer = await posted
            raise AssertionError(
                "the fork's POST answered only once the forked run had finished "
                f"({answer.headers.get('hx-redirect')}): the page hung for the whole run"
            )
        assert answer.headers.get("hx-redirect", "").startswith("/ui/runs/"), answer.text
        forked = answer.headers["hx-redirect"].rpartition("/")[2]
        assert forked != done["run_id"]
        assert (await s.get("alice", f"/v1/runs/{forked}")).json()["parent_run_id"] == done[
            "run_id"
        ]
        # A second click while the first is out: the button is disabled meanwhile (htmx).
        state = await s.client.get(
            f"/ui/runs/{done['run_id']}/checkpoint", params={"seq": "1"}, headers=ui(s, "alice")
        )
        button = re.search(r'<button[^>]*data-testid="fork-button"[^>]*>', state.text)
        assert button is not None and 'hx-disabled-elt="this"' in button[0], state.text[:800]


# ---------------------------------------------------------------------- text shown


def _pay_mueller(request: Any) -> Any:
    """The model pays a payee whose name is not ASCII (any European, Asian, RTL name)."""
    if request.call_index == 0:
        call = {"id": "call_pay", "tool": "pay", "args": {"to": "Müller 東京", "amount": 5}}
        return {"tool_calls": [call]}
    return "done"


async def test_arguments_with_ordinary_letters_are_shown_as_written(tmp_path: Path) -> None:
    """A model asks to pay "Müller 東京"; the approver opens the run's page to judge the call:
    the card's editable arguments, the checkpoint state and (once approved as shown) the
    timeline's tool call show `Müller 東京` (docs/serving.md escapes only bidi controls,
    invisible format characters and controls). The arguments sent back as the card holds
    them pay what the model asked. (The JSON filters wrote every non-ASCII letter as a
    JSON escape, `M\\u00fcller \\u6771\\u4eac`.)"""
    from serve_agent import PAID, pay

    agent = Agent(
        "You pay bills.",
        model=ScriptedModel(_pay_mueller),
        tools=[pay],
        runtime=SqliteRuntime(str(tmp_path / "journal.db")),
    )
    async with served(tmp_path, agent) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay"})).json()["run_id"]
        page = (await s.get("alice", f"/ui/runs/{run_id}")).text
        textarea = re.search(r"<textarea[^>]*>(.*?)</textarea>", page, re.S)
        assert textarea is not None, page[-2000:]
        assert "Müller 東京" in textarea[1], f"the card's arguments read {textarea[1]!r}"
        state = await s.client.get(
            f"/ui/runs/{run_id}/checkpoint", params={"seq": "1"}, headers=ui(s, "alice")
        )
        assert "Müller 東京" in state.text, state.text[:600]
        # Approved with the arguments as the card holds them (what the browser sends back).
        args = textarea[1]
        key = re.search(r'name="key" value="([^"]*)"', page)
        assert key is not None
        answer = await s.client.post(
            f"/ui/runs/{run_id}/approvals",
            params={"call_id": "call_pay"},
            data={"allow": "true", "key": html.unescape(key[1]), "args": html.unescape(args)},
            headers=ui(s, "alice"),
        )
        assert answer.headers.get("hx-refresh") == "true", answer.text
        await s.app.state.service.hub.wait(run_id)
        assert PAID == [{"to": "Müller 東京", "amount": 5}]
        page = (await s.get("alice", f"/ui/runs/{run_id}")).text
        calls = re.findall(r'class="ev tool_call".*?</li>', page, re.S)
        assert calls and "Müller 東京" in calls[0], calls


async def test_two_approvers_answering_one_card_at_once_pay_once(tmp_path: Path) -> None:
    """alice and bob, both approvers, have the same card open and press
    Approve and Deny at the same moment. Expected: exactly one answer is used (one payment
    at most), the other is told in the notice, never a blank page or a 500."""
    from serve_agent import PAID

    async with served(tmp_path) as s:
        run_id = (await s.post("dave", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        page = (await s.get("bob", "/ui/approvals")).text
        key = re.search(r'name="key" value="([^"]*)"', page)
        assert key is not None, page[-1500:]

        async def answer(user: str, allow: str) -> httpx.Response:
            return await s.client.post(
                f"/ui/runs/{run_id}/approvals",
                params={"call_id": "call_pay"},
                data={"allow": allow, "key": key[1], "args": ""},
                headers=ui(s, user),
            )

        answers = await asyncio.gather(answer("alice", "true"), answer("bob", "false"))
        await s.app.state.service.hub.wait(run_id)
        used = [a for a in answers if a.headers.get("hx-refresh") == "true"]
        told = [a for a in answers if a.headers.get("hx-retarget") == "#notice"]
        assert len(used) == 1 and len(told) == 1, [(a.headers, a.text) for a in answers]
        assert 'class="error"' in told[0].text and run_id in told[0].text
        assert len(PAID) == (1 if used[0] is answers[0] else 0)


async def test_an_error_goes_to_the_notice_the_request_names_and_into_it(tmp_path: Path) -> None:
    """The error of a viewer's request is swapped *into* a notice (`HX-Reswap: innerHTML`,
    whatever the element's own swap): a card's answer into that card's notice (htmx names it
    in `HX-Target`), anything else, and a target that is not a notice's plain id, into the
    page's `#notice`."""
    async with served(tmp_path) as s:
        run_id = (await s.post("dave", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        page = (await s.get("bob", "/ui/approvals")).text
        assert 'id="notice-0"' in page and 'hx-target="#notice-0"' in page, page[-1500:]

        async def bad_answer(target: str) -> httpx.Response:
            return await s.client.post(
                f"/ui/runs/{run_id}/approvals",
                params={"call_id": "call_pay"},
                data={"allow": "true", "key": "k", "args": "{not json"},
                headers={**ui(s, "bob"), "HX-Target": target},
            )

        for target, notice in [
            ("notice-0", "#notice-0"),
            ("notice-fork", "#notice-fork"),
            ("checkpoint", "#notice"),
            ("notice-0, body", "#notice"),
            ("notice-0 *", "#notice"),
        ]:
            answer = await bad_answer(target)
            assert "not JSON" in answer.text, answer.text
            assert answer.headers.get("hx-retarget") == notice, (target, answer.headers)
            assert answer.headers.get("hx-reswap") == "innerHTML", answer.headers


# ---------------------------------------------------------------------- in the browser


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real `loomgraph serve` and a headless Chromium signed in as alice (an approver)."""
    root = tmp_path_factory.mktemp("viewer")
    env = environment(root / "journal.db", SERVE_STEP_DELAY="0.01")
    key = add_key(env, "alice", "--approver")
    server: Server = start_server(env)
    driver = browser(root / "profile")
    try:
        sign_in(driver, server.url, key)
        yield {"url": server.url, "key": key, "driver": driver, "env": env}
    finally:
        driver.quit()
        server.stop()


def start(site: dict[str, Any], prompt: str) -> str:
    """A run of alice's started over the API, once it stopped (or waits)."""
    headers = {"Authorization": f"Bearer {site['key']}"}
    answer = httpx.post(
        site["url"] + "/v1/runs", json={"input": prompt}, headers=headers, timeout=120
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["run_id"])


def in_view(driver: Any, element: Any) -> bool:
    """Whether some of `element` is inside the window (not scrolled away above or below)."""
    top, bottom, height = driver.execute_script(RECT, element)
    return bool(bottom > 0 and top < height)


@needs_chromium
def test_an_error_answering_a_card_low_on_the_approvals_page_is_seen(
    site: dict[str, Any],
) -> None:
    """Eight calls wait; the approver scrolls to the last card, types arguments that are not
    JSON and presses Approve: the typed error ("the 'args' field is not JSON: ...") is shown
    where she is looking, in the card's own notice. (It went to the page's one `#notice` at
    the top, thousands of pixels above the viewport: to her, Approve did nothing.)"""
    driver = site["driver"]
    for i in range(8):
        start(site, f"pay {i}")
    driver.get(site["url"] + "/ui/approvals")
    cards = WebDriverWait(driver, WAIT).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=waiting-run]")
    )
    assert len(cards) >= 8
    args = cards[-1].find_element(By.TAG_NAME, "textarea")
    driver.execute_script("arguments[0].scrollIntoView()", args)
    args.clear()
    args.send_keys("{not json")
    cards[-1].find_element(By.CSS_SELECTOR, "[data-testid=approve-button]").click()
    errors = WebDriverWait(driver, WAIT).until(
        lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, ".error") if "not JSON" in e.text]
    )
    assert any(in_view(driver, e) for e in errors), (
        f"the error is out of sight: {driver.execute_script(RECT, errors[0])}"
    )


@needs_chromium
def test_the_checkpoint_of_a_late_event_in_a_long_run_is_seen(site: dict[str, Any]) -> None:
    """A run of 150 events; the user scrolls down the timeline and clicks a late event to see
    the state after it and its diff: the checkpoint appears where she can see it (the aside
    is sticky). (It was loaded at the top of the page, thousands of pixels above: the click
    seemed to do nothing.)"""
    driver, run_id = site["driver"], start(site, "steps 40")
    driver.get(f"{site['url']}/ui/runs/{run_id}")
    items = WebDriverWait(driver, WAIT).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=timeline-item]")
    )
    assert len(items) > 100, len(items)
    late = items[-5]
    driver.execute_script("arguments[0].scrollIntoView()", late)
    late.click()
    state = WebDriverWait(driver, WAIT).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=checkpoint-state]"))
    )
    assert in_view(driver, state), (
        f"the checkpoint is out of sight: {driver.execute_script(RECT, state)}"
    )


class _Blip:
    """Makes the served journal's reads fail once each time the test asks (a Postgres
    restart, an SQLite file locked past its timeout): ServiceUnavailable, a typed 503."""

    def __init__(self) -> None:
        self.armed = threading.Event()

    def wrap(self, method: Any) -> Any:
        async def reading(*args: Any, **kwargs: Any) -> Any:
            if self.armed.is_set():
                self.armed.clear()
                raise ServiceUnavailable(f"the journal is unavailable (blip {next(self.count)})")
            return await method(*args, **kwargs)

        return reading

    count = itertools.count(1)


@needs_chromium
def test_an_error_of_the_live_poll_does_not_take_the_notice_away(tmp_path: Path) -> None:
    """A user watches a live run; one of the page's 1 s polls meets the journal unavailable
    for a moment (a typed 503), then she clicks a timeline item and that read fails too:
    each error is shown, and `#notice` stays; the poll's error goes once a poll goes
    through, even one with nothing new (204). (The poll's `outerHTML` swap with
    `HX-Retarget: #notice` and no `HX-Reswap` replaced the notice *div itself*; every later
    error had nowhere to go, htmx `targetError`, and the click did nothing visible.)"""
    from loomgraph.serve import create_app

    gate = threading.Event()
    journal = tmp_path / "journal.db"
    env = environment(journal)
    key = add_key(env, "alice", "--approver")

    @tool(trusted=True)
    async def step(n: int) -> str:
        """One step of a long task (it waits for the test)."""
        await asyncio.to_thread(gate.wait, WAIT)
        return f"step {n} done"

    agent = Agent(
        "You pay bills.",
        model=ScriptedModel(script),
        tools=[step],
        runtime=SqliteRuntime(str(journal)),
    )
    app = create_app(agent)
    service = app.state.service
    blip = _Blip()
    service.run_svg = blip.wrap(service.run_svg)  # every poll of the run's page reads it
    service.state = blip.wrap(service.state)  # a timeline item's checkpoint
    with in_process(app, WAIT) as url:
        driver = browser(tmp_path / "profile")
        try:
            _live_poll_errors(driver, url, key, blip)
        finally:
            gate.set()
            driver.quit()


def _live_poll_errors(driver: Any, url: str, key: str, blip: _Blip) -> None:
    """The page of a live run, its poll and then a click meeting the journal unavailable."""
    sign_in(driver, url, key)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"input": "steps 2", "background": True}
    run_id = httpx.post(url + "/v1/runs", json=body, headers=headers, timeout=60).json()["run_id"]
    driver.get(f"{url}/ui/runs/{run_id}")
    WebDriverWait(driver, WAIT).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=timeline-item]"))
    )
    blip.armed.set()  # the next poll fails
    WebDriverWait(driver, WAIT).until(
        lambda d: "blip 1" in d.find_element(By.TAG_NAME, "main").text
    )
    # In the live part's own notice; the next poll clears it, though it has nothing new
    # to show (204: the run waits for the test), as a redraw does.
    notice = driver.find_element(By.ID, "live-notice")
    assert "blip 1" in notice.text
    WebDriverWait(driver, WAIT).until(lambda _: notice.text.strip() == "")  # (not redrawn)
    blip.armed.set()  # and so does the click's read
    driver.find_element(By.CSS_SELECTOR, "[data-testid=timeline-item]").click()
    WebDriverWait(driver, WAIT).until(lambda _: not blip.armed.is_set())  # it was read
    assert driver.find_elements(By.ID, "notice"), "the poll's error replaced #notice"
    WebDriverWait(driver, WAIT).until(
        lambda d: "blip 2" in d.find_element(By.TAG_NAME, "main").text
    )
