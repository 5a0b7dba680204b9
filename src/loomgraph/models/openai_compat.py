"""Any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp, OpenAI itself).

Built on the official `openai` package, an optional extra (`pip install loomgraph[openai]`),
imported at the first call only. Same chunk semantics, retries and typed errors as the
Anthropic adapter: text deltas stream out as they arrive, tool calls are assembled from their
argument fragments and handed out only when the choice has finished.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import replace
from typing import Any

from loomgraph.models import _shape as shape
from loomgraph.models._adapter import DEFAULT_MAX_PROMPT_CHARS, HTTPModel, StreamTally
from loomgraph.models._shape import MalformedChunk
from loomgraph.models.errors import (
    AdapterError,
    ModelConfigError,
    ModelConnectionError,
    ModelTimeout,
    body_error,
    error_for_status,
    parse_retry_after,
    quota_exhausted,
)
from loomgraph.models.retry import RetryPolicy
from loomgraph.protocols import (
    Message,
    ModelChunk,
    ModelRequest,
    Sampling,
    ToolCall,
    ToolSpec,
    Usage,
)
from loomgraph.protocols.pricing import PriceOverride
from loomgraph.protocols.tool_args import ToolArgLimits, parse_tool_args

__all__ = [
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "NO_KEY",
    "OpenAICompatModel",
    "openai_messages",
    "openai_tools",
]

ENV_API_KEY = "OPENAI_API_KEY"
ENV_BASE_URL = "OPENAI_BASE_URL"
# Local servers need no key, but the SDK insists on one; this placeholder is sent instead.
NO_KEY = "no-key"
# The chat-completions API has no error flag on tool results; the model reads it from here.
TOOL_ERROR_PREFIX = "ERROR: "

_FINISH_REASONS = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}


def openai_messages(messages: Sequence[Message], system: str = "") -> list[dict[str, Any]]:
    """Map loomgraph messages (and the system prompt) to chat-completions messages."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system})
    for message in messages:
        role = message["role"]
        content = message.get("content") or ""
        if role == "user":
            out.append({"role": "user", "content": content})
        elif role == "assistant":
            calls = message.get("tool_calls") or []
            entry: dict[str, Any] = {"role": "assistant", "content": content or None}
            if calls:
                entry["tool_calls"] = [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {
                            "name": call["tool"],
                            "arguments": json.dumps(call.get("args") or {}),
                        },
                    }
                    for call in calls
                ]
            elif entry["content"] is None:
                entry["content"] = ""  # null content is only valid next to tool calls
            out.append(entry)
        elif role == "tool":
            if message.get("is_error"):
                content = TOOL_ERROR_PREFIX + content
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": message.get("tool_call_id", ""),
                    "content": content,
                }
            )
        else:
            raise ValueError(f"unknown message role {role!r}")
    return out


