"""The HTML report: one offline file with tables and plots (matplotlib, imported only here)."""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path
from typing import Any

from jinja2 import Environment

from loomgraph.eval.report import Report
from loomgraph.protocols import Usage

__all__ = ["PLOTS", "write_html"]

# The plots every report carries, by the `data-plot` name tests and users can find them by.
PLOTS = ("score-distribution", "cost-vs-score", "case-heatmap")

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>loomgraph evaluation: {{ r.dataset }}</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #1d2330; background: #fff; }
@media (prefers-color-scheme: dark) { body { color: #e6e8ee; background: #14171f; } }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { padding: .3rem .7rem; border-bottom: 1px solid #8884; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1.5rem 0; } figure svg { max-width: 100%; height: auto; background: #fff; }
</style></head><body>
<h1>Evaluation of {{ r.dataset }}</h1>
<h2>Strategies</h2>
<table data-table="strategies"><tr><th>strategy</th><th>runs</th><th>pass rate</th>
<th>score</th>{% for e in evaluators %}<th>{{ e }}</th>{% endfor %}<th>tokens/run</th>
<th>cost USD</th><th>p50 s</th><th>p95 s</th><th>visits/run</th></tr>
{% for s in r.strategies %}<tr><td>{{ s.strategy }}</td><td>{{ s.runs }}</td>
<td>{{ "%.0f%%"|format(100 * s.pass_rate) }}</td><td>{{ "%.3f"|format(s.score) }}</td>
{% for e in evaluators %}<td>{{ "%.3f"|format(s.evaluators[e]) if e in s.evaluators else "" }}</td>
{% endfor %}<td>{{ "%.0f"|format(s.tokens) }}</td><td>{{ "%.4f"|format(s.cost_usd) }}</td>
<td>{{ "%.3f"|format(s.latency_p50_s) }}</td><td>{{ "%.3f"|format(s.latency_p95_s) }}</td>
<td>{{ "%.1f"|format(s.node_visits) }}</td></tr>{% endfor %}</table>
{% if r.comparisons %}<h2>Paired comparisons</h2>
<table data-table="comparisons"><tr><th>b against a</th><th>cases</th><th>mean difference</th>
<th>95% interval</th></tr>{% for c in r.comparisons %}<tr><td>{{ c.b }} - {{ c.a }}</td>
<td>{{ c.cases }}</td><td>{{ "%+.3f"|format(c.mean_diff) }}</td>
<td>[{{ "%+.3f"|format(c.low) }}, {{ "%+.3f"|format(c.high) }}]</td></tr>{% endfor %}</table>
{% endif %}
{% for name, title, svg in plots %}<figure data-plot="{{ name }}"><figcaption>{{ title }}
</figcaption>{{ svg }}</figure>{% endfor %}
</body></html>
"""


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prologue: the SVG is inline


def _plots(report: Report) -> list[tuple[str, str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    # Strategy names and case ids are the user's: plain text, never mathtext (`$...$` read
    # as TeX renders another name, or crashes the report when a `$` has no pair).
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        return _draw(report)


def _draw(report: Report) -> list[tuple[str, str, str]]:
    from matplotlib import pyplot as plt

    names = [s.strategy for s in report.strategies]
    scores: dict[str, list[float]] = defaultdict(list)
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    priced = any(r["outcome"]["usage"].get("cost_usd") for r in report.runs)
    for run in report.runs:
        score = run["score"]  # as the report scores a run: 0 when it did not complete
        usage = run["outcome"]["usage"]
        cost = (
            usage.get("cost_usd", 0.0)
            if priced
            else Usage.from_dict(usage, trusted=True).total_tokens
        )
        scores[run["outcome"]["strategy"]].append(score)
        points[run["outcome"]["strategy"]].append((cost, score))
    plots = []
    figure, axes = plt.subplots(figsize=(7, 3.5))
    axes.boxplot([scores[n] for n in names], tick_labels=names)
    axes.set_ylabel("score per run")
    axes.set_ylim(-0.05, 1.05)
    plots.append(("score-distribution", "Score distribution per strategy", _svg(figure)))
    plt.close(figure)
    figure, axes = plt.subplots(figsize=(7, 3.5))
    dots = []
    for name in names:
        xs, ys = zip(*points[name], strict=True) if points[name] else ((), ())
        dots.append(axes.scatter(xs, ys, alpha=0.6))
    axes.set_xlabel("cost per run (USD)" if priced else "tokens per run")
    axes.set_ylabel("score")
    # Handles and labels given together: a label starting with `_` is then shown too (a
    # `label=` argument starting with `_` would hide the strategy from the legend).
    axes.legend(dots, names)
    plots.append(("cost-vs-score", "Cost versus score, per run", _svg(figure)))
    plt.close(figure)
    cases = sorted(report.case_scores)
    grid = [[report.case_scores[c].get(n, float("nan")) for n in names] for c in cases]
    figure, axes = plt.subplots(figsize=(1.5 + 1.4 * len(names), 0.8 + 0.28 * max(len(cases), 1)))
    if cases:
        image = axes.imshow(grid, aspect="auto", vmin=0, vmax=1, cmap="RdYlGn")
        axes.set_xticks(range(len(names)), names)
        axes.set_yticks(range(len(cases)), cases)
        figure.colorbar(image, ax=axes, label="mean score")
    else:  # no cases, nothing to plot (imshow refuses an empty grid)
        axes.set_axis_off()
        axes.text(0.5, 0.5, "no cases", ha="center", va="center")
    plots.append(("case-heatmap", "Score per case and strategy", _svg(figure)))
    plt.close(figure)
    return plots


def write_html(report: Report, path: str | Path) -> Path:
    """Write the report as one self-contained HTML file (inline SVG plots, no scripts)."""
    evaluators = sorted({e for s in report.strategies for e in s.evaluators})
    page = (
        Environment(autoescape=True)
        .from_string(_PAGE)
        .render(r=report, evaluators=evaluators, plots=_markup(_plots(report)))
    )
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


def _markup(plots: list[tuple[str, str, str]]) -> list[tuple[str, str, Any]]:
    from markupsafe import Markup

    return [(name, title, Markup(svg)) for name, title, svg in plots]
