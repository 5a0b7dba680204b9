"""Reading a streamed Messages API answer: its raw events, one at a time, into loomgraph's
chunks. Text deltas are handed out as they arrive; a tool call once its block is complete;
usage as `message_start` and `message_delta` report it. An event not shaped as the API
documents it, or out of place, raises `MalformedChunk` (`HTTPModel._read` makes it a
`ModelBadResponse`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from loomgraph.models import _shape as shape
from loomgraph.models._adapter import StreamTally
from loomgraph.models._shape import CallCutOff, MalformedChunk
from loomgraph.protocols import FinishReason, ModelChunk, ToolCall, Usage
from loomgraph.protocols.tool_args import ToolArgLimits, check_tool_args, parse_tool_args

__all__ = ["MessageTurn"]


class MessageTurn:
    """The state of one streamed message: open tool blocks, usage so far, stop reason."""

    end_marker = "message_stop"

    def __init__(self, tally: StreamTally, limits: ToolArgLimits) -> None:
        self.tally = tally
        self.limits = limits
        self.tool_blocks: dict[int, dict[str, Any]] = {}
        self.other_blocks: set[int] = set()  # open blocks of other types (text, thinking...)
        self.usage = Usage()
        self.output_reported = False  # message_delta carried the output count
        self.stop_reason: str | None = None
        self.stopped = False
        # A tool block whose input did not parse, and why: cut off by max_tokens, or invalid,
        # which only the stop reason (in the message_delta next) tells apart.
        self.unparsed: tuple[dict[str, Any], ValueError] | None = None
        # The message's id and the model that wrote it (for telemetry), from message_start.
        self.response_id: str | None = None
        self.response_model: str | None = None

    def feed(self, event: Any) -> Iterator[ModelChunk]:
        """The chunks one raw stream event produces. An event of the wrong shape raises
        MalformedChunk (or the TypeError/AttributeError reading it does); tool input that is
        not a JSON object within the limits raises ValueError (see `HTTPModel._read`)."""
        kind = shape.get(event, "type")
        if self.unparsed is not None and kind not in ("message_delta", "ping"):
            raise self.unparsed[1]  # the answer went on: the call was not cut off
        if kind == "message_start":
            message = shape.obj(shape.get(event, "message"), "message_start.message")
            self.response_id = shape.label(shape.get(message, "id"))
            self.response_model = shape.label(shape.get(message, "model"))
            usage = shape.get(message, "usage")
            if usage is not None:
                self._take_usage(usage, "message_start.message.usage")
        elif kind == "content_block_start":
            at = shape.index(shape.get(event, "index"), "content_block_start.index")
            block = shape.obj(
                shape.get(event, "content_block"), "content_block_start.content_block"
            )
            block_type = shape.get(block, "type")
            if block_type == "tool_use":
                self._open_tool(at, block)
            else:
                self.other_blocks.add(at)
            if block_type == "text":
                piece = shape.text(shape.get(block, "text"), f"text block {at}'s text")
                if piece:
                    self.tally.add(piece)
                    yield ModelChunk(type="text", text=piece)
        elif kind == "content_block_delta":
            at = shape.index(shape.get(event, "index"), "content_block_delta.index")
            delta = shape.obj(shape.get(event, "delta"), "content_block_delta.delta")
            delta_type = shape.get(delta, "type")
            if delta_type == "text_delta":
                if at not in self.other_blocks:
                    # Text for no open block (never started, already stopped, or a tool's
                    # input): the answer's blocks are not what the stream says they are.
                    what = "a tool_use block" if at in self.tool_blocks else "not an open block"
                    raise MalformedChunk(f"text_delta for block {at}, which is {what}")
                piece = shape.text(shape.get(delta, "text"), "text_delta.text")
                if piece:
                    self.tally.add(piece)
                    yield ModelChunk(type="text", text=piece)
            elif delta_type == "input_json_delta":
                piece = shape.text(
                    shape.get(delta, "partial_json"), "input_json_delta.partial_json"
                )
                tool = self.tool_blocks.get(at)
                if tool is not None:
                    self.tally.add(piece)
                    tool["parts"].append(piece)
                elif at not in self.other_blocks:  # (a server tool's input is not ours to run)
                    raise MalformedChunk(
                        f"input_json_delta for block {at}, which is not an open tool_use block"
                    )
        elif kind == "content_block_stop":
            # Only now is the tool call complete; a partial block is never handed out.
            at = shape.index(shape.get(event, "index"), "content_block_stop.index")
            self.other_blocks.discard(at)
            tool = self.tool_blocks.pop(at, None)
            if tool is not None:
                try:
                    call = _tool_call(tool, self.limits)
                except ValueError as exc:
                    self.unparsed = (tool, exc)
                    return
                yield ModelChunk(type="tool_call", call=call)
        elif kind == "message_delta":
            delta = shape.obj(shape.get(event, "delta"), "message_delta.delta")
            reason = shape.text(shape.get(delta, "stop_reason"), "message_delta.stop_reason")
            self.stop_reason = reason or self.stop_reason
            usage = shape.get(event, "usage")
            if usage is not None:
                self._take_usage(usage, "message_delta.usage")
                self.output_reported |= shape.get(usage, "output_tokens") is not None
            if self.unparsed is not None:
                tool, invalid = self.unparsed
                if FinishReason.of(self.stop_reason or "") is FinishReason.MAX_TOKENS:
                    raise CallCutOff(tool["name"], tool["id"]) from invalid
                raise invalid
        elif kind == "message_stop":
            if self.tool_blocks:
                # The model sent a tool call and never finished it: not an answer to act on,
                # and not one to drop either (the run would look complete without the call).
                blocks = ", ".join(map(str, sorted(self.tool_blocks)))
                raise MalformedChunk(
                    f"tool_use block {blocks} was never closed (no content_block_stop "
                    "before message_stop)"
                )
            self.stopped = True

    def ended(self) -> bool:
        """Whether message_stop came."""
        return self.stopped

    def finish_reason(self) -> FinishReason | str:
        """loomgraph's finish reason for the message's stop reason."""
        reason = self.stop_reason or "end_turn"
        return FinishReason.of(reason)  # (the context-window stop is a max-tokens one)

    def reported(self) -> Usage:
        """The message's usage as reported. message_start's output count is its first token
        only; when no message_delta carried the final count, the output is unreported (0)
        and the engine charges its estimate of what was streamed (see docs/models.md)."""
        return self.usage if self.output_reported else replace(self.usage, output_tokens=0)

    def _open_tool(self, at: int, block: Any) -> None:
        if at in self.tool_blocks or at in self.other_blocks:
            raise MalformedChunk(f"content_block_start for block {at}, which is already open")
        call_id = shape.text(shape.get(block, "id"), f"tool_use block {at}'s id")
        name = shape.text(shape.get(block, "name"), f"tool_use block {at}'s name")
        if not call_id or not name:
            raise MalformedChunk(f"tool_use block {at} has no {'id' if not call_id else 'name'}")
        initial = shape.get(block, "input")
        if initial is not None and not isinstance(initial, dict):
            raise MalformedChunk(f"tool_use block {at}'s input is not an object")
        self.tool_blocks[at] = {"id": call_id, "name": name, "parts": [], "initial": initial or {}}

    def _take_usage(self, usage: Any, where: str) -> None:
        # message_delta counts are cumulative, so a later value replaces an earlier one. A
        # report with an impossible count is used not at all (each count read first).
        shape.obj(usage, where)
        counts = {
            ours: shape.count(shape.get(usage, theirs), f"{where}.{theirs}")
            for ours, theirs in (
                ("input_tokens", "input_tokens"),
                ("output_tokens", "output_tokens"),
                ("cache_write_tokens", "cache_creation_input_tokens"),
                ("cache_read_tokens", "cache_read_input_tokens"),
            )
        }
        reported = {ours: value for ours, value in counts.items() if value is not None}
        if reported:
            self.usage = replace(self.usage, **reported)


def _tool_call(block: dict[str, Any], limits: ToolArgLimits) -> ToolCall:
    raw = "".join(block["parts"]).strip()
    args = parse_tool_args(raw, limits) if raw else check_tool_args(block["initial"], limits)
    return {"id": block["id"], "tool": block["name"], "args": args}
