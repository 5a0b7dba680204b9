"""Serving agents over HTTP: `create_app(agent, auth=...)` (Starlette), the `/v1` API with
server-sent events, API keys, and the run viewer at `/ui`.

Needs the `serve` extra (starlette, uvicorn); `import loomgraph` does not import this package.
"""

from __future__ import annotations

from loomgraph.serve.api_keys import ApiKey
from loomgraph.serve.app import create_app
from loomgraph.serve.auth import Caller, DevModeRefused, api_key_auth, dev_auth
from loomgraph.serve.store import open_store

__all__ = [
    "ApiKey",
    "Caller",
    "DevModeRefused",
    "api_key_auth",
    "create_app",
    "dev_auth",
    "open_store",
]
