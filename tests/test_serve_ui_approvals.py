"""The viewer's approvals page (`/ui/approvals`): an approver sees every user's calls of the
served agent that wait for an answer, each on a card, and answers them there; a user without
the role is refused the page and finds no link to it. Before, the viewer showed an approver
only her own runs, so a plain user's call could be answered over the HTTP API but not from
the browser. (tests/test_serve_ui.py drives the page in Chromium.)"""

from __future__ import annotations

import re
from pathlib import Path

from serve_agent import PAID
from test_serve_api import served


def ui(s: object, user: str) -> dict[str, str]:
    return {**s.auth(user), "HX-Request": "true"}  # type: ignore[attr-defined]


def field(html: str, name: str, card: str) -> str:
    """The value of the form field `name` in the card of the page whose run is `card`."""
    article = html[html.index(f'data-run-id="{card}"') :]
    found = re.search(rf'name="{name}" value="([^"]*)"', article)
    assert found is not None, article[:800]
    return found[1]


async def test_an_approver_answers_another_users_call_from_the_page(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        run_id = (await s.post("dave", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        page = await s.get("bob", "/ui/approvals")
        assert page.status_code == 200, page.text
        html = page.text
        assert f'data-run-id="{run_id}"' in html and 'data-testid="approval-card"' in html
        assert "dave" in html and "pay acme" in html and "call_pay" in html
        # dave's run is not bob's to read: no link to its page, which would answer 404.
        assert f'href="/ui/runs/{run_id}"' not in html
        key = field(html, "key", run_id)
        assert key, "the card carries the request's key"
        answered = await s.client.post(
            f"/ui/runs/{run_id}/approvals",
            params={"call_id": "call_pay"},
            data={"allow": "true", "key": key, "args": ""},
            headers=ui(s, "bob"),
        )
        assert answered.status_code == 200 and answered.headers.get("HX-Refresh") == "true"
        assert "error" not in answered.text, answered.text
        await s.app.state.service.hub.wait(run_id)
        assert (await s.get("dave", f"/v1/runs/{run_id}")).json()["status"] == "completed"
        assert len(PAID) == 1
        after = (await s.get("bob", "/ui/approvals")).text
        assert run_id not in after and 'data-testid="no-approvals"' in after


async def test_the_page_and_its_link_are_an_approvers_only(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        refused = await s.get("dave", "/ui/approvals")
        assert refused.status_code == 403 and run_id not in refused.text
        assert 'data-testid="approvals-link"' not in (await s.get("dave", "/ui")).text
        assert 'data-testid="approvals-link"' in (await s.get("bob", "/ui")).text
        # A plain user answering from a forged form: another user's run is unknown to her.
        forged = await s.client.post(
            f"/ui/runs/{run_id}/approvals",
            params={"call_id": "call_pay"},
            data={"allow": "true", "key": "x"},
            headers=ui(s, "dave"),
        )
        assert "no run" in forged.text and PAID == []


async def test_cards_of_one_page_post_their_own_fields(tmp_path: Path) -> None:
    """Two waiting runs on one page: each card's buttons include that card's arguments and
    key, not the first card's (the fields' ids are the card's own)."""
    async with served(tmp_path) as s:
        ids = [
            (await s.post(user, "/v1/runs", {"input": "pay acme"})).json()["run_id"]
            for user in ("dave", "bob")
        ]
        html = (await s.get("bob", "/ui/approvals")).text
        includes = re.findall(r'hx-include="([^"]+)"', html)
        assert len(includes) == 4 and len(set(includes)) == 2, includes
        for include in set(includes):
            for wanted in include.split(", "):
                assert html.count(f'id="{wanted[1:]}"') == 1, wanted
        assert field(html, "key", ids[0]) != field(html, "key", ids[1])
        # bob's own waiting run links to its page; dave's does not.
        assert f'href="/ui/runs/{ids[1]}"' in html and f'href="/ui/runs/{ids[0]}"' not in html
