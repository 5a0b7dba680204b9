"""Approvals from outside Python: `loomgraph runs pending | approve | deny`, the
`--permissions FILE` option, and who answers an `ask` during `loomgraph run`."""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import sys
from typing import Any

from loomgraph.cli import agent_args, going_on, journal
from loomgraph.cli.answer_commands import named_request, say_how_to_go_on
from loomgraph.cli.console import can_ask
from loomgraph.cli.output import EXIT_OK, DrivenRun, json_line, print_result, table
from loomgraph.engine.effects import Approval, BoundApproval
from loomgraph.protocols import Decision, RunStatus, Runtime, ToolCall
from loomgraph.protocols.tool_args import ToolArgsRejected, parse_tool_args

NO_APPROVER = (
    "nobody can approve it here: pass --approve to be asked on this terminal, or --runtime "
    "sqlite:PATH (or postgres://…) to stop the run and answer later with `loomgraph runs "
    "approve`"
)


def approver_for(args: argparse.Namespace, pause: Any = None) -> Any:
    """Who answers an `ask` in `loomgraph run`: the person at the terminal (`can_ask`: asked
    approve / deny / edit, `pause` taking the live status line away meanwhile; or --approve,
    whatever stdin is), the journal (a durable --runtime: the run stops and waits), or
    nobody (then ask means deny: with no journal, or one in memory, a waiting run could
    never be answered)."""
    if can_ask(args):
        from loomgraph.cli.asking import TerminalApprover

        return TerminalApprover(can_wait=journal.keeps_runs(args.runtime), pause=pause)
    if args.approve:
        return ask_on_terminal
    if journal.keeps_runs(args.runtime):
        return None
    return deny_unattended


def deny_unattended(call: ToolCall, decision: Decision) -> Approval:
    """With nobody to ask, ask means deny, with a reason that says how to be asked."""
    return Approval(call["id"], False, approver="nobody", reason=NO_APPROVER)


async def ask_on_terminal(call: ToolCall, decision: Decision) -> bool:
    """`--approve` when stdin is no terminal (a pipe): ask on stderr, read a line (given
    ahead of the prompt too: a script's answers); anything but yes is no. Read as the
    terminal's answers are (`asking.next_line`), never blocking the event loop, so Ctrl-C
    stops the command at once. (At a terminal, `asking.TerminalApprover` asks instead.)"""
    from loomgraph.cli.asking import approval_question, next_line

    print(
        f"\nloomgraph: {approval_question(call, decision)}. Allow? [y/N] ",
        end="",
        file=sys.stderr,
        flush=True,
    )
    line = await next_line()
    answer = (line or b"").decode("utf-8", "replace").strip().lower()
    return answer in ("y", "yes")


