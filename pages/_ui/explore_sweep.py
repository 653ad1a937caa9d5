"""Explore → Sweep: choose a preset or a custom grid, see the count and the estimated time, start, watch it fill."""

from __future__ import annotations

import json

import streamlit as st

from core.data import Dataset
from core.estimate import eval_image_count
from core.evaluation import baseline_words
from core.explore.charts import pareto_scatter_figure
from core.explore.sweeps import (
    CUSTOM_METHODS,
    PALETTIZE_BITS,
    PRESETS,
    CustomGrid,
    SweepBook,
    SweepGrid,
    SweepPlan,
    plan_sweep,
    preset_grid,
    resume_sweep,
    start_sweep,
    stop_sweep,
    sweep_results_frame,
    sweep_status,
)
from core.formatting import fmt_bytes, fmt_ms, fmt_pct, fmt_seconds, fmt_size_ratio
from core.models.sources import LoadedModel
from core.paths import studio_home
from core.specs import PalettizeSpec, QuantizeWeightsSpec
from core.tables import readable_table
from pages._ui import run_client
from pages._ui.errors import attempt
from pages._ui.session import eval_limit
from pages._ui.storage import records

SWEEP_KEY = "explore.sweep_id"  # the sweep this session shows
POLL_SECONDS = 2.0
RESULT_COLUMNS = {"config": "#", "spec_summary": "config", "state": "state", "progress": "progress",
                  "accuracy_top1": "top-1", "validation_delta_pts": "Δ pts, validation",
                  "accuracy_delta_pts": "Δ pts, test", "size_bytes": "size",
                  "compression_ratio_fp16": "size vs fp16", "latency_ms_p50": "latency p50",
                  "experiment_id": "experiment", "error": "note"}
RESULT_FORMATS = {"accuracy_top1": fmt_pct, "accuracy_delta_pts": lambda v: f"{v:+.2f} pts",
                  "validation_delta_pts": lambda v: f"{v:+.2f} pts", "size_bytes": fmt_bytes,
                  "compression_ratio_fp16": fmt_size_ratio, "latency_ms_p50": lambda v: fmt_ms(v, 3),
                  "experiment_id": lambda v: f"#{int(v)}"}
# What an empty cell means in this table: a config still running has no numbers yet; latency is off by default.
RESULT_GAPS = {"latency_ms_p50": "not timed", "error": "", "experiment_id": "—", "validation_delta_pts": "not measured"}


def book() -> SweepBook:
    return SweepBook(home=studio_home())


@st.cache_data(show_spinner=False, max_entries=8)
def _plan(_model: LoadedModel, source_id: str, grid_json: str, eval_images: int, workers: int,
          history_version: tuple[int, int]) -> SweepPlan:
    del history_version  # cache key: new experiments refine the time estimate
    grid = SweepGrid.from_dict(json.loads(grid_json))
    return plan_sweep(model=_model, grid=grid, eval_images=eval_images, history=records(model=source_id),
                      workers=workers)


DEFAULTS = {"cfg.explore.methods": ["palettize"], "cfg.explore.bits": [4, 8], "cfg.explore.dtypes": ["int8"],
            "cfg.explore.modes": ["symmetric"], "cfg.explore.sparsity": [0.5, 0.75], "cfg.explore.export": True}


