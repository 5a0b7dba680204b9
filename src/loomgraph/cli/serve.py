"""`loomgraph serve --agent FILE|MODULE:ATTR` and `loomgraph keys add|list|revoke`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from typing import Any

from loomgraph.cli.agent_args import add_loaded_agent_option, load_agent
from loomgraph.cli.console import safe
from loomgraph.cli.option_types import seconds
from loomgraph.cli.output import EXIT_OK, EXIT_USAGE, LOG_LEVELS, usage

__all__ = ["add_parser", "handle", "port"]

_PORTS = "a port is 0 to 65535 (0: the system chooses one)"


def port(text: str) -> int:
    """`--port`: a TCP port, 0 to 65535; argparse's usage error (exit 2) names anything else."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number: {_PORTS}") from None
    if not 0 <= value <= 65535:
        # Never passed on: the socket layer would take it modulo 65536, silently.
        raise argparse.ArgumentTypeError(f"{text!r} is no port: {_PORTS}")
    return value


def add_parser(subparsers: Any) -> None:
    """Add `serve` and `keys` to the command's subparsers."""
    serve = subparsers.add_parser("serve", help="serve an agent over HTTP, with the run viewer")
    add_loaded_agent_option(serve)
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    serve.add_argument(
        "--port", type=port, default=8000, help="the port to listen on (0: the system chooses)"
    )
    serve.add_argument(
        "--dev",
        action="store_true",
        help="development: trust an X-User-Id header (only on a loopback address)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        type=str.lower,
        choices=LOG_LEVELS,
        help="uvicorn's log level (debug, info, warning, error)",
    )
    serve.add_argument(
        "--fleet",
        action="store_true",
        help="submit runs to the worker fleet (`loomgraph worker`) instead of running them "
        "in this process; needs a postgres:// journal",
    )
    serve.add_argument(
        "--expiry",
        type=seconds(),
        default=5.0,
        metavar="SECONDS",
        help="look for runs whose approval request expired this often; send them on (denied)",
    )
    keys = subparsers.add_parser("keys", help="API keys of the server (stored hashed)")
    cmds = keys.add_subparsers(dest="keys_command", required=True)
    add = cmds.add_parser("add", help="make a key for USER and print it (shown once)")
    add.add_argument("user", help="the user id the key acts as")
    add_loaded_agent_option(add, "its journal keeps the keys")
    add.add_argument("--approver", action="store_true", help="may answer approvals")
    add.add_argument("--label", default="", help="a note to tell keys apart")
    listed = cmds.add_parser("list", help="the stored keys: id, user, role, label, made")
    add_loaded_agent_option(listed, "its journal keeps the keys")
    revoke = cmds.add_parser("revoke", help="delete a key by its id; refused from then on")
    revoke.add_argument("key_id", help="the key's id (see `keys list`)")
    add_loaded_agent_option(revoke, "its journal keeps the keys")


def handle(args: argparse.Namespace) -> int:
    """Run `serve` or `keys`."""
    if args.command == "keys":
        return asyncio.run(_keys(args))
    return _serve(args)


