"""The one-page story of a compression result for stakeholders: a sentence, two charts, flipped images, the recipe.

Everything here is a pure function of saved experiment records (and thumbnails the caller hands in), so the
Story page, its exports and the tests show the same page. ``story_html`` lays it out as one fixed-size landscape
page (1600 × 900 px, 16:9: it drops into a slide) with plotly.js inlined, so the file opens offline;
``core.story_export`` prints that page to PDF and PNG with headless Chromium.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import yaml

from core import charts
from core.formatting import as_number, fmt_mb, fmt_pct
from core.speedup_wording import wording_for_record
from core.tables import experiments_frame, flipped_frame

PAGE_WIDTH = 1600  # px: one 16:9 slide
PAGE_HEIGHT = 900
CHART_WIDTH = 770
CHART_HEIGHT = 430
MAX_FLIPPED = 6
SAME_SPEED = 0.03  # a measured ratio within ±3 % of 1.0 is "unchanged" (interleaved medians wobble that much)


@dataclass(frozen=True)
class FlippedImage:
    """One changed prediction: the image as PNG bytes and its caption ('✓→✗ Coat → Shirt (true: Coat)')."""

    png: bytes
    caption: str
    kind: str  # core.tables.flip_kind: broken, fixed or still wrong


@dataclass(frozen=True)
class Story:
    """Everything the one page shows about the chosen experiment."""

    record: dict
    title: str
    sentence: str
    facts: tuple[tuple[str, str], ...]  # (label, value) cards
    scatter: go.Figure
    sizes: go.Figure
    library_config: str  # the coremltools / torch.ao config as YAML
    flipped: tuple[FlippedImage, ...]
    data_note: str


# --------------------------------------------------------------------------- choosing and wording


def story_choice(records: Sequence[dict], *, budget_pts: float) -> dict | None:
    """The default story: the smallest experiment within ``budget_pts`` accuracy points of its baseline."""
    if not records:
        return None
    frame = experiments_frame(records)
    best = charts.best_within_budget(frame, budget_pts=budget_pts, column=charts.accuracy_metric(frame)[0])
    if best is None:
        return None
    by_id = {int(r["id"]): r for r in records if r.get("id") is not None}
    return by_id.get(int(best["id"]))


def setting_words(record: dict) -> str:
    """The setting as a person says it: 'palettize 4-bit, data-free' (the stored summary, its workflow in words)."""
    summary = str(record.get("spec_summary") or record.get("method") or "experiment")
    return summary.replace(" (data_free)", ", data-free").replace("_", " ").replace("(", "").replace(")", "")


def size_words(ratio: Any) -> str:
    """'3.9× smaller', or '2.0× larger' for a ratio below 1 (never '0.50× smaller')."""
    value = as_number(ratio)
    if value is None or value <= 0:
        return "size not measured"
    if value >= 1:
        return f"{value:.1f}× smaller"
    return f"{1 / value:.1f}× larger"


def accuracy_words(record: dict) -> str:
    """'−0.3 points on 500 test images' (signed, with the evaluation set it was measured on)."""
    acc, base = as_number(record.get("accuracy_top1")), as_number(record.get("baseline_accuracy_top1"))
    images = as_number(record.get("eval_images"))
    where = f" on {int(images):,} test images" if images else ""
    if record.get("accuracy_meaningful") is False:  # random weights: only agreement with the baseline means anything
        return f"{fmt_pct(record.get('agreement_top1'), 1)} of predictions agree with the uncompressed model{where}"
    if acc is None or base is None:
        return "accuracy not measured" + where
    delta = round((acc - base) * 100, 1)
    if delta == 0:
        return "accuracy unchanged" + where
    sign = "+" if delta > 0 else "−"
    return f"{sign}{abs(delta):.1f} points{where}"


def latency_words(record: dict) -> str:
    """What the CPU measurement allows one to say, and nothing it does not."""
    apple = "speed on Apple hardware is measured there, not promised"
    if not record.get("runs_int8_kernels"):
        return f"CPU latency unchanged here (the weights run decompressed) — {apple}"
    ratio = wording_for_record(record).ratio
    if ratio is None:
        return f"CPU latency not measured — {apple}"
    if abs(ratio - 1.0) <= SAME_SPEED:
        return f"CPU latency unchanged here (int8 kernels, within ±{SAME_SPEED:.0%}) — {apple}"
    faster = f"{ratio:.1f}× faster" if ratio > 1 else f"{1 / ratio:.1f}× slower"
    return f"{faster} on this CPU with int8 kernels (batch 1, median) — {apple}"


def story_sentence(record: dict) -> str:
    """'palettize 4-bit, data-free: 3.9× smaller, −0.3 points on 500 test images; CPU latency unchanged here — …'"""
    return (
        f"{setting_words(record)}: {size_words(record.get('compression_ratio_fp16'))}, {accuracy_words(record)}; "
        f"{latency_words(record)}."
    )


def data_note(record: dict) -> str:
    images = as_number(record.get("eval_images"))
    count = f"{int(images):,} images" if images else "an unknown number of images"
    return (
        f"Accuracy: {record.get('dataset') or 'no dataset'}, {count} ({record.get('dataset_source') or 'source unknown'}); "
        "size: the exported file on disk vs the uncompressed fp16 .mlpackage."
    )


def config_text(record: dict) -> str:
    """The settings as the coremltools / torch.ao config the run used (YAML)."""
    from core.config_export import config_yaml
    from core.specs import spec_from_dict

    spec = record.get("spec") or {}
    try:
        return config_yaml(spec_from_dict(spec)).strip()
    except (ValueError, TypeError, KeyError) as exc:  # a record from an older version: show what it stored
        return yaml.safe_dump(spec, sort_keys=False).strip() + f"\n# (no library config: {exc})"


# --------------------------------------------------------------------------- figures


def budget_words(budget_pts: float) -> str:
    return f"≤ {budget_pts:g} point{'' if budget_pts == 1 else 's'} below the baseline"


def within_words(record: dict, budget_pts: float) -> str:
    """' — this result is within it' / ' — this result is outside it' (a story may be told about any experiment)."""
    acc, base = as_number(record.get("accuracy_top1")), as_number(record.get("baseline_accuracy_top1"))
    if acc is None or base is None:
        return ""
    inside = (base - acc) * 100 <= budget_pts + 1e-9
    return " — this result is " + ("within it" if inside else "outside it")


def story_scatter(records: Sequence[dict], *, record_id: int, budget_pts: float) -> go.Figure:
    """Accuracy vs size of every experiment of the model, the budget, and the story's point ringed and named."""
    frame = experiments_frame(records)
    fig = charts.accuracy_size_figure(frame, budget_pts=budget_pts, highlight_ids={record_id})
    fig.update_layout(title=charts.figure_title("Accuracy vs size, with the budget"))
    row = frame[frame["id"] == record_id]
    column = charts.accuracy_metric(frame)[0]
    best = charts.best_within_budget(frame, budget_pts=budget_pts, column=column)
    already_named = best is not None and int(best["id"]) == record_id  # the chart names the smallest within budget
    if not row.empty and not already_named and as_number(row.iloc[0]["size_bytes"]) and as_number(row.iloc[0][column]) is not None:
        x_mb, y_pct = float(row.iloc[0]["size_bytes"]) / charts.MB, float(row.iloc[0][column]) * 100
        fig.add_annotation(x=math.log10(x_mb), y=y_pct, text=f"<b>this result: #{record_id}</b>", showarrow=True,
                           arrowhead=2, ax=80, ay=-45, font={"size": 14})
    fig.update_layout(width=CHART_WIDTH, height=CHART_HEIGHT, margin={"l": 60, "r": 20, "t": 90, "b": 50})
    return fig


