"""Starting points for authors: `loomgraph new-graph NAME` writes a commented graph file."""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["GRAPH_NAME", "new_graph_yaml", "write_new_graph"]

# Letters, digits, `-` and `_`, starting with a letter or digit (so it never reads as a flag).
GRAPH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")

_TEMPLATE = """\
# {name}.yaml — a loomgraph graph: one loop strategy, as data.
#
#   loomgraph validate {name}.yaml      every problem at once, as file:line: [rule] message
#   loomgraph render {name}.yaml -o {name}.svg      draw it (.svg, .dot or .mmd)
#   Agent("...", model=..., tools=[...], architecture="{name}.yaml")      run it
#
# Reference: docs/graphs.md (this format), docs/validation.md (every rule), docs/authoring.md
# (new node kinds). For completion in your editor: `loomgraph schema > graph.schema.json`.
#
# This starter is a ReAct loop (model <-> tools) followed by one `llm` node that polishes the
# answer. Change it freely; `loomgraph validate` tells you what no longer fits.

schema_version: 1          # the graph file format; 1 is the only one so far
name: {quoted}
version: "1"               # your label for this revision; diagrams show it
description: Call tools until the question is answered, then polish the answer.

# ---------------------------------------------------------------------------------- state
# Every run has the built-in fields `input` (the prompt), `messages` (the conversation,
# reducer append), `usage` (reducer add), `output` (the answer; when no node writes it, the
# last assistant message is the answer) and `error` (what an `on_error` route carried).
# Add your own here, each with a `type` and a `reducer`, which says how a node's patch is
# combined with the value already there:
#   replace   the new value wins (the default)
#   append    add an item, or extend by a list
#               e.g.  notes: {{type: "list[str]", reducer: append, default: []}}
#   merge     dict update
#               e.g.  facts: {{type: "dict[str, str]", reducer: merge, default: {{}}}}
#   add       numbers add up; dicts add key by key
#               e.g.  score: {{type: float, reducer: add, default: 0}}
# Types: str, int, float, bool, any, list[T], dict[K, V], T | None, or a pydantic model by
# import path ("my_pkg.models:Report"). A patch that does not fit the type fails the node.
state:
  style:
    type: str
    reducer: replace
    default: clear and concise, in plain words
    description: how the final answer should read (the `polish` prompt uses it)

# ---------------------------------------------------------------------------------- entry
# The node the run starts at.
entry: model

# ---------------------------------------------------------------------------------- nodes
# Each node has a `kind`, the fields it `reads` and `writes` (every kind has defaults; a
# node sees only what it reads and may write only what it declares), its kind's parameters
# as further keys, and optionally `description`, `max_visits` and the policies shown on
# `model` below. Built-in kinds:
#   model     one model turn over `messages`, the agent's tools on offer   (tools, max_tokens)
#   tools     runs the tool calls of the last assistant turn              (concurrency)
#   llm       one templated prompt; its answer goes into a field   (prompt, output, schema,
#             system, max_tokens, retries)
#   function  your Python function, `fn(state)` or `fn(state, ctx)`      (call: "pkg.mod:fn")
#   subgraph  runs another graph, mapping fields in and out       (graph, inputs, outputs)
#   map       runs a graph once per item of a list, concurrently   (graph, over, item,
#             result, output, inputs, concurrency)
#   interrupt stops the run for a person; `agent.resume(run_id, value=...)` continues
#             with the value                                   (request, message, output)
# Installed packages add kinds through the `loomgraph.nodes` entry point (docs/authoring.md).
nodes:
  model:
    kind: model
    description: One model turn over the conversation, with the agent's tools on offer.
    reads: [messages]
    writes: [messages, usage]
    tools: true                 # offer the agent's tools (false: a plain chat turn)
    # Policies, per node:
    #   retry    try a failing visit again: `attempts` in all, waiting backoff * 2**(n-1)
    #            seconds before retry n, only for the error types listed (a name matches the
    #            error's class or any base class; built-in exceptions or loomgraph errors)
    #   timeout  seconds one visit may take; over it, the visit fails with TimeoutError
    #            (which `retry` may list)
    #   on_error after the last attempt, go to this node (instead of failing the run), with
    #            the failure in the `error` field: {{node, type, message}}
    retry: {{attempts: 3, backoff: 1.0, errors: [ModelRateLimited, ModelOverloaded, TimeoutError]}}
    timeout: 120
    # on_error: apologise       # needs a node named `apologise`, e.g. an `llm` node

  tools:
    kind: tools
    description: Run the tool calls of the last assistant turn; results go back in order.
    reads: [messages]
    writes: [messages]
    concurrency: 8              # tool calls of one turn run at most this many at once

  polish:
    kind: llm
    description: Rewrite the model's answer in the wanted style.
    # A Jinja2 template over the state (sandboxed). Besides the fields it may use `state`
    # and `last_message` (`visits` is for edge conditions only). Without `reads:`, the node
    # reads what the template uses.
    prompt: |
      The user asked: {{{{ input }}}}

      Rewrite this answer so that it is {{{{ style }}}}. Keep every fact; add none.

      {{{{ last_message.content }}}}
    output: output              # the field the answer goes into (declared, or built-in)
    # schema: "list[str]"       # ask for a structured answer of this type instead of text

# ---------------------------------------------------------------------------------- edges
# After a node, its edges are tried in file order and the first whose `when` holds is
# taken; an edge without `when` always holds, so it goes last (anything after it is the
# `shadowed-edge` error). A node none of whose edges holds ends the run. `END` ends it too.
# Conditions are sandboxed Jinja2 expressions over the state fields, `state`,
# `last_message` and `visits` (how often each node ran, e.g. "visits.model < 5").
edges:
  - from: model
    to: tools
    when: "last_message.tool_calls | length > 0"    # the model asked for tools
  - from: model
    to: polish                                      # otherwise it answered
  - from: tools
    to: model
  - from: polish
    to: END

# ---------------------------------------------------------------------------------- limits
# A run that reaches a limit ends with status `limit_reached` and a reason naming it —
# never a hang. A node's own `max_visits` overrides `max_node_visits` for that node.
limits:
  max_visits: 50              # node visits per run, all nodes together
  max_node_visits: 25         # visits of any one node per run
"""


def _check_name(name: str) -> str:
    if not isinstance(name, str) or GRAPH_NAME.fullmatch(name) is None:
        raise ValueError(
            f"invalid graph name {name!r}: use 1 to 100 letters, digits, '-' and '_', "
            "starting with a letter or digit (e.g. 'my-strategy')"
        )
    return name


def new_graph_yaml(name: str) -> str:
    """A commented starting graph file named `name`: a model <-> tools loop and an llm node."""
    name = _check_name(name)
    # JSON strings are YAML strings: quoted, so names like `2024` or `yes` stay strings.
    return _TEMPLATE.format(name=name, quoted=json.dumps(name))


def write_new_graph(name: str, directory: Path) -> Path:
    """Write `<name>.yaml` into `directory` (created if missing); never overwrite a file."""
    text = new_graph_yaml(name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    try:
        with path.open("x", encoding="utf-8") as file:
            file.write(text)
    except FileExistsError:
        raise FileExistsError(
            f"{path} already exists; not overwriting it (choose another "
            "name or directory, or delete the file first)"
        ) from None
    return path
