"""Explore → Mixed precision → Measured search: start it as a job, follow it, show its recipe.

Thin: the search runs in a worker process (a job of kind ``recipe_search``, core.explore.recipe_runs); this module
only submits it, reads the job row (progress, cancel, result) and renders. The newest search of the model is found
in the queue again after a rerun, a page switch or a reload.
"""

from __future__ import annotations

import streamlit as st

from core.data import Dataset
from core.evaluation import baseline_words
from core.explore import mixed_precision as mp
from core.explore import recipe_runs as rr
from core.explore.mp_search import DEFAULT_SEARCH_SETTINGS, RecipeSearchConfig
from core.formatting import fmt_bytes, fmt_mb, fmt_num
from core.jobs import CANCELLED, FAILED, Job
from core.measure.size import float_param_count
from core.models.sources import LoadedModel
from core.tables import readable_table
from pages._ui import run_client
from pages._ui.errors import attempt
from pages._ui.queue_panel import follow_runs
from pages._ui.session import eval_limit
from pages._ui.storage import records

_TARGETS = {"bits_per_weight": "Bits per weight", "size_mb": "Size (MB)", "max_drop": "Max accuracy drop (points)"}
_IMAGES = [60, 100, 250, 500, 1000]
_SETTINGS = [key for key, setting in mp.RECIPE_SETTINGS.items() if setting.method == "palettize"]
_RUNS_KEY = "explore.mps.runs"  # search job id → the "Run this recipe" job ids this session queued for it


def _request(model: LoadedModel) -> rr.MeasuredSearchRequest | None:
    c = st.columns([2, 1], vertical_alignment="bottom")
    kind = c[0].radio("Target", list(_TARGETS), format_func=_TARGETS.get, horizontal=True, key="cfg.explore.mps.kind")
    default = {"bits_per_weight": 3.0, "size_mb": round(float_param_count(model.module) * 2 / 4e6, 3), "max_drop": 1.0}[kind]
    value = c[1].number_input(_TARGETS[kind], min_value=0.0, value=default, step=0.1, key=f"explore.mps.value.{kind}")
    c = st.columns([3, 1, 1], vertical_alignment="bottom")
    st.session_state.setdefault("cfg.explore.mps.settings", [s for s in DEFAULT_SEARCH_SETTINGS if s in _SETTINGS])
    settings = c[0].multiselect("Settings each layer may take", _SETTINGS, format_func=mp.setting_label,
                                key="cfg.explore.mps.settings")
    st.session_state.setdefault("cfg.explore.mps.images", 500)
    images = c[1].select_slider("Calibration images", _IMAGES, key="cfg.explore.mps.images",
                                help="Class-balanced images of the training pool, never the evaluation images.")
    st.session_state.setdefault("cfg.explore.mps.run", True)
    run = c[2].toggle("Then run it", key="cfg.explore.mps.run",
                      help="Run the chosen recipe as an experiment (real .mlpackage) in the same job.")
    target = attempt("Checking the target", mp.RecipeTarget, kind=kind, value=float(value))
    config = attempt("Checking the search settings", RecipeSearchConfig, settings=tuple(settings),
                     calibration_images=int(images))
    if target is None or config is None:
        return None
    return attempt("Checking the search", rr.MeasuredSearchRequest, target=target, config=config, run=bool(run),
                   run_eval_limit=eval_limit())


def render_measured_search(*, model: LoadedModel, dataset: Dataset | None) -> None:
    st.caption("Every layer is compressed with every setting and measured on a calibration slice of the training "
               "images; the recipe is then chosen by measuring combinations. It runs as a job in a worker process "
               "(minutes) and goes on if you leave this page.")
    if dataset is None:
        st.info("The measured search needs labelled images: choose a dataset on the Model page.", icon=":material/info:")
        return
    job = attempt("Reading the searches", rr.latest_search_job, queue=run_client.queue(), model=model.source_id)
    if job is not None and not job.finished:
        _progress_panel(job.id)
        return
    request = _request(model)
    if request is not None and st.button("Start measured search", type="primary", icon=":material/play_arrow:",
                                         key="explore.mps.start"):
        state = st.session_state
        job_id = attempt("Queuing the measured search", rr.submit_recipe_search, executor=run_client.executor(),
                         model=run_client.model_ref(state["model_choice"]),
                         data=run_client.data_ref(state.get("dataset_choice")), request=request)
        if job_id is not None:
            state.setdefault(run_client.JOB_IDS_KEY, []).append(int(job_id))
            st.rerun()
    if job is not None:
        _finished(job, model=model)


