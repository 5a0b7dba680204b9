"""A function's signature as a pydantic model, and that model as a JSON Schema for the model."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Union

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo
from pydantic_core import SchemaValidator

from loomgraph.tools.context import Injected, Injection, ToolContext

# Defined beside the JSON checks that raise them too; imported from here as before.
from loomgraph.tools.schema_defs import DefaultProblem as DefaultProblem
from loomgraph.tools.schema_defs import ToolDefaultInvalid as ToolDefaultInvalid
from loomgraph.tools.schema_defs import (
    ToolSchemaNotJSON,
    clean_schema,
    json_chars,
    json_path,
    shown,
)

KEY_PARAM = "idempotency_key"
"""The parameter through which a tool receives the idempotency key of its call."""

_METHOD_FIRST = frozenset({"self", "cls"})
_ALIASES = ("alias", "validation_alias", "serialization_alias")


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
    bound: frozenset[str] = frozenset()  # keywords a functools.partial set: not the model's


def signature_of(fn: Callable[..., Any], tool_name: str) -> inspect.Signature:
    """`fn`'s signature with its hints resolved; raises TypeError naming the tool for hints
    that cannot be resolved and for a method taken from its class (`self` to fill)."""
    try:
        signature = inspect.signature(fn, eval_str=True)
    except (NameError, SyntaxError) as exc:
        raise TypeError(
            f"tool {tool_name!r}: cannot resolve the type hints of its parameters ({exc}); "
            "types used in a tool's signature must be importable from its module"
        ) from exc
    first = next(iter(signature.parameters.values()), None)
    if (
        first is not None
        and first.name in _METHOD_FIRST
        and first.kind <= first.POSITIONAL_OR_KEYWORD
    ):
        raise TypeError(
            f"tool {tool_name!r}: its first parameter is {first.name!r}, so it is a method "
            "taken from its class (@tool in a class body, or Class.method), and the model "
            f"would be asked for {first.name!r}; leave the method undecorated and make the "
            f"bound method a tool: tool(obj.{getattr(fn, '__name__', 'method')})"
        )
    return signature


def bound_keywords(fn: Callable[..., Any]) -> frozenset[str]:
    """The arguments `functools.partial`s around `fn` set by keyword: the partial's, never
    the model's (a call could otherwise replace them)."""
    names: set[str] = set()
    while isinstance(fn, functools.partial):
        names.update(fn.keywords)
        fn = fn.func
    return frozenset(names)


def build_arguments(
    fn: Callable[..., Any], *, tool_name: str, arg_docs: Mapping[str, str]
) -> Arguments:
    """Build the argument model and JSON Schema of `fn` from its type hints."""
    signature = signature_of(fn, tool_name)
    bound = bound_keywords(fn)
    definitions: dict[str, Any] = {}
    fields: list[tuple[str, str]] = []
    positional: list[str] = []
    injected: list[Injection] = []
    wants_key = False
    var_keyword: inspect.Parameter | None = None
    for param in signature.parameters.values():
        if param.kind is param.VAR_POSITIONAL:
            continue  # the model sends an object; there is nothing to put in *args
        if param.kind is param.VAR_KEYWORD:
            var_keyword = param
            continue
        if param.name in bound:
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
        definitions[field_name] = _field(tool_name, param, arg_docs.get(param.name))

    config = ConfigDict(
        extra="forbid" if var_keyword is None else "allow",
        arbitrary_types_allowed=False,
        protected_namespaces=(),
        # A default is what the schema shows the model and what a call leaving it out gets:
        # it must pass the parameter's own type and constraints (checked below, once).
        validate_default=True,
        # Pydantic writes an inf or NaN inside a default (`(1.0, inf)`, an enum's value) as
        # null: the model would be shown a default the call does not get. Kept as it is, the
        # strict JSON check below refuses it. (Validation is the same in every mode.)
        ser_json_inf_nan="constants",
        # NaN and the infinities are refused as arguments in every spelling: as numbers
        # (`check_tool_args`, no journal keeps them) and as strings lax parsing would turn
        # into them ("nan", "-Infinity", "1e400"), where `nan > limit` is False.
        allow_inf_nan=False,
    )
    try:
        base = _extras_base(var_keyword, arg_docs, config)
        model: type[BaseModel] = pydantic.create_model(
            f"{tool_name}_arguments", __base__=base, **definitions
        )
        raw = model.model_json_schema()
    except pydantic.PydanticUserError as exc:  # includes schema-generation errors
        raise _unsupported(tool_name, signature, exc) from exc
    except ValueError as exc:  # a default pydantic cannot write as JSON (b"\xff", 10**5000)
        raise _unwritable(tool_name, base, definitions, dict(fields), exc) from exc
    parameters = clean_schema(raw)
    # JSON first: an infinite default is no JSON, and its type refuses it too (finite only).
    _check_json(tool_name, model, dict(fields), parameters)
    _check_defaults(tool_name, model, dict(fields))

    return Arguments(
        model=model,
        # Typed as a union with pydantic's plugin wrapper, which has the same validate_python.
        validator=model.__pydantic_validator__,  # type: ignore[arg-type]
        fields=tuple(fields),
        positional=tuple(positional),
        wants_key=wants_key,
        extra=var_keyword is not None,
        parameters=parameters,
        injected=tuple(injected),
        bound=bound,
    )


