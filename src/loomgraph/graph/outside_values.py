"""Values from outside a run (an answer to a question, a fork's patch), validated as the JSON
they are sent as: strictly, so `"3"` is no `int` and `true` no `1`, while a date's text and a
record's mapping are still what JSON gives for them (pydantic's strict JSON mode). A Python
caller's value is written as JSON first, so a `datetime` or a model instance is taken too."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError, to_json

from loomgraph.errors import LoomgraphError


class NotJsonData(LoomgraphError, ValueError):
    """A value from outside a run that JSON cannot hold (an object of no JSON type, bytes
    that are not UTF-8): it could not be journaled either."""


def validate_outside(adapter: TypeAdapter[Any], value: Any) -> Any:
    """`value` validated by `adapter` as its JSON, strictly; pydantic's `ValidationError`, or
    `NotJsonData`. NaN and infinity stay themselves, for the adapter to refuse or take."""
    try:
        data = to_json(value, inf_nan_mode="constants")
    except PydanticSerializationError as err:
        raise NotJsonData(f"{type(value).__name__} value is no JSON data: {err}") from None
    return adapter.validate_json(data, strict=True)