def openai_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tool specs as chat-completions function tools."""
    out: list[dict[str, Any]] = []
    for spec in tools:
        function: dict[str, Any] = {
            "name": spec["name"],
            "parameters": spec.get("parameters") or {"type": "object", "properties": {}},
        }
        if spec.get("description"):
            function["description"] = spec["description"]
        out.append({"type": "function", "function": function})
    return out


class _Completion:
    """The state of one streamed chat completion (its first choice): tool-call fragments,
    usage so far, finish reason."""

    def __init__(self, tally: StreamTally, limits: ToolArgLimits) -> None:
        self.tally = tally
        self.limits = limits
        # Fragments by (0, index); a server that sends no index (Gemini's endpoint) gets
        # (1, n): a fragment with a new id starts call n, one without an id continues it.
        self.slots: dict[tuple[int, int], dict[str, Any]] = {}
        self.unindexed = 0
        self.usage = Usage()
        self.finish: str | None = None
        self.called = False

    def feed(self, chunk: Any) -> Iterator[ModelChunk]:
        """The chunks one chat.completion.chunk produces. A chunk of the wrong shape raises
        MalformedChunk (or the TypeError/AttributeError reading it does); tool arguments
        that are not a JSON object within the limits raise ValueError (`HTTPModel._read`)."""
        usage = shape.get(chunk, "usage")
        if usage is not None:
            self.usage = _usage(usage)
        choices = shape.get(chunk, "choices")
        if choices is None:
            return
        if not isinstance(choices, list | tuple):
            raise MalformedChunk(f"choices is a {type(choices).__name__}, not a list")
        for choice in choices:
            shape.obj(choice, "a choice")
            at = shape.get(choice, "index")
            # n > 1 is never requested: the first choice is the answer (one sent without an
            # index can only be that one).
            if at is None or shape.index(at, "choice.index") == 0:
                yield from self._choice(choice)

    def _choice(self, choice: Any) -> Iterator[ModelChunk]:
        delta = shape.get(choice, "delta")
        if delta is not None:
            shape.obj(delta, "choice.delta")
            piece = shape.text(shape.get(delta, "content"), "delta.content")
            if piece:
                self.tally.add(piece)
                yield ModelChunk(type="text", text=piece)
            parts = shape.get(delta, "tool_calls")
            if parts is not None:
                if not isinstance(parts, list | tuple):
                    raise MalformedChunk(
                        f"delta.tool_calls is a {type(parts).__name__}, not a list"
                    )
                for part in parts:
                    self._fragment(part)
        reason = shape.text(shape.get(choice, "finish_reason"), "choice.finish_reason")
        if reason:
            self.finish = reason
            # Only a finished choice has complete tool calls.
            calls = [_assemble(self.slots[key], self.limits) for key in sorted(self.slots)]
            self.slots.clear()
            for call in calls:
                self.called = True
                yield ModelChunk(type="tool_call", call=call)

    def _fragment(self, part: Any) -> None:
        shape.obj(part, "a delta.tool_calls entry")
        if self.finish is not None:
            # The finish_reason said the answer was complete and its calls were handed out;
            # a call arriving now would be dropped, or run after the fact. Not an answer.
            raise MalformedChunk("a tool-call fragment arrived after the finish_reason")
        call_id = shape.text(shape.get(part, "id"), "tool call id")
        name = arguments = ""
        function = shape.get(part, "function")
        if function is not None:
            shape.obj(function, "tool call function")
            name = shape.text(shape.get(function, "name"), "function.name")
            arguments = shape.text(shape.get(function, "arguments"), "function.arguments")
        at = shape.get(part, "index")
        if at is not None:
            key = (0, shape.index(at, "tool call index"))
        else:
            current = self.slots.get((1, self.unindexed))
            if current is None or (call_id and current["id"] and call_id != current["id"]):
                if not (call_id or name or arguments):
                    return  # nothing of a call (metadata only)
                self.unindexed += 1
            key = (1, self.unindexed)
        slot = self.slots.setdefault(key, {"id": "", "name": "", "parts": []})
        slot["id"] = call_id or slot["id"]
        slot["name"] = name or slot["name"]
        if arguments:
            slot["parts"].append(arguments)
            self.tally.add(arguments)


def _assemble(slot: dict[str, Any], limits: ToolArgLimits) -> ToolCall:
    if not slot["name"]:
        raise MalformedChunk(f"tool call {slot['id'] or '(no id)'} has no function name")
    args = parse_tool_args("".join(slot["parts"]), limits)
    return {"id": slot["id"] or f"call_{uuid.uuid4().hex[:12]}", "tool": slot["name"], "args": args}


def _usage(raw: Any) -> Usage:
    # OpenAI counts cached prompt tokens inside prompt_tokens; loomgraph's input_tokens
    # excludes them (as Anthropic's does), so both adapters' usage means the same thing.
    # A count left out is 0 here: the engine charges its estimate for it.
    shape.obj(raw, "usage")
    prompt = shape.count(shape.get(raw, "prompt_tokens"), "usage.prompt_tokens") or 0
    output = shape.count(shape.get(raw, "completion_tokens"), "usage.completion_tokens") or 0
    cached = 0
    details = shape.get(raw, "prompt_tokens_details")
    if details is not None:
        shape.obj(details, "usage.prompt_tokens_details")
        where = "usage.prompt_tokens_details.cached_tokens"
        cached = shape.count(shape.get(details, "cached_tokens"), where) or 0
    return Usage(
        input_tokens=max(prompt - cached, 0),
        output_tokens=output,
        cache_read_tokens=cached,
        cache_write_tokens=0,
    )


class OpenAICompatModel(HTTPModel):
    """A model behind an OpenAI-compatible `/chat/completions` endpoint, streamed."""

    provider = "openai-compat"

    def __init__(
        self,
        name: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        max_tokens: int = 4096,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop_sequences: Sequence[str] = (),
        seed: int | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
        retry_base_delay: float = 0.5,
        retry_max_delay: float = 30.0,
        retry_policy: RetryPolicy | None = None,
        prices: PriceOverride | None = None,
        tool_arg_limits: ToolArgLimits | None = None,
    ) -> None:
        super().__init__(
            name,
            max_tokens=max_tokens,
            temperature=temperature,
            timeout=timeout,
            max_retries=max_retries,
            max_prompt_chars=max_prompt_chars,
            retry_base_delay=retry_base_delay,
            retry_max_delay=retry_max_delay,
            retry_policy=retry_policy,
            prices=prices,
            tool_arg_limits=tool_arg_limits,
        )
        self._base_url = base_url
        self._api_key = api_key
        self.sampling = Sampling(temperature, top_p, top_k, tuple(stop_sequences), seed)

    def _make_client(self) -> Any:
        base_url = self._base_url or os.environ.get(ENV_BASE_URL)
        if not base_url:
            raise ModelConfigError(
                f"{self.label}: no server URL; set the {ENV_BASE_URL} environment variable "
                "or pass base_url= to OpenAICompatModel"
            )
        try:
            import openai
        except ImportError as exc:
            raise ModelConfigError(
                f"{self.label}: the openai package is not installed; "
                "pip install 'loomgraph[openai]'"
            ) from exc
        return openai.AsyncOpenAI(
            api_key=self._api_key or os.environ.get(ENV_API_KEY) or NO_KEY,
            base_url=base_url,
            timeout=self.timeout,
            max_retries=0,  # loomgraph retries; the SDK cannot tell a started stream apart
        )

    def _params(self, request: ModelRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.name,
            "messages": openai_messages(request.messages, request.system),
            "max_tokens": request.max_tokens or self.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            params["tools"] = openai_tools(request.tools)
        if request.tool_choice:
            params["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice}}
        sampling = request.sampling(replace(self.sampling, temperature=self.temperature))
        for name, value in (
            ("temperature", sampling.temperature),
            ("top_p", sampling.top_p),
            ("seed", sampling.seed),
        ):
            if value is not None:
                params[name] = value
        if sampling.stop_sequences:
            params["stop"] = list(sampling.stop_sequences)
        return params

    async def _attempt(
        self, client: Any, params: dict[str, Any], tally: StreamTally
    ) -> AsyncGenerator[ModelChunk, None]:
        try:
            stream = await client.chat.completions.create(**params)
        except Exception as exc:
            raise self._translate(exc) from exc
        request_id: str | None = stream.response.headers.get("x-request-id")
        completion = _Completion(tally, self.tool_arg_limits)
        try:
            while True:
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    err = self._translate(exc, request_id=request_id, streaming=True)
                    err.usage = self._usage(tally.floor(completion.usage))
                    raise err from exc
                for out in self._read(completion, chunk, tally, request_id):
                    yield out
        finally:
            await stream.close()
        if completion.finish is None:
            raise ModelConnectionError(
                f"{self.label}: the stream ended before a finish_reason (request id {request_id})",
                request_id=request_id,
                usage=self._usage(tally.floor(completion.usage)),
            )
        # As reported; a count the server left out (or all of them: some local servers send
        # no usage) is the engine's to estimate, for every model alike
        # (engine.model_answers.unreported_usage).
        yield ModelChunk(type="usage", usage=self._usage(completion.usage))
        # Some local servers say "stop" after tool calls; the calls are what counts.
        finish = completion.finish
        reason = "tool_use" if completion.called else _FINISH_REASONS.get(finish, finish)
        yield ModelChunk(type="finish", finish_reason=reason)

    def _translate(
        self, exc: Exception, *, request_id: str | None = None, streaming: bool = False
    ) -> AdapterError:
        """The typed error for an SDK or transport exception."""
        import openai

        if isinstance(exc, AdapterError):
            return exc
        if isinstance(exc, openai.APIStatusError):
            error_type, detail = body_error(exc.body)
            return error_for_status(
                exc.status_code,
                label=self.label,
                detail=detail,
                error_type=error_type,
                request_id=exc.request_id or request_id,
                retry_after=parse_retry_after(exc.response.headers),
                quota=quota_exhausted(exc.body),
            )
        if isinstance(exc, openai.APITimeoutError):
            return ModelTimeout(
                f"{self.label}: timed out after {self.timeout}s (request id {request_id})",
                request_id=request_id,
            )
        if isinstance(exc, openai.APIConnectionError) or (
            streaming and not isinstance(exc, openai.APIError)
        ):
            cause = exc.__cause__ or exc
            return ModelConnectionError(
                f"{self.label}: connection failed: {type(cause).__name__}: {cause} "
                f"(request id {request_id})",
                request_id=request_id,
            )
        if isinstance(exc, openai.APIError):
            # An error object inside the stream: no status, only the body's type and message.
            error_type, detail = body_error(exc.body)
            return error_for_status(
                None,
                label=self.label,
                detail=detail or exc.message,
                error_type=error_type,
                request_id=request_id,
                quota=quota_exhausted(exc.body),
            )
        raise exc
