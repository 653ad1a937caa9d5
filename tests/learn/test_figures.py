"""The lessons' figures: pure functions of arrays, with the traces a reader needs and small payloads."""

from __future__ import annotations

import json

import numpy as np

from core.learn import figures
from core.learn.palettization import PaletteSetting, palettize
from core.learn.pruning import PruneSetting, prune
from core.learn.quantization import LinearSetting, linear_quantize, staircase
from core.learn.tensors import crop, matrix_view


def _names(fig) -> list[str]:
    return [t.name for t in fig.data]


def _assert_step_histogram(trace, counts, edges, *, below=None) -> None:
    """A histogram drawn as one filled step line: bin centres (plus the outer edges) and the bins' own counts."""
    assert trace.type == "scatter" and trace.mode == "lines" and trace.line.shape == "hvh"
    assert trace.fill == ("tozeroy" if below is None else "tonexty")
    x, y = np.asarray(trace.x, dtype=float), np.asarray(trace.y, dtype=float)
    np.testing.assert_allclose(x[1:-1], (edges[:-1] + edges[1:]) / 2)
    assert (x[0], x[-1]) == (edges[0], edges[-1])
    # "hvh" turns half-way between points: exactly on every inner bin edge
    np.testing.assert_allclose((x[1:-2] + x[2:-1]) / 2, edges[1:-1], rtol=0, atol=1e-6 * float(edges[-1] - edges[0]))
    custom = np.asarray(trace.customdata, dtype=float)
    np.testing.assert_array_equal(custom[1:-1, 2], counts)  # the hover's count is this trace's own
    np.testing.assert_array_equal(custom[1:-1, 0], edges[:-1])
    np.testing.assert_array_equal(custom[1:-1, 1], edges[1:])
    np.testing.assert_array_equal(y[1:-1], counts if below is None else counts + below)


def test_grid_histogram_of_a_large_layer_stays_small(linear_weight):
    result = linear_quantize(linear_weight, LinearSetting(bits=8, clip_percentile=99.9))
    counts, edges = figures.histogram(linear_weight, bins=120)
    assert counts.sum() == linear_weight.size
    fig = figures.grid_histogram_figure(
        counts=counts,
        edges=edges,
        grid=result.grid(),
        title="t",
        clip_low=float(result.clip_low[0, 0]),
        clip_high=float(result.clip_high[0, 0]),
    )
    assert _names(fig) == ["weights", "integer grid (255 levels)"]
    _assert_step_histogram(fig.data[0], counts, edges)
    assert len(fig.layout.shapes) == 2  # both clipped tails shaded
    assert len(fig.to_json()) < 60_000  # 802,816 weights, a few kilobytes of chart


def test_staircase_follows_the_grid(conv_weight):
    result = linear_quantize(conv_weight, LinearSetting(bits=2))
    x, y = staircase(result, low=float(conv_weight.min()), high=float(conv_weight.max()))
    fig = figures.staircase_figure(x=x, y=y, clip_low=float(x[0]), clip_high=float(x[-1]), title="t")
    assert _names(fig) == ["no error", "quantized"]
    assert len(np.unique(fig.data[1].y)) == 3  # 2-bit symmetric: −1, 0, +1 steps


def test_scales_and_channel_snr(conv_weight):
    runs = {
        g: linear_quantize(conv_weight, LinearSetting(bits=4, granularity=g, block_size=16))
        for g in ("per_tensor", "per_channel", "per_block")
    }
    fig = figures.scales_figure(
        per_tensor=float(runs["per_tensor"].scale[0, 0]),
        per_channel=runs["per_channel"].scale.ravel(),
        per_block=runs["per_block"].scale,
        highlight=3,
        title="t",
    )
    assert _names(fig) == ["per channel", "per block", "per tensor", "outlier channel 3"]
    # per channel: one filled step line over the channels, its points on the channels' own scales
    channel = fig.data[0]
    assert channel.type == "scatter" and channel.line.shape == "hvh" and channel.fill == "tozeroy"
    np.testing.assert_array_equal(np.asarray(channel.y, dtype=float)[1:-1], runs["per_channel"].scale.ravel())
    np.testing.assert_array_equal(np.asarray(channel.x, dtype=float)[1:-1], np.arange(64))
    # every block's scale is one step of a single line (one SVG path, whatever the number of blocks), in order
    blocks = runs["per_block"].scale
    assert fig.data[1].mode == "lines" and fig.data[1].line.shape == "hv"
    np.testing.assert_array_equal(np.asarray(fig.data[1].y, dtype=float)[:-1], blocks.ravel())
    x = np.asarray(fig.data[1].x, dtype=float)
    assert np.all(np.diff(x) > 0) and np.array_equal(
        np.round(x[:-1]).astype(int), np.repeat(np.arange(64), blocks.shape[1])
    )
    outlier = fig.data[3]  # a filled step centred on the highlighted channel, at its scale
    assert np.mean(outlier.x) == 3 and list(outlier.y) == [float(runs["per_channel"].scale.ravel()[3])] * 2
    assert outlier.line.color == figures.ACCENT and outlier.fill == "tozeroy"
    snr = figures.channel_snr_figure(snr={g: r.channel_snr_db(conv_weight) for g, r in runs.items()}, title="t")
    assert _names(snr) == ["per tensor", "per channel", "per block"]


