"""Any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp, OpenAI itself).

Built on the official `openai` package, an optional extra (`pip install loomgraph[openai]`),
imported at the first call only. Same chunk semantics, retries and typed errors as the
Anthropic adapter: text deltas stream out as they arrive, tool calls are assembled from their
argument fragments and handed out only when the choice has finished. The request is built
in `openai_request`, the stream read in `openai_stream`; this module makes the calls.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from loomgraph.models._adapter import DEFAULT_MAX_PROMPT_CHARS, ChunkReader, HTTPModel, StreamTally
from loomgraph.models._settings import check_key, check_url
from loomgraph.models.errors import (
    AdapterError,
    ModelConfigError,
    ModelTimeout,
    body_error,
    body_status,
    error_for_status,
    parse_retry_after,
    quota_exhausted,
)
from loomgraph.models.openai_request import openai_params
from loomgraph.models.openai_stream import ChatCompletion
from loomgraph.models.retry import RetryPolicy
from loomgraph.protocols import ModelRequest, Sampling
from loomgraph.protocols.pricing import PriceOverride
from loomgraph.protocols.tool_args import ToolArgLimits

__all__ = ["ENV_API_KEY", "ENV_BASE_URL", "NO_KEY", "OpenAICompatModel"]

ENV_API_KEY = "OPENAI_API_KEY"
ENV_BASE_URL = "OPENAI_BASE_URL"
# Local servers need no key, but the SDK insists on one; this placeholder is sent instead.
NO_KEY = "no-key"


class OpenAICompatModel(HTTPModel):
    """A model behind an OpenAI-compatible `/chat/completions` endpoint, streamed."""

    provider = "openai-compat"
    request_id_header = "x-request-id"

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
        # Given here, a key or URL that could never be sent is refused at once; from the
        # environment, at the first call (a model must construct without them).
        if api_key:
            check_key(api_key, "api_key", self.label)
        if base_url:
            check_url(base_url, "base_url", self.label)
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
        api_key = self._api_key or os.environ.get(ENV_API_KEY) or NO_KEY
        if not self._base_url:
            check_url(base_url, f"${ENV_BASE_URL}", self.label)
        if not self._api_key:
            check_key(api_key, f"${ENV_API_KEY}", self.label)
        try:
            import openai
        except ImportError as exc:
            raise ModelConfigError(
                f"{self.label}: the openai package is not installed; "
                "pip install 'loomgraph[openai]'"
            ) from exc
        return openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=self.timeout,
            max_retries=0,  # loomgraph retries; the SDK cannot tell a started stream apart
        )

    def _params(self, request: ModelRequest) -> dict[str, Any]:
        # `temperature` may be set on the model after construction (the base keeps it).
        defaults = replace(self.sampling, temperature=self.temperature)
        return openai_params(self.name, request, max_tokens=self.max_tokens, defaults=defaults)

    async def _create(self, client: Any, params: dict[str, Any]) -> Any:
        return await client.chat.completions.create(**params)

    def _reader(self, tally: StreamTally) -> ChunkReader:
        return ChatCompletion(tally, self.tool_arg_limits)

    def _translate(
        self, exc: Exception, *, request_id: str | None, streaming: bool
    ) -> AdapterError | None:
        """The typed error for an exception of the SDK's (or the HTTP library's under it)."""
        import openai

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
                f"{self.label}: timed out: nothing received for timeout={self.timeout}s "
                f"(request id {request_id})",
                request_id=request_id,
            )
        if isinstance(exc, openai.APIConnectionError):
            return self._connection_failed(exc, request_id)
        if isinstance(exc, openai.APIError):
            # An error object inside the stream: no status but the one its body may name.
            error_type, detail = body_error(exc.body)
            return error_for_status(
                body_status(exc.body),
                label=self.label,
                detail=detail or exc.message,
                error_type=error_type,
                request_id=request_id,
                quota=quota_exhausted(exc.body),
            )
        return None
