"""The OpenAPI document validates as OpenAPI 3.1 (found by a probe; failed before its fix)."""

from __future__ import annotations

from pathlib import Path

import pg
from serve_in_process import in_process

pg_schema = pg.pg_schema
TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"
FLEET_AGENT = "fleet_agent:make"


# --------------------------------------------------------------------------- the document


async def test_the_openapi_document_is_valid_openapi(tmp_path: Path) -> None:
    """An operator feeds `GET /openapi.json` to an OpenAPI tool (a client generator, a
    gateway) that validates it first. It is refused: the `Last-Event-ID` header parameter
    of `/v1/runs/{run_id}/events` has neither `schema` nor `content`, one of which OpenAPI
    3.1 requires of every parameter (`serve/openapi.py` appends it without a schema)."""
    from openapi_spec_validator import validate

    from serve_agent import make_agent

    async with in_process(make_agent(str(tmp_path / "journal.db"))) as (client, _):
        document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    validate(document)
