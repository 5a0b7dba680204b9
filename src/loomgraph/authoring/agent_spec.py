"""The pydantic models of agent files (`agent.yaml`): one source for loading and the JSON Schema.

Every model forbids unknown keys. Building the Agent from them is `agent.from_file`'s work;
these models only say what a file may contain.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
)
from pydantic_core import PydanticCustomError

from loomgraph.authoring.secrets import redact

# The backend specs' grammar lives in `protocols`, where the backends' constructors check a
# DSN or a path with it too; re-exported for the readers of specs (agent, cli).
from loomgraph.protocols.backend_specs import SPEC_FORMS as SPEC_FORMS
from loomgraph.protocols.backend_specs import backend_scheme as backend_scheme
from loomgraph.protocols.backend_specs import backend_spec_problem as backend_spec_problem
from loomgraph.protocols.pricing import Price

AGENT_SCHEMA_VERSION = 1


class _Spec(BaseModel):
    """Base of the agent-file models: unknown keys are errors; repr never shows a secret."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def __repr__(self) -> str:
        return redact(super().__repr__())

    def __str__(self) -> str:
        return redact(super().__str__())


class ModelSpec(_Spec):
    """A model with settings: `{name: claude-opus-4-7, max_tokens: 1024, temperature: 0.2}`."""

    name: str = Field(
        description="echo, claude-NAME, anthropic:NAME, openai:NAME, or MODULE:ATTR naming "
        "a Model (or a function returning one, called with the other settings)"
    )
    max_tokens: PositiveInt | None = Field(None, description="default cap on output tokens")
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: PositiveInt | None = Field(None, description="Anthropic models only")
    stop_sequences: list[str] | None = None
    seed: int | None = Field(None, description="OpenAI-compatible servers only")
    base_url: str | None = Field(None, description="the server (default: $OPENAI_BASE_URL …)")
    api_key: str | None = Field(None, description="write ${ENV_VAR}, never the key itself")
    timeout: NonNegativeFloat | None = Field(None, description="seconds per read of the reply")
    total_timeout: PositiveFloat | None = Field(
        None, description="seconds for each attempt of a request, its streamed reply included"
    )
    max_retries: Annotated[int, Field(ge=0)] | None = None

    def options(self) -> dict[str, Any]:
        """The settings given, as the adapter's keyword arguments."""
        return self.model_dump(exclude={"name"}, exclude_none=True)


class MCPStdioSpec(_Spec):
    """An MCP server run as a subprocess: `{mcp: stdio, command: [python, -m, srv], name: x}`."""

    mcp: Literal["stdio"]
    command: Annotated[list[str], Field(min_length=1)]
    name: str
    prefix: str | None = None
    trust: bool = False
    timeout: NonNegativeFloat | None = 60.0
    env: dict[str, str] | None = None
    cwd: str | None = None


def _http_url(text: str) -> str:
    """A URL a client can send to: http or https, with a host (`htp:/x` fails at its line,
    not at the first export or call, nor silently in an exporter's log)."""
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise PydanticCustomError(
            "http_url", "not an http:// or https:// URL with a host: {text}", {"text": repr(text)}
        )
    return text


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class MCPHttpSpec(_Spec):
    """An MCP server over streamable HTTP: `{mcp: http, url: …, headers: {…}, name: x}`."""

    mcp: Literal["http"]
    url: HttpUrl
    name: str
    headers: dict[str, str] | None = Field(None, description="values as ${ENV_VAR} for secrets")
    prefix: str | None = None
    trust: bool = False
    timeout: NonNegativeFloat | None = 60.0


MCPSpec = Annotated[MCPStdioSpec | MCPHttpSpec, Field(discriminator="mcp")]
ToolEntry = str | MCPSpec


# A cap is a number as YAML writes one: a quoted `'3'` or `true` is a problem at its line,
# as for a price (the budget's own check would take `'3'` as 3).
CountCap = Annotated[int, Field(gt=0, strict=True)]
AmountCap = Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False)]


class CapsSpec(_Spec):
    """Caps of one scope (the fields of `loomgraph.governance.Caps`)."""

    input_tokens: CountCap | None = None
    output_tokens: CountCap | None = None
    total_tokens: CountCap | None = None
    cost_usd: AmountCap | None = None
    model_calls: CountCap | None = None
    tool_calls: CountCap | None = None
    node_visits: CountCap | None = None
    wall_clock_s: AmountCap | None = None


# USD per million tokens: a number (not text, not a bool), finite, at least 0, as
# `protocols.pricing.Price` requires, refused here so the problem has the file's line.
PerMillionUSD = Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False)]


class PriceSpec(_Spec):
    """A model's price, USD per million tokens (the fields of `protocols.pricing.Price`)."""

    input: PerMillionUSD
    output: PerMillionUSD
    cache_write: PerMillionUSD = 0.0
    cache_read: PerMillionUSD = 0.0

    def price(self) -> Price:
        """The price as the price table holds it."""
        return Price(self.input, self.output, self.cache_write, self.cache_read)


