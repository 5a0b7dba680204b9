"""The HTTP app serving an agent in this process, over httpx's ASGI transport, with its
lifespan, and an approver's API key (alice's)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette

from loomgraph import Agent
from loomgraph.serve import create_app


@contextlib.asynccontextmanager
async def served(
    agent: Agent, **options: Any
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient, str]]:
    """The app serving `agent` in this process, a client, and an approver's API key; the
    agent is closed after."""
    app = create_app(agent, **options)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as client,
    ):
        key = await app.state.service.store.add_key("alice", approver=True)
        yield app, client, key
    await agent.aclose()


@contextlib.asynccontextmanager
async def in_process(agent: Agent, **options: Any) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """`served`, without the app: a client and an approver's API key."""
    async with served(agent, **options) as (_, client, key):
        yield client, key
