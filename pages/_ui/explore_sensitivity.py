"""Explore tabs: per-layer sensitivity (heatmap, table, probe histograms) and the mixed-precision recipe.

Thin: widgets → config → core call → render. The analysis is a job of kind ``sensitivity`` in the queue
(core.explore.sensitivity_job; a worker computes, the page polls the job row and cancels through it), and so are
the recipe's real run and the measured recipe search (pages/_ui/explore_recipe_search.py); the Streamlit process
only reads cached tables and builds candidates (arithmetic, no compression).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.data import Dataset
from core.estimate import estimate_sensitivity_seconds
from core.explore import mixed_precision as mp
from core.explore import sensitivity as sens
from core.explore import sensitivity_charts as charts
from core.explore.sensitivity_job import sensitivity_of, submit_sensitivity
from core.formatting import fmt_bytes, fmt_mb, fmt_num, fmt_seconds
from core.models.sources import LoadedModel
from core.tables import readable_table
from pages._ui import run_client
from pages._ui.errors import attempt
from pages._ui.explore_recipe_search import recipe_downloads, render_measured_search
from pages._ui.loading import current_dataset, current_model, forward_ms_per_image
from pages._ui.queue_panel import follow_runs
from pages._ui.storage import store

JOB_KEY = "explore.sens.job"  # the sensitivity job this session follows
RESULT_KEY = "explore.sens.key"  # cache key of the table the tabs show
RECIPE_JOBS_KEY = "explore.recipe.jobs"  # [(job id, candidate step, sensitivity key)]
CELL_KEY = "explore.sens.cell"  # the last heatmap cell applied to the layer / setting pickers


def _label(key: str) -> str:
    return sens.SETTINGS[key].label


def _config(dataset) -> sens.SensitivityConfig | None:
    c = st.columns([3, 1], vertical_alignment="bottom")
    st.session_state.setdefault("cfg.explore.sens.settings", list(sens.DEFAULT_SETTINGS))
    settings = c[0].multiselect("Settings to probe (each layer alone)", list(sens.SETTINGS), format_func=_label,
                                key="cfg.explore.sens.settings")
    st.session_state.setdefault("cfg.explore.sens.images", 1000)
    images = c[1].select_slider("Evaluation images", [100, 250, 500, 1000], key="cfg.explore.sens.images",
                                disabled=dataset is None, help="A fixed, class-balanced slice of the evaluation split.")
    return attempt("Checking the sensitivity settings", sens.SensitivityConfig, settings=tuple(settings), eval_limit=int(images))


def _context(model: LoadedModel | None, dataset: Dataset | None) -> tuple[LoadedModel | None, Dataset | None]:
    """The page's model and dataset when handed over, else this session's (cached loads, as app.py does them)."""
    if model is not None:
        return model, dataset
    model = current_model()
    return model, current_dataset(model)


def render_sensitivity_tab(*, model: LoadedModel | None = None, dataset: Dataset | None = None) -> None:
    model, dataset = _context(model, dataset)
    if model is None:
        st.info("Load a model on the Model page first.", icon=":material/info:")
        return
    st.caption("Each weight layer is compressed alone with each setting; the model's outputs are compared with the "
               "uncompressed model's. Low output SNR (dark) = that layer is sensitive to that setting.")
    config = _config(dataset)
    if config is None:
        return
    key = attempt("Reading the model fingerprint", sens.cache_key, model=model, dataset=dataset, config=config)
    job = run_client.get_job(st.session_state[JOB_KEY]) if st.session_state.get(JOB_KEY) is not None else None
    if job is not None and not job.finished:
        _progress_panel()
        return
    result = sens.load_cached(key=key) if key else None
    if job is not None:
        st.session_state.pop(JOB_KEY)
        computed = sensitivity_of(job)
        if result is not None and computed is not None and computed.meta.get("key") == key:
            result.from_cache = computed.from_cache  # computed just now by this session's job, read back from the cache
        if job.state == "failed":
            st.error(f"The sensitivity analysis failed: {job.error}", icon=":material/error:")
        elif job.state == "cancelled":
            st.warning("Sensitivity analysis cancelled; nothing was cached.", icon=":material/cancel:")
    if result is None:
        _offer_run(model, dataset, config)
        return
    st.session_state[RESULT_KEY] = key
    _show_result(result)


def _offer_run(model: LoadedModel, dataset: Dataset | None, config: sens.SensitivityConfig) -> None:
    """The estimate and the Run button (which queues a sensitivity job) when no table is cached."""
    probes = len(sens.weight_layers(model.module)) * len(config.settings)
    seconds, basis = estimate_sensitivity_seconds(
        layer_params=[layer.weight.numel() for layer in sens.weight_layers(model.module).values()],
        methods=[sens.SETTINGS[key].method for key in config.settings],
        eval_images=min(config.eval_limit, len(dataset.test)) if dataset is not None else config.synthetic_images,
        params=model.params, forward_ms_per_image=forward_ms_per_image(model))
    st.info(f"{probes} probes ({len(config.settings)} settings × each weight layer); no package is exported per "
            f"probe. Estimated time: about {fmt_seconds(seconds)} ({basis}).", icon=":material/schedule:")
    if st.button("Run sensitivity analysis", type="primary", icon=":material/play_arrow:", key="explore.sens.run"):
        state = st.session_state
        state[JOB_KEY] = attempt(
            "Queueing the sensitivity analysis", submit_sensitivity, executor=run_client.executor(),
            model=run_client.model_ref(state["model_choice"]), data=run_client.data_ref(state.get("dataset_choice")),
            config=config)
        st.rerun()


@st.fragment(run_every=1.0)
def _progress_panel() -> None:
    job_id = st.session_state.get(JOB_KEY)
    job = run_client.get_job(job_id) if job_id is not None else None
    if job is None:
        return
    if job.finished:
        st.rerun()  # the whole app: the table is in the cache now
    c = st.columns([5, 1], vertical_alignment="bottom")
    c[0].progress(float(job.progress or 0.0), text=job.message or "working…")
    if c[1].button("Cancel", icon=":material/cancel:", key="explore.sens.cancel", disabled=job.cancel_requested):
        run_client.cancel(job.id)


def _show_result(result: sens.SensitivityResult) -> None:
    meta = result.meta
    top1 = meta.get("baseline_top1")
    st.caption(f"Measured on {meta['data']}" + (f"; baseline {top1 * 100:.2f} % on these same images (every top-1 "
               "change is against it; the Model page's baseline may use more images)." if top1 is not None else ".")
               + (" (cached)" if result.from_cache else f" ({meta.get('seconds', 0):.0f} s)"))
    metrics = ["snr_db", "top1_change"] if result.has_labels else ["snr_db"]
    metric = st.radio("Colour by", metrics, format_func=lambda m: charts.METRICS[m], horizontal=True, key="cfg.explore.sens.metric")
    figure = charts.sensitivity_heatmap_figure(result.frame, metric=metric)
    event = st.plotly_chart(figure, key="explore.sens.heatmap", on_select="rerun", selection_mode="points",
                            config={"displaylogo": False})
    _apply_clicked_cell(event)
    _probe_histogram(result)
    st.subheader("Most damaging probes first", anchor=False)
    st.dataframe(readable_table(charts.sensitivity_table(result.frame, by=metric), missing="n/a"), hide_index=True,
                 key="explore.sens.table")
    st.download_button("Download the table (CSV)", result.frame.to_csv(index=False), file_name="sensitivity.csv",
                       mime="text/csv", icon=":material/download:", key="explore.sens.csv")


def _apply_clicked_cell(event) -> None:
    points = (getattr(event, "selection", None) or {}).get("points") or [] if event else []
    cell = next((tuple(p["customdata"]) for p in points if p.get("customdata")), None)
    if cell is not None and cell != st.session_state.get(CELL_KEY):
        st.session_state[CELL_KEY] = cell
        st.session_state["explore.sens.layer"], st.session_state["explore.sens.setting"] = cell


def _probe_histogram(result: sens.SensitivityResult) -> None:
    frame = result.frame
    layers = list(frame.drop_duplicates("layer").sort_values("order")["layer"])
    settings = list(dict.fromkeys(frame["setting"]))
    for key, options in (("explore.sens.layer", layers), ("explore.sens.setting", settings)):
        if st.session_state.get(key) not in options:
            st.session_state[key] = options[0]
    c = st.columns(2)
    layer = c[0].selectbox("Layer (or click a heatmap cell)", layers, key="explore.sens.layer")
    setting = c[1].selectbox("Setting", settings, format_func=_label, key="explore.sens.setting")
    row = frame[(frame["layer"] == layer) & (frame["setting"] == setting)].iloc[0]
    with st.expander(f"Weights of {layer} with {_label(setting)}", expanded=True, icon=":material/bar_chart:"):
        arrays = result.probe_weights(layer=layer, setting=setting)
        st.plotly_chart(charts.probe_histogram_figure(arrays, layer=layer, setting_label=_label(setting), method=row["method"],
                                                      bits=_bits(setting), params=int(row["params"])),
                        key="explore.sens.histogram", config={"displaylogo": False})
        st.caption(f"Output SNR {fmt_num(row['snr_db'], '.1f', ' dB')} · top-1 change "
                   f"{fmt_num(row['top1_change'] * 100, '+.2f', ' pts')} · {fmt_num(row['bits_per_weight'], '.2f')} bits/weight")


def _bits(setting: str) -> float | None:
    spec = sens.SETTINGS[setting].spec
    if "n_bits" in spec:
        return float(spec["n_bits"])
    return {"int4": 4.0, "int8": 8.0}.get(spec.get("dtype", ""))


# --------------------------------------------------------------------------- mixed precision

_TARGETS = {"bits_per_weight": "Bits per weight", "size_mb": "Size (MB)", "max_drop": "Max accuracy drop (points)"}


_ENGINES = {"fast": "Fast estimate (from the sensitivity table, seconds)",
            "measured": "Measured search (compresses every layer × setting and measures combinations, minutes)"}


def render_mixed_precision_tab(*, model: LoadedModel | None = None, dataset: Dataset | None = None) -> None:
    model, dataset = _context(model, dataset)
    if model is None:
        st.info("Load a model on the Model page first.", icon=":material/info:")
        return
    engine = st.radio("How to choose the recipe", list(_ENGINES), format_func=_ENGINES.get, key="cfg.explore.mp.engine")
    if engine == "measured":
        render_measured_search(model=model, dataset=dataset)
        return
    key = st.session_state.get(RESULT_KEY)
    result = sens.load_cached(key=key) if key else None
    if result is None or result.meta.get("model") != model.source_id:
        st.info("Run (or open) a sensitivity analysis of this model in the Sensitivity tab first.", icon=":material/info:")
        return
    st.caption("Per-layer settings with the least summed output noise at each size (an exact knapsack over the probes); "
               "sizes from the size model. "
               "Run the recipe to measure the real .mlpackage.")
    c = st.columns([1, 2, 1], vertical_alignment="bottom")
    method = c[0].selectbox("Method", mp.recipe_methods(result), key="cfg.explore.mp.method")
    kinds = [k for k in _TARGETS if result.has_labels or k != "max_drop"]
    kind = c[1].radio("Target", kinds, format_func=_TARGETS.get, horizontal=True, key="cfg.explore.mp.kind")
    default = {"bits_per_weight": 4.0, "size_mb": round(result.meta["fp16_bytes"] / 4e6, 3), "max_drop": 1.0}[kind]
    value = c[2].number_input(_TARGETS[kind], min_value=0.0, value=default, step=0.1, key=f"explore.mp.value.{kind}")
    candidates = attempt("Building the candidates", mp.mixed_precision_candidates, sensitivity=result, method=method)
    target = attempt("Checking the target", mp.RecipeTarget, kind=kind, value=float(value))
    if not candidates or target is None:
        return
    chosen = attempt("Choosing the recipe", mp.choose, candidates=candidates, target=target)
    measured = _measured(candidates, result)
    figure = charts.candidate_curve_figure(mp.candidates_frame(candidates), measured=measured,
                                           chosen_step=chosen.step if chosen else None)
    st.plotly_chart(figure, key="explore.mp.curve", config={"displaylogo": False})
    if chosen is None:
        return
    m = st.columns(4)
    m[0].metric("Predicted size", fmt_mb(chosen.predicted_bytes))
    m[1].metric("Bits / weight", fmt_num(chosen.predicted_bits_per_weight, ".2f"), help="Stored bits incl. LUTs.")
    m[2].metric("Output SNR", fmt_num(chosen.predicted_snr_db, ".1f", " dB"), help="Predicted: per-layer noise powers summed.")
    m[3].metric("Accuracy drop", fmt_num(None if chosen.predicted_drop is None else chosen.predicted_drop * 100, ".2f", " pts"),
                help="Predicted from a monotone fit of the probes' top-1 drop against output SNR.")
    st.dataframe(readable_table(mp.recipe_layers_frame(chosen, result), formats={"bytes": fmt_bytes},
                                missing={"probe_snr_db": "identical output"}),
                 hide_index=True, key="explore.mp.layers")
    d = recipe_downloads(chosen, model=model, key="explore.mp")
    if d[3].button("Run this recipe", type="primary", icon=":material/play_arrow:", key="explore.mp.run"):
        _submit(chosen, result)
    # followed here, so the page redraws with the run's measured point when it ends
    follow_runs([job_id for job_id, _, key in st.session_state.get(RECIPE_JOBS_KEY, []) if key == result.meta["key"]],
                what="Recipe run", key="explore.mp.run")


def _submit(chosen: mp.Candidate, result: sens.SensitivityResult) -> None:
    state = st.session_state
    job_id = attempt("Queuing the recipe run", run_client.executor().submit,
                     model=run_client.model_ref(state["model_choice"]), data=run_client.data_ref(state.get("dataset_choice")),
                     spec=chosen.spec.to_dict(), options={"measure_latency": False, "measure_memory": False},
                     label=f"recipe · {chosen.summary}", origin=mp.recipe_origin(candidate=chosen, sensitivity=result))
    if job_id is not None:
        state.setdefault(RECIPE_JOBS_KEY, []).append((int(job_id), chosen.step, result.meta["key"]))
        state.setdefault(run_client.JOB_IDS_KEY, []).append(int(job_id))
        st.toast(f"Recipe queued as job #{job_id}; the measured point appears on the curve when it finishes.", icon=":material/queue:")


def _measured(candidates: list[mp.Candidate], result: sens.SensitivityResult) -> pd.DataFrame:
    rows = []
    by_step = {c.step: c for c in candidates}
    for job_id, step, key in st.session_state.get(RECIPE_JOBS_KEY, []):
        job = run_client.get_job(job_id)
        if key != result.meta["key"] or job is None or job.experiment_id is None or step not in by_step:
            continue
        record = store().get(int(job.experiment_id))
        outcome = mp.compare_prediction(candidate=by_step[step], record=record)
        drop = result.has_labels and outcome["measured_drop"] is not None
        rows.append({"predicted_mb": outcome["predicted_bytes"] / 1e6, "measured_mb": (outcome["measured_bytes"] or 0) / 1e6,
                     "predicted_y": (by_step[step].predicted_drop or 0) * 100 if drop else by_step[step].predicted_snr_db,
                     "measured_y": outcome["measured_drop"] * 100 if drop else outcome["measured_snr_db"]})
    return pd.DataFrame(rows)