async def _keys(args: argparse.Namespace) -> int:
    from loomgraph.serve.store import MemoryStore, open_store

    if args.keys_command == "add" and not args.user.strip():
        return usage("keys add needs a user id: the key acts as that user (got an empty one)")
    agent = load_agent(args.agent)
    try:
        connect = getattr(agent.deps.runtime, "connect", None)
        if connect is not None:
            await connect()
        store = open_store(agent.deps.runtime)
        if isinstance(store, MemoryStore):
            print(
                "loomgraph: this agent's journal is in memory; it keeps no keys. "
                "Give the agent a durable runtime (sqlite: or postgres:)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        try:
            return await _KEY_COMMANDS[args.keys_command](store, args)
        finally:
            await store.close()
    finally:
        await agent.aclose()


# User ids and labels are stored text (whoever ran `keys add`, or an older journal): printed
# terminal-safe, each on one line (`safe`), as docs/cli.md promises for text from runs.


def _cell(text: str) -> str:
    return safe(text, newlines=False)


async def _add_key(store: Any, args: argparse.Namespace) -> int:
    key = await store.add_key(args.user, approver=args.approver, label=args.label)
    found = await store.key(key)
    role = " (approver)" if args.approver else ""
    print(key, flush=True)  # made here, in hex: nothing to escape
    print(
        f"key {found.key_id} for {_cell(args.user)}{role}; it is shown only now (only its hash "
        "is kept)",
        file=sys.stderr,
    )
    return EXIT_OK


async def _list_keys(store: Any, args: argparse.Namespace) -> int:
    for key in await store.keys():
        made = time.strftime("%Y-%m-%d %H:%M", time.gmtime(key.created_at))
        role = "approver" if key.approver else "-"
        print(
            f"{key.key_id}  {_cell(key.user_id)}  {role}  {made} UTC  {_cell(key.label)}".rstrip()
        )
    return EXIT_OK


async def _revoke_key(store: Any, args: argparse.Namespace) -> int:
    gone = await store.revoke(args.key_id)
    if gone is None:
        return usage(f"no key has the id {args.key_id!r} (see `keys list`)")
    print(f"revoked key {gone.key_id} of {_cell(gone.user_id)}", file=sys.stderr)
    return EXIT_OK


_KEY_COMMANDS = {"add": _add_key, "list": _list_keys, "revoke": _revoke_key}


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from loomgraph.agent.fleet_errors import FleetNeedsPostgres
    from loomgraph.serve.app import create_app
    from loomgraph.serve.auth import DevModeRefused

    agent = load_agent(args.agent)
    try:
        app = create_app(
            agent, dev=args.dev, host=args.host, fleet=args.fleet, expiry_seconds=args.expiry
        )
    except (DevModeRefused, FleetNeedsPostgres, ValueError) as err:
        print(f"loomgraph: refused: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.dev:
        print(
            f"loomgraph: development mode: X-User-Id is trusted (bound to {args.host} only)",
            file=sys.stderr,
        )
    started = _Startup(app)
    config = uvicorn.Config(started, host=args.host, port=args.port, log_level=args.log_level)
    logging.getLogger("uvicorn.error").addFilter(started.quiet)

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:  # the journal answered and the address is ours
                where = " and ".join(_urls(args.host, self.servers))
                said = f"serving on {where} (viewer at /ui)"
                print(f"loomgraph: {said}", file=sys.stderr, flush=True)

    server = Server(config)
    try:  # (the app's lifespan closes the agent, in the server's loop)
        server.run()
    except KeyboardInterrupt:  # as `uvicorn.run`: Ctrl-C stops the server, and that is all
        pass
    except SystemExit:  # uvicorn's exit 3 on a failed start (3: "the run waits", to the CLI)
        if server.started:
            raise
    if started.failed:  # the journal is down, say: one line, as other errors
        return usage(f"not serving: {started.failure or 'the app did not start'}")
    if not server.started:  # uvicorn said why (the address is in use, say)
        return usage(f"not serving: could not listen on {args.host}:{args.port}")
    return EXIT_OK


def _urls(host: str, servers: list[Any]) -> list[str]:
    """The URL of each port the listening sockets have: the one the system chose for
    `--port 0` (a host name of two addresses may get two ports then), never the option."""
    ports = sorted({sock.getsockname()[1] for server in servers for sock in server.sockets})
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address, as a URL writes it
    return [f"http://{shown}:{bound}" for bound in ports]


class _Startup:
    """The app, its failure to start (a journal that cannot be reached) kept to be told in
    one line, not as uvicorn's traceback and exit code 3 (to the CLI: "the run waits")."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.failed = False
        self.failure: BaseException | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        up = False

        async def told(message: Any) -> None:
            nonlocal up
            if message["type"] == "lifespan.startup.failed":
                self.failed = True
                message = {**message, "message": ""}  # not the traceback: our line says it
            up = up or message["type"] == "lifespan.startup.complete"
            await send(message)

        try:
            await self.app(scope, receive, told)
        except Exception as err:
            if up:
                raise
            self.failure = err

    def quiet(self, record: logging.LogRecord) -> bool:
        """Leave out uvicorn's own line on a failed start (ours names the problem)."""
        return not self.failed or "startup failed" not in record.getMessage()