@st.fragment(run_every=1.0)
def _progress_panel(job_id: int) -> None:
    job = run_client.get_job(job_id)
    if job is None or job.finished:
        st.rerun()  # the whole app: the result below replaces this panel
        return
    st.markdown(f"**Measured search #{job.id}** · {rr.MeasuredSearchRequest.from_dict(job.options).describe()}")
    c = st.columns([5, 1], vertical_alignment="bottom")
    c[0].progress(min(1.0, float(job.progress)), text=job.message or "working…")
    if c[1].button("Cancel", icon=":material/cancel:", key="explore.mps.cancel", disabled=job.cancel_requested):
        run_client.cancel(job.id)


def recipe_downloads(chosen: mp.Candidate, *, model: LoadedModel, key: str) -> list:
    """The recipe as spec YAML, coremltools YAML and Python in the first three of four columns (returned: the
    fourth is for the caller's run button)."""
    exports = attempt("Writing the recipe", mp.recipe_exports, candidate=chosen, model=model) or {}
    columns = st.columns(4)
    for col, (name, file, mime) in zip(columns, (("spec_yaml", "recipe_spec.yaml", "text/yaml"),
                                                 ("coremltools_yaml", "coremltools_config.yaml", "text/yaml"),
                                                 ("python", "recipe.py", "text/x-python")), strict=False):
        if name in exports:
            col.download_button(file, exports[name], file_name=file, mime=mime, icon=":material/download:",
                                key=f"{key}.{name}")
    return columns


def _finished(job: Job, *, model: LoadedModel) -> None:
    what = f"Measured search #{job.id}"
    if job.state == FAILED:
        st.error(f"{what} failed: {job.error}", icon=":material/error:")
        return
    if job.state == CANCELLED:
        st.warning(f"{what} was cancelled; nothing was saved.", icon=":material/cancel:")
        return
    result = rr.search_result(job)
    if result is None:
        return
    chosen = result.chosen
    st.caption(f"{what}: {result.request.describe()} — {result.calibration}; {result.evaluations} recipes measured "
               f"in {result.seconds:.0f} s.")
    runs = rr.recipe_experiments(records(model=model.source_id), job_id=job.id)
    m = st.columns(4)
    m[0].metric("Size", fmt_mb(chosen.predicted_bytes), help="Size model: LUTs and scales counted.")
    m[1].metric("Bits / weight", fmt_num(chosen.predicted_bits_per_weight, ".2f"))
    m[2].metric("Calibration drop", fmt_num(result.calibration_drop_pts(), ".2f", " pts"),
                help="Top-1 points lost on the calibration slice (training images), measured.")
    real = mp.compare_prediction(candidate=chosen, record=runs[0]) if runs else None
    m[3].metric("Real run drop", fmt_num(None if not real or real["measured_drop"] is None else real["measured_drop"] * 100,
                                         ".2f", " pts"), help="Top-1 points lost on the evaluation images by the real .mlpackage run.")
    st.plotly_chart(rr.curve_figure(result, records=runs), key="explore.mps.curve", config={"displaylogo": False})
    st.dataframe(readable_table(result.layers_frame(), formats={"bytes": fmt_bytes}, missing="not measured"),
                 hide_index=True, key="explore.mps.layers")
    d = recipe_downloads(chosen, model=model, key="explore.mps")
    if d[3].button("Run this recipe", icon=":material/play_arrow:", key="explore.mps.run_recipe"):
        state = st.session_state
        run_id = attempt("Queuing the recipe run", run_client.executor().submit,
                         model=run_client.model_ref(state["model_choice"]),
                         data=run_client.data_ref(state.get("dataset_choice")), spec=chosen.spec.to_dict(),
                         options={**rr.RUN_OPTIONS, "eval_limit": eval_limit()}, label=f"recipe · {chosen.summary}",
                         origin=rr.search_origin(job_id=job.id, chosen=chosen))
        if run_id is not None:
            state.setdefault(run_client.JOB_IDS_KEY, []).append(int(run_id))
            state.setdefault(_RUNS_KEY, {}).setdefault(job.id, []).append(int(run_id))
            st.toast(f"Recipe queued as job #{run_id}; its measured point appears on the curve when it finishes.",
                     icon=":material/queue:")
    # The sidebar rendered before the button above and polls only when it saw a job: follow the run here, so the
    # page redraws (its measured point on the curve) when it ends.
    follow_runs(st.session_state.get(_RUNS_KEY, {}).get(job.id, []), what="Recipe run", key="explore.mps.run")
    for record in runs:
        st.caption(f"Experiment #{record['id']}: {fmt_mb(record.get('size_bytes'))} on disk, top-1 "
                   f"{fmt_num((record.get('accuracy_top1') or 0) * 100, '.2f', ' %')} "
                   f"({baseline_words(record) or 'baseline not measured'}).")
