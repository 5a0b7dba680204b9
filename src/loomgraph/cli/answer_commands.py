"""The commands that go on with a stopped run, as the CLI prints them: `runs resume` (and
with `--value JSON --request KEY`, the answer to a question), `runs approve` / `runs deny`
(an approval), with the options the command line gave (the agent file, model, tools,
permissions, the journal with its password masked)."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Mapping
from typing import Any

from loomgraph.agent.answers import pending_of
from loomgraph.cli.console import mask_passwords, warn
from loomgraph.cli.journal import UsageError
from loomgraph.protocols import RunRecord, RunStatus

__all__ = [
    "going_on_command",
    "named_request",
    "resume_command",
    "say_how_to_answer",
    "say_how_to_approve",
    "say_how_to_go_on",
    "unkept",
]


def resume_command(run_id: str, args: argparse.Namespace, runtime: str | None, *extra: str) -> str:
    """The command that resumes a run, to print: with the agent file (`-a`) when there is
    one (its journal, tools and model), and the `--model`, `--tools` and `--permissions`
    the command line gave (a resume without them would have other tools, or be refused
    for other permissions), with `--runtime` when it was given on the command line, its
    password masked (`***`, said so: to be given again), never printed; `extra` words
    (`--value JSON`) at its end, as they are."""
    return going_on_command(("resume", run_id), args, runtime, *extra)


def going_on_command(
    command: tuple[str, ...], args: argparse.Namespace, runtime: str | None, *extra: str
) -> str:
    """`loomgraph runs COMMAND…` (`resume RUN`, `approve RUN CALL`) with the options that go
    on with the run, as `resume_command` says."""
    words = ["loomgraph", "runs", *(shlex.quote(word) for word in command)]
    agent = getattr(args, "agent", None)
    if agent:
        words += ["-a", shlex.quote(agent)]
    for option in ("model", "permissions"):
        given = getattr(args, option, None)
        if given:
            words += [f"--{option}", shlex.quote(given)]
    tools = getattr(args, "tools", None)
    if tools:
        words += ["--tools", *(shlex.quote(t) for t in tools)]
    note = ""
    if runtime:
        shown = mask_passwords(runtime)
        words += ["--runtime", shlex.quote(shown)]
        if shown != runtime:
            note = "  (the --runtime password is not shown: give it again)"
    return " ".join([*words, *extra]) + note


def unkept(journal: str | None) -> str:
    """Why a run of `journal` cannot be resumed or answered later: no journal, or one in
    memory (`keeps_runs` is false), which the command's end forgets."""
    if not journal:
        return "had no journal (--runtime)"
    return f"had its journal in memory ({journal}), which keeps nothing after the command"


def say_how_to_answer(
    result: Any, durable: bool, args: argparse.Namespace, runtime: str | None
) -> None:
    """When the run waits for an `interrupt` node's value (`result`: its result, as a dict),
    say on stderr how to answer it: with a `durable` journal, the `runs resume … --value
    JSON --request KEY` command (`args`, `runtime`: as the command line gave them), else
    that it cannot be answered. Nothing for any other result (an approval is answered with
    `runs approve`)."""
    if not isinstance(result, Mapping):
        return
    pending, run_id = result.get("pending"), str(result.get("run_id", ""))
    if not isinstance(pending, Mapping) or not pending.get("type"):
        return
    if not durable:
        warn(f"run {run_id} {unkept(args.runtime)}, so its question cannot be answered", "yellow")
        return
    command = resume_command(run_id, args, runtime, "--value", "JSON", *_request(pending))
    warn(
        f"answer with: {command}  (a value of type {pending['type']}; "
        "text that is not JSON is a string)",
        "yellow",
    )


def say_how_to_approve(
    result: Mapping[str, Any], args: argparse.Namespace, runtime: str | None
) -> None:
    """When the run awaits approval of a call (`result`, as a dict) that was not answered
    on the terminal, say on stderr the `runs approve` / `runs deny` commands that answer it,
    named by its request. Nothing for any other result."""
    pending, run_id = result.get("pending"), str(result.get("run_id", ""))
    if result.get("status") != RunStatus.AWAITING_APPROVAL or not isinstance(pending, Mapping):
        return
    call = pending.get("call")
    if not isinstance(call, Mapping) or not isinstance(call.get("id"), str):
        return
    approve = going_on_command(("approve", run_id, call["id"]), args, runtime, *_request(pending))
    warn(f"approve with: {approve}  (or `runs deny`, the same way)", "yellow")


def _request(pending: Mapping[str, Any]) -> tuple[str, ...]:
    """`--request KEY` for a pending request that has a key: named, an answer is for that
    request only, so a command run again answers no later one."""
    key = pending.get("key")
    return ("--request", shlex.quote(key)) if isinstance(key, str) and key else ()


def named_request(
    record: RunRecord, args: argparse.Namespace, runtime: str | None, command: tuple[str, ...]
) -> str:
    """The request an answering command (`command`: `approve RUN CALL`, `deny RUN CALL`,
    `resume RUN`) answers: its `--request KEY`. Without one, while the run waits at a
    request that has a key, the command is refused (`UsageError`) and the line that answers
    that request is printed: a command run twice (a script's retry) must never answer the
    run's next request, a second call with the same id or the same question again."""
    key = getattr(args, "request", "")
    if key:
        return str(key)
    pending = pending_of(record)
    asks_value = command[0] == "resume"
    # Not waiting for this kind of answer (the resume says why), or a request from before
    # requests had keys: nothing to name.
    if pending is None or not pending.key or bool(pending.type) != asks_value:
        return ""
    extra = ("--value", "JSON") if asks_value else ()
    if pending.call is not None:  # the call the run waits at (another named is refused)
        command = (*command[:2], pending.call["id"])
    line = going_on_command(command, args, runtime, *extra, "--request", shlex.quote(pending.key))
    where, later = (
        ("printed when the run stopped; `runs show RUN --json` has it", "the same question again")
        if asks_value
        else ("`runs pending --json` lists it", "a later call with the same id")
    )
    raise UsageError(
        f"name the request this answers with --request KEY ({where}): without it, the "
        f"command run again would answer whatever the run asks next, {later} included. Run "
        f"{record.run_id} waits at request {pending.key}: {line}"
    )


def say_how_to_go_on(
    result: Mapping[str, Any], args: argparse.Namespace, runtime: str | None
) -> None:
    """For a run of a durable journal that stopped waiting (`result`, as a dict): the
    commands that answer its question or its pending call (`say_how_to_answer`,
    `say_how_to_approve`); nothing for any other result."""
    say_how_to_approve(result, args, runtime)
    say_how_to_answer(result, True, args, runtime)