def test_palettization_figures(conv_weight):
    result = palettize(conv_weight, PaletteSetting(n_bits=3))
    counts, edges = figures.histogram(conv_weight)
    fig = figures.lut_histogram_figure(counts=counts, edges=edges, lut=result.lut[0], title="t")
    assert _names(fig) == ["weights", "LUT entries (8)"]
    _assert_step_histogram(fig.data[0], counts, edges)
    line_x = [v for v in fig.data[1].x if v is not None]
    assert sorted(set(line_x)) == sorted(result.lut.ravel().astype(float).tolist())
    matrix, what = matrix_view(result.indices)
    heat = figures.index_heatmap_figure(indices=crop(matrix), title="t")
    assert np.asarray(heat.data[0].z).shape == (32, 64) and "kernel tap" in what
    bits = figures.bits_figure(parts=result.storage_bits(), weights=conv_weight.size, title="t")
    assert _names(bits) == ["indices", "luts"]


def test_pruning_figures(conv_weight):
    result = prune(conv_weight, PruneSetting(sparsity=0.5))
    counts, edges = figures.histogram(conv_weight)
    pruned, _ = np.histogram(conv_weight[~result.mask], bins=edges)
    fig = figures.threshold_histogram_figure(
        kept_counts=counts - pruned, pruned_counts=pruned, edges=edges, threshold=result.threshold, title="t"
    )
    assert _names(fig)[:2] == ["kept", "pruned (set to 0)"] and _names(fig)[2].startswith("threshold ±")
    _assert_step_histogram(fig.data[0], counts - pruned, edges)
    _assert_step_histogram(fig.data[1], pruned, edges, below=counts - pruned)  # stacked on the kept weights
    assert int(np.sum(np.asarray(fig.data[1].customdata)[1:-1, 2])) == int((~result.mask).sum())
    mask_fig = figures.mask_heatmap_figure(
        mask=crop(matrix_view(result.mask)[0]), values=crop(matrix_view(result.pruned)[0]), title="t"
    )
    z = np.asarray(mask_fig.data[0].z, dtype=float)
    assert np.isnan(z).mean() > 0.3
    curve = figures.sparsity_snr_figure(
        curves={"unstructured": (np.array([0.1, 0.5]), np.array([30.0, 10.0]))}, current=(0.5, 10.0), title="t"
    )
    assert _names(curve) == ["unstructured", "this setting"]
    json.loads(curve.to_json())


def test_activation_straight_through_loss_and_bytes_figures():
    values = np.random.default_rng(0).exponential(1.0, size=20_000).astype(np.float32)
    counts, edges = figures.histogram(values, bins=60)
    fig = figures.activation_histogram_figure(
        counts=counts, edges=edges, title="t", ranges={"min_max range": (0.0, 9.0), "histogram range": (0.0, 4.0)}
    )
    assert _names(fig) == ["activations", "min_max range", "histogram range"] and fig.layout.yaxis.type == "log"
    _assert_step_histogram(fig.data[0], counts, edges)
    assert "values" in fig.data[0].hovertemplate
    settle = figures.range_settling_figure(
        counts=np.array([8, 16]),
        highs={"min_max range": np.array([3.0, 4.0])},
        batch_max=np.array([3.0, 4.0]),
        batch_size=8,
        current=16,
        title="t",
    )
    assert _names(settle) == ["each batch's maximum", "min_max range", "N = 16"] and settle.layout.xaxis.type == "log"
    x = np.linspace(-2, 2, 9, dtype=np.float32)
    ste = figures.straight_through_figure(
        x=x, forward=np.round(x), gradient=(np.abs(x) <= 1).astype(float), limit=1.0, title="t"
    )
    assert _names(ste) == ["forward: rounded", "no rounding", "backward: gradient used"] and ste.data[2].yaxis == "y2"
    loss = figures.loss_curve_figure(losses=np.array([2.0, 1.0]), float_losses=np.array([0.3, 0.3]), title="t")
    assert list(loss.data[0].x) == [1, 2]
    rows = [
        {"kind": "indices", "label": "LUT indices", "theory_bytes": 100, "artifact_bytes": 100, "difference_bytes": 0}
    ]
    check = figures.bytes_check_figure(rows=rows, program_bytes=5000, blob_overhead_bytes=128, title="t")
    assert list(check.data[1].x) == [100, 128, 5000] and list(check.data[0].x) == [100, 0, 0]


def test_log_axes_tick_1_2_5_with_units_and_long_titles_wrap_inside_the_figure():
    settle = figures.range_settling_figure(
        counts=np.array([8, 16, 64, 256]), highs={"min_max range": np.array([3.0, 4.0, 4.2, 4.3])},
        batch_max=np.array([3.0, 4.0]), batch_size=8, current=16, title="t",
    )
    assert list(settle.layout.xaxis.ticktext) == ["5 images", "10 images", "20 images", "50 images", "100 images",
                                                  "200 images", "500 images"]
    rows = [{"kind": "indices", "label": "LUT indices", "theory_bytes": 400_000, "artifact_bytes": 400_100,
             "difference_bytes": 100}]
    check = figures.bytes_check_figure(rows=rows, program_bytes=5000, blob_overhead_bytes=128, title="t")
    assert list(check.layout.xaxis.ticktext) == ["100 B", "1 kB", "10 kB", "100 kB", "1 MB"]

    title = ("Fake quantization at 4 bits on the grid of channel 0 of conv layer features.3 (64×32×3×3): forward "
             "and backward")
    x = np.linspace(-2, 2, 9, dtype=np.float32)
    ste = figures.straight_through_figure(x=x, forward=np.round(x), gradient=(np.abs(x) <= 1).astype(float),
                                          limit=1.0, title=title)
    lines = ste.layout.title.text.split("<br>")
    assert len(lines) >= 3 and all(len(line) <= figures.TITLE_LINE_CHARS for line in lines)
    assert " ".join(lines) == title  # every word is still there
    assert ste.layout.margin.t >= figures.TITLE_LINE_PX * len(lines)  # room above the plot for every line
