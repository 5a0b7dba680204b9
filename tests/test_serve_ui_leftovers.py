"""The run viewer, as its users found it after the approvals page came: a second click on
Approve while the first answer was out sent a second answer (told "not waiting"); a live
poll's error stayed on the page while every later poll said nothing was new (204); a user
whose API key was revoked was sent to the sign-in page with no word why; an error page (a
run not found) showed the header of someone signed out."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from loomgraph.serve.auth import KEY_COOKIE
from serve_agent import make_agent
from serve_process import in_process
from test_serve_api import served
from test_serve_ui import WAIT, browser, sign_in
from test_serve_ui import pytestmark as needs_chromium

pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

# ---------------------------------------------------------------------- over HTTP


async def test_a_revoked_keys_browser_is_told_why_it_must_sign_in_again(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        key = s.keys["dave"]
        s.client.cookies.set(KEY_COOKIE, key)
        assert (await s.client.get("/ui")).status_code == 200
        store = s.app.state.service.store
        [found] = [k for k in await store.keys() if k.user_id == "dave"]
        await store.revoke(found.key_id)
        page = await s.client.get("/ui")
        assert page.status_code == 303 and page.headers["location"] == "/ui/login?why=refused"
        assert f"{KEY_COOKIE}=" in page.headers.get("set-cookie", "")  # the cookie is dropped
        s.client.cookies.clear()
        login = await s.client.get(page.headers["location"])
        assert "no longer accepted" in login.text and "revoked" in login.text
        # The page says only its own words, whatever the address holds.
        odd = await s.client.get("/ui/login", params={"why": "<b>your bank called</b>"})
        assert "bank called" not in odd.text and "no longer accepted" not in odd.text
        # Never signed in: no reason.
        fresh = await s.client.get("/ui")
        assert fresh.headers["location"] == "/ui/login"
        # The viewer's own requests (htmx) are sent there with the reason too.
        s.client.cookies.set(KEY_COOKIE, key)
        polled = await s.client.get("/ui/rows", headers={"HX-Request": "true"})
        assert polled.status_code == 401
        assert polled.headers["hx-redirect"] == "/ui/login?why=refused"


async def test_an_error_page_keeps_the_signed_in_users_header(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        s.client.cookies.set(KEY_COOKIE, s.keys["alice"])
        page = await s.client.get("/ui/runs/no-such-run")
        assert page.status_code == 404, page.text
        assert 'class="who"' in page.text and "alice" in page.text
        assert "Sign out" in page.text and "Approvals" in page.text


# ---------------------------------------------------------------------- in Chromium


class _Held:
    """Holds the service's answers to approvals until the test lets them go."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.go = threading.Event()
        self.count = 0

    def wrap(self, method: Any) -> Any:
        async def held(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            self.asked.set()
            await asyncio.to_thread(self.go.wait, WAIT)
            return await method(*args, **kwargs)

        return held


@needs_chromium
def test_approve_and_deny_are_off_while_an_answer_is_out(tmp_path: Path) -> None:
    from loomgraph.serve import create_app

    app = create_app(make_agent(str(tmp_path / "journal.db")))
    service = app.state.service
    held = _Held()
    service.approve = held.wrap(service.approve)
    key = asyncio.run(service.store.add_key("alice", approver=True))
    with in_process(app, WAIT) as url:
        driver = browser(tmp_path / "profile")
        try:
            sign_in(driver, url, key)
            headers = {"Authorization": f"Bearer {key}"}
            run = httpx.post(url + "/v1/runs", json={"input": "pay acme"}, headers=headers)
            run_id = run.json()["run_id"]
            driver.get(f"{url}/ui/runs/{run_id}")
            card = WebDriverWait(driver, WAIT).until(
                ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=approval-card]"))
            )
            approve = card.find_element(By.CSS_SELECTOR, "[data-testid=approve-button]")
            deny = card.find_element(By.CSS_SELECTOR, "[data-testid=deny-button]")
            approve.click()
            assert held.asked.wait(WAIT)
            assert not approve.is_enabled() and not deny.is_enabled()
            driver.execute_script("arguments[0].click(); arguments[1].click();", approve, deny)
            held.go.set()
            WebDriverWait(driver, WAIT).until(
                lambda d: not d.find_elements(By.CSS_SELECTOR, "[data-testid=approval-card]")
            )
            assert held.count == 1, "a second answer was sent while the first was out"
        finally:
            held.go.set()
            driver.quit()
