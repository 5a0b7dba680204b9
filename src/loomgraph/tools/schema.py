"""A function's signature as a pydantic model, and that model as a JSON Schema for the model."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo
from pydantic_core import SchemaValidator

from loomgraph.tools.context import Injected, Injection, ToolContext

KEY_PARAM = "idempotency_key"
"""The parameter through which a tool receives the idempotency key of its call."""

# Keys whose values are data, not schemas: never strip a `title` or follow a `$ref` in them.
_DATA_KEYS = frozenset({"default", "enum", "const", "examples", "example"})
# Keys whose values map names to schemas: the names are not schema keywords.
_NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
_DEFS_PREFIX = "#/$defs/"


@dataclass(frozen=True, slots=True)
class Arguments:
    """Everything needed to validate a call's arguments and pass them to the function.

    Fields are named `f0`, `f1`, … with the parameter name as alias, so parameters called
    `json`, `model_config` or `_private` cannot clash with pydantic's own attributes.
    """

    model: type[BaseModel]
    validator: SchemaValidator
    fields: tuple[tuple[str, str], ...]  # (field name, parameter name)
    positional: tuple[str, ...]  # positional-only parameters, in order
    wants_key: bool
    extra: bool  # the function takes **kwargs, so unknown arguments are passed through
    parameters: dict[str, Any]  # the JSON Schema the model sees
    injected: tuple[Injection, ...] = ()  # parameters loomgraph fills, hidden from the model


def build_arguments(
    fn: Callable[..., Any], *, tool_name: str, arg_docs: Mapping[str, str]
) -> Arguments:
    """Build the argument model and JSON Schema of `fn` from its type hints."""
    try:
        signature = inspect.signature(fn, eval_str=True)
    except (NameError, SyntaxError) as exc:
        raise TypeError(
            f"tool {tool_name!r}: cannot resolve the type hints of its parameters ({exc}); "
            "types used in a tool's signature must be importable from its module"
        ) from exc

    definitions: dict[str, Any] = {}
    fields: list[tuple[str, str]] = []
    positional: list[str] = []
    injected: list[Injection] = []
    wants_key = extra = False
    for param in signature.parameters.values():
        if param.kind is param.VAR_POSITIONAL:
            continue  # the model sends an object; there is nothing to put in *args
        if param.kind is param.VAR_KEYWORD:
            extra = True
            continue
        if param.kind is param.POSITIONAL_ONLY:
            positional.append(param.name)
        if param.name == KEY_PARAM:
            wants_key = True
            continue
        injection = injection_of(param)
        if injection is not None:
            injected.append(injection)
            continue
        field_name = f"f{len(fields)}"
        fields.append((field_name, param.name))
        definitions[field_name] = _field(param, arg_docs.get(param.name))

    config = ConfigDict(
        extra="allow" if extra else "forbid",
        arbitrary_types_allowed=False,
        protected_namespaces=(),
    )
    try:
        model: type[BaseModel] = pydantic.create_model(
            f"{tool_name}_arguments", __config__=config, **definitions
        )
        raw = model.model_json_schema()
    except pydantic.PydanticUserError as exc:  # includes schema-generation errors
        raise TypeError(f"tool {tool_name!r}: unsupported parameter type: {exc}") from exc

    return Arguments(
        model=model,
        # Typed as a union with pydantic's plugin wrapper, which has the same validate_python.
        validator=model.__pydantic_validator__,  # type: ignore[arg-type]
        fields=tuple(fields),
        positional=tuple(positional),
        wants_key=wants_key,
        extra=extra,
        parameters=clean_schema(raw),
        injected=tuple(injected),
    )


def injection_of(param: inspect.Parameter) -> Injection | None:
    """How loomgraph fills `param` (a `ToolContext`, or a dependency marked `Injected`), or
    None for a parameter the model gives."""
    annotation = param.annotation
    base = typing.get_args(annotation)[0] if _is_annotated(annotation) else annotation
    if base is ToolContext:
        return Injection(param.name, context=True)
    if not _is_annotated(annotation):
        return None
    for meta in typing.get_args(annotation)[1:]:
        if meta is Injected:
            return Injection(param.name, dep_type=base)
        if isinstance(meta, Injected):
            return Injection(param.name, dep=meta.key, dep_type=base)
    return None


def _field(param: inspect.Parameter, doc: str | None) -> tuple[Any, FieldInfo]:
    """The (annotation, FieldInfo) pair of one parameter for `create_model`."""
    annotation: Any = Any if param.annotation is param.empty else param.annotation
    metadata = list(typing.get_args(annotation)[1:]) if _is_annotated(annotation) else []
    default = param.default
    if isinstance(default, FieldInfo):
        # `x: int = Field(3, description=...)`: move it into the annotation, where pydantic
        # merges it with our alias instead of treating it as an opaque default value.
        annotation = Annotated[annotation, default]
        metadata.append(default)
        default = param.empty
    described = any(isinstance(m, FieldInfo) and m.description for m in metadata)
    kwargs: dict[str, Any] = {"alias": param.name}
    if doc and not described:
        kwargs["description"] = doc
    if default is not param.empty:
        kwargs["default"] = default
    return annotation, Field(**kwargs)


def _is_annotated(annotation: Any) -> bool:
    return typing.get_origin(annotation) is Annotated


def clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline `$defs` (keeping only recursive ones), drop titles, and ensure an object shape."""
    defs: dict[str, Any] = schema.get("$defs", {})
    kept: dict[str, Any] = {}
    needed: set[str] = set()

    def walk(node: Any, expanding: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [walk(item, expanding) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS_PREFIX):
            name = ref[len(_DEFS_PREFIX) :]
            if name in expanding:
                needed.add(name)  # a recursive model cannot be inlined: keep the reference
            elif name in defs:
                target = walk(defs[name], expanding | {name})
                siblings = walk({k: v for k, v in node.items() if k != "$ref"}, expanding)
                return {**target, **siblings}
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "title" and isinstance(value, str):
                continue  # titles are derived from names and only cost tokens
            if key == "$defs":
                continue
            if key in _DATA_KEYS:
                out[key] = value
            elif key in _NAMED_SCHEMAS and isinstance(value, dict):
                out[key] = {name: walk(sub, expanding) for name, sub in value.items()}
            else:
                out[key] = walk(value, expanding)
        return out

    result: dict[str, Any] = walk(schema, frozenset())
    while pending := needed - kept.keys():
        for name in pending:
            kept[name] = walk(defs[name], frozenset({name}))
    if kept:
        result["$defs"] = kept
    result["type"] = "object"
    result.setdefault("properties", {})
    return result
