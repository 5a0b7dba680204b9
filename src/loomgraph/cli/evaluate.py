"""`loomgraph eval`: run a dataset under one or more architectures, report, and gate."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from loomgraph.cli.agent_args import journal_spec
from loomgraph.cli.console import safe
from loomgraph.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, json_line

__all__ = ["add_parser", "handle"]


def add_parser(sub: Any) -> None:
    """Add the `eval` subcommand."""
    p = sub.add_parser(
        "eval",
        help="evaluate strategies on a dataset: journaled runs, scores, reports, gates",
        description="Run every case of DATASET under each --architecture (as ordinary "
        "journaled runs), score them, print a table and write report.json and report.html "
        "to --out. Interrupted? Run the same command again: it continues where it stopped.",
    )
    p.add_argument("dataset", nargs="?", help="a dataset file: .yaml/.yml, .json or .jsonl/.ndjson")
    p.add_argument(
        "-a",
        "--agent",
        help="an agent file, or MODULE:ATTR naming a function (architecture, **options) -> "
        "Agent; the current folder is on the import path",
    )
    p.add_argument(
        "--architecture",
        action="append",
        default=[],
        metavar="NAME_OR_FILE",
        help="a strategy to evaluate (repeat the option to compare several); default: the "
        "agent's own",
    )
    p.add_argument("--repeat", type=int, default=1, help="runs per case and strategy")
    p.add_argument("--concurrency", type=int, default=4, help="runs at once")
    p.add_argument(
        "--out", default=None, help="folder for state.jsonl and the reports (default: eval-NAME)"
    )
    p.add_argument(
        "--runtime",
        default=None,
        # Checked as `loomgraph run` checks it, before the --out folder is made.
        type=journal_spec,
        metavar="JOURNAL",
        help="journal for the runs (sqlite:PATH or a postgres URL), so an interrupted "
        "evaluation resumes its runs; default: the agent's own",
    )
    p.add_argument("--run-max-tokens", type=int, default=None, help="token cap of each run")
    p.add_argument("--run-max-cost", type=float, default=None, help="USD cap of each run")
    p.add_argument("--judge-model", default=None, help="model of judges that name none")
    p.add_argument("--baseline", default=None, help="an earlier report.json to compare with")
    p.add_argument(
        "--max-drop",
        type=float,
        default=0.0,
        help="with --baseline: the largest drop of a score allowed before exiting with 1",
    )
    p.add_argument(
        "--fail-under", type=float, default=None, help="exit with 1 when a score is under this"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--schema", action="store_true", help="print the JSON Schema of dataset files and exit"
    )


def handle(args: argparse.Namespace) -> int:
    """Run the `eval` subcommand; returns the exit code: 0 every gate held, 1 a gate failed,
    2 no verdict (bad usage or input, found before any run; or the evaluation crashed)."""
    from loomgraph.eval.dataset import Dataset, dataset_json_schema
    from loomgraph.eval.report import (
        check_gate_values,
        gate,
        missing_baselines,
        no_baseline_message,
        read_baseline,
        skipped_scores,
    )

    if args.schema:
        print(json.dumps(dataset_json_schema(), indent=2))
        return EXIT_OK
    if not args.dataset or not args.agent:
        print("loomgraph eval: a DATASET and --agent are needed", file=sys.stderr)
        return EXIT_USAGE
    # Everything that can be checked is checked before the first run: the gate's values,
    # the dataset (its evaluators' regexes, schemas and rubrics too) and the baseline.
    check_gate_values(fail_under=args.fail_under, max_drop=args.max_drop)
    if args.repeat < 1 or args.concurrency < 1:
        print("loomgraph eval: --repeat and --concurrency must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    caps = _run_caps(args)
    if isinstance(caps, str):
        print(f"loomgraph eval: {caps}", file=sys.stderr)
        return EXIT_USAGE
    dataset = Dataset.load(args.dataset)
    baseline = read_baseline(args.baseline) if args.baseline else None
    names = args.architecture or ["default"]
    if baseline is not None and (missing := missing_baselines(baseline, names)):
        # The regression gate could give these strategies no verdict: say so, run nothing.
        print(
            f"loomgraph eval: {no_baseline_message(baseline, missing, args.baseline)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    out = Path(args.out or _default_out(dataset.name))
    out.mkdir(parents=True, exist_ok=True)
    try:
        report = asyncio.run(_evaluate(args, dataset, names, out, caps))
        report.write_json(out / "report.json")
        from loomgraph.eval.html_report import write_html

        write_html(report, out / "report.html")
        if args.json:
            print(json_line(report.to_dict()))
        else:
            _print_table(report)
            print(f"reports: {out / 'report.json'}, {out / 'report.html'}")
    except Exception as err:  # any crash, printing too: no verdict, never "a gate failed"
        return _crashed(err, out)
    errors = sum(s.evaluator_errors for s in report.strategies)
    if errors:
        print(
            f"loomgraph eval: {errors} evaluator error(s), each scored as a failing score "
            f"(see `reason` in {out / 'report.json'}); the next run scores them again",
            file=sys.stderr,
        )
    skips = sum(sum(counts.values()) for counts in skipped_scores(report).values())
    if skips:
        print(
            f"loomgraph eval: {skips} judge score(s) skipped (the judge's max_tokens had no "
            f"room left), each scored as a failing score (see `skipped` in "
            f"{out / 'report.json'}); the next run scores them again",
            file=sys.stderr,
        )
    try:
        failures = gate(
            report, baseline=baseline, max_drop=args.max_drop, fail_under=args.fail_under
        )
    except ValueError as err:  # nothing to gate on: no verdict, never a pass
        print(f"loomgraph eval: no verdict: {err}", file=sys.stderr)
        return EXIT_USAGE
    for failure in failures:
        print(f"gate: {failure}", file=sys.stderr)
    return EXIT_FAILED if failures else EXIT_OK


def _default_out(name: str) -> str:
    """`eval-NAME`, in the current folder whatever the dataset's name holds: a separator
    (or a control character) is written `-` and leading and trailing dots are dropped, so
    `../x` gives `eval-x`, not a folder beside the current one."""
    safe = re.sub(r"[/\\\x00-\x1f]+", "-", name).strip(". -")
    return f"eval-{safe or 'dataset'}"


def _crashed(err: Exception, out: Path) -> int:
    """The evaluation stopped on an error: no verdict (exit 2, never 1, which a failed gate
    gives). Errors of loomgraph's own and of the user's input get one line; anything else
    its traceback too."""
    from loomgraph.authoring.agent_file import AgentFileError
    from loomgraph.errors import LoomgraphError

    if isinstance(err, AgentFileError):
        for problem in err.problems:
            print(f"loomgraph: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(err, LoomgraphError | ValueError | ImportError | OSError):
        traceback.print_exception(err, file=sys.stderr)
    state = out / "state.jsonl"
    # Only a state file that exists keeps runs: a crash before the first run kept none.
    kept = (
        f" (finished runs are kept in {state}; the same command continues from there)"
        if state.exists()
        else ""
    )
    print(f"loomgraph eval: stopped: {type(err).__name__}: {err}{kept}", file=sys.stderr)
    return EXIT_USAGE


def _run_caps(args: argparse.Namespace) -> Any:
    """The per-run caps `--run-max-tokens` and `--run-max-cost` give (None: neither), or
    why they are no caps (a str naming the option): checked before the `--out` folder is
    made, as the other options are."""
    if args.run_max_tokens is None and args.run_max_cost is None:
        return None
    from loomgraph.governance import BudgetConfigError, Caps

    try:
        return Caps(total_tokens=args.run_max_tokens, cost_usd=args.run_max_cost)
    except BudgetConfigError as err:
        option = "--run-max-cost" if err.field == "cost_usd" else "--run-max-tokens"
        return f"{option}: {err}"


async def _evaluate(
    args: argparse.Namespace, dataset: Any, names: list[str], out: Path, caps: Any
) -> Any:
    from loomgraph.eval.run import evaluate

    strategies: dict[str, Any] = {}
    try:
        for name in names:
            strategies[name] = await _agent(args, name, caps)
    except BaseException:
        for agent in strategies.values():  # made before the error: closed, not leaked
            await agent.aclose()
        raise
    total = len(dataset.cases) * len(strategies) * args.repeat
    progress = _Progress(total)
    try:
        return await evaluate(
            dataset,
            strategies,
            judge_model=args.judge_model,
            repeat=args.repeat,
            concurrency=args.concurrency,
            state_file=out / "state.jsonl",
            on_run=progress.advance,
        )
    finally:
        progress.close()
        for agent in strategies.values():
            await agent.aclose()


async def _agent(args: argparse.Namespace, architecture: str, caps: Any) -> Any:
    """The Agent of one strategy; with per-run caps, those added to its own budget (its
    global caps, prices and ledger kept), or a budget of just them when it has none."""
    from loomgraph.cli.agent_args import load_agent

    options: dict[str, Any] = {}
    if architecture != "default":
        options["architecture"] = architecture
    if args.runtime:
        options["runtime"] = args.runtime
    agent = load_agent(args.agent, **options)
    if caps is None:
        return agent
    from loomgraph.eval.run_caps import add_run_caps

    try:
        add_run_caps(agent, caps)
    except BaseException:
        await agent.aclose()
        raise
    return agent


class _Progress:
    """A progress bar on a terminal; nothing when stderr is piped."""

    def __init__(self, total: int) -> None:
        self._bar: Any = None
        if sys.stderr.isatty():
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._task = self._bar.add_task("evaluating", total=total)
            self._bar.start()

    def advance(self, run: Any) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _text(text: str) -> Any:
    """User text (a dataset's name, a strategy's file, an evaluator's name) as Rich draws
    it: as written, never read as markup (`[/]`, `[v2]`), terminal-safe (`safe`)."""
    from rich.text import Text

    return Text(safe(text, newlines=False))


def _print_table(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    evaluators = sorted({e for s in report.strategies for e in s.evaluators})
    table = Table(title=_text(f"evaluation of {report.dataset}"))
    for column in ["strategy", "runs", "pass", "score", *evaluators]:
        table.add_column(_text(column), justify="left" if column == "strategy" else "right")
    for column in ["tokens/run", "cost USD", "p50 s", "p95 s", "visits/run"]:
        table.add_column(column, justify="right")
    for s in report.strategies:
        table.add_row(
            _text(s.strategy),
            str(s.runs),
            f"{s.pass_rate:.0%}",
            f"{s.score:.3f}",
            *(f"{s.evaluators[e]:.3f}" if e in s.evaluators else "" for e in evaluators),
            f"{s.tokens:.0f}",
            f"{s.cost_usd:.4f}",
            f"{s.latency_p50_s:.3f}",
            f"{s.latency_p95_s:.3f}",
            f"{s.node_visits:.1f}",
        )
    # Piped output keeps every column readable instead of squeezing it to 80 characters.
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    for c in report.comparisons:
        console.print(
            _text(
                f"{c.b} - {c.a}: {c.mean_diff:+.3f} per case "
                f"(95% interval [{c.low:+.3f}, {c.high:+.3f}], {c.cases} cases)"
            )
        )