def _grid() -> SweepGrid | None:
    """The grid the widgets describe (a preset or methods × ranges); None with a message when it is invalid."""
    for key, value in DEFAULTS.items():  # defaults through the state: cfg.* keys persist across pages
        st.session_state.setdefault(key, value)
    kind = st.radio("Configs", ["Preset", "Custom grid"], horizontal=True, key="cfg.explore.grid_kind",
                    help="A preset from the coremltools guide / Apple's exploration protocol, or methods × ranges.")
    if kind == "Preset":
        name = st.selectbox("Preset", list(PRESETS), key="cfg.explore.preset", help="What each preset contains:\n\n"
                            + "\n\n".join(f"**{n}**: {t}" for n, t in PRESETS.items()))
        st.caption(PRESETS[name])
        return attempt("Building the grid", preset_grid, name=name)
    c = st.columns(3)
    methods = c[0].multiselect("Methods", CUSTOM_METHODS, key="cfg.explore.methods",
                               help="Each method contributes its own ranges below.")
    bits = c[0].multiselect("Palettize bits", PALETTIZE_BITS, key="cfg.explore.bits",
                            help="One config per bit width (LUT of 2^bits entries).")
    groups = c[1].multiselect("Palettize group sizes (grouped channels)", PalettizeSpec.offered_values("group_size"), key="cfg.explore.groups",
                              help="Besides per-tensor palettization, one config per group size.")
    dtypes = c[1].multiselect("Quantize dtypes", QuantizeWeightsSpec.offered_values("dtype"), key="cfg.explore.dtypes",
                              help="Weight-only linear quantization: stored integer width.")
    modes = c[1].multiselect("Quantize modes", QuantizeWeightsSpec.offered_values("mode"),
                             key="cfg.explore.modes", help="Asymmetric adds a zero-point per channel / block.")
    blocks = c[2].multiselect("Quantize block sizes (per block)", QuantizeWeightsSpec.offered_values("block_size"), key="cfg.explore.blocks",
                              help="Besides per-channel quantization, one config per block size (input channels).")
    sparsities = c[2].multiselect("Prune sparsities", [0.25, 0.5, 0.6, 0.75, 0.9], key="cfg.explore.sparsity",
                                  format_func=lambda v: f"{v:.0%}", help="One data-free pruning config per sparsity.")
    return attempt("Building the grid", lambda: CustomGrid(
        methods=tuple(methods), palettize_bits=tuple(bits), palettize_group_sizes=tuple(groups),
        quantize_dtypes=tuple(dtypes), quantize_modes=tuple(modes), quantize_block_sizes=tuple(blocks),
        prune_sparsities=tuple(sparsities)).grid())


def _show_plan(plan: SweepPlan) -> None:
    m = st.columns(3)
    m[0].metric("Configs", f"{len(plan.runnable)} of {len(plan.grid)}", help="Runnable configs of the grid.")
    m[1].metric("Estimated time", fmt_seconds(plan.wall_seconds),
                help=f"With {plan.workers} worker(s) in parallel; {plan.basis}.")
    limited = int(plan.layer_exceptions["limit"].sum())
    m[2].metric("Layers left uncompressed by a setting", f"{limited:,}",
                help="How often a layer cannot take a config's setting, e.g. a group size that does not divide its "
                "channels (config × layer, listed below); those layers stay uncompressed in that config.")
    for item in plan.skipped:
        st.warning(f"Skipped config {item['config']} **{item['summary']}**: {item['reason']}",
                   icon=":material/block:")
    limits = plan.layer_exceptions
    if len(limits):
        with st.expander(f"Layers a config cannot take ({int(limits['limit'].sum())} config-specific, "
                         f"{int((~limits['limit']).sum())} shared)"):
            st.caption("Config-specific: e.g. a group size that does not divide the channels or a block size larger "
                       "than the layer. Shared: too few weights or an op the library skips, for every config.")
            ordered = limits.sort_values(["limit", "config"], ascending=[False, True])
            st.dataframe(readable_table(ordered, formats={"limit": lambda v: "this config" if v else "every config"},
                                        labels={"summary": "setting", "limit": "applies to", "reason": "why"}),
                         hide_index=True, key="explore.limits")


def render_sweep_tab(*, model: LoadedModel, dataset: Dataset | None) -> None:
    grid = _grid()
    c = st.columns([1, 1, 2], vertical_alignment="bottom")
    latency = c[0].toggle("Measure latency", key="cfg.explore.latency",
                          help="Times every config against the baseline (slower; needed for the latency scatter).")
    export = c[1].toggle("Export artifacts", key="cfg.explore.export",
                         help="Write the real .mlpackage / TorchScript of each config (sizes measured on disk).")
    limit = eval_limit()
    images = eval_image_count(limit=limit, dataset_size=len(dataset.test) if dataset is not None else None)
    c[2].caption(f"Each config is evaluated on {images:,} images (the evaluation-size setting of the Compress page).")
    store_version = run_client.queue().counts().get("done", 0), len(records(model=model.source_id))
    executor = run_client.executor()
    plan = None
    if grid is not None:
        plan = attempt("Checking the configs against the model's layers", _plan, model, model.source_id,
                       json.dumps(grid.to_dict()), images, int(getattr(executor, "max_workers", 1)), store_version)
    if plan is not None:
        _show_plan(plan)
        if st.button(f"Start sweep ({len(plan.runnable)} runs)", type="primary", icon=":material/play_arrow:",
                     key="explore.start", disabled=not plan.runnable):
            state = st.session_state
            options = {"eval_limit": limit, "measure_latency": latency, "measure_memory": False, "export": export}
            sweep_id = attempt("Starting the sweep", start_sweep, executor=executor,
                               model=run_client.model_ref(state["model_choice"]),
                               data=run_client.data_ref(state.get("dataset_choice")), plan=plan, options=options,
                               book=book())
            if sweep_id is not None:
                state[SWEEP_KEY] = sweep_id
                st.toast(f"Sweep #{sweep_id} started: {len(plan.runnable)} jobs queued.", icon=":material/queue:")
    _sweep_picker(model)


