"""Arguments given as a JSON Schema (`Tool.from_schema`), validated with `jsonschema`; and the
copies of the model's arguments a tool's function is handed (`json_copy`, `passes_input`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from loomgraph.errors import LoomgraphError
from loomgraph.tools.context import Injection
from loomgraph.tools.re2_patterns import metered
from loomgraph.tools.schema import KEY_PARAM, bound_keywords, injection_of, signature_of
from loomgraph.tools.schema_patterns import guarded, unusable


class JsonArgumentsInvalid(LoomgraphError, ValueError):
    """The model's arguments do not match the tool's JSON Schema (one line per problem)."""


class UnresolvableRef(LoomgraphError, ValueError):
    """A `$ref` of a tool's JSON Schema points outside the schema (a URL, another file) or
    at nothing in it: loomgraph follows a `$ref` only inside the schema, never fetches one."""

    def __init__(self, tool: str, ref: str) -> None:
        super().__init__(
            f"tool {tool!r}: parameters has a $ref {ref!r} that does not resolve inside the "
            "schema; a $ref is followed only within the schema (put what it names under "
            "$defs), never fetched"
        )
        self.tool = tool
        self.ref = ref


def local_validator(cls: Any, schema: dict[str, Any]) -> Any:
    """A `cls` validator of `schema` whose `$ref`s resolve inside `schema` (and the
    metaschemas) only: jsonschema's default registry fetches any other `$ref` over HTTP,
    which would let whoever wrote the schema make the agent request any URL."""
    from referencing import Registry

    return cls(schema, registry=Registry())


def unresolvable_ref(cls: Any, schema: dict[str, Any]) -> str | None:
    """The first `$ref` (or `$dynamicRef`) of `schema` that a `local_validator` cannot
    follow, or None: each is looked up as the validator would, from its own subschema."""
    from jsonschema_specifications import REGISTRY  # type: ignore[import-untyped,unused-ignore]
    from referencing import Registry, Specification
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import specification_with

    dialect = cls.ID_OF(cls.META_SCHEMA) or "urn:unknown-dialect"
    root = specification_with(dialect, default=Specification.OPAQUE).create_resource(schema)
    todo = [(root, REGISTRY.combine(Registry()).resolver_with_root(root))]
    while todo:  # a loop, not recursion: a schema may be nested deeper than the stack
        resource, resolver = todo.pop()
        contents = resource.contents
        for keyword in ("$ref", "$dynamicRef"):
            ref = contents.get(keyword) if isinstance(contents, dict) else None
            if isinstance(ref, str):
                try:
                    resolver.lookup(ref)
                except Unresolvable:
                    return ref
        todo.extend((sub, resolver.in_subresource(sub)) for sub in resource.subresources())
    return None


@dataclass(frozen=True, slots=True)
class JsonArguments:
    """A given JSON Schema, its compiled validator, and what the function wants filled in."""

    parameters: dict[str, Any]
    validator: Any  # a jsonschema Validator
    wants_key: bool
    injected: tuple[Injection, ...]
    # Positional-only parameters in order, with their defaults (`inspect.Parameter.empty`
    # for none): one the model leaves out before one it gives is passed its default.
    positional: tuple[tuple[str, Any], ...]
    hidden: frozenset[str]  # names the model may not set: key, injected, partial-bound

    @classmethod
    def build(cls, fn: Callable[..., Any], tool_name: str, schema: dict[str, Any]) -> JsonArguments:
        """Check `schema` (raises ValueError naming the tool: UnresolvableRef for a `$ref`
        that is not inside it) and scan `fn`'s parameters."""
        from jsonschema import Draft202012Validator, SchemaError
        from jsonschema.validators import validator_for

        if not isinstance(schema, dict) or schema.get("type", "object") != "object":
            raise ValueError(
                f"tool {tool_name!r}: parameters must be a JSON Schema of an object "
                f"(type 'object'), got {schema!r}"
            )
        parameters = {"type": "object", "properties": {}, **schema}
        # An unknown `$schema` is read as the latest draft (later jsonschema releases refuse it).
        validator_cls = validator_for(parameters, default=Draft202012Validator)
        try:
            validator_cls.check_schema(parameters)
        except SchemaError as exc:
            raise ValueError(
                f"tool {tool_name!r}: parameters is not a valid JSON Schema: {exc.message}"
            ) from None
        ref = unresolvable_ref(validator_cls, parameters)
        if ref is not None:
            raise UnresolvableRef(tool_name, ref)
        # Its patterns run on RE2, as an MCP server's do: on Python's `re` one such as
        # `^(a+)+$` held the event loop for minutes, past the call's timeout.
        checked = guarded(validator_cls)
        try:
            problem = unusable(parameters, checked)
        except ImportError:
            raise ValueError(
                f"tool {tool_name!r}: its parameters have a pattern, which loomgraph checks on "
                "RE2 only: install google-re2 (it comes with loomgraph's `mcp` extra)"
            ) from None
        if problem is not None:
            raise ValueError(f"tool {tool_name!r}: its parameters {problem}")
        params = signature_of(fn, tool_name).parameters
        bound = bound_keywords(fn)
        injected = [i for p in params.values() if p.name not in bound and (i := injection_of(p))]
        return cls(
            parameters=parameters,
            validator=local_validator(checked, parameters),
            wants_key=KEY_PARAM in params and KEY_PARAM not in bound,
            injected=tuple(injected),
            positional=tuple(
                (n, p.default) for n, p in params.items() if p.kind is p.POSITIONAL_ONLY
            ),
            hidden=frozenset({KEY_PARAM, *bound, *(i.param for i in injected)}),
        )

    def bind(
        self, args: dict[str, Any], idempotency_key: str, injected: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Validate `args` against the schema and add what loomgraph fills in."""
        with metered():  # the patterns of one check share one bounded amount of work
            problems = sorted(self.validator.iter_errors(args), key=lambda e: list(e.path))
        if problems:
            lines = [f"- {_where(e.absolute_path)}: {e.message}" for e in problems]
            raise JsonArgumentsInvalid("\n" + "\n".join(lines))
        smuggled = self.hidden.intersection(args)
        if smuggled:
            raise JsonArgumentsInvalid(f"{', '.join(sorted(smuggled))}: not the model's to set")
        # A copy: the function may change what it gets in place, and `args` is the model's
        # call as the run records it (history, journal, the next request).
        kwargs: dict[str, Any] = json_copy(args)
        if self.wants_key:
            kwargs[KEY_PARAM] = idempotency_key
        kwargs.update(injected)
        if self.positional:
            return _positional(self.positional, kwargs), kwargs
        return (), kwargs


def json_copy(value: Any) -> Any:
    """`value` with every dict and list in it copied (anything else is shared, as JSON's
    other values are immutable); a loop rather than recursion, so any depth will do, and
    aliasing and cycles are kept as they are."""
    if not isinstance(value, dict | list):
        return value
    top: Any = {} if isinstance(value, dict) else []
    made: dict[int, Any] = {id(value): top}  # copies by the id of their original
    todo: list[tuple[Any, Any]] = [(value, top)]
    while todo:
        source, target = todo.pop()
        pairs: Iterable[tuple[Any, Any]]
        if isinstance(source, dict):
            target.update(source)  # then its dicts and lists are replaced by their copies
            pairs = source.items()
        else:
            target.extend(source)
            pairs = enumerate(source)
        for key, item in pairs:
            if isinstance(item, dict | list):
                copied = made.get(id(item))
                if copied is None:
                    copied = made[id(item)] = {} if isinstance(item, dict) else []
                    todo.append((item, copied))
                target[key] = copied
    return top


# pydantic core schemas whose value is new or immutable, never the input object itself.
_FRESH = frozenset(
    {
        "none", "bool", "int", "float", "decimal", "complex", "str", "bytes", "date", "time",
        "datetime", "timedelta", "uuid", "url", "multi-host-url", "literal", "enum",
        "json",  # parsed from a string: new objects
        "definition-ref",  # its definition is walked where it is defined
    }
)  # fmt: skip
# Schemas that build a new value from their parts: fresh when each part is.
_PARTS = {
    "list": ("items_schema",),
    "set": ("items_schema",),
    "frozenset": ("items_schema",),
    "tuple": ("items_schema",),
    "dict": ("keys_schema", "values_schema"),
    "model": ("schema",),
    "dataclass": ("schema",),
    "nullable": ("schema",),
    "default": ("schema",),
    "custom-error": ("schema",),
    "function-after": ("schema",),  # the function gets the value its schema made
    "lax-or-strict": ("lax_schema", "strict_schema"),
    "json-or-python": ("python_schema",),  # arguments are validated as Python objects
    "chain": ("steps",),
    "union": ("choices",),
    "tagged-union": ("choices",),
    "definitions": ("schema", "definitions"),
    "model-fields": ("fields", "extras_schema"),
    "typed-dict": ("fields", "extras_schema"),
    "dataclass-args": ("fields",),
    "model-field": ("schema",),
    "typed-dict-field": ("schema",),
    "dataclass-field": ("schema",),
}
# A container whose items are `Any` when its part is left out (`list`, `dict`).
_ANY_WHEN_MISSING = frozenset({"items_schema", "keys_schema", "values_schema"})
_NAMED = frozenset({"fields", "choices"})  # parts that map names (or tags) to schemas


def passes_input(schema: Mapping[str, Any]) -> bool:
    """Whether validating with the pydantic core `schema` can hand on objects of its input
    (`Any`, a before/wrap/plain validator, extra fields kept as given, ...): what is not known
    to build new values counts as passing the input on."""
    todo: list[Any] = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, list | tuple):  # choices, steps, fields, definitions
            todo.extend(node)
            continue
        if not isinstance(node, Mapping):
            continue  # a union choice's label
        kind = node.get("type")
        if not isinstance(kind, str) or kind in _FRESH:
            continue
        parts = _PARTS.get(kind)
        if parts is None or node.get("custom_init") or _keeps_extras(node):
            return True  # `any`, `function-before`, an `__init__` of the user's own, ...
        for part in parts:
            value = node.get(part)
            if value is None and part in _ANY_WHEN_MISSING:
                return True
            if isinstance(value, Mapping) and part in _NAMED:
                todo.extend(value.values())
            elif value is not None:
                todo.append(value)
    return False


def _keeps_extras(node: Mapping[str, Any]) -> bool:
    """Whether a model (or typed dict, dataclass) keeps extra fields as they were given."""
    config = node.get("config") or {}
    if node.get("extra_behavior", config.get("extra_fields_behavior")) != "allow":
        return False
    fields = node.get("schema", {}) if node.get("type") in ("model", "dataclass") else node
    return fields.get("extras_schema") is None


def _positional(params: tuple[tuple[str, Any], ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """The positional-only values, taken out of `kwargs`: up to the last one given, with the
    default of each left out before it (the next value must not move into its place)."""
    given = [i for i, (name, _) in enumerate(params) if name in kwargs]
    if not given:
        return ()
    values: list[Any] = []
    for name, default in params[: given[-1] + 1]:
        if name in kwargs:
            values.append(kwargs.pop(name))
        elif default is not inspect.Parameter.empty:
            values.append(default)
        else:
            raise JsonArgumentsInvalid(f"\n- {name}: missing; the function needs it")
    return tuple(values)


def _where(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(arguments)"