def before_after_figure(record: dict) -> go.Figure:
    """Two stacked bars: the uncompressed fp16 model, and the compressed one by part (indices, LUTs, …)."""
    fig = go.Figure()
    fig.update_layout(template=charts.NEUTRAL_TEMPLATE, title=charts.figure_title("Before and after, by part"))
    before = as_number(record.get("size_fp16_bytes"))
    after = as_number(record.get("size_bytes"))
    rows = ["before: fp16", "after: " + setting_words(record)]
    if before:
        fig.add_trace(go.Bar(y=[rows[0]], x=[before / charts.MB], orientation="h", name="uncompressed fp16 weights",
                             marker_color=charts.SIZE_PART_COLORS["uncompressed"], showlegend=False,
                             hovertemplate="fp16 baseline: %{x:.3f} MB<extra></extra>"))
    breakdown = {k: float(v) for k, v in (record.get("size_breakdown") or {}).items() if as_number(v)}
    for part in [p for p in charts.SIZE_PART_COLORS if p in breakdown] + [p for p in breakdown if p not in charts.SIZE_PART_COLORS]:
        fig.add_trace(go.Bar(y=[rows[1]], x=[breakdown[part] / charts.MB], orientation="h",
                             name=charts.SIZE_PART_LABELS.get(part, part),
                             marker_color=charts.SIZE_PART_COLORS.get(part, charts.SIZE_PART_COLORS["other"]),
                             hovertemplate=charts.SIZE_PART_LABELS.get(part, part) + ": %{x:.4f} MB<extra></extra>"))
    for row, value, extra in ((rows[0], before, ""), (rows[1], after, f" · {size_words(record.get('compression_ratio_fp16'))}")):
        if value:
            fig.add_annotation(y=row, x=value / charts.MB, text=f"{fmt_mb(value, 2)} on disk{extra}", showarrow=False,
                               xanchor="left", xshift=6, font={"size": 14})
    top = max(v for v in (before, after, 1.0) if v) / charts.MB
    fig.update_layout(barmode="stack", width=CHART_WIDTH, height=CHART_HEIGHT, bargap=0.35,
                      margin={"l": 60, "r": 20, "t": 90, "b": 50})
    fig.update_xaxes(title_text="MB (bars: computed per part · labels: the file on disk)",
                     range=[0, top * 1.45], rangemode="tozero")
    fig.update_yaxes(autorange="reversed")
    return fig


