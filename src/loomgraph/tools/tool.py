"""The `Tool` wrapper and the `@tool` decorator."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any, Generic, ParamSpec, TypeVar, overload

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from loomgraph._storage.seconds import checked_seconds
from loomgraph.protocols import ToolSpec
from loomgraph.tools.context import Injection
from loomgraph.tools.docstrings import parse_docstring
from loomgraph.tools.json_schema import (
    JsonArguments,
    JsonArgumentsInvalid,
    json_copy,
    passes_input,
)
from loomgraph.tools.schema import KEY_PARAM, Arguments, build_arguments
from loomgraph.tools.schema_defs import MAX_TOOL_CHARS, spec_chars

P = ParamSpec("P")
R = TypeVar("R")

# What Anthropic and OpenAI accept as a tool name (with `fullmatch`; `$` would also take a
# name that ends in a newline).
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


class Tool(Generic[P, R]):
    """A function the model may call, with its spec and argument validator built once.

    Calling a `Tool` calls the function unchanged, so decorated functions stay usable
    from ordinary code and tests.
    """

    name: str
    defined_at: str  # where the function is defined, for messages (`app.tools.search`)
    description: str
    destructive: bool
    egress: bool
    trusted: bool
    timeout: float | None
    is_async: bool
    copies_args: bool

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        destructive: bool = False,
        egress: bool = False,
        trusted: bool = False,
        timeout: float | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(fn, Tool):
            fn = fn.fn  # re-wrapping a tool: start again from its function
        if not callable(fn):
            raise TypeError(f"a tool must be a function, got {type(fn).__name__}: {fn!r}")
        if _is_generator(fn):
            raise TypeError(f"tool {fn!r}: generator functions cannot be tools; return a value")
        target = _unwrap(fn)
        tool_name = name if name is not None else getattr(target, "__name__", "")
        if not isinstance(tool_name, str) or not _NAME.fullmatch(tool_name):
            raise ValueError(
                f"invalid tool name {tool_name!r}: use 1-64 letters, digits, '_' or '-' "
                "(pass name=... for lambdas and callable objects)"
            )
        for flag, value in (
            ("destructive", destructive),
            ("egress", egress),
            ("trusted", trusted),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"tool {tool_name!r}: {flag} must be a bool")
        if description is not None and not isinstance(description, str):
            raise TypeError(
                f"tool {tool_name!r}: description must be text (what the model reads), not "
                f"{type(description).__name__}"
            )
        doc = parse_docstring(inspect.getdoc(target))
        functools.update_wrapper(self, fn)
        self.fn: Callable[P, R] = fn
        self.name = tool_name
        self.defined_at = defined_at(target)
        self.description = doc.description if description is None else description
        self.destructive = destructive
        self.egress = egress
        self.trusted = trusted
        self.timeout = check_timeout(f"tool {tool_name!r}", timeout)
        # Called on the event loop rather than in a worker thread. A sync callable that
        # returns an awaitable (a plain decorator around an async function, a lambda) cannot
        # be told from its signature: the registry learns it at the first call, awaits the
        # awaitable and sets this (`__wrapped__` is no proof: a sync wrapper may block).
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - an object whose __call__ is async
        )
        # Given parameters (Tool.from_schema) are what the model sees and what validates.
        self.json_arguments = (
            None if parameters is None else JsonArguments.build(fn, tool_name, parameters)
        )
        self.arguments: Arguments | None = (
            build_arguments(fn, tool_name=tool_name, arg_docs=doc.args)
            if parameters is None
            else None
        )
        # Whether the function could be handed objects of the model's call itself (which the
        # run records: history, journal, the next request), so that calls hand it a copy;
        # decided here, once. pydantic builds new dicts and lists for typed parameters; only
        # `Any` (an untyped parameter, `dict[str, Any]`, ...) or a validator of the tool's
        # own passes what it was given on. `from_schema` tools always get a copy (JsonArguments).
        self.copies_args = self.arguments is None or passes_input(
            self.arguments.model.__pydantic_core_schema__
        )
        self.spec: ToolSpec = {
            "name": tool_name,
            "description": self.description,
            "parameters": self.parameters,
            "destructive": destructive,
        }
        size = spec_chars(self.spec)
        if size > MAX_TOOL_CHARS:
            raise ValueError(
                f"tool {tool_name!r}: its name, description and parameters take {size:,} "
                f"characters of JSON, more than the {MAX_TOOL_CHARS:,} a tool may (they go "
                "into every model request); shorten the description, or simplify the types"
            )
        if egress:
            self.spec["egress"] = True
        if trusted:
            self.spec["trusted"] = True

    @classmethod
    def from_schema(
        cls,
        name: str,
        description: str,
        parameters: dict[str, Any],
        fn: Callable[..., Any],
        *,
        destructive: bool = False,
        egress: bool = False,
        trusted: bool = False,
        timeout: float | None = None,
    ) -> Tool[..., Any]:
        """A tool whose arguments the model sees as exactly `parameters` (a JSON Schema of an
        object), validated against it with `jsonschema` before `fn(**arguments)` runs.

        `fn`'s own `ToolContext`, `Injected` and `idempotency_key` parameters are filled
        by loomgraph as for any tool. A schema that is not valid JSON Schema raises ValueError.
        """
        return cls(
            fn,
            name=name,
            description=description,
            destructive=destructive,
            egress=egress,
            trusted=trusted,
            timeout=timeout,
            parameters=parameters,
        )

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON Schema of the arguments, as the model sees it."""
        if self.json_arguments is not None:
            return self.json_arguments.parameters
        assert self.arguments is not None
        return self.arguments.parameters

    @property
    def wants_key(self) -> bool:
        """Whether the function takes an `idempotency_key` parameter."""
        if self.json_arguments is not None:
            return self.json_arguments.wants_key
        assert self.arguments is not None
        return self.arguments.wants_key

    @property
    def injected(self) -> tuple[Injection, ...]:
        """The parameters loomgraph fills (context, dependencies), hidden from the model."""
        if self.json_arguments is not None:
            return self.json_arguments.injected
        assert self.arguments is not None
        return self.arguments.injected

    def bind(
        self,
        args: dict[str, Any],
        idempotency_key: str,
        injected: Mapping[str, Any] | None = None,
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Validate the model's arguments into (args, kwargs), adding the injected values;
        raises pydantic.ValidationError (or JsonArgumentsInvalid for `from_schema` tools)."""
        if self.json_arguments is not None:
            return self.json_arguments.bind(args, idempotency_key, injected or {})
        spec = self.arguments
        assert spec is not None
        instance = spec.validator.validate_python(json_copy(args) if self.copies_args else args)
        values = instance.__dict__
        kwargs = {param: values[field] for field, param in spec.fields}
        if spec.extra and instance.__pydantic_extra__:
            # Only the host may supply the key, never the model.
            extras = instance.__pydantic_extra__
            if spec.bound and not spec.bound.isdisjoint(extras):
                names = ", ".join(sorted(spec.bound.intersection(extras)))
                raise JsonArgumentsInvalid(f"\n- {names}: not the model's to set")
            kwargs.update({k: v for k, v in extras.items() if k != KEY_PARAM})
        if spec.wants_key:
            kwargs[KEY_PARAM] = idempotency_key
        if injected:
            kwargs.update(injected)
        if spec.positional:
            return tuple(kwargs.pop(p) for p in spec.positional), kwargs
        return (), kwargs

    def received(self, args: dict[str, Any]) -> dict[str, Any] | None:
        """`args` as the function will receive them, as JSON data (`"yes"` sent for a bool
        parameter reads true); None for a `from_schema` tool, which takes them as sent, and
        for arguments that do not validate (the call will be refused)."""
        spec = self.arguments
        if spec is None:
            return None
        try:
            # A copy for the tool's own validators too: they may change what they are given.
            instance = spec.validator.validate_python(json_copy(args) if self.copies_args else args)
            # The validated values themselves, as JSON data: the fields' own serializers
            # would write some otherwise than the function gets them (a `Base64Str`, which
            # the function gets decoded, is encoded again).
            received: dict[str, Any] = _as_given(instance)
        except Exception:  # a user validator may raise anything; bind reports it
            return None
        return received

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function directly, without validation or timeout."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Tool {self.name}>"


def _as_given(value: Any) -> Any:
    """A validated value as JSON data, as a function is given it: a model as the fields it
    was given (by alias, at any depth), other values as pydantic writes them as JSON, but
    none through a field's own serializer."""
    if isinstance(value, BaseModel):
        fields, given = type(value).model_fields, value.model_fields_set
        out = {
            info.alias or name: _as_given(getattr(value, name))
            for name, info in fields.items()
            if name in given
        }
        out.update({key: _as_given(item) for key, item in (value.__pydantic_extra__ or {}).items()})
        return out
    if isinstance(value, dict):
        return {_as_key(key): _as_given(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_as_given(item) for item in value]
    return to_jsonable_python(value)


def _as_key(key: Any) -> str:
    """A dict key as JSON writes it."""
    return key if isinstance(key, str) else str(to_jsonable_python(key))


def _is_generator(fn: Callable[..., Any]) -> bool:
    """Whether calling `fn` makes a generator (a function, a partial of one, or an object
    whose `__call__` is one): its body would never run."""
    call = fn if inspect.isroutine(fn) or isinstance(fn, functools.partial) else None
    if call is None:
        call = getattr(type(fn), "__call__", None)  # noqa: B004 - a callable object
    return inspect.isgeneratorfunction(call) or inspect.isasyncgenfunction(call)


def _unwrap(fn: Callable[..., Any]) -> Any:
    """The function behind partials, whose own name and docstring are partial's."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def defined_at(fn: Any) -> str:
    """Where a tool's function is defined, as messages name it: `module.qualname`, and for a
    function another one makes, `name made by module.maker()` (the memory tools
    `loomgraph.memory.tools.memory_tools()` makes, say)."""
    target = fn if inspect.isroutine(fn) or inspect.isclass(fn) else type(fn)
    module = getattr(target, "__module__", None) or "?"
    qualname = getattr(target, "__qualname__", None) or getattr(target, "__name__", "?")
    maker, _, name = str(qualname).rpartition(".<locals>.")
    if maker:
        return f"{name} made by {module}.{maker}()"
    return f"{module}.{qualname}"


def check_timeout(owner: str, timeout: float | None, setting: str = "timeout") -> float | None:
    """`timeout` if it is None or a positive, finite number of seconds; raise otherwise,
    naming its `owner` (`tool 'x'`, `MCP server 'y'`) and the `setting`."""
    if timeout is None:
        return None
    return checked_seconds(f"{owner}: {setting}", timeout, wrong_type=TypeError)


@overload
def tool(
    fn: Callable[P, R],
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    destructive: bool = False,
    egress: bool = False,
    trusted: bool = False,
    timeout: float | None = None,
) -> Tool[P, R]: ...


@overload
def tool(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    destructive: bool = False,
    egress: bool = False,
    trusted: bool = False,
    timeout: float | None = None,
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...


def tool(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    destructive: bool = False,
    egress: bool = False,
    trusted: bool = False,
    timeout: float | None = None,
) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
    """Make a function a tool; use as `@tool`, `@tool(...)` or `tool(fn, ...)`.

    `name` defaults to the function's name and `description` to its docstring's first
    paragraph; `destructive` (asks by default), `egress` (sends data out: its calls that
    carry untrusted text are asked about) and `trusted` (its results are not untrusted input)
    are passed on to permission checks; `timeout` (seconds) overrides the host's default.
    """

    def wrap(f: Callable[P, R]) -> Tool[P, R]:
        return Tool(
            f,
            name=name,
            description=description,
            destructive=destructive,
            egress=egress,
            trusted=trusted,
            timeout=timeout,
        )

    return wrap if fn is None else wrap(fn)