class BudgetSpec(CapsSpec):
    """Global caps, caps per user (`per_user`), some users' own caps, the warning threshold,
    and prices of models the price table does not know (`prices`)."""

    per_user: CapsSpec | None = None
    users: dict[str, CapsSpec] | None = None
    warn_at: Annotated[float, Field(gt=0, le=1)] | None = 0.8
    prices: dict[Annotated[str, Field(min_length=1)], PriceSpec] | None = Field(
        None,
        description="model-name prefix (the longest matching wins) → price, laid over the "
        "price table; for the budget and the model adapter alike",
    )

    def price_table(self) -> dict[str, Price] | None:
        """`prices` as a table of prefix → Price (None when the file gives none)."""
        if self.prices is None:
            return None
        return {prefix: given.price() for prefix, given in self.prices.items()}

    def cost_cap_at(self) -> tuple[str, ...] | None:
        """Where the first `cost_usd` cap is, as keys under `budget` (global, `per_user`, a
        user's own), or None when the budget caps no cost."""
        return self.setting_at("cost_usd")

    def setting_at(self, name: str) -> tuple[str, ...] | None:
        """Where the first setting `name` is given, as keys under `budget` (global,
        `per_user`, a user's own), or None when none of them gives it."""
        scopes: list[tuple[tuple[str, ...], CapsSpec | None]] = [
            ((), self),
            (("per_user",), self.per_user),
            *((("users", user), caps) for user, caps in (self.users or {}).items()),
        ]
        for keys, caps in scopes:
            if caps is not None and getattr(caps, name, None) is not None:
                return (*keys, name)
        return None


class AuditLogSpec(_Spec):
    """A file audit log, keyed from an environment variable or a key file (or unsigned)."""

    file: str
    key_env: str | None = Field(
        None, description="the key's variable (default LOOMGRAPH_AUDIT_KEY)"
    )
    key_file: str | None = None
    unsigned: bool = False


class TelemetrySpec(_Spec):
    """OpenTelemetry spans and metrics, exported over OTLP/HTTP when an endpoint is given."""

    otlp_endpoint: HttpUrl | None = Field(None, description="e.g. http://127.0.0.1:4318")
    capture_content: bool = False
    service_name: str | None = None


def _names_a_backend(spec: str) -> str:
    """An agent file's `memory:` or `runtime:` in a known scheme that names nothing to open
    (`sqlite:`, `sqlite://x`, `postgres`) fails the schema, at its line, before the file's
    folder is joined to it (`sqlite:` would become the folder). A spec of no known scheme is
    left to the file's own check, which names the forms."""
    problem = backend_spec_problem(spec) if backend_scheme(spec) is not None else None
    if problem is not None:
        raise PydanticCustomError("backend_spec", "{problem}", {"problem": problem})
    return spec


BackendSpecText = Annotated[str, AfterValidator(_names_a_backend)]


class AgentSpec(_Spec):
    """A whole Agent in one file (docs/agent-files.md)."""

    schema_version: Literal[1] = Field(description="the agent-file format: 1")
    name: Annotated[str, Field(min_length=1)]
    instructions: str | None = None
    instructions_file: str | None = Field(
        None, description="a Jinja2 template, relative to this file (instead of instructions)"
    )
    model: str | ModelSpec = "echo"
    architecture: str | dict[str, Any] = Field(
        "react", description="a built-in graph name, a graph file, or an inline graph"
    )
    tools: list[ToolEntry] = Field(default_factory=list)
    memory: BackendSpecText | None = Field(None, description="memory, sqlite:PATH or postgres://…")
    runtime: BackendSpecText | None = Field(None, description="memory, sqlite:PATH or postgres://…")
    budget: BudgetSpec | None = None
    permissions: str | dict[str, Any] | None = Field(
        None, description="a permission file, or its content inline (mode, allow, ask, deny …)"
    )
    audit_log: AuditLogSpec | None = None
    telemetry: TelemetrySpec | None = None

    @property
    def model_spec(self) -> ModelSpec:
        """The model as a ModelSpec (a bare name has no settings)."""
        return self.model if isinstance(self.model, ModelSpec) else ModelSpec(name=self.model)


# Matched with `fullmatch`: `$` would also take a name ending in a newline (`echo\n`).
_MODEL_NAME = re.compile(
    r"echo|claude-\S+|(anthropic|openai|openai-compat):\S+|[A-Za-z_][\w.]*:[A-Za-z_][\w.]*"
)


# The built-in adapters (Anthropic's, an OpenAI-compatible server's): made offline, they take
# the settings of `ModelSpec` and a price table (`prices=`).
_ADAPTER_NAME = re.compile(r"claude-\S+|(anthropic|openai|openai-compat):\S+")


def names_an_adapter(name: str) -> bool:
    """Whether `name` names a built-in model adapter (not `echo`, not `MODULE:ATTR`)."""
    return _ADAPTER_NAME.fullmatch(name) is not None


def model_name_problem(name: str) -> str | None:
    """Why `name` is no model name loomgraph knows, or None."""
    if _MODEL_NAME.fullmatch(name):
        return None
    return (
        f"unknown model {name!r}; use echo, claude-NAME, anthropic:NAME, openai:NAME "
        "(an OpenAI-compatible server) or MODULE:ATTR naming a Model"
    )


def unpriced_problem(given: str, name: str) -> str:
    """What a cost cap on the file's model `given`, priced as `name`, lacks: its price."""
    called = repr(given) + (f" (priced as {name!r})" if given != name else "")
    return (
        f"a cost_usd cap cannot price model {called}: neither the price table nor `prices` "
        "knows it, so its calls would be reserved at $0; give its price in the budget, "
        f"`prices: {{{name}: {{input: …, output: …}}}}` (USD per million tokens, keyed by a "
        "prefix of the name it is priced as), or cap tokens instead of cost"
    )
