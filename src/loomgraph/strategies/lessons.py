"""Reflexion's lessons, kept in the user's working memory so later runs start with them.

What a run writes into memory reaches every later run of the user, in its system prompt. The
lessons are the model's words, and may copy an instruction injected into a tool result; so
they are written only as the `update_block` memory tool writes a block: as a call of that
tool (`update_block(name="lessons", text=...)`), made through the tool gate as any tool call
is: decided (the permission rules, the taint check of egress calls, `on_tainted`,
approvals, hooks), charged as a tool call, journaled, heard by `after_tool`, reported and
audited.

The block holds the newest `MAX_LESSONS` lessons that fit in one working block of the memory
(`MemoryLimits.block_chars`, 2,000 characters by default): a run never fails because its
memory of lessons is full; the oldest lessons make room first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from loomgraph.graph.node_context import NodeContext
from loomgraph.protocols import ToolCall, ToolResult, ToolSpec, escaped

LESSONS_BLOCK = "lessons"
MAX_LESSONS = 20
# What ends a lesson too long for the block even alone.
CUT = "…"
# The journal's name for the write (the same as before the write was gated, so a run journaled
# then replays it); its approval is bound to this key and CALL_ID.
EFFECT = "memory:lessons"
CALL_ID = "lessons"

# The spec of the memory tool (`loomgraph.memory.tools`), an egress tool: what it writes
# leaves the run, into every later run's prompt. Its own, not the tool host's: the write is
# checked the same way whether or not the agent offers the memory tools to the model.
UPDATE_BLOCK: ToolSpec = {
    "name": "update_block",
    "description": "Replace a block of the user's working memory (here: the lessons).",
    "parameters": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "text": {"type": "string"}},
        "required": ["name", "text"],
    },
    "egress": True,
}


def lessons_text(kept: str, lessons: list[str], limit: int | None = None) -> str:
    """The block after adding `lessons` to the `kept` block: each lesson once, as a `- ` line
    (its further lines indented by two spaces, so a lesson of several lines stays whole),
    the newest MAX_LESSONS that fit in `limit` characters as the memory stores them (the
    oldest dropped first; the newest alone cut to fit when even it is too long)."""
    # As the store keeps them (escaped), as `kept` is: a lesson holding a NUL is the same
    # lesson when written again, not a second one.
    fresh = [escaped(lesson) for lesson in map(_one_lesson, lessons) if lesson]
    merged = list(dict.fromkeys([*kept_lessons(kept), *fresh]))[-MAX_LESSONS:]
    if limit is None:
        return "\n".join(map(_entry, merged))
    fitted: list[str] = []
    used = -1  # (no newline before the first line)
    for lesson in reversed(merged):
        used += stored_chars(_entry(lesson)) + 1
        if used > limit:
            break
        fitted.append(lesson)
    if not fitted and merged:  # the newest alone is too long: cut (unless no line fits)
        short = cut(merged[-1], limit)
        fitted = [short] if stored_chars(_entry(short)) <= limit else []
    return "\n".join(map(_entry, reversed(fitted)))


def kept_lessons(kept: str) -> list[str]:
    """The lessons of a block as `lessons_text` writes it: a `- ` line starts one, an
    indented line goes on with it; another line (a block someone wrote by hand) is a lesson
    of its own."""
    found: list[str] = []
    for line in kept.splitlines():
        if line.startswith("- "):
            found.append(line[2:])
        elif found and line.startswith("  "):
            found[-1] += "\n" + line[2:]
        elif line.strip():
            found.append(line.strip())
    return found


def _one_lesson(lesson: str) -> str:
    """A lesson as the block keeps it: its lines (any line break) joined by newlines,
    without blank lines at either end; "" for a lesson of no text."""
    return "\n".join(lesson.splitlines()).strip("\n").rstrip() if lesson.strip() else ""


# The beginning of an escape (`\x00`, `\udc80`…`\udfff`) at the end of a text, not its whole,
# and the backslashes before it (which of them begins an escape cannot be told).
_ESCAPE_BEGUN = re.compile(r"(?:\\(?:x0?|u(?:d(?:[89a-f][0-9a-f]?)?)?)?)+\Z")


def _entry(lesson: str) -> str:
    """A lesson's lines in the block: `- ` before its first, two spaces before the others."""
    return "- " + lesson.replace("\n", "\n  ")


def cut(lesson: str, limit: int) -> str:
    """`lesson` shortened, ending in `…`, so that its entry fits in `limit` characters."""
    text = lesson[: max(limit - len(f"- {CUT}"), 0)]
    while text and stored_chars(_entry(text + CUT)) > limit:  # (escapes, indents take room)
        text = text[:-1]
    # `lesson` is kept escaped: a cut inside `\x00` or `\udcff` would leave half an escape.
    return _ESCAPE_BEGUN.sub("", text) + CUT


def stored_chars(text: str) -> int:
    """The length of `text` as a memory store keeps it (a NUL or lone surrogate escaped)."""
    return len(escaped(text))


def block_limit(memory: object) -> int | None:
    """The most characters the memory keeps in one working block (`MemoryLimits.
    block_chars`), when it says."""
    limit = getattr(getattr(memory, "limits", None), "block_chars", None)
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


async def remember_lessons(state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
    """Keep the run's lessons in the user's working memory (when the agent has a memory
    store), as a call of `update_block` made through the tool gate: decided, charged,
    journaled (a resume does not write them twice), heard and audited as a tool call."""
    lessons = list(state.get("lessons") or [])
    memory = ctx.deps.memory
    get_blocks = getattr(memory, "get_blocks", None)
    set_block = getattr(memory, "set_block", None)
    if not lessons or get_blocks is None or set_block is None:
        return {}
    kept = (await get_blocks(ctx.user_id)).get(LESSONS_BLOCK, "")
    text = lessons_text(kept, lessons, block_limit(memory))
    # Nothing new: nothing to ask about, unless this visit began writing it and never heard
    # back (a crash or failure right after memory kept it): then it is written again (the
    # same text) so the journal settles the write and reports it unknown after a crash.
    if text == kept and not await ctx.unfinished(EFFECT):
        return {}
    call = ToolCall(id=CALL_ID, tool="update_block", args={"name": LESSONS_BLOCK, "text": text})

    async def write(approved: ToolCall) -> ToolResult:
        # As approved (maybe edited: an edit meets UPDATE_BLOCK's parameters first).
        name, new = approved["args"]["name"], approved["args"]["text"]
        delete_block = getattr(memory, "delete_block", None)
        if not new.strip() and delete_block is not None:  # as update_block: empty deletes
            await delete_block(ctx.user_id, name)
            return ToolResult(content=f"deleted block {name!r}")
        await set_block(ctx.user_id, name, new)
        return ToolResult(content=f"kept {len(new)} characters in block {name!r}")

    # Denied (a rule, `on_tainted`, a person): reported and audited so, nothing written.
    await ctx.call_own(call, UPDATE_BLOCK, EFFECT, write)
    return {}