# --------------------------------------------------------------------------- assembling


def story_flipped(record: dict, *, image_of: Callable[[int], Any], limit: int = MAX_FLIPPED) -> tuple[FlippedImage, ...]:
    """Up to ``limit`` changed predictions, newly wrong ones first, each with its image (``image_of(index)``: a PIL
    image of the evaluation image at that index — the Compare page's thumbnail function) and caption."""
    import io

    rows = flipped_frame(record)
    order = {"broken": 0, "fixed": 1, "still wrong": 2}
    rows = rows.assign(order=rows["kind"].map(order)).sort_values("order", kind="stable").head(limit)
    shown = []
    for item in rows.to_dict("records"):
        buffer = io.BytesIO()
        image_of(int(item["index"])).save(buffer, format="PNG")
        caption = f"{item['mark']} {item['before_name']} → {item['after_name']} (true: {item['true_name']})"
        shown.append(FlippedImage(png=buffer.getvalue(), caption=caption, kind=str(item["kind"])))
    return tuple(shown)


def build_story(*, record: dict, records: Sequence[dict], budget_pts: float,
                flipped: Sequence[FlippedImage] = ()) -> Story:
    """The story of ``record`` among ``records`` (the other experiments of its model, for the chart)."""
    if record.get("id") is None:
        raise ValueError("the story needs a saved experiment (a record with an id); save the run first.")
    base, acc = record.get("baseline_accuracy_top1"), record.get("accuracy_top1")
    facts = (
        ("Size", f"{fmt_mb(record.get('size_fp16_bytes'), 2)} → {fmt_mb(record.get('size_bytes'), 2)}"),
        ("Top-1 accuracy", f"{fmt_pct(base, 1)} → {fmt_pct(acc, 1)}"),
        ("Predictions changed", f"{int(as_number(record.get('flipped')) or 0):,} of {int(as_number(record.get('eval_images')) or 0):,}"),
        ("Budget", budget_words(budget_pts) + within_words(record, budget_pts)),
    )
    return Story(
        record=record,
        title=f"{record.get('model_label') or record.get('model')}: {setting_words(record)} (experiment #{record['id']})",
        sentence=story_sentence(record),
        facts=facts,
        scatter=story_scatter(records, record_id=int(record["id"]), budget_pts=budget_pts),
        sizes=before_after_figure(record),
        library_config=config_text(record),
        flipped=tuple(flipped),
        data_note=data_note(record),
    )


# --------------------------------------------------------------------------- one page of HTML

