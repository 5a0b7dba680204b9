"""The Agent's use of a memory store: fact extraction after runs, and memory tools."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from loomgraph.agent.config_errors import ConfigError
from loomgraph.agent.deps import current_run
from loomgraph.agent.model_specs import resolve_model
from loomgraph.memory.null import NoMemory
from loomgraph.protocols import (
    Deps,
    Episode,
    Hooks,
    Memory,
    Model,
    ModelChunk,
    ModelRequest,
    Telemetry,
    Usage,
    semconv,
)
from loomgraph.protocols.events import MEMORY_EXTRACTION_FAILED, Event
from loomgraph.tools import tool

if TYPE_CHECKING:
    from loomgraph.memory.base import MemoryStore

EXTRACTION_FAILED = MEMORY_EXTRACTION_FAILED  # the kind lives with the others


def keeps_episodes(memory: Memory) -> bool:
    """Whether runs leave episodes in `memory`: any but one whose `remember` is the no-op
    memory's (a subclass that remembers is asked, as any memory)."""
    return getattr(type(memory), "remember", None) is not NoMemory.remember


class MemoryExtraction:
    """Turns finished runs into facts in the background; a failure is reported, never raised."""

    def __init__(
        self, memory: MemoryStore, model: Model, hooks: Hooks, telemetry: Telemetry
    ) -> None:
        from loomgraph.memory.extract import Extractor  # only an agent with a memory store

        self.memory, self.model, self.hooks, self.telemetry = memory, model, hooks, telemetry
        self.extractor = Extractor(on_error=self._failed)
        # Its calls are paid for like a run's: traced, so the token and cost metrics count them.
        self._traced = TracedModel(model, telemetry)

    def schedule(self, episode: Episode) -> None:
        """Start extracting one episode; returns at once."""
        self.extractor.schedule(self.memory, self._traced, episode)

    async def drain(self) -> None:
        """Wait for every pending extraction."""
        await self.extractor.drain()

    async def _failed(self, episode: Episode, error: BaseException) -> None:
        with self.telemetry.span("memory.extract", {"loom.run.id": episode.run_id}) as span:
            span.set_attribute("error.type", type(error).__name__)
        # The run's own event stream has ended by now: the hooks' on_event hears about it.
        await self.hooks.on_event(
            Event(
                EXTRACTION_FAILED,
                {"error": f"{type(error).__name__}: {error}"},
                episode.run_id,
                0,
                None,
                episode.user_id,
                episode.session_id,
                time.time(),
            )
        )


class TracedModel:
    """`model` with each call traced as a `chat {model}` span carrying the usage it reported,
    for calls made outside a run (fact extraction): the span's usage is what the token and
    cost metrics count. The answer is read whole inside the span, then handed out (a span
    held open across the caller's awaits would be the current span of the caller's code)."""

    def __init__(self, model: Model, telemetry: Telemetry) -> None:
        self.model, self.telemetry = model, telemetry
        self.name = model.name

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """The model's answer to `request`, traced."""
        model = self.model
        attributes = semconv.chat_attributes(
            model=model.name, provider=semconv.provider_of(model), max_tokens=request.max_tokens
        )
        with self.telemetry.span(semconv.chat_span_name(model.name), attributes) as span:
            chunks = [chunk async for chunk in model.stream(request)]
            # The answer's usage and that of every attempt its adapter retried (`attempt`).
            billed = (c.get("usage") for c in chunks if c.get("type") in ("usage", "attempt"))
            usage = sum((Usage.reported(u) for u in billed), Usage())
            semconv.set_attributes(span, semconv.usage_attributes(usage))
        for chunk in chunks:
            yield chunk


def wire_memory(
    deps: Deps,
    add_tool: Callable[[Callable[..., Any]], None],
    *,
    auto_extract: bool | None,
    extract_model: str | Model | None,
    with_tools: bool,
) -> MemoryExtraction | None:
    """Add the memory tools when asked, and set up extraction: on by default, except on the
    zero-key models (their 'facts' would be echoes). `add_tool` offers a tool to the runs."""
    memory = _store(deps.memory)
    if memory is None:
        if auto_extract or with_tools:
            raise ConfigError(
                "auto_extract and memory_tools need a memory backend: "
                "memory='memory', 'sqlite:PATH' or 'postgres://…'"
            )
        return None
    if with_tools:
        from loomgraph.memory.tools import WRITING_TOOLS, memory_tools

        for fn in memory_tools(
            memory, lambda: _run_field("user_id"), run_id_getter=lambda: _run_field("run_id")
        ):
            add_tool(tool(fn, egress=fn.__name__ in WRITING_TOOLS))
    model = resolve_model(extract_model) if extract_model is not None else deps.model
    if auto_extract is None:
        from loomgraph.models.echo import EchoModel
        from loomgraph.models.scripted import ScriptedModel

        auto_extract = not isinstance(model, EchoModel | ScriptedModel)
    if not auto_extract:
        return None
    return MemoryExtraction(memory, model, deps.hooks, deps.telemetry)


def _store(memory: Memory) -> MemoryStore | None:
    """`memory` if it is a full memory store (tools and extraction need one), else None."""
    if isinstance(memory, NoMemory):
        return None
    # Imported here: an agent without memory (the default) never loads the memory backends.
    from loomgraph.memory.base import MemoryStore

    return memory if isinstance(memory, MemoryStore) else None


def _run_field(name: str) -> str | None:
    run = current_run.get()
    return getattr(run, name) if run is not None else None