def login_name() -> str:
    """Who answers when `--as` names nobody: the login the command runs under, so the audit
    log's `approval` entry never names no one ("unknown login" when the OS cannot say)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no USER/LOGNAME and no passwd entry (a bare container)
        return "unknown login"


def add_parsers(cmds: Any) -> list[argparse.ArgumentParser]:
    """Add `runs pending`, `runs approve` and `runs deny`; the parsers made."""
    pending = cmds.add_parser(
        "pending",
        help="runs awaiting approval: the call, its arguments, where its tool comes from (origin "
        "and digest), the rule that asked",
    )
    pending.add_argument("--user", default=None, help="only this user's runs")
    agent_args.add_agent_file_option(pending)
    approve = cmds.add_parser("approve", help="approve a pending call and resume its run")
    deny = cmds.add_parser("deny", help="deny a pending call and resume its run")
    for cmd in (approve, deny):
        cmd.add_argument("run_id", help="the run awaiting approval")
        cmd.add_argument("call_id", help="the pending call's id (see `runs pending`)")
        cmd.add_argument(
            "--as",
            dest="approver",
            default=None,
            metavar="APPROVER",
            help="who answers, for the journal and the audit log (default: your login name)",
        )
        cmd.add_argument(
            "--request",
            default="",
            metavar="KEY",
            help="the request answered (`runs pending --json` key; required): answer it or "
            "nothing, never a later call with the same id",
        )
        agent_args.add_agent_options(cmd, None, graph=False)
        going_on.add_graph_option(cmd)
        agent_args.add_permissions_option(cmd)
    approve.add_argument(
        "--args", default=None, metavar="JSON", help="edited arguments (checked again)"
    )
    deny.add_argument("--reason", default="", help="why, for the model and the audit log")
    for cmd in (pending, approve, deny):
        agent_args.add_runtime_option(cmd, required=True)
        help_ = "print JSON lines" if cmd is pending else going_on.JSON_HELP
        cmd.add_argument("--json", action="store_true", help=help_)
    return [pending, approve, deny]


COMMANDS = frozenset({"pending", "approve", "deny"})

# `runs pending` for a request journaled before tools' identities were recorded.
UNRECORDED = "(not recorded)"


def handle(args: argparse.Namespace, driven: DrivenRun) -> int:
    """Run `runs pending | approve | deny` (the run an answer goes on with in `driven`);
    returns the exit code."""
    if args.runs_command == "pending":
        return journal.journaled(args, _pending)
    return journal.journaled(args, functools.partial(_answer, driven=driven))


async def _pending(args: argparse.Namespace, runtime: Runtime) -> int:
    from loomgraph.agent.answers import expired, pending_of

    rows: list[dict[str, Any]] = []
    for record in await runtime.runs(args.user, status=RunStatus.AWAITING_APPROVAL):
        pending = pending_of(record)
        if pending is None or not pending.call:
            continue
        rows.append(
            {
                "run_id": record.run_id,
                "user_id": record.user_id,
                "call_id": pending.call["id"],
                "key": pending.key,
                "tool": pending.call["tool"],
                # Which tool, from where: the one the approval is bound to (None: a request
                # journaled before identities were recorded).
                "tool_identity": None if pending.tool is None else pending.tool.to_dict(),
                "args": pending.call["args"],
                "rule": pending.rule,
                "node": pending.node,
                "tainted": pending.tainted,
                "deadline": pending.deadline,
                # Past it, an answer is refused: `runs resume RUN` goes on without one.
                "expired": expired(pending),
            }
        )
    if args.json:
        for row in rows:
            print(json_line(row))
        return EXIT_OK
    if not rows:
        print("no run awaits approval", file=sys.stderr)
        return EXIT_OK
    table(
        ("run", "call", "tool and arguments", "tool from", "rule"),
        [
            (
                r["run_id"],
                r["call_id"],
                f"{r['tool']}({json.dumps(r['args'])})",
                r["tool_identity"]["shown"] if r["tool_identity"] else UNRECORDED,
                f"{r['rule']}{' [tainted]' if r['tainted'] else ''}"
                f"{' [expired]' if r['expired'] else ''}",
            )
            for r in rows
        ],
    )
    return EXIT_OK


async def _answer(args: argparse.Namespace, runtime: Runtime, driven: DrivenRun) -> int:
    if args.approver is not None and not args.approver.strip():
        raise journal.UsageError("--as names nobody: name who answers, or leave it out")
    record, _ = await journal.load_record(runtime, args.run_id)
    command = (args.runs_command, args.run_id, args.call_id)
    key = named_request(record, args, args.runtime, command)
    edited = None
    if args.runs_command == "approve" and args.args is not None:
        if not args.args.strip():  # (which `parse_tool_args` reads as no arguments: `{}`)
            raise journal.UsageError("--args is empty: give a JSON object of arguments")
        try:  # with the limits a model's arguments meet: never a RecursionError
            edited = parse_tool_args(args.args)
        except ToolArgsRejected as err:
            raise journal.UsageError(f"--args must be a JSON object of arguments: {err}") from None
    answer = BoundApproval(
        args.call_id,
        args.runs_command == "approve",
        edited,
        approver=login_name() if args.approver is None else args.approver,
        reason=args.reason if args.runs_command == "deny" else "",
        key=key,
    )
    # The graph as `runs resume` picks it: the run's pinned one unless --graph says otherwise.
    graph = await going_on.run_graph(args, runtime, record, args.graph_choice)
    permissions = agent_args.load_permissions(args.permissions)
    agent = going_on.agent_for(args, runtime, record, graph.architecture, permissions)
    driven.going_on(args.run_id)
    sink = driven.sink(agent.deps.hooks.on_event)
    result = await agent.resumer().resume(sink, args.run_id, graph=graph.choice, approve=answer)
    code = print_result(result, args.json)
    # Gone on to a question or another approval: how to answer it, as `runs resume` says.
    say_how_to_go_on(result.to_dict(), args, args.runtime)
    return code
