"""The API's OpenAPI document, from the route table and what each route reads."""

from __future__ import annotations

from typing import Any

from loomgraph.protocols import RunStatus
from loomgraph.serve.api import ENDPOINTS

__all__ = ["openapi"]

_STATUS_TEXT = {
    400: "bad input",
    401: "not authenticated",
    403: "lacks the approver role",
    404: "no such run (or not the caller's)",
    409: "run conflict or approval already answered",
    413: "body too large",
    415: "body not declared as JSON",
    422: "validation failed",
    429: "budget exhausted",
    503: "journal, ledger or audit log unavailable now (Retry-After); or `shutting_down`: the "
    "server stopped waiting for a fleet run, which goes on (read it later, do not resubmit)",
}


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional body field's schema: `null` is taken as the field left out."""
    kind = schema.get("type")
    return schema | {"type": [kind, "null"]} if isinstance(kind, str) else schema


_STRING, _BOOL, _OBJECT = {"type": "string"}, {"type": "boolean"}, {"type": "object"}
# An approval's answer, whether the path or the body names the call.
_ANSWER = {
    "allow": (_BOOL, True),
    "args": (_OBJECT | {"description": "edited arguments (they meet the rules again)"}, False),
    "reason": (_STRING, False),
    "key": (_STRING | {"description": "the pending request answered (`pending[].key`)"}, True),
}
# What each route reads besides its path: its JSON body's fields (name: (schema, required))
# and its query parameters (the same). A test holds them to what `serve.api` reads.
_BODIES: dict[tuple[str, str], dict[str, tuple[dict[str, Any], bool]]] = {
    ("POST", "/v1/runs"): {
        "input": (_STRING, True),
        "session_id": (_STRING, False),
        "stream": (_BOOL | {"description": "answer with the run's events (SSE)"}, False),
        "background": (_BOOL | {"description": "answer 202 at once; the run goes on"}, False),
    },
    ("POST", "/v1/runs/{run_id}/approvals/{call_id}"): _ANSWER,
    ("POST", "/v1/runs/{run_id}/approvals"): {
        "call_id": (_STRING | {"description": "the call answered (`pending[].call.id`)"}, True),
    }
    | _ANSWER,
    ("POST", "/v1/runs/{run_id}/resume"): {
        "value": (
            {"description": "any JSON value (none, and no key: go on past an expired approval)"},
            False,
        ),
        "key": (_STRING | {"description": "the question answered (`pending[].key`)"}, True),
    },
    ("POST", "/v1/runs/{run_id}/fork"): {
        "at": ({"type": "integer", "minimum": 0}, True),
        "patch": (_OBJECT | {"description": "state fields, applied with the reducers"}, False),
    },
}
_QUERY: dict[tuple[str, str], dict[str, tuple[dict[str, Any], bool]]] = {
    ("GET", "/v1/runs"): {
        "status": ({"type": "string", "enum": [str(s) for s in RunStatus]}, False),
        "graph": (_STRING, False),
        "limit": ({"type": "integer", "minimum": 1, "maximum": 500, "default": 50}, False),
        "cursor": (
            _STRING
            | {
                "description": "the previous page's `cursor`: the run id of its last run; "
                "the page holds the caller's runs started before it (400 for an id that "
                "is not one of the caller's runs)"
            },
            False,
        ),
    },
    ("GET", "/v1/approvals"): {
        "limit": ({"type": "integer", "minimum": 1, "maximum": 500, "default": 50}, False),
        "cursor": (
            _STRING | {"description": "the previous page's `cursor`: the run id of its last run"},
            False,
        ),
    },
    ("GET", "/v1/runs/{run_id}/events"): {
        "after": (
            _STRING
            | {"description": "an event id (`seq.index`, a stop's `seq.end.k[.r]`) or a seq"},
            False,
        ),
    },
    ("GET", "/v1/runs/{run_id}/diff"): {
        "a": ({"type": "integer", "minimum": 0}, True),
        "b": ({"type": "integer", "minimum": 0}, True),
    },
}
_ACCEPTED = {  # a 202: the run goes on in the background
    "description": "accepted; the run goes on in the background",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"run_id": _STRING, "status": _STRING},
            }
        }
    },
}
_SSE = {"text/event-stream": {"schema": _STRING}}
# The path parameters, and what a client must know of one.
_PATH_PARAMS = {
    "run_id": "",
    "call_id": (
        "the call's id (`pending[].call.id`), the model's text, percent-encoded: `call/1` is "
        "`call%2F1`. An id no URL path can carry (`.`, `..`) is named in the body instead "
        "(`POST /v1/runs/{run_id}/approvals`)"
    ),
    "seq": "",
}


def _success(method: str, path: str, status: int) -> dict[str, Any]:
    """The success answers of a route."""
    if path.endswith("graph.svg"):
        return {str(status): {"description": "SVG", "content": {"image/svg+xml": {}}}}
    if path.endswith("/events"):
        return {str(status): {"description": "the run's events", "content": _SSE}}
    if status == 202:
        return {"202": _ACCEPTED}
    answer: dict[str, Any] = {"description": "success", "content": {"application/json": {}}}
    if (method, path) == ("POST", "/v1/runs"):
        stream = {"description": '`"stream": true`: the run\'s events', "content": _SSE}
        return {"201": answer | {"description": "the run's result"}, "202": _ACCEPTED} | {
            "200": stream
        }
    return {str(status): answer}


def openapi(title: str) -> dict[str, Any]:
    """The API's OpenAPI document, from the route table: paths, bodies, query parameters,
    answers and the credentials they take (`Authorization: Bearer` or `X-API-Key`)."""
    error = {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    }
    paths: dict[str, dict[str, Any]] = {}
    for method, path, _, status, summary in ENDPOINTS:
        responses = _success(method, path, status)
        for code, text in _STATUS_TEXT.items():
            responses[str(code)] = {
                "description": text,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            | ({"description": about} if about else {})
            for name, about in _PATH_PARAMS.items()
            if "{" + name + "}" in path
        ]
        params += [
            {"name": name, "in": "query", "required": required, "schema": schema}
            for name, (schema, required) in _QUERY.get((method, path), {}).items()
        ]
        if path.endswith("/events"):
            # Every parameter has a `schema` (or `content`): OpenAPI 3.1 requires one.
            about = "resume after this event id (as `after`)"
            params.append(
                {"name": "Last-Event-ID", "in": "header", "schema": _STRING, "description": about}
            )
        operation: dict[str, Any] = {
            "summary": summary,
            "parameters": params,
            "responses": responses,
            "security": [{"bearer": []}, {"apiKey": []}],  # either
        }
        fields = _BODIES.get((method, path))
        if fields:
            body = {
                "type": "object",
                "properties": {
                    name: schema if required else _or_null(schema)
                    for name, (schema, required) in fields.items()
                },
                "required": [name for name, (_, required) in fields.items() if required],
                "additionalProperties": False,
            }
            content = {"application/json": {"schema": body}}
            operation["requestBody"] = {"required": True, "content": content}
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {
            "schemas": {"Error": error},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
