"""`vote`: self-consistency — ask the model the same question N times, keep the majority answer.

One sampled answer can be a fluke; the answer most samples agree on rarely is. The node
renders its prompt once, asks the model `samples` times through `ctx.call_model` (so every
sample is journaled, budgeted, traced and replayed on resume like any other model call),
pulls the answer out of each reply, and writes the winner, every vote, and the winner's
share of the votes, so that an edge can route a split vote elsewhere
(`when: "agreement < 0.6"`).

This kind is made available by the `loomgraph.nodes` entry point in this package's
`pyproject.toml` (`vote = "loomgraph_debate.vote:VoteNode"`), not by importing this module.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from loomgraph import NodeContext, NodeKind
from loomgraph.graph.conditions import compile_template, condition_scope, names_used
from loomgraph.graph.spec import Graph
from loomgraph.graph.state import DERIVED_NAMES
from loomgraph.protocols import Message, ModelRequest, ModelResponse, Usage
from pydantic import BaseModel, ConfigDict, Field

# The event a vote node emits with its tally, after the samples are in.
VOTE_TALLY = "vote_tally"


class VoteParams(BaseModel):
    """Parameters of a `vote` node (the YAML keys next to `kind: vote`)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="Jinja2 template over the state: the question to sample")
    system: str | None = Field(None, description="Jinja2 template; default: the agent's")
    samples: int = Field(5, ge=1, le=25, description="how many times the model is asked")
    concurrency: int = Field(4, ge=1, description="samples asked at once")
    extract: str | None = Field(
        None,
        description="regular expression finding the answer in a reply (its first group, "
        "else the whole match; the last match counts); default: the whole reply",
    )
    loose: bool = Field(
        True,
        description="count answers equal when they differ only in "
        "case, spacing or trailing punctuation",
    )
    output: str = Field("output", description="the state field the winning answer goes into")
    votes: str | None = Field(
        None,
        description="state field (list[str]) for every sample's "
        "answer, in sample order; '' where no answer was found",
    )
    agreement: str | None = Field(
        None, description="state field (float) for the winner's share of all samples, 0 to 1"
    )
    max_tokens: int | None = Field(None, ge=1)


class VoteNode(NodeKind):
    """Sample the model `samples` times on one prompt and keep the most frequent answer."""

    Params = VoteParams
    params: VoteParams
    templates = ("prompt", "system")  # validated when the graph loads; reads are found in them

    def reads(self) -> list[str]:
        """Declared reads, or the state fields the templates use."""
        if self.spec.reads is not None:
            return list(self.spec.reads)
        p = self.params
        used = names_used(p.prompt, expression=False) | names_used(p.system or "", expression=False)
        return sorted(used - DERIVED_NAMES | ({"messages"} if "last_message" in used else set()))

    def writes(self) -> list[str]:
        """Declared writes, or the output, votes and agreement fields, plus usage."""
        if self.spec.writes is not None:
            return list(self.spec.writes)
        p = self.params
        fields = [p.output, p.votes, p.agreement, "usage"]
        return list(dict.fromkeys(f for f in fields if f))

    def check(self, graph: Graph) -> list[str]:
        """Load-time problems: an `extract` that does not compile."""
        if self.params.extract is not None:
            try:
                re.compile(self.params.extract)
            except re.error as err:
                return [f"extract {self.params.extract!r} is not a regular expression: {err}"]
        return []

    def bind(self, graph: Graph) -> None:
        """Compile the templates and the pattern once, when the graph is compiled."""
        p = self.params
        self.prompt: Callable[[Mapping[str, Any]], str] = compile_template(p.prompt)
        self.system_template = compile_template(p.system) if p.system else None
        self.pattern = re.compile(p.extract) if p.extract is not None else None

    async def run(self, state: Mapping[str, Any], ctx: NodeContext) -> dict[str, Any]:
        """Ask `samples` times, tally the answers, and return the winner, votes and agreement."""
        p = self.params
        scope = condition_scope(state)
        messages: list[Message] = [{"role": "user", "content": self.prompt(scope)}]
        system = self.system_template(scope) if self.system_template else ctx.system
        gate = asyncio.Semaphore(p.concurrency)

        async def sample() -> ModelResponse:
            async with gate:
                # A fresh request each time: the context stamps its run id and call index.
                return await ctx.call_model(
                    ModelRequest(messages=list(messages), system=system, max_tokens=p.max_tokens)
                )

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(sample()) for _ in range(p.samples)]
        except BaseExceptionGroup as failed:
            # Raise the error itself, so a node's `retry: {errors: [...]}` can match its type.
            raise failed.exceptions[0] from None
        responses = [task.result() for task in tasks]

        answers = [self.answer_in(r.text) for r in responses]
        winner, count, counts = self.tally(answers)
        agreement = count / p.samples
        await ctx.emit(
            VOTE_TALLY,
            {"votes": answers, "counts": counts, "winner": winner, "agreement": agreement},
        )
        patch: dict[str, Any] = {p.output: winner, "usage": _total_usage(responses)}
        if p.votes:
            patch[p.votes] = answers
        if p.agreement:
            patch[p.agreement] = agreement
        return patch

    def answer_in(self, text: str) -> str:
        """The answer in one reply: the last match of `extract` (its first group), or the
        whole reply; '' when there is none."""
        if self.pattern is None:
            return text.strip()
        matches = list(self.pattern.finditer(text))
        if not matches:
            return ""
        last = matches[-1]
        return (last.group(1) if self.pattern.groups else last.group(0)).strip()

    def tally(self, answers: list[str]) -> tuple[str, int, dict[str, int]]:
        """(winner, its votes, votes per answer): the most frequent non-empty answer, as first
        written; a tie goes to the answer that came first."""
        counts: Counter[str] = Counter()
        first_form: dict[str, str] = {}
        for answer in answers:
            if not answer:
                continue
            key = _loose_key(answer) if self.params.loose else answer
            counts[key] += 1
            first_form.setdefault(key, answer)
        if not counts:
            return "", 0, {}
        key, count = max(counts.items(), key=lambda kv: kv[1])  # first of equals wins
        return first_form[key], count, {first_form[k]: n for k, n in counts.items()}


def _loose_key(answer: str) -> str:
    return " ".join(answer.casefold().split()).rstrip(".!?;:, ")


def _total_usage(responses: list[ModelResponse]) -> dict[str, Any]:
    """The samples' usage, in the JSON shape the state's `usage` field keeps."""
    return sum((r.usage for r in responses), Usage()).to_dict()
