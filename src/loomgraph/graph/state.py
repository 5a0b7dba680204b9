"""Run state: built-in fields, declared field types (read by `graph.field_types`), and the
reducers that apply patches."""

from __future__ import annotations

import copy
import math
import types
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, Union, get_args, get_origin

from pydantic import ConfigDict, PydanticUserError, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from loomgraph.errors import StateError, problem_said

# Field types have their own module; these two are named here too (tests import them from here).
from loomgraph.graph.field_types import TypeSyntaxError as TypeSyntaxError
from loomgraph.graph.field_types import parse_type as parse_type
from loomgraph.graph.outside_values import NotJsonData, validate_outside
from loomgraph.graph.registry import BUILTIN_KINDS
from loomgraph.graph.spec import Graph, Reducer, StateField
from loomgraph.protocols.messages import Message
from loomgraph.protocols.usage import Usage

# Fields every graph has. `input` is the prompt of the run.
BUILTIN_FIELDS: dict[str, StateField] = {
    "input": StateField(type="str", reducer="replace", default=""),
    "messages": StateField(type="any", reducer="append", default=[]),
    "usage": StateField(type="any", reducer="add", default={}),
    "output": StateField(type="any", reducer="replace", default=None),
    # The last failure routed by a node's `on_error` edge: node, type and message.
    "error": StateField(type="any", reducer="replace", default=None),
}
# Names a condition or template may use besides the state fields.
DERIVED_NAMES = frozenset({"state", "last_message", "visits"})


# --------------------------------------------------------------------------- reducers


def _replace(_old: Any, new: Any) -> Any:
    return new


def _append(old: Any, new: Any) -> Any:
    # In place: the state owns its lists (see StateSchema.initial), and copying would make a
    # long conversation quadratic.
    if old is None:
        old = []
    if isinstance(new, list):
        old.extend(new)
    else:
        old.append(new)
    return old


def _merge(old: Any, new: Any) -> Any:
    return {**(old or {}), **new}


class _Unmerged(dict[str, Any]):
    """A patch's value for a `merge` field holding a record (a pydantic model, dataclass or
    TypedDict): the keys it names, as written. Validated alone, the record's other fields
    would be filled with their defaults and merged over the value's (and a required one would
    be missing), so it is validated once merged (`StateSchema.apply`)."""

    __slots__ = ()


def _add(old: Any, new: Any) -> Any:
    if isinstance(new, Mapping):
        # A new dict: a key that cannot be added leaves the old one as it was (`apply`).
        out = dict(old) if isinstance(old, dict) else {}
        for key, value in new.items():
            out[key] = out.get(key, 0) + value
        return out
    if old is None:
        return new
    total = old + new
    if type(total) is float and not math.isfinite(total):  # the journal holds no infinity
        raise ValueError(f"{old!r} + {new!r} is not a finite number")
    return total


REDUCERS: dict[Reducer, Callable[[Any, Any], Any]] = {
    "replace": _replace,
    "append": _append,
    "merge": _merge,
    "add": _add,
}


_ABSENT: Any = object()
Undo = list[tuple[str, Any, int]]
"""What `StateSchema.apply` changed: each field's old value, and its length if a list."""


def undo_patch(state: dict[str, Any], undo: Undo) -> None:
    """Put the fields an applied patch changed back as they were before it."""
    for name, old, length in reversed(undo):
        if old is _ABSENT:
            state.pop(name, None)
            continue
        if length >= 0:
            del old[length:]  # what `append` added to it
        state[name] = old


