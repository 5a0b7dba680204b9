"""Write docs/img/run-page.png: the run viewer's page of a run waiting for approval, taken in
headless Chromium from a real `loomgraph serve` (the agent of tests/serve_agent.py).

    PYTHONPATH=src python3 scripts/screenshot.py [--dark]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from serve_process import add_key, environment, start_server  # noqa: E402
from test_serve_ui import browser  # noqa: E402


def main() -> int:
    dark = "--dark" in sys.argv
    out = ROOT / "docs" / "img" / ("run-page-dark.png" if dark else "run-page.png")
    with tempfile.TemporaryDirectory() as tmp:
        env = environment(Path(tmp) / "journal.db", SERVE_STEP_DELAY="0")
        key = add_key(env, "alice", "--approver")
        server = start_server(env)
        driver = browser(Path(tmp) / "profile")
        try:
            headers = {"Authorization": f"Bearer {key}"}
            for prompt in ("steps 2", "pay acme"):
                answer = httpx.post(
                    server.url + "/v1/runs", json={"input": prompt}, headers=headers, timeout=120
                )
                run_id = answer.json()["run_id"]
            if dark:
                driver.execute_cdp_cmd(
                    "Emulation.setEmulatedMedia",
                    {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
                )
            driver.get(server.url + "/ui/login")
            driver.find_element(By.ID, "key").send_keys(key)
            driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            WebDriverWait(driver, 60).until(ec.url_to_be(server.url + "/ui"))
            driver.get(f"{server.url}/ui/runs/{run_id}")
            items = WebDriverWait(driver, 60).until(
                lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=timeline-item]")
            )
            items[-2].click()
            WebDriverWait(driver, 60).until(
                ec.visibility_of_element_located(
                    (By.CSS_SELECTOR, "[data-testid=checkpoint-state]")
                )
            )
            # Clicking the item scrolled it into view: show the page from its top (the
            # pending approval and the graph), tall enough for the checkpoint beside them.
            driver.set_window_size(1400, 1500)
            driver.execute_script("window.scrollTo(0, 0)")
            driver.save_screenshot(str(out))
        finally:
            driver.quit()
            server.stop()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
