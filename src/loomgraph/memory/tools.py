"""Memory tools: plain async functions an agent calls to edit its own memory of a user.

The user comes from `user_id_getter` at call time (the Agent passes one that reads the
run's identity), never from the model's arguments, so a model cannot write into another
user's memory. Errors (an over-long block, an empty field) become the tool's error result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

from loomgraph.memory.base import MemoryStore
from loomgraph.memory.seed import recalled_text
from loomgraph.protocols import tool_run

MemoryTool = Callable[..., Awaitable[str]]

# The tools that write what later runs are prompted with: a way out of the run for the text
# they are given, so the Agent offers them as egress tools (their tainted calls are checked).
WRITING_TOOLS = frozenset({"remember_fact", "update_block"})


def memory_tools(
    memory: MemoryStore,
    user_id_getter: Callable[[], str | None],
    *,
    run_id_getter: Callable[[], str | None] | None = None,
    session_id_getter: Callable[[], str | None] | None = None,
    editable_blocks: Collection[str] | None = None,
) -> list[MemoryTool]:
    """`remember_fact`, `update_block` and `recall`, bound to `memory` and the current user.

    `run_id_getter` and `session_id_getter` stamp recorded facts with their run and session
    (so forgetting the session takes them along, even when the run never finished); without
    them, the run the engine says the tool call belongs to (`protocols.tool_run`) is used.
    `editable_blocks`, when given, limits which blocks the agent may change.
    """

    def stamp() -> tuple[str | None, str | None]:
        run = tool_run.get()
        run_id = run_id_getter() if run_id_getter is not None else None
        if run_id is None and run is not None:
            run_id = run.run_id
        if session_id_getter is not None:
            return run_id, session_id_getter()
        # The call's run is this run (or there is no run id to tell): its session is ours.
        same = run is not None and run_id in (None, run.run_id)
        return run_id, run.session_id if same and run is not None else None

    async def remember_fact(
        subject: str, predicate: str, object: str, confidence: float = 1.0
    ) -> str:
        """Record a lasting fact about the user; it replaces an older one with the same
        subject and predicate.

        Args:
            subject: who or what it is about, e.g. "user" or "user's sister".
            predicate: the relation, e.g. "lives in" or "prefers".
            object: the value, e.g. "Lisbon".
            confidence: how sure you are, from 0 to 1.
        """
        run_id, session_id = stamp()
        fact = await memory.add_fact(
            user_id_getter(),
            subject,
            predicate,
            object,
            confidence=confidence,
            source_run=run_id,
            session_id=session_id,
        )
        return f"remembered: {fact.text()}"

    async def update_block(name: str, text: str) -> str:
        """Replace a block of your working memory, which you see in every conversation
        with this user.

        Args:
            name: the block, e.g. "preferences".
            text: its whole new content; empty text deletes the block.
        """
        if editable_blocks is not None and name not in editable_blocks:
            raise ValueError(
                f"block {name!r} is not editable; editable: "
                f"{', '.join(sorted(editable_blocks)) or 'none'}"
            )
        user_id = user_id_getter()
        if isinstance(text, str) and not text.strip():  # other types: `set_block` says so
            deleted = await memory.delete_block(user_id, name)
            return f"deleted block {name!r}" if deleted else f"there was no block {name!r}"
        await memory.set_block(user_id, name, text)
        return f"updated block {name!r} ({len(text)} characters)"

    async def recall(query: str) -> str:
        """Search your memory of this user: facts and earlier conversations (each clipped,
        the whole bounded by the memory's limits).

        Args:
            query: words to look for.
        """
        user_id = user_id_getter()
        facts = await memory.search_facts(user_id, query)
        episodes = await memory.search_episodes(user_id, query)
        # Bounded as the seed is: a stored answer of a megabyte must not come back whole.
        return recalled_text(facts, episodes, memory.limits) or "nothing found"

    return [remember_fact, update_block, recall]
