"""`loomgraph audit verify|head`: check a file audit log's chain, export its head."""

from __future__ import annotations

import argparse
from typing import Any

from loomgraph.cli import advice
from loomgraph.cli.console import say, warn
from loomgraph.cli.output import EXIT_FAILED, EXIT_OK, usage


def add_audit_parser(sub: Any) -> None:
    """Add `audit` and its subcommands to the `loomgraph` subparsers."""
    audit = sub.add_parser("audit", help="verify an audit log file, or print its head")
    cmds = audit.add_subparsers(dest="audit_command", required=True)
    verify = cmds.add_parser("verify", help="check the chain; exit 1 at the first bad entry")
    verify.add_argument("file", help="the audit log (JSON Lines)")
    verify.add_argument(
        "--head",
        default=None,
        metavar="SEQ:MAC",
        help="a head exported earlier (`loomgraph audit head`), SEQ:HEX64: catches a "
        "truncated tail",
    )
    head = cmds.add_parser("head", help="print the last entry's SEQ:MAC, to store elsewhere")
    head.add_argument("file", help="the audit log (JSON Lines)")
    for parser in (verify, head):
        keys = parser.add_mutually_exclusive_group()
        keys.add_argument(
            "--key-env",
            default=None,
            metavar="NAME",
            help="the key's variable (default: $LOOMGRAPH_AUDIT_KEY)",
        )
        keys.add_argument("--key-file", default=None, metavar="PATH", help="a file holding the key")
        keys.add_argument("--unsigned", action="store_true", help="a log written without a key")


def handle(args: argparse.Namespace) -> int:
    """Run one `loomgraph audit …` command; returns the exit code."""
    from pathlib import Path

    from loomgraph.observability import AuditHead, AuditKeyMissing, FileAuditLog

    # A missing file is not an empty log: verifying the wrong path must not print "ok".
    if not Path(args.file).is_file():
        return usage(f"no audit log at {args.file}")
    # heal=False: checking a log must not change it (a torn tail is reported, not moved).
    try:
        log = FileAuditLog(
            args.file,
            key_file=args.key_file,
            key_env=args.key_env,
            unsigned=args.unsigned,
            heal=False,
        )
    except AuditKeyMissing as err:  # its remedy in this command's options
        return usage(advice.audit_key_missing(err))
    if args.audit_command == "head":
        print(log.head())
        torn = log.torn_bytes()
        if torn:  # the head above is still the last complete entry's
            warn(
                f"{args.file} ends in a torn entry ({torn} bytes after that head: a write cut "
                "off mid-append); `loomgraph audit verify` reports it",
                "yellow",
            )
        return EXIT_OK
    expected = None
    if args.head is not None:
        try:
            expected = AuditHead.parse(args.head)
        except ValueError:
            return usage(
                f"--head {args.head!r} is not a head: give SEQ:HEX64, the entry's seq (digits), "
                "a colon and its MAC (64 hex digits), as `loomgraph audit head` prints it"
            )
    result = log.verify(expected_head=expected)
    if result.ok:
        say(f"ok: {result.entries} entries, head {result.head}", "green")
        return EXIT_OK
    say(f"FAILED at seq {result.first_bad_seq}: {result.problem}", "bold red")
    say(f"{result.entries} entries verified before it, up to {result.head}")
    return EXIT_FAILED