def _check_defaults(tool: str, model: type[BaseModel], params: Mapping[str, str]) -> None:
    """Raise ToolDefaultInvalid for the first default its parameter's type refuses: validating
    no arguments validates every default (`validate_default`); only required ones are
    missing."""
    try:
        model.model_validate({})
    except pydantic.ValidationError as exc:
        for error in exc.errors(include_url=False):
            field = str(error["loc"][0]) if error["loc"] else ""
            if error["type"] != "missing" and field in params:
                inner = ".".join(str(part) for part in error["loc"][1:])
                problem = f"{inner}: {error['msg']}" if inner else error["msg"]
                default = model.model_fields[field].default
                raise ToolDefaultInvalid(tool, params[field], default, problem) from None
    except Exception as exc:  # a validator's own exception (pydantic wraps only a few)
        for field, info in model.model_fields.items():
            if info.is_required() or field not in params:
                continue
            try:
                pydantic.TypeAdapter(info.rebuild_annotation()).validate_python(info.default)
            except Exception as culprit:  # whatever it raises is the problem
                problem = f"{type(culprit).__name__}: {culprit}"
                raise ToolDefaultInvalid(tool, params[field], info.default, problem) from exc
        raise


def _check_json(
    tool: str, model: type[BaseModel], params: Mapping[str, str], parameters: dict[str, Any]
) -> None:
    """Refuse a schema JSON cannot carry (it goes into every model request), once, at
    definition: ToolDefaultInvalid for a parameter's default, ToolSchemaNotJSON naming the
    parameter for anything else in its schema (`examples`, a model's field default)."""
    try:
        json_chars(tool, parameters, ("parameters",))
    except ToolSchemaNotJSON as exc:
        path = exc.path[1:]
        if len(path) < 2 or path[0] != "properties":
            raise  # under `$defs` or at the top (`**kwargs: T`'s additionalProperties)
        parameter = str(path[1])
        field = next((f for f, p in params.items() if p == parameter), None)
        if field is not None and path[2:3] == ("default",):
            inside = path[3:]  # where in a list or object default: `(1.0, inf)` at [1]
            problem = f"{shown(exc.value, 40)} at {json_path(inside)}: " if inside else ""
            default = model.model_fields[field].default
            raise ToolDefaultInvalid(
                tool, parameter, default, problem + exc.problem, DefaultProblem.NOT_JSON
            ) from None
        raise ToolSchemaNotJSON(tool, exc.path, exc.value, exc.problem, parameter) from None


def _unwritable(
    tool: str,
    base: type[BaseModel],
    definitions: Mapping[str, Any],
    params: Mapping[str, str],
    exc: ValueError,
) -> Exception:
    """The error for a schema pydantic could not write: ToolDefaultInvalid naming the
    parameter whose default it cannot write (found by writing each alone: only on this
    failing path), else `exc` itself."""
    for field, definition in definitions.items():
        info: FieldInfo = definition[1]
        if info.is_required():
            continue
        try:
            alone = pydantic.create_model("_Alone", __base__=base, **{field: definition})
            alone.model_json_schema()
        except ValueError as culprit:
            problem = f"{type(culprit).__name__}: {culprit}"
            return ToolDefaultInvalid(
                tool, params[field], info.default, problem, DefaultProblem.NOT_JSON
            )
    return exc


def _extras_base(
    param: inspect.Parameter | None, arg_docs: Mapping[str, str], config: ConfigDict
) -> type[BaseModel]:
    """The model base: for `**kwargs: T`, one whose extra arguments are validated as `T`
    (JSON Schema `additionalProperties`), described by the docstring's `**kwargs` entry."""
    if param is None:
        return type("_Arguments", (BaseModel,), {"model_config": config})
    value: Any = Any if param.annotation is param.empty else param.annotation
    doc = arg_docs.get(param.name)
    if doc:
        value = Annotated[value, Field(description=doc)]
    namespace = {
        "model_config": config,
        "__annotations__": {"__pydantic_extra__": dict[str, value]},
        "__pydantic_extra__": Field(init=False),
    }
    return type("_Arguments", (BaseModel,), namespace)