class StateSchema:
    """The fields of one graph's state, with a validator and a reducer per field."""

    def __init__(self, graph: Graph) -> None:
        self.fields: dict[str, StateField] = {**BUILTIN_FIELDS, **graph.state}
        self.reducers = {name: REDUCERS[f.reducer] for name, f in self.fields.items()}
        # The nodes whose patches are a user's data (`function` nodes, node kinds of their
        # own): what they write to the built-in fields is checked (`check_written`); the
        # framework's own nodes write those fields as they should, and are not re-checked.
        self.users_nodes = frozenset(
            name
            for name, spec in graph.nodes.items()
            if spec.kind == "function" or spec.kind not in BUILTIN_KINDS
        )
        # Only declared, non-`any` fields are checked: validation costs time on every patch.
        self.adapters: dict[str, TypeAdapter[Any]] = {}
        # The `merge` fields holding records, validated once a patch is merged into them.
        merges_records: set[str] = set()
        for name, f in graph.state.items():
            if f.type not in ("any", "Any"):
                parsed = parse_type(f.type, near=graph.source)
                self.adapters[name] = _field_adapter(parsed)
                if f.reducer == "merge" and _holds_records(parsed):
                    merges_records.add(name)
        self.merges_records = frozenset(merges_records)
        # The defaults as the fields' adapters make them, once: the shape a node's write of
        # the same value would have (a pydantic model's missing fields filled in).
        self.defaults: dict[str, Any] = {
            name: self._stored_default(name, f.default) for name, f in self.fields.items()
        }

    def _stored_default(self, name: str, default: Any) -> Any:
        """A field's default as the state holds it: validated and dumped to JSON data by the
        field's adapter (as `check` does a patch); as written for an untyped field, no
        default, or one its type refuses (validation reports it as `bad-default`)."""
        adapter = self.adapters.get(name)
        if adapter is None or default is None:
            return default
        try:
            return adapter.dump_python(adapter.validate_python(default), mode="json")
        except Exception:  # a graph built without validation; a model's validator may raise
            return default

    def initial(self, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A fresh state: defaults (copied, never shared between runs), then `values`."""
        state = {name: _fresh(default) for name, default in self.defaults.items()}
        if values:
            checked = self.check(dict(values), whole=True)
            state.update({k: _fresh(v) for k, v in checked.items()})
        return state

    def check(
        self, patch: dict[str, Any], *, whole: bool = False, outside: bool = False
    ) -> dict[str, Any]:
        """Validate the typed fields of a patch into JSON-shaped values; raise StateError.

        A mapping for a `merge` field holding a record is left `_Unmerged`, to be validated
        once merged into the field's value (`apply`); what its own keys hold is checked here
        (a wrong type, an unknown key), so a node whose patch is wrong fails its attempt,
        which `retry` retries, as for any other field. `whole`: the values are a state's
        (`initial`), not a patch's, each validated as it is. `outside`: no node produced
        them, so they are validated as the JSON they are, strictly (`outside_values`)."""
        for name, value in patch.items():
            if name not in self.fields:
                raise StateError(f"unknown state field {name!r}")
            adapter = self.adapters.get(name)
            if adapter is None:
                continue
            if not whole and name in self.merges_records and isinstance(value, Mapping):
                patch[name] = self._record_patch(name, adapter, value, outside)
                continue
            if self.fields[name].reducer == "append" and not isinstance(value, list):
                value = [value]
            try:
                patch[name] = adapter.dump_python(_validate(adapter, value, outside), mode="json")
            except ValidationError as err:
                raise StateError(f"state field {name!r}: {_first_problem(err)}") from None
            except NotJsonData as err:
                raise StateError(f"state field {name!r}: {err}") from None
        return patch

    @staticmethod
    def _record_patch(
        name: str, adapter: TypeAdapter[Any], value: Mapping[str, Any], outside: bool
    ) -> Any:
        """A patch's mapping for a `merge` field holding a record: `_Unmerged`, or the record
        validated when the patch names every field of it (merged into any value, it is
        itself: validated once, as before). StateError for what its own keys hold that no
        record can: the errors at its keys, validated alone (not a field it leaves out, nor
        a rule across fields, which only the merged record can tell)."""
        try:
            record = adapter.dump_python(_validate(adapter, value, outside), mode="json")
        except ValidationError as err:
            for e in err.errors():
                where = e["loc"][0] if e["loc"] else None
                if e["type"] != "missing" and where in value:
                    at = ".".join(str(part) for part in e["loc"])
                    raise StateError(f"state field {name!r}: {at}: {e['msg']}") from None
            return _Unmerged(value)
        except NotJsonData as err:
            raise StateError(f"state field {name!r}: {err}") from None
        except Exception:
            # A validator that reads a field the patch leaves out: validating the merged
            # record (`apply`) tells whether anything is wrong.
            return _Unmerged(value)
        if isinstance(record, dict) and record.keys() <= value.keys():
            return record
        return _Unmerged(value)

    def _validated(self, name: str, value: Any) -> Any:
        """A record merged with a patch, validated whole into JSON-shaped data; StateError."""
        adapter = self.adapters[name]
        try:
            return adapter.dump_python(adapter.validate_python(value), mode="json")
        except ValidationError as err:
            raise StateError(
                f"state field {name!r}: {_first_problem(err)} (the patch merged into its value)"
            ) from None

    def check_written(self, node: str, patch: dict[str, Any]) -> None:
        """A user's node's writes to the built-in fields, checked as values from outside a
        run are (`check_input`): `StateError` naming the field and what is wrong. (The
        interpreter calls it for `users_nodes` only.)"""
        for name in _BUILTIN_CHECKED.intersection(patch):
            value = patch[name]
            if name == "messages" and not isinstance(value, list):
                value = [value]  # (`append` adds one item as a list of it)
            problem = _builtin_problem(name, value)
            if problem:
                raise StateError(f"state field {name!r}: {problem}")

    def apply(self, state: dict[str, Any], patch: Mapping[str, Any]) -> Undo:
        """Apply a (checked) patch to the state in place, each field through its reducer,
        all or nothing (a reducer that raises leaves the state as it was); what undoes it.

        An `_Unmerged` record is validated once merged, and the patch then holds the record as
        merged: that is what the journal keeps, so a replay (`history`, resume, fork) merges
        it back without validating it again, onto whatever value the field holds then."""
        reducers = self.reducers
        undo: Undo = []
        try:
            for name, value in patch.items():
                old = state.get(name, _ABSENT)
                # Only `append` changes a value in place, and only by adding at the end.
                undo.append((name, old, len(old) if type(old) is list else -1))
                try:
                    new = reducers[name](None if old is _ABSENT else old, value)
                except (TypeError, ValueError) as err:  # (`add` of None, of a str and an int)
                    reducer = self.fields[name].reducer
                    raise StateError(
                        f"state field {name!r}: its reducer {reducer!r} cannot take "
                        f"{_short(value)} onto {_short(None if old is _ABSENT else old)}: {err}"
                    ) from None
                if type(value) is _Unmerged:
                    new = self._validated(name, new)
                    if isinstance(patch, dict):
                        patch[name] = new
                state[name] = new
        except BaseException:
            undo_patch(state, undo)
            raise
        return undo

    def check_input(self, values: dict[str, Any]) -> dict[str, Any]:
        """`check`, and the built-in fields too (`input` text, `messages` messages, `usage` a
        usage, `error` a failure): for values no node produced, such as a fork's patch."""
        values = self.check(values, outside=True)
        for name, value in values.items():
            problem = _builtin_problem(name, value)
            if problem:
                raise StateError(f"state field {name!r}: {problem}")
        return values


# The built-in fields a node of a user's may write wrongly.
_BUILTIN_CHECKED = frozenset({"input", "messages", "error", "usage"})


def _short(value: Any) -> str:
    """A value's type and the start of its text, for an error message."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'…' if len(text) > 60 else ''}"


_FINITE = ConfigDict(allow_inf_nan=False)


def _validate(adapter: TypeAdapter[Any], value: Any, outside: bool) -> Any:
    """A node's value in pydantic's lax mode; a value from outside a run as strict JSON."""
    return validate_outside(adapter, value) if outside else adapter.validate_python(value)


def _holds_records(field_type: Any) -> bool:
    """Whether a value of the type may be a record (a pydantic model, dataclass, TypedDict):
    anything but a dict, whose keys validate one by one, so a patch of some may be validated
    alone (and is journaled alone: a growing dict is not written whole at every merge)."""
    if get_origin(field_type) in (Union, types.UnionType):
        return any(_holds_records(option) for option in get_args(field_type))
    return field_type is not type(None) and (get_origin(field_type) or field_type) is not dict


def _field_adapter(field_type: Any) -> TypeAdapter[Any]:
    """The validator of a typed state field: its floats finite, since the state is journaled
    as JSON, which has no NaN or infinity (a pydantic model keeps its own config)."""
    try:
        return TypeAdapter(field_type, config=_FINITE)
    except PydanticUserError:  # a model, dataclass or TypedDict: config is its own to set
        return TypeAdapter(field_type)


class _RoutedError(TypedDict):
    """What `on_error` routing puts in the `error` field."""

    node: str
    type: str
    message: str


@cache
def _builtin_adapters() -> dict[str, TypeAdapter[Any]]:
    # Made when first needed: only outside input is checked against these.
    return {
        "input": TypeAdapter(str),
        "messages": TypeAdapter(list[Message]),
        "error": TypeAdapter(_RoutedError | None),
    }


def _builtin_problem(name: str, value: Any) -> str | None:
    """What is wrong with a built-in field's value from outside a run (None: nothing)."""
    if name == "usage":
        if not isinstance(value, dict):
            return f"a usage is a mapping of counts, not {type(value).__name__}"
        try:
            Usage.from_dict(value)  # refuses unknown keys, negative, NaN and fractional counts
        except ValueError as err:
            return str(err)
        return None
    adapter = _builtin_adapters().get(name)
    if adapter is None:
        return None
    try:
        adapter.validate_python(value, strict=True)
    except ValidationError as err:
        return _first_problem(err)
    return None


def _first_problem(err: ValidationError) -> str:
    """The first problem pydantic found, and where in the value (`title: Field required`)."""
    return problem_said(err.errors()[0])


def _fresh(value: Any) -> Any:
    if isinstance(value, list | dict):
        # An empty one (the usual default) needs no deep copy, only a new object.
        return copy.deepcopy(value) if value else type(value)()
    return value


def snapshot_of(state: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the state that later patches cannot change.

    Reducers change only top-level lists and dicts in place (values inside them are
    replaced, never edited), so copying one level deep is enough, and far cheaper than a
    deep copy of a long conversation.
    """
    return {
        k: list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v
        for k, v in state.items()
    }


def final_output(state: Mapping[str, Any]) -> Any:
    """The run's answer: the `output` field, else the text of the last assistant message."""
    if state.get("output") is not None:
        return state["output"]
    for message in reversed(state.get("messages") or ()):
        if message.get("role") == "assistant":
            return message.get("content", "")
    return ""
