"""The viewer in real headless Chromium, past an approval request's deadline: the card says
the request expired and offers one button, which sends the run on with the call denied as
timed out (nothing paid). The served process's desk clock follows a file the test writes
(tests/desk_clock.py), so the deadline passes without waiting for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serve_process import Server, add_key, environment, start_server
from test_serve_ui import WAIT, browser, sign_in, start, status_is

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium (scripts/install.sh)"
)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    clock = tmp_path / "clock"
    env = environment(
        tmp_path / "journal.db", SERVE_APPROVAL_TIMEOUT="60", SERVE_CLOCK_FILE=str(clock)
    )
    key = add_key(env, "alice", "--approver")
    server: Server = start_server(env, "--expiry", "86400")  # the page sends it on
    driver = browser(tmp_path / "profile")
    try:
        sign_in(driver, server.url, key)
        yield {"url": server.url, "key": key, "driver": driver, "clock": clock}
    finally:
        driver.quit()
        server.stop()


def test_an_expired_request_is_sent_on_from_the_page(site: dict[str, Any]) -> None:
    driver, run_id = site["driver"], start(site, "pay acme")
    site["clock"].write_text("3600")  # nobody answered for an hour
    driver.get(f"{site['url']}/ui/runs/{run_id}")
    card = WebDriverWait(driver, WAIT).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=approval-card]"))
    )
    assert "deadline" in card.find_element(By.CSS_SELECTOR, "[data-testid=approval-expired]").text
    assert not card.find_elements(By.CSS_SELECTOR, "[data-testid=approve-button]")
    card.find_element(By.CSS_SELECTOR, "[data-testid=go-on-button]").click()
    WebDriverWait(driver, WAIT).until(status_is("completed"))
    assert not driver.find_elements(By.CSS_SELECTOR, "[data-testid=approval-card]")
    items = [i.text for i in driver.find_elements(By.CSS_SELECTOR, "[data-testid=timeline-item]")]
    assert any("deny pay" in i and "by timeout" in i for i in items), items