def _sweep_picker(model: LoadedModel) -> None:
    sweeps = book().list(model=model.source_id)
    if not sweeps:
        return
    st.divider()
    ids = [s.id for s in sweeps]
    if st.session_state.get(SWEEP_KEY) not in ids:
        st.session_state[SWEEP_KEY] = ids[0]
    names = {s.id: f"Sweep #{s.id}: {s.name} ({len(s.configs)} configs)" for s in sweeps}
    sweep_id = st.selectbox("Sweep", ids, format_func=names.get, key=SWEEP_KEY,
                            help="Sweeps of this model, newest first; each keeps running when you leave the page.")
    frame = sweep_results_frame(sweep_id=sweep_id, book=book(), records=[])
    running = not sweep_status(frame).finished
    st.fragment(run_every=POLL_SECONDS if running else None)(_live_results)(sweep_id=sweep_id, model=model,
                                                                            was_running=running)


def _live_results(*, sweep_id: int, model: LoadedModel, was_running: bool) -> None:
    """The live part: progress, stop / resume, the table and the two scatters (polled while jobs run)."""
    run_client.keep_workers()
    sweep_book = book()
    model_records = records(model=model.source_id)
    frame = sweep_results_frame(sweep_id=sweep_id, book=sweep_book, records=model_records)
    status = sweep_status(frame)
    if was_running and status.finished:
        st.rerun()  # stop polling: the whole tab redraws once with the final results
    st.progress(status.fraction, text=f"{status.done} done · {status.running} running · {status.queued} queued · "
                f"{status.failed} failed · {status.cancelled} cancelled · {status.skipped} skipped")
    c = st.columns([1, 1, 4])
    if c[0].button("Stop", icon=":material/stop:", key="explore.stop", disabled=status.finished,
                   help="Cancel the queued and running configs; finished results stay."):
        attempt("Stopping the sweep", stop_sweep, sweep_id=sweep_id, book=sweep_book)
        st.rerun()
    unfinished = status.failed + status.cancelled
    if c[1].button("Resume", icon=":material/replay:", key="explore.resume", disabled=not unfinished,
                   help="Resubmit every config without a finished experiment."):
        attempt("Resuming the sweep", resume_sweep, sweep_id=sweep_id, executor=run_client.executor(),
                book=sweep_book)
        st.rerun()
    baseline = frame["baseline_accuracy_top1"].dropna()
    left, right = st.columns(2)
    left.plotly_chart(pareto_scatter_figure(frame, against="size",
                                            baseline_accuracy=baseline.iloc[0] if len(baseline) else None),
                      key="explore.scatter_size", config={"displaylogo": False})
    right.plotly_chart(pareto_scatter_figure(frame, against="latency",
                                             baseline_accuracy=baseline.iloc[0] if len(baseline) else None),
                       key="explore.scatter_latency", config={"displaylogo": False})
    finished = set(frame["experiment_id"].dropna().astype(int))
    done = [r for r in model_records if r.get("id") in finished]
    if done and (words := baseline_words(done[0])):
        st.caption(f"Dashed line: the {words} — the same images every config of this sweep was measured on.")
    if (frame["size_source"] == "theoretical").any():
        st.caption("Sizes of configs run without an exported artifact are the per-layer theoretical bytes.")
    table = readable_table(frame[list(RESULT_COLUMNS)], formats=RESULT_FORMATS, missing=RESULT_GAPS,
                           labels=RESULT_COLUMNS)
    st.dataframe(table, hide_index=True, key="explore.results", column_config={
        "progress": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0),
        "Δ pts, validation": st.column_config.TextColumn(
            help="On a class-balanced slice of the training pool (never test images): what a winner among these "
            "configs is chosen by."),
        "Δ pts, test": st.column_config.TextColumn(help="On the test images: confirms the choice.")})
