"""Claude through the official `anthropic` SDK: streaming, tool use, retries, usage and cost.

The SDK is imported inside methods only, so importing loomgraph does not pay for it. The
SDK's own retries are off; `loomgraph.models.retry` retries instead, because only it knows
whether part of the answer was already streamed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from loomgraph.models._adapter import DEFAULT_MAX_PROMPT_CHARS, ChunkReader, HTTPModel, StreamTally
from loomgraph.models._settings import check_key, check_url
from loomgraph.models.anthropic_request import (
    anthropic_messages,
    anthropic_system,
    anthropic_tools,
)
from loomgraph.models.anthropic_stream import MessageTurn
from loomgraph.models.errors import (
    AdapterError,
    ModelMissingKey,
    ModelTimeout,
    body_error,
    error_for_status,
    parse_retry_after,
    quota_exhausted,
)
from loomgraph.models.retry import RetryPolicy
from loomgraph.protocols import ModelRequest, Sampling
from loomgraph.protocols.pricing import PriceOverride
from loomgraph.protocols.tool_args import ToolArgLimits

__all__ = [
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "AnthropicModel",
    "anthropic_messages",
    "anthropic_system",
    "anthropic_tools",
]

ENV_API_KEY = "ANTHROPIC_API_KEY"
ENV_BASE_URL = "ANTHROPIC_BASE_URL"


def _is_timeout(exc: BaseException) -> bool:
    # Mid-stream the SDK lets the HTTP library's own ReadTimeout through; its class differs
    # between SDK versions (httpx, httpx2), so it is recognised by name.
    return any("Timeout" in cls.__name__ for cls in type(exc).__mro__)


class AnthropicModel(HTTPModel):
    """A Claude model on the Messages API, streamed through the official `anthropic` SDK."""

    provider = "anthropic"

    def __init__(
        self,
        name: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_tokens: int = 4096,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop_sequences: Sequence[str] = (),
        seed: int | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        prompt_caching: bool = False,
        max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
        retry_base_delay: float = 0.5,
        retry_max_delay: float = 30.0,
        retry_policy: RetryPolicy | None = None,
        prices: PriceOverride | None = None,
        tool_arg_limits: ToolArgLimits | None = None,
        total_timeout: float | None = None,
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
            total_timeout=total_timeout,
        )
        self.prompt_caching = prompt_caching
        self.sampling = Sampling(temperature, top_p, top_k, tuple(stop_sequences), seed)
        # Keys and URLs from the environment are read at the first call, not here: a model
        # named in a graph file must construct without credentials (for validation, dry runs
        # and tests). One given here that could never be sent is refused at once.
        if api_key:
            check_key(api_key, "api_key", self.label)
        if base_url:
            check_url(base_url, "base_url", self.label)
        self._api_key = api_key
        self._base_url = base_url

    def _make_client(self) -> Any:
        api_key = self._api_key or os.environ.get(ENV_API_KEY)
        if not api_key:
            raise ModelMissingKey(
                f"{self.label}: no API key; set the {ENV_API_KEY} environment variable "
                "or pass api_key= to AnthropicModel"
            )
        base_url = self._base_url or os.environ.get(ENV_BASE_URL) or None
        if not self._api_key:
            check_key(api_key, f"${ENV_API_KEY}", self.label)
        if base_url and not self._base_url:
            check_url(base_url, f"${ENV_BASE_URL}", self.label)
        import anthropic

        return anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            timeout=self.timeout,
            max_retries=0,  # loomgraph retries; the SDK cannot tell a started stream apart
        )

    def _params(self, request: ModelRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.name,
            "max_tokens": request.max_tokens or self.max_tokens,
            "messages": anthropic_messages(request.messages),
            "stream": True,
        }
        system = anthropic_system(request.system, caching=self.prompt_caching)
        if system is not None:
            params["system"] = system
        if request.tools:
            params["tools"] = anthropic_tools(request.tools, caching=self.prompt_caching)
        if request.tool_choice:
            params["tool_choice"] = {"type": "tool", "name": request.tool_choice}
        sampling = request.sampling(self._defaults())
        if sampling.stop_sequences:
            params["stop_sequences"] = list(sampling.stop_sequences)
        # Recent SDKs dropped `temperature`, `top_p` and `top_k` from create()'s signature
        # (newer models fix them); older models still accept them in the body.
        body = {
            name: value
            for name, value in (
                ("temperature", sampling.temperature),
                ("top_p", sampling.top_p),
                ("top_k", sampling.top_k),
            )
            if value is not None
        }
        if body:
            params["extra_body"] = body
        return params

    def _defaults(self) -> Sampling:
        # `temperature` may be set on the model after construction (the base keeps it).
        return replace(self.sampling, temperature=self.temperature)

    async def _create(self, client: Any, params: dict[str, Any]) -> Any:
        return await client.messages.create(**params)

    def _reader(self, tally: StreamTally) -> ChunkReader:
        return MessageTurn(tally, self.tool_arg_limits)

    def _translate(
        self, exc: Exception, *, request_id: str | None, streaming: bool
    ) -> AdapterError | None:
        """The typed error for an exception of the SDK's (or the HTTP library's under it)."""
        import anthropic

        if isinstance(exc, anthropic.APIStatusError):
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
        if isinstance(exc, anthropic.APITimeoutError) or _is_timeout(exc):
            return ModelTimeout(
                f"{self.label}: timed out: nothing received for timeout={self.timeout}s "
                f"(request id {request_id})",
                request_id=request_id,
            )
        if isinstance(exc, anthropic.APIConnectionError):
            return self._connection_failed(exc, request_id)
        return None
