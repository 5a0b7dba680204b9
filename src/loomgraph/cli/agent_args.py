"""`--agent FILE` (`-a`): every command that runs or inspects an agent can take its agent
file; options given on the command line override what the file says."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loomgraph.authoring.agent_spec import backend_spec_problem
from loomgraph.errors import LoomgraphError
from loomgraph.graph.imports import import_object

if TYPE_CHECKING:  # agent files are read when a command needs one, not when the CLI starts
    from loomgraph.authoring.agent_file import AgentFile

AGENT_HELP = (
    "an agent file (docs/agent-files.md): its model, tools, graph, journal, permissions, "
    "budget …; options given here override it"
)


def add_loaded_agent_option(parser: argparse.ArgumentParser, what: str = "") -> None:
    """The required `--agent FILE_OR_MODULE:ATTR` of a command that loads its Agent with
    `load_agent`; `what` says what the command needs of it."""
    parser.add_argument(
        "--agent",
        required=True,
        metavar="FILE_OR_MODULE:ATTR",
        help="an agent file (.yaml/.yml), or MODULE:ATTR naming an Agent or a function making "
        "one" + (f"; {what}" if what else ""),
    )


class AgentNotFound(LoomgraphError, ValueError):
    """`--agent` names neither an agent file nor an Agent (or a function returning one)."""


def load_agent(spec: str, **overrides: Any) -> Any:
    """The Agent `--agent` names: an agent file (`overrides` over what it says), or
    `MODULE:ATTR` naming an Agent or a function `(**overrides) -> Agent`, imported from the
    current folder first."""
    import inspect

    from loomgraph.agent.agent import Agent

    # A file by its suffix, in any case, or by being there (as a graph is found by either).
    if Path(spec).suffix.lower() in (".yaml", ".yml") or (":" not in spec and Path(spec).is_file()):
        return Agent.from_file(spec, **overrides)
    if ":" not in spec:
        raise AgentNotFound(f"--agent {spec!r}: use an agent file (.yaml) or MODULE:ATTR")
    target = import_object(spec, what="agent")
    if isinstance(target, Agent) and overrides:
        raise AgentNotFound(
            f"--agent {spec!r} is an Agent, so its {', '.join(sorted(overrides))} cannot be "
            "set; name a function (**options) -> Agent, or an agent file"
        )
    if inspect.isfunction(target):
        try:  # a function that is no factory (a tool, a step) is said so, never called
            inspect.signature(target).bind(**overrides)
        except TypeError as err:
            raise AgentNotFound(
                f"--agent {spec!r} is a function that cannot be called as an Agent factory "
                f"({err}); name an Agent or a function (**options) -> Agent"
            ) from None
        target = target(**overrides)
    if not isinstance(target, Agent):
        raise AgentNotFound(f"--agent {spec!r} is a {type(target).__name__}, not an Agent")
    return target


def add_agent_file_option(parser: argparse.ArgumentParser) -> None:
    """Add `-a/--agent FILE`."""
    parser.add_argument("-a", "--agent", default=None, metavar="FILE", help=AGENT_HELP)


@cache
def _load(path: str) -> AgentFile:
    from loomgraph.authoring.agent_file import load_agent_file

    return load_agent_file(path)


def agent_file(args: argparse.Namespace) -> AgentFile | None:
    """The agent file `--agent` names (loaded once), or None; AgentNotFound for what reads
    as `MODULE:ATTR` and is no file (a command that reads the file's settings needs one)."""
    path = getattr(args, "agent", None)
    if not path:
        return None
    if (
        ":" in path
        and Path(path).suffix.lower() not in (".yaml", ".yml")
        and not Path(path).is_file()
    ):
        raise AgentNotFound(
            f"--agent {path!r}: this command reads an agent file (.yaml), not MODULE:ATTR "
            "(which serve, worker, mcp-serve, eval and runs cancel take)"
        )
    return _load(str(Path(path).resolve()))


def runtime_of(args: argparse.Namespace) -> str | None:
    """The journal: `--runtime`, else the agent file's `runtime`."""
    if getattr(args, "runtime", None):
        return str(args.runtime)
    loaded = agent_file(args)
    return loaded.backend(loaded.spec.runtime) if loaded else None


def graph_of(args: argparse.Namespace, fallback: str | None) -> Any:
    """The graph: `--graph`, else the agent file's, else `fallback`. An agent file given
    is read either way: one that does not load is an error, not an option passed over."""
    loaded = agent_file(args)
    if getattr(args, "graph", None):
        return args.graph
    return loaded.graph if loaded else fallback


def load_model(spec: str) -> Any:
    """`--model`: a name the Agent resolves (`MODULE:ATTR` is found from the current
    directory first)."""
    return spec


def load_tools(paths: Sequence[str]) -> list[Any]:
    """Tools by import path (`module:function`, or `module:LIST` of functions), looked for
    in the current directory first."""
    tools: list[Any] = []
    for path in paths:
        found = import_object(path, what="tool")
        tools.extend(found if isinstance(found, list | tuple) else [found])
    return tools


def build_agent(
    args: argparse.Namespace,
    *,
    default_graph: Any = "react",
    instructions: str | None = None,
    **objects: Any,
) -> Any:
    """The Agent of `--agent` with the command line's options over it, or one made from the
    options alone. `objects` (runtime, permissions, hooks, approval_handler) are given as is;
    None values are left to the file."""
    from loomgraph.agent.agent import Agent

    overrides: dict[str, Any] = {k: v for k, v in objects.items() if v is not None}
    if getattr(args, "model", None) is not None:
        overrides["model"] = load_model(args.model)
    if getattr(args, "tools", None) is not None:
        overrides["tools"] = load_tools(args.tools)
    if getattr(args, "graph", None):
        overrides["architecture"] = args.graph
    if instructions is not None:
        overrides["instructions"] = instructions
    if getattr(args, "agent", None):
        return Agent.from_file(args.agent, **overrides)
    overrides.setdefault("model", "echo")
    overrides.setdefault("architecture", default_graph)
    return Agent(overrides.pop("instructions", ""), **overrides)


def add_agent_options(
    parser: argparse.ArgumentParser, graph_default: str | None, *, graph: bool = True
) -> None:
    """The options that make an Agent: agent file, graph, model, tools; without `graph`, the
    caller adds its own `--graph`."""
    if not any("--agent" in a.option_strings for a in parser._actions):
        add_agent_file_option(parser)
    if graph:
        parser.add_argument(
            "--graph",
            default=None,
            help="built-in graph name or YAML file (default: the agent file's, else "
            + (f"{graph_default})" if graph_default else "the run's graph)"),
        )
    parser.add_argument(
        "--model",
        default=None,
        help="echo, claude-NAME, anthropic:NAME, openai:NAME, or MODULE:ATTR naming a "
        "Model object or a function returning one (default: the agent file's, else echo)",
    )
    parser.add_argument(
        "--tools",
        nargs="*",
        default=None,
        metavar="MODULE:ATTR",
        help="tools to offer: functions, or lists of functions, by import path "
        "(looked for in the current directory first)",
    )


def add_permissions_option(parser: argparse.ArgumentParser) -> None:
    """`--permissions FILE`: the rules a run is governed by (and pinned to)."""
    parser.add_argument(
        "--permissions",
        default=None,
        metavar="FILE",
        help="a permission file (YAML: mode, allow, ask, deny, per_user, sets); a run is "
        "resumed only under the permissions it started with",
    )


def add_runtime_option(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """`--runtime`: the journal, `sqlite:PATH` or `postgres://…`."""
    # Never required by argparse: `--agent FILE` may name the journal instead.
    del required
    parser.add_argument(
        "--runtime",
        default=None,
        type=journal_spec,
        metavar="JOURNAL",
        help="the journal: sqlite:PATH or postgres://user@host/db (default: the agent file's)",
    )


def journal_spec(value: str) -> str:
    """`--runtime`'s value, when it names a journal; one that does not (the check of every
    spec: empty, `sqlite`, `sqlite:`, `sqlite://…`, `postgres`, a DSN naming no database, an
    unknown form) is a usage error naming the option (argparse's `type=`)."""
    problem = backend_spec_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def load_permissions(path: str | None) -> Any:
    """The permissions of `--permissions FILE`, or None for the defaults."""
    if path is None:
        return None
    from loomgraph.governance.permissions import StandardPermissions

    return StandardPermissions.from_file(path)
