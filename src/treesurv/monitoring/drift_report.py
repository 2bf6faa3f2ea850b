"""The drift report as one self-contained HTML page (inline SVG plots, no scripts,
nothing fetched from a CDN), for a person to read after a drift job."""

from __future__ import annotations

import html
import io
from typing import Any

from treesurv.core.validation import RowIssue
from treesurv.monitoring.drift import DriftReport, FeatureDrift

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 70rem; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.drift td { background: #fde2e1; font-weight: 600; }
tr.warn td { background: #fff4d6; }
.status { display: inline-block; padding: .2rem .6rem; border-radius: .3rem; color: #fff; }
.status.ok { background: #2e7d32; } .status.drift { background: #c62828; }
.status.warn { background: #b26a00; }
.status.insufficient_data { background: #757575; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; } figcaption { font-size: .9rem; text-align: center; }
"""


def render(
    report: DriftReport, context: dict[str, Any], problems: list[RowIssue] | None = None
) -> str:
    """The page: verdict, context (log or file, period, reference), a table and one
    plot per feature comparing reference and current shares; `problems`, the rows
    of a file that were left out (`--on-error skip`)."""
    rows: list[tuple[str, FeatureDrift]] = []
    if report.prediction:
        rows.append(("prediction", report.prediction))
    rows += list(report.features.items())
    status = html.escape(report.status)
    warned = [name for name, f in rows if f.verdict == "warn"]
    badge = f'<span class="status {status}">{status.replace("_", " ")}</span>'
    if warned:
        badge += f' <span class="status warn">warn: {html.escape(", ".join(warned))}</span>'
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>treesurv drift report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>treesurv drift report</h1>",
        f"<p>{badge} {report.rows} {report.unit}; generated {html.escape(report.generated)}</p>",
        _context(context, report),
    ]
    if report.notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes) + "</ul>")
    if rows:
        parts.append(_table(rows))
        parts.append('<div class="plots">')
        parts += [_figure(label, f) for label, f in rows]
        parts.append("</div>")
    if problems:
        parts.append(_problems(problems))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _context(context: dict[str, Any], report: DriftReport) -> str:
    t = report.thresholds
    items = {
        **{k: v for k, v in context.items() if v is not None},
        "flag rule": (
            f"PSI ≥ {t.psi:g} (predictions: {t.prediction_psi:g}) and test p-value < "
            f"{t.p_value:g}; at least {t.min_rows} rows"
        ),
        "warn rule": (
            f"not flagged, but PSI ≥ {t.warn_psi:g} and test p-value < {t.warn_p_value:g}"
        ),
    }
    body = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in items.items()
    )
    return f"<table>{body}</table>"


def _table(rows: list[tuple[str, FeatureDrift]]) -> str:
    head = (
        "<tr><th>feature</th><th>kind</th><th>PSI</th><th>test</th><th>statistic</th>"
        "<th>p-value</th><th>reference mean</th><th>current mean</th><th>verdict</th></tr>"
    )
    body = []
    for label, f in rows:
        cls = f' class="{f.verdict}"' if f.verdict != "ok" else ""
        body.append(
            f"<tr{cls}><td>{html.escape(label)}</td><td>{f.kind}</td><td>{f.psi:.3f}</td>"
            f"<td>{f.test}</td><td>{f.statistic:.3f}</td><td>{f.p_value:.3g}</td>"
            f"<td>{_num(f.reference_mean)}</td><td>{_num(f.current_mean)}</td>"
            f"<td>{f.verdict}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _problems(problems: list[RowIssue]) -> str:
    head = "<tr><th>line</th><th>column</th><th>value</th><th>rule</th></tr>"
    body = "".join(
        f"<tr><td>{'-' if i.line is None else i.line}</td><td>{html.escape(i.column)}</td>"
        f"<td>{html.escape(i.value)}</td><td>{html.escape(i.rule)}</td></tr>"
        for i in problems
    )
    return f"<h2>Rows left out</h2><table>{head}{body}</table>"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _figure(label: str, f: FeatureDrift) -> str:
    return (
        f"<figure>{_svg(f)}<figcaption>{html.escape(label)}: PSI {f.psi:.3f}</figcaption></figure>"
    )


def _svg(f: FeatureDrift) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [b.label for b in f.bins]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(4.6, 2.8))
    ax.bar(x - 0.2, [b.reference for b in f.bins], 0.4, label="reference", color="#90a4ae")
    ax.bar(
        x + 0.2,
        [b.current for b in f.bins],
        0.4,
        label="current",
        color={"drift": "#c62828", "warn": "#b26a00"}.get(f.verdict, "#1565c0"),
    )
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("share")
    ax.set_title(f.name, fontsize=10)
    ax.legend(fontsize=7)
    # Fixed margins, room for the longest rotated bin label ("Populus grandidentata"):
    # tight_layout would measure every text first and doubles the time of a plot.
    fig.subplots_adjust(left=0.15, right=0.98, top=0.9, bottom=0.36)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "treesurv"}):
        fig.savefig(buf, format="svg")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: inline SVG
