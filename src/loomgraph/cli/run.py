"""`loomgraph run`: run an agent on a prompt, its events streamed (live view on a terminal);
at a terminal its questions and approvals are asked there (`asking`); Ctrl-C stops the run
cleanly, and `cli.main` says how to resume it (`DrivenRun`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from loomgraph.cli import agent_args
from loomgraph.cli import approvals as cli_approvals
from loomgraph.cli import journal as cli_journal
from loomgraph.cli.answer_commands import say_how_to_answer, say_how_to_approve
from loomgraph.cli.console import can_ask, colour, warn
from loomgraph.cli.output import EXIT_FAILED, DrivenRun, emit_event, exit_code

if TYPE_CHECKING:  # agent files are read when a command names one
    from loomgraph.authoring.agent_spec import BudgetSpec

NO_INPUT_HELP = (
    "never ask on this terminal: a question (an interrupt) or an approval stops the run to "
    "wait, as in a pipe (default: at a terminal, without --json, they are asked there)"
)


def add_no_input_option(parser: argparse.ArgumentParser) -> None:
    """`--no-input`: a command at a terminal that would ask there does not."""
    parser.add_argument("--no-input", action="store_true", help=NO_INPUT_HELP)


def add_run_parser(sub: Any) -> None:
    """Add `run` to the `loomgraph` subparsers."""
    run = sub.add_parser("run", help="run an agent on a prompt and stream its events")
    run.add_argument("prompt", help="what the user asks; - reads it from stdin")
    agent_args.add_agent_file_option(run)
    agent_args.add_agent_options(run, "react")
    run.add_argument(
        "--instructions",
        default=None,
        help="the system prompt (default: the agent file's, else 'You are a helpful assistant.')",
    )
    run.add_argument("--user", default=None, help="the user the run is for (budgets, memory)")
    run.add_argument("--session", default=None, help="a session id grouping runs of one chat")
    run.add_argument(
        "--json", action="store_true", help="print events as JSON Lines (one object a line)"
    )
    agent_args.add_runtime_option(run, required=False)
    agent_args.add_permissions_option(run)
    run.add_argument(
        "--approve",
        action="store_true",
        help="ask when a rule says ask, reading the answer from stdin even when it is no "
        "terminal (at a terminal this is the default; elsewhere without it: with a journal "
        "the run stops to wait for `loomgraph runs approve`, else ask means deny)",
    )
    add_no_input_option(run)


def handle(args: argparse.Namespace, driven: DrivenRun) -> int:
    """Run `loomgraph run`, the run it starts followed in `driven` (for the line Ctrl-C
    prints, `cli.main`); returns the exit code."""
    return asyncio.run(_run(args, driven))


async def _run(args: argparse.Namespace, driven: DrivenRun) -> int:
    prompt = prompt_of(args)
    given = args.runtime  # as the command line gave it (the agent file's is not repeated)
    journal = agent_args.runtime_of(args)
    runtime = cli_journal.open_journal(journal, create=True) if journal else None
    args.runtime = journal  # who answers an ask depends on whether the journal keeps runs
    default = None if args.agent else "You are a helpful assistant."
    view = _live_view() if not args.json and colour() else None
    agent = agent_args.build_agent(
        args,
        instructions=args.instructions or default,
        runtime=runtime,
        permissions=agent_args.load_permissions(args.permissions),
        approval_handler=cli_approvals.approver_for(args, view.paused if view else None),
    )
    _say_caps_unkept(args, journal)
    asking = can_ask(args)
    result: Mapping[str, Any] = {}
    try:
        events = agent.stream(prompt, user_id=args.user, session_id=args.session)
        result = await _shown(events, args.json, view, driven)
        if asking:  # the questions asked here, each answer going on with the run
            from loomgraph.cli.asking import answer_questions

            async def go_on(answer: Any) -> Mapping[str, Any]:
                resumed = agent.resume_stream(str(driven.run_id), value=answer)
                return await _shown(resumed, args.json, view, driven)

            result = await answer_questions(result, agent.deps.runtime, go_on)
    finally:
        await agent.aclose()
    durable = cli_journal.keeps_runs(journal)
    say_how_to_answer(result, durable, args, given)
    if durable:  # an approval left waiting (in a pipe, or on the terminal): how to give it
        say_how_to_approve(result, args, given)
    status = result.get("status")
    return exit_code(str(status)) if status else EXIT_FAILED


def prompt_of(args: argparse.Namespace) -> str:
    """The prompt: as given, or read whole from stdin for `-` (UTF-8, without the line end
    that closes it); an empty or undecodable stdin, or `--approve` (which reads its answers
    from the same stdin), is a UsageError."""
    if args.prompt != "-":
        return str(args.prompt)
    if args.approve:
        raise cli_journal.UsageError(
            "the prompt is read from stdin (-), so --approve cannot read answers from it: "
            "give the prompt as an argument, or approve later with `loomgraph runs approve`"
        )
    try:
        text = sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as err:
        raise cli_journal.UsageError(
            f"the prompt on stdin is not UTF-8 text (byte {err.start}: {err.reason})"
        ) from None
    if not text.strip():
        raise cli_journal.UsageError("the prompt on stdin (-) is empty")
    return text.removesuffix("\n").removesuffix("\r")


def _say_caps_unkept(args: argparse.Namespace, journal: str | None) -> None:
    """Warn when the agent file's budget caps spending across runs but the run's journal
    keeps nothing after the command: the budget's ledger lives with the journal, so each
    command would start it empty and the caps would hold only within that one command."""
    loaded = agent_args.agent_file(args)
    if loaded is None or loaded.spec.budget is None or cli_journal.keeps_runs(journal):
        return
    caps = caps_across_runs(loaded.spec.budget)
    if not caps:  # wall_clock_s alone: each run's own, kept by the run
        return
    where = "no journal" if not journal else f"its journal in memory ({journal})"
    warn(
        f"the budget's {', '.join(caps)} hold only within this command: the run has {where}, "
        "and the budget's ledger lives with the journal, so every command starts it empty; "
        "give the agent file `runtime: sqlite:PATH` (or --runtime) to keep the caps across "
        "commands",
        style="yellow",
    )


def caps_across_runs(spec: BudgetSpec) -> list[str]:
    """The budget's caps that count the spending of many runs together — every cap but
    `wall_clock_s`, which is each run's own — by where the file gives them (`model_calls`,
    `per_user.cost_usd`, `users.alice.tool_calls`): the caps a ledger must outlive a run for."""
    from loomgraph.authoring.agent_spec import CapsSpec

    counted = [name for name in CapsSpec.model_fields if name != "wall_clock_s"]

    def given(caps: CapsSpec | None, at: str) -> list[str]:
        return [at + name for name in counted if caps and getattr(caps, name) is not None]

    found = given(spec, "") + given(spec.per_user, "per_user.")
    for user, caps in (spec.users or {}).items():
        found += given(caps, f"users.{user}.")
    return found


async def _shown(
    events: AsyncIterator[Any], as_json: bool, view: Any, driven: DrivenRun
) -> Mapping[str, Any]:
    """Print a run's events as they come (the live `view` kept up to date, when there is
    one) until it stops; its result, as a dict (with its status), empty if it never ended."""
    result: Mapping[str, Any] = {}
    with view if view is not None else nullcontext():
        async for event in events:
            driven.see(event)
            if view is not None:
                view.see(event)
            if event.kind != "model_chunk" or view is None:
                emit_event(event, as_json)
            if event.kind == "run_completed":
                ended = event.payload.get("result")
                ended = ended if isinstance(ended, Mapping) else {}
                result = {**ended, "status": event.payload["status"]}
    return result


def _live_view() -> Any:
    from loomgraph.cli.live import LiveView

    return LiveView()
