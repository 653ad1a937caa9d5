"""A self-contained HTML report of experiments for stakeholders: tables and interactive charts, works offline.

plotly.js is inlined once (``include_plotlyjs=True`` on the first chart); nothing is fetched from the network.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from core import charts
from core.compress.registry import method_color
from core.formatting import as_number, fmt_mb, fmt_num, plural
from core.metrics import format_metric
from core.speedup_wording import speedup_text
from core.tables import experiments_frame, experiments_table, per_class_frame

_CSS = """
:root { color-scheme: light dark; --fg: #1f2430; --muted: #6b7080; --bg: #ffffff; --card: #f5f6f8; --line: #dde0e6;
        --accent: #3b5bdb; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e8eaf0; --muted: #9aa0ae; --bg: #0f1117; --card: #1a1d26; --line: #2c303b; --accent: #7d95f0; }
}
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--fg); background: var(--bg);
       max-width: 1180px; margin: 0 auto; padding: 28px 24px 60px; line-height: 1.45; }
h1 { margin: 0 0 4px; font-size: 28px; } h2 { margin-top: 36px; border-bottom: 1px solid var(--line); padding-bottom: 6px; }
.muted { color: var(--muted); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 12px; margin: 18px 0; }
.card { background: var(--card); border-radius: 10px; padding: 12px 14px; }
.card .v { font-size: 22px; font-weight: 600; } .card .k { color: var(--muted); font-size: 13px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 6px; }
.chart { margin: 10px 0 24px; } ul.notes li { margin: 4px 0; color: var(--muted); }
"""


def _table_html(frame) -> str:
    """The experiments table (core.tables.experiments_table, formatted), a colour dot per method."""
    table = experiments_table(frame, formatted=True, view="report")
    numeric = {"#", *table.columns[3:-1]}
    rows = ["<h2>Experiments</h2><table><tr>", *(f"<th>{html.escape(str(h))}</th>" for h in table.columns), "</tr>"]
    for (_, row), method in zip(table.iterrows(), frame["method"], strict=True):
        cells = []
        for column, value in row.items():
            text = html.escape("" if value is None or (column == "#" and str(value) == "<NA>") else str(value))
            if column == "method":
                text = f"<span class='dot' style='background:{method_color(method)}'></span>{text}"
            cells.append(f"<td class='n'>{text}</td>" if column in numeric else f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</table>")
    return "".join(rows)


def newest_value(records: Sequence[dict], key: str) -> float | None:
    """The newest record's value of `key` among the records that have one (an uploaded .mlpackage or an untimed run
    leaves gaps; the report shows what the app shows, not "n/a")."""
    return next((as_number(r.get(key)) for r in reversed(records) if as_number(r.get(key)) is not None), None)


def baseline_latency_summary(records: Sequence[dict]) -> str:
    """The baseline's median latency as the experiments timed it: each run times its own baseline beside it, so
    one number, or the range over the runs ("2.60–6.40 ms, timed beside each run"); 'not timed' when none was."""
    timed = sorted(v for v in (as_number(r.get("baseline_latency_ms_p50")) for r in records) if v is not None)
    if not timed:
        return "not timed"
    if timed[-1] - timed[0] < 0.005:
        return format_metric("baseline_latency_ms_p50", timed[0])
    return f"{fmt_num(timed[0], '.2f')}–{format_metric('baseline_latency_ms_p50', timed[-1])}, timed beside each run"


def per_run_baseline_note(frame) -> str:
    """Why each experiment has its own baseline bar, with the range those baselines span."""
    timed = sorted(v for v in (as_number(x) for x in frame.get("baseline_latency_ms_p50", [])) if v is not None)
    spread = (f" Here the baselines run from {fmt_num(timed[0], '.2f')} to {fmt_num(timed[-1], '.2f', ' ms')}: the "
              "machine was busier during some runs than others." if timed and timed[-1] - timed[0] >= 0.005 else "")
    return ("Every experiment times its own baseline beside it (A B A B in the same process), so each has its own "
            f"baseline bar.{spread} Compare each bar with its own baseline; the ratio below is what carries over.")


def _card(key: str, value: str) -> str:
    return f'<div class="card"><div class="k">{html.escape(key)}</div><div class="v">{html.escape(value)}</div></div>'


def _figure_html(fig: go.Figure, *, first: bool) -> str:
    return fig.to_html(
        full_html=False,
        include_plotlyjs=first,
        config={"displaylogo": False, "responsive": True},
        default_width="100%",
    )


def _figures(frame, records: Sequence[dict], budget_pts: float | None) -> list[tuple[str, go.Figure, str | None]]:
    """(heading, figure, caption) of every chart of the report, in order."""
    return [
        ("Accuracy vs size", charts.accuracy_size_figure(frame, budget_pts=budget_pts), None),
        ("Latency", charts.latency_figure(frame), "Each experiment's baseline was timed interleaved with it (A B A B) in "
         "the same process, so every run has its own baseline bar: absolute times move with the machine's load, the "
         "ratio is what compares."),
        ("Latency vs baseline", charts.latency_ratio_figure(frame), "Compressed ÷ baseline median latency; bars: 95 % "
         "bootstrap interval over the interleaved pairs. An interval across the dashed line is no measurable difference."),
        ("Size breakdown", charts.size_breakdown_figure(frame), "Bars: bytes computed from the per-layer report; diamonds: the real exported file."),
        ("Per-class accuracy", charts.per_class_figure(per_class_frame(records)), None),
    ]


def build_report(
    *,
    records: Sequence[dict],
    title: str = "Compression Studio report",
    budget_pts: float | None = 5.0,
    generated_at: str | None = None,
) -> str:
    """One HTML page (a string) summarising ``records``: headline numbers, a table, charts and honest notes."""
    frame = experiments_frame(records)
    generated_at = generated_at or time.strftime("%Y-%m-%d %H:%M")
    newest = records[-1] if records else {}
    parts: list[str] = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<div class='muted'>Generated {html.escape(generated_at)} · {len(records)} experiment(s)</div>",
    ]
    if not records:
        parts.append("<p>No experiments to report yet.</p></body></html>")
        return "".join(parts)

    models = sorted({str(r.get("model_label") or r.get("model")) for r in records})
    datasets = sorted({f"{r.get('dataset') or 'synthetic inputs'} — {r.get('dataset_source') or 'n/a'}" for r in records})
    parts.append(
        f"<p>Model: <b>{html.escape(', '.join(models))}</b><br>Evaluation data: {html.escape('; '.join(datasets))}"
        f" ({fmt_num(newest.get('eval_images'), ',.0f')} images in the newest run)</p>"
    )

    parts.append(f"<div class='cards'>{''.join(_headline_cards(records, frame, budget_pts))}</div>")

    parts.append(_table_html(frame))

    figures = _figures(frame, records, budget_pts)
    for i, (heading, fig, caption) in enumerate(figures):
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if caption:
            parts.append(f"<p class='muted'>{html.escape(caption)}</p>")
        parts.append(f"<div class='chart'>{_figure_html(fig, first=i == 0)}</div>")

    parts.extend(_measurement_notes(records))
    licences = sorted({"Fashion-MNIST © Zalando SE, MIT licence." for r in records if "Fashion" in str(r.get("dataset"))})
    if licences:
        parts.append(f"<p class='muted'>{html.escape(' '.join(licences))}</p>")
    parts.append("</body></html>")
    return "".join(parts)


def _headline_cards(records: Sequence[dict], frame: pd.DataFrame, budget_pts: float | None) -> list[str]:
    """The baseline's accuracy, size and latency, and the smallest experiment within the budget when there is one."""
    newest_accuracy = newest_value(records, "baseline_accuracy_top1")
    cards = [
        _card("Baseline top-1 accuracy", format_metric("baseline_accuracy_top1", newest_accuracy)),
        _card("Baseline size (fp16 .mlpackage)", fmt_mb(newest_value(records, "size_fp16_bytes"))),
        _card("Baseline latency p50", baseline_latency_summary(records)),
    ]
    best = charts.best_within_budget(frame, budget_pts=budget_pts) if budget_pts is not None else None
    if best is not None:
        cards.append(
            _card(
                f"Smallest within {plural(budget_pts, 'point')} of baseline",
                f"#{int(best['id'])} {best.get('spec_summary') or ''}: {fmt_mb(best['size_bytes'])}",
            )
        )
    return cards


def _measurement_notes(records: Sequence[dict]) -> list[str]:
    """The "how these numbers were measured" section: what each number means, the machine, and the runs' notes."""
    notes = sorted({str(r.get("latency_note")) for r in records if r.get("latency_note")})
    notes += sorted({str(n) for r in records for n in (r.get("notes") or []) if n})[:20]
    machine = (records[-1] if records else {}).get("machine") or {}
    parts = [
        "<h2>How these numbers were measured</h2><ul class='notes'>",
        "<li>Accuracy: the compressed PyTorch model on held-out evaluation images; agreement: share of images "
        "where its top-1 prediction equals the uncompressed model's.</li>"
        "<li>Size: bytes on disk of the exported artifact (.mlpackage directory or TorchScript file); the "
        "baseline is the uncompressed fp16 .mlpackage.</li>",
    ]
    if machine:
        desc = ", ".join(f"{k}: {v}" for k, v in machine.items() if isinstance(v, str | int | float))
        parts.append(f"<li>Machine: {html.escape(desc)}</li>")
    if speed := speedup_text(records):
        parts.append(f"<li>Speed-up: {html.escape(speed)}</li>")
    parts.extend(f"<li>{html.escape(n)}</li>" for n in notes)
    parts.append("</ul>")
    return parts