def _unsupported(tool: str, signature: inspect.Signature, exc: Exception) -> TypeError:
    """The error for a parameter type pydantic cannot validate or describe, naming the
    parameter (found by trying each alone: only on this failing path)."""
    reason = str(exc).split("\n")[0]
    for param in signature.parameters.values():
        if param.kind is param.VAR_POSITIONAL or param.name == KEY_PARAM:
            continue
        if param.kind is not param.VAR_KEYWORD and injection_of(param) is not None:
            continue
        hint: Any = Any if param.annotation is param.empty else param.annotation
        try:
            pydantic.TypeAdapter(hint).json_schema()
        except Exception:  # any failure marks the culprit
            shown = inspect.formatannotation(hint)
            return TypeError(
                f"tool {tool!r}: parameter {param.name!r} has a type the model cannot be "
                f"given as JSON Schema ({shown}: {reason}); use a JSON type (str, int, a "
                "pydantic model, ...), or have loomgraph fill it (ToolContext, Injected)"
            )
    return TypeError(f"tool {tool!r}: unsupported parameter type: {reason}")


def injection_of(param: inspect.Parameter) -> Injection | None:
    """How loomgraph fills `param` (a `ToolContext`, also an optional one, or a dependency
    marked `Injected`), or None for a parameter the model gives."""
    annotation = param.annotation
    base = typing.get_args(annotation)[0] if _is_annotated(annotation) else annotation
    if base is ToolContext or _optional_of(base) is ToolContext:
        return Injection(param.name, context=True)
    if not _is_annotated(annotation):
        return None
    for meta in typing.get_args(annotation)[1:]:
        if meta is Injected:
            return Injection(param.name, dep_type=base)
        if isinstance(meta, Injected):
            return Injection(param.name, dep=meta.key, dep_type=base)
    return None


def _optional_of(annotation: Any) -> Any:
    """`T` for `T | None` or `Optional[T]`, else None."""
    if typing.get_origin(annotation) not in (Union, types.UnionType):
        return None
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 else None


def _field(tool: str, param: inspect.Parameter, doc: str | None) -> tuple[Any, FieldInfo]:
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
    for meta in metadata:
        aliased = [a for a in _ALIASES if isinstance(meta, FieldInfo) and getattr(meta, a)]
        if aliased:
            # The parameter's name is what the model sees and sends, what the function gets
            # and what rules read (received args): another name would split them.
            raise TypeError(
                f"tool {tool!r}: parameter {param.name!r} sets Field({aliased[0]}=...); a "
                "tool's arguments are named by its parameters: rename the parameter instead"
            )
    if _defaults_to_none(param) and not _takes_none(annotation):
        # `c: int = None` means `int | None` (implicit Optional): the schema says null, and a
        # call sending null is valid. Decided here, once, when the tool is defined.
        annotation = _nullable(annotation)
    described = any(isinstance(m, FieldInfo) and m.description for m in metadata)
    kwargs: dict[str, Any] = {"alias": param.name}
    if doc and not described:
        kwargs["description"] = doc
    if default is not param.empty:
        kwargs["default"] = default
    return annotation, Field(**kwargs)


def _defaults_to_none(param: inspect.Parameter) -> bool:
    """Whether the parameter's default is None (`= None` or `= Field(None, ...)`)."""
    default = param.default
    return default is None or (isinstance(default, FieldInfo) and default.default is None)


def _takes_none(annotation: Any) -> bool:
    """Whether a value of type `annotation` may be None (Any, object, `X | None`, ...)."""
    if annotation in (Any, object, None, type(None)):
        return True
    if isinstance(annotation, typing.TypeVar):  # pydantic reads one as its bound, or Any
        if annotation.__constraints__:
            return any(_takes_none(option) for option in annotation.__constraints__)
        return annotation.__bound__ is None or _takes_none(annotation.__bound__)
    if isinstance(annotation, typing.NewType):
        return _takes_none(annotation.__supertype__)
    alias = getattr(typing, "TypeAliasType", None)  # `type X = ...`, Python 3.12+
    if alias is not None and isinstance(annotation, alias):
        return _takes_none(annotation.__value__)
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _takes_none(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_takes_none(arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return None in typing.get_args(annotation)
    return False


def _nullable(annotation: Any) -> Any:
    """`annotation | None`, its validators and constraints kept to the non-null value and
    its `Field`s (description, default) on the whole."""
    # `Optional[...]` rather than `|`: it takes any typing form, `|` needs an `__or__`.
    if not _is_annotated(annotation):
        return typing.Optional[annotation]  # noqa: UP045
    base, *metadata = typing.get_args(annotation)
    fields = [m for m in metadata if isinstance(m, FieldInfo)]
    others = [m for m in metadata if not isinstance(m, FieldInfo)]
    nullable: Any = typing.Optional[Annotated[(base, *others)] if others else base]  # noqa: UP045
    return Annotated[(nullable, *fields)] if fields else nullable


def _is_annotated(annotation: Any) -> bool:
    return typing.get_origin(annotation) is Annotated