_PRINT_TEXT = "#2b303b"
_CSS = f"""
@page {{ size: {PAGE_WIDTH}px {PAGE_HEIGHT}px; margin: 0; }}
* {{ box-sizing: border-box; }}
html, body {{ margin: 0; background: #ffffff; color: #1f2430; }}
body {{ width: {PAGE_WIDTH}px; height: {PAGE_HEIGHT}px; overflow: hidden; padding: 26px 32px;
       font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }}
h1 {{ margin: 0; font-size: 20px; font-weight: 600; color: #6b7080; }}
.sentence {{ margin: 6px 0 10px; font-size: 29px; line-height: 1.22; font-weight: 650; }}
.facts {{ display: flex; gap: 12px; margin-bottom: 6px; }}
.fact {{ background: #f1f3f7; border-radius: 8px; padding: 6px 12px; font-size: 14px; color: #6b7080; }}
.fact b {{ color: #1f2430; font-size: 17px; margin-left: 6px; }}
.charts {{ display: flex; gap: 12px; height: {CHART_HEIGHT}px; }}
.bottom {{ display: flex; gap: 24px; margin-top: 6px; }}
.flips {{ flex: 1.25; }} .recipe {{ flex: 1; }}
h2 {{ font-size: 15px; margin: 0 0 6px; color: #6b7080; font-weight: 600; }}
.grid {{ display: flex; gap: 10px; }}
figure {{ margin: 0; width: 118px; font-size: 11.5px; line-height: 1.25; }}
figure img {{ width: 96px; height: 96px; image-rendering: pixelated; border: 1px solid #dde0e6; display: block; }}
pre {{ margin: 0; font-size: 11.5px; line-height: 1.3; background: #f1f3f7; padding: 8px 10px; border-radius: 8px;
       max-height: 196px; overflow: hidden; white-space: pre-wrap; }}
.note {{ position: absolute; left: 32px; right: 32px; bottom: 10px; font-size: 12px; color: #6b7080; }}
"""


def _figure_div(fig: go.Figure, *, div_id: str, include_js: bool) -> str:
    # darker words than the app's theme-neutral grey: this page is printed on white and shown on a projector
    fig = go.Figure(fig).update_layout(font_color=_PRINT_TEXT, title_font_color=_PRINT_TEXT, title_font_size=19)
    return fig.to_html(full_html=False, include_plotlyjs=include_js, div_id=div_id,
                       config={"displaylogo": False, "staticPlot": True, "responsive": False})


def _flipped_html(flipped: Sequence[FlippedImage], record: dict) -> str:
    if not flipped:
        changed = int(as_number(record.get("flipped")) or 0)
        text = "No prediction changed." if changed == 0 else "The evaluation images are not available on this machine."
        return f"<p>{html.escape(text)}</p>"
    items = []
    for item in flipped:
        data = base64.b64encode(item.png).decode("ascii")
        items.append(f"<figure><img alt='{html.escape(item.caption)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(item.caption)}</figcaption></figure>")
    return f"<div class='grid'>{''.join(items)}</div>"


def story_html(story: Story) -> str:
    """The story as one self-contained landscape page (plotly.js inlined once; images as data URIs)."""
    flips_total = int(as_number(story.record.get("flipped")) or 0)
    facts = "".join(f"<div class='fact'>{html.escape(k)}<b>{html.escape(v)}</b></div>" for k, v in story.facts)
    return "".join([
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(story.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(story.title)}</h1>",
        f"<div class='sentence'>{html.escape(story.sentence)}</div>",
        f"<div class='facts'>{facts}</div>",
        "<div class='charts'>",
        f"<div>{_figure_div(story.scatter, div_id='story-scatter', include_js=True)}</div>",
        f"<div>{_figure_div(story.sizes, div_id='story-sizes', include_js=False)}</div>",
        "</div><div class='bottom'>",
        f"<div class='flips'><h2>Predictions it changed ({min(len(story.flipped), flips_total)} of {flips_total:,} shown; "
        "✓→✗ newly wrong, ✗→✓ newly right)</h2>",
        _flipped_html(story.flipped, story.record),
        "</div>",
        f"<div class='recipe'><h2>Recipe (coremltools config)</h2><pre>{html.escape(story.library_config)}</pre></div>",
        "</div>",
        f"<div class='note'>{html.escape(story.data_note)}</div>",
        "</body></html>",
    ])
