"""The run viewer in real headless Chromium (Debian's chromium and chromedriver, driven by
Selenium): a run that waits for approval is found in the runs table, opened, approved from the
page and seen completing; another user's call is approved on the approvals page; a live run's
timeline grows; a fork is made from a checkpoint."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_process import Server, add_key, environment, start_server

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(DRIVER)),
    reason="needs Debian's chromium and chromium-driver (scripts/install.sh)",
)
WAIT = 90  # seconds: bounded waits on the page (the machine may be busy)


def browser(profile: Path) -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("ui")
    env = environment(root / "journal.db", SERVE_STEP_DELAY="0.4")
    key = add_key(env, "alice", "--approver")
    server: Server = start_server(env)
    driver = browser(root / "profile")
    try:
        sign_in(driver, server.url, key)
        yield {"url": server.url, "key": key, "driver": driver, "env": env}
    finally:
        driver.quit()
        server.stop()


def sign_in(driver: Any, url: str, key: str) -> None:
    """Sign in to the viewer at `url` with an API key, and wait for the runs page."""
    driver.get(url + "/ui")
    WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "key")))
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(driver, WAIT).until(ec.url_to_be(url + "/ui"))


def start(
    site: dict[str, Any], prompt: str, background: bool = False, key: str | None = None
) -> str:
    headers = {"Authorization": f"Bearer {key or site['key']}"}
    body = {"input": prompt, "background": background}
    answer = httpx.post(site["url"] + "/v1/runs", json=body, headers=headers, timeout=120)
    assert answer.status_code in (201, 202), answer.text
    return str(answer.json()["run_id"])


def swapped(err: WebDriverException) -> bool:
    """Whether reading an element failed because htmx swapped it out since it was found:
    chromedriver says so as a stale element, or as an inspector error about the node."""
    return isinstance(err, StaleElementReferenceException) or (
        "does not belong to the document" in str(err)
    )


def gone(element: Any) -> Any:
    """A wait for `element` to leave the page: `ec.staleness_of`, with chromedriver's
    inspector error about a node no longer in the document read as gone too."""

    def check(_: Any) -> bool:
        try:
            element.is_enabled()
        except WebDriverException as err:
            if swapped(err):
                return True
            raise
        return False

    return check


def status_is(text: str) -> Any:
    def check(driver: Any) -> bool:
        badges = driver.find_elements(By.CSS_SELECTOR, "[data-testid=run-status]")
        try:
            return bool(badges) and badges[0].text.strip() == text
        except WebDriverException as err:
            if swapped(err):
                return False
            raise

    return check


def test_approve_from_the_page_and_see_the_run_complete(site: dict[str, Any]) -> None:
    driver, run_id = site["driver"], start(site, "pay acme")
    driver.get(site["url"] + "/ui")
    row = WebDriverWait(driver, WAIT).until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, f"[data-testid=run-row][data-run-id='{run_id}']")
        )
    )
    assert row.find_element(By.CSS_SELECTOR, "[data-testid=run-status]").text == "awaiting approval"
    row.find_element(By.TAG_NAME, "a").click()
    WebDriverWait(driver, WAIT).until(ec.url_contains(run_id))
    svg = driver.find_element(By.CSS_SELECTOR, "[data-testid=graph-svg] svg")
    assert svg.is_displayed()
    assert driver.find_elements(By.CSS_SELECTOR, "[data-testid=timeline-item]")
    card = driver.find_element(By.CSS_SELECTOR, "[data-testid=approval-card]")
    assert "pay" in card.text and "acme" in card.find_element(
        By.TAG_NAME, "textarea"
    ).get_attribute("value")
    card.find_element(By.CSS_SELECTOR, "[data-testid=approve-button]").click()
    WebDriverWait(driver, WAIT).until(status_is("completed"))

    def approved_by_alice(driver: Any) -> bool:
        items = driver.find_elements(By.CSS_SELECTOR, "[data-testid=timeline-item]")
        try:
            return any("alice" in i.text and "allow" in i.text for i in items)
        except WebDriverException as err:
            if swapped(err):
                return False
            raise

    WebDriverWait(driver, WAIT).until(approved_by_alice)
    assert not driver.find_elements(By.CSS_SELECTOR, "[data-testid=approval-card]")


def test_a_live_runs_timeline_grows_and_a_fork_is_made_from_a_checkpoint(
    site: dict[str, Any],
) -> None:
    driver, run_id = site["driver"], start(site, "steps 6", background=True)
    driver.get(f"{site['url']}/ui/runs/{run_id}")
    WebDriverWait(driver, WAIT).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=graph-svg] svg"))
    )
    seen = len(driver.find_elements(By.CSS_SELECTOR, "[data-testid=timeline-item]"))
    WebDriverWait(driver, WAIT).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-testid=timeline-item]")) > seen
    )
    WebDriverWait(driver, WAIT).until(status_is("completed"))
    items = driver.find_elements(By.CSS_SELECTOR, "[data-testid=timeline-item]")
    target = next(i for i in items if i.get_attribute("data-event-id") == "2.0")
    target.click()
    state = WebDriverWait(driver, WAIT).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, "[data-testid=checkpoint-state]"))
    )
    assert state.get_attribute("data-seq") == "2" and "messages" in state.text
    state.find_element(By.CSS_SELECTOR, "[data-testid=fork-button]").click()
    WebDriverWait(driver, WAIT).until(lambda d: run_id not in d.current_url)
    WebDriverWait(driver, WAIT).until(status_is("completed"))
    assert "forked from" in driver.page_source and run_id[:12] in driver.page_source


def test_an_approver_answers_another_users_call_on_the_approvals_page(
    site: dict[str, Any],
) -> None:
    """bob (no role) starts a payment; alice, an approver, follows the Approvals link, finds
    bob's call there (his run's page is not hers to open) and approves it."""
    driver, bob = site["driver"], add_key(site["env"], "bob")
    run_id = start(site, "pay acme", key=bob)
    driver.get(site["url"] + "/ui")
    link = WebDriverWait(driver, WAIT).until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, "[data-testid=approvals-link]"))
    )
    link.click()
    waiting = WebDriverWait(driver, WAIT).until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, f"[data-testid=waiting-run][data-run-id='{run_id}']")
        )
    )
    assert waiting.find_element(By.CSS_SELECTOR, "[data-testid=waiting-user]").text == "bob"
    assert "acme" in waiting.find_element(By.TAG_NAME, "textarea").get_attribute("value")
    waiting.find_element(By.CSS_SELECTOR, "[data-testid=approve-button]").click()
    WebDriverWait(driver, WAIT).until(gone(waiting))  # the page reloaded
    WebDriverWait(driver, WAIT).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, f"[data-run-id='{run_id}']")
    )

    def completed(_: Any) -> bool:
        headers = {"Authorization": f"Bearer {bob}"}
        answer = httpx.get(f"{site['url']}/v1/runs/{run_id}", headers=headers, timeout=30)
        return bool(answer.json()["status"] == "completed")

    WebDriverWait(driver, WAIT).until(completed)
