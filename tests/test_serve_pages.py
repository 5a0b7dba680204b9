"""The viewer's pages in-process (httpx): sign-in, who sees what, the data-testids, the
htmx-only write actions, and the static files served from the package (no CDN)."""

from __future__ import annotations

from pathlib import Path

from test_serve_api import served


async def test_pages_need_sign_in_and_show_only_the_callers_runs(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        assert (await s.client.get("/ui")).headers["location"] == "/ui/login"
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        refused = await s.client.post("/ui/login", data={"key": "lg_wrong"})
        assert refused.status_code == 401 and "Unknown key" in refused.text
        signed = await s.client.post("/ui/login", data={"key": s.keys["alice"]})
        assert signed.status_code == 303 and "loomgraph_key" in signed.headers["set-cookie"]
        assert "samesite=strict" in signed.headers["set-cookie"].lower()
        runs = await s.client.get("/ui")
        assert 'data-testid="run-row"' in runs.text and run_id in runs.text
        page = await s.client.get(f"/ui/runs/{run_id}")
        for testid in (
            "run-status",
            "graph-svg",
            "timeline-item",
            "approval-card",
            "approve-button",
            "deny-button",
        ):
            assert f'data-testid="{testid}"' in page.text, testid
        # The node that asks (in a map run, the branch's: `each/0/tools`).
        assert '<span class="mono" data-testid="approval-node">tools</span>' in page.text
        assert "<svg" in page.text and "https://" not in page.text.split("<svg")[0]
        point = await s.client.get(f"/ui/runs/{run_id}/checkpoint?seq=1")
        assert 'data-testid="checkpoint-state"' in point.text
        assert 'data-testid="fork-button"' in point.text
        s.client.cookies.clear()
        await s.client.post("/ui/login", data={"key": s.keys["bob"]})
        other = await s.client.get(f"/ui/runs/{run_id}")
        assert other.status_code == 404 and run_id not in (await s.client.get("/ui")).text


async def test_write_actions_need_htmx_and_approve_from_the_page(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        run_id = (await s.post("alice", "/v1/runs", {"input": "pay acme"})).json()["run_id"]
        await s.client.post("/ui/login", data={"key": s.keys["alice"]})
        url = f"/ui/runs/{run_id}/approvals/call_pay"
        forged = await s.client.post(url, data={"allow": "true"})
        assert forged.status_code == 400
        # The error page keeps the header with the signed-in user (serving.md); it had none.
        assert '<span class="who" title="signed in as"><bdi>alice</bdi>' in forged.text
        assert (await s.get("alice", f"/v1/runs/{run_id}")).json()["status"] == "awaiting_approval"
        bad_json = await s.client.post(
            url, data={"allow": "true", "args": "{nope"}, headers={"HX-Request": "true"}
        )
        assert "not JSON" in bad_json.text and bad_json.headers["hx-retarget"] == "#notice"
        (pending,) = (await s.get("alice", f"/v1/runs/{run_id}")).json()["pending"]
        done = await s.client.post(
            url,
            data={"allow": "true", "args": '{"to": "acme", "amount": 2}', "key": pending["key"]},
            headers={"HX-Request": "true"},
        )
        assert done.headers.get("hx-refresh") == "true"
        assert (await s.settled(run_id))["status"] == "completed"


async def test_static_files_are_served_from_the_package(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        htmx = await s.client.get("/ui/static/htmx.min.js")
        assert htmx.status_code == 200 and "Zero-Clause BSD" in htmx.text and "htmx" in htmx.text
        css = await s.client.get("/ui/static/style.css")
        assert "prefers-color-scheme: dark" in css.text


async def test_a_sign_in_posted_from_another_site_is_refused(tmp_path: Path) -> None:
    """Login CSRF: another site must not sign the browser in with a key of its choosing."""
    async with served(tmp_path) as s:
        key = s.keys["alice"]
        for foreign in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            refused = await s.client.post("/ui/login", data={"key": key}, headers=foreign)
            assert refused.status_code == 403, foreign
            assert "set-cookie" not in refused.headers
            assert "another site" in refused.text
        same = await s.client.post(
            "/ui/login", data={"key": key}, headers={"Origin": "http://test"}
        )
        assert same.status_code == 303 and "loomgraph_key=" in same.headers["set-cookie"]
