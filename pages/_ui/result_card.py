"""The outcome of one run (the card under the Run button) and the downloads of any experiment."""

from __future__ import annotations

import streamlit as st

from core.evaluation import baseline_words
from core.formatting import as_number, fmt_bytes, fmt_num, fmt_pct, fmt_pts, fmt_seconds, fmt_size_ratio
from core.metrics import metrics_in
from core.models.sources import accuracy_meaning
from core.progress import split_library_warnings
from core.speedup_wording import record_latency_change, speedup_text, spread_note
from pages._ui.errors import attempt
from pages._ui.storage import store


def _config_texts(record: dict) -> tuple[str, str]:
    """(coremltools config YAML, Python snippet) for a record's spec."""
    from core import config_export
    from core.specs import spec_from_dict

    spec = spec_from_dict(record.get("spec") or {})
    return config_export.config_yaml(spec), config_export.python_snippet(spec=spec, source_id=str(record.get("model")))


def downloads(record: dict, *, key: str) -> None:
    """Download buttons for one experiment: the compressed model, the recipe as YAML and as Python."""
    experiment_id = int(record["id"])
    cols = st.columns(3)
    try:
        _, name, mime = store().artifact_file(experiment_id)
    except ValueError as exc:
        cols[0].caption(f":material/block: {exc}")
    else:
        label = "Core ML package (.zip)" if record.get("artifact_kind") == "mlpackage" else "TorchScript model"
        cols[0].download_button(f"{label} · {fmt_bytes(record.get('size_bytes'))}",
                                lambda: store().artifact_download(experiment_id)[0],  # zipped only when clicked
                                file_name=name, mime=mime, on_click="ignore",
                                icon=":material/download:", key=f"{key}.artifact", width="stretch")
    texts = attempt("Building the recipe", _config_texts, record)
    if texts is not None:
        yaml_text, snippet = texts
        cols[1].download_button("Recipe (coremltools YAML)", yaml_text, file_name=f"experiment{experiment_id}_recipe.yaml",
                                mime="text/yaml", icon=":material/description:", key=f"{key}.yaml", width="stretch",
                                on_click="ignore")
        cols[2].download_button("Recipe (Python snippet)", snippet, file_name=f"experiment{experiment_id}_recipe.py",
                                mime="text/x-python", icon=":material/code:", key=f"{key}.py", width="stretch",
                                on_click="ignore")


def _metrics_row(record: dict) -> None:
    """A card per metric declared with the "card" view (core.metrics), in declaration order: three on the first row,
    two per row after. Five bordered metrics side by side clip their values ("1.25 MB" → "1.25 M") on a laptop
    screen, and the latency's interval wording needs the width of half a row."""
    shown = metrics_in("card")
    widths = [3, *[2] * ((max(len(shown) - 3, 0) + 1) // 2)]
    cols = [col for width in widths for col in st.columns(width)]
    for declared, col in zip(shown, cols, strict=False):
        draw = _CARDS.get(declared.key)
        if draw is not None:
            draw(col, record)
        else:
            col.metric(declared.label[:1].upper() + declared.label[1:], declared.format(record.get(declared.key)),
                       border=True, help=declared.description)


def _accuracy_card(col, record: dict) -> None:
    acc, base = as_number(record.get("accuracy_top1")), as_number(record.get("baseline_accuracy_top1"))
    if bool(record.get("accuracy_meaningful")) and acc is not None and base is not None:
        col.metric("Top-1 accuracy", fmt_pct(acc), delta=f"{fmt_pts(acc - base)} vs {fmt_pct(base)}", border=True,
                   help=f"on {record.get('eval_images', '?'):,} held-out images ({record.get('dataset_source')})")
    else:
        col.metric("Top-1 accuracy", "n/a", border=True,
                   help=accuracy_meaning(accuracy_meaningful=False, weights_note=record.get("weights_note")))


def _agreement_card(col, record: dict) -> None:
    col.metric("Agreement", fmt_pct(record.get("agreement_top1")), border=True,
               delta=f"{record.get('flipped', 0):,} changed", delta_color="off", delta_arrow="off",
               help="Share of images where the compressed model predicts the same class as the original; "
               "'changed' counts the images whose prediction flipped.")


def _size_card(col, record: dict) -> None:
    ratio = as_number(record.get("compression_ratio_fp16"))
    col.metric("Size on disk", fmt_bytes(record.get("size_bytes")), border=True,
               delta=fmt_size_ratio(ratio) if ratio is not None else None,
               delta_color="normal" if ratio is None or ratio >= 1 else "inverse",
               help=f"The exported {record.get('artifact_kind') or 'artifact'} measured on disk, vs the uncompressed fp16 "
               f".mlpackage ({fmt_bytes(record.get('size_fp16_bytes'))}).")


def _latency_card(col, record: dict) -> None:
    lat = as_number(record.get("latency_ratio"))
    change = record_latency_change(record)
    if change is not None:  # the interval decides: inside the noise it says so, never "+22 %"
        delta, help_ratio = change.short, f": {change.sentence}"
    else:
        delta = f"{(lat - 1) * 100:+.0f} % vs baseline" if lat is not None else None
        help_ratio = f": {lat:.2f}× the baseline's median (no interval recorded)." if lat is not None else "."
    measurable_int8 = record.get("runs_int8_kernels") and (change is None or change.measurable)
    col.metric("Latency p50", fmt_num(record.get("latency_ms_p50"), ".3f", " ms"), border=True, delta=delta,
               # A faster int8 model shows a green downward arrow; no colour for noise or weight-only results.
               delta_color="inverse" if measurable_int8 else "off",
               delta_arrow="auto" if measurable_int8 else "off",
               help="Batch 1 on this CPU, timed interleaved with the baseline in the same process" + help_ratio)


def _compress_time_card(col, record: dict) -> None:
    col.metric("Time to compress", fmt_seconds(record.get("compress_seconds")), border=True,
               delta=f"{record.get('workflow', '')}".replace("_", "-"), delta_color="off", delta_arrow="off",
               help="Wall time of the compression step alone (export and measurement not included).")


# Cards that say more than the value (a delta against the baseline, the workflow); any other metric with the
# "card" view gets a plain card from its declaration.
_CARDS = {"accuracy_top1": _accuracy_card, "agreement_top1": _agreement_card, "size_bytes": _size_card,
          "latency_ms_p50": _latency_card, "compress_seconds": _compress_time_card}


def artifact_weights_alert(record: dict) -> None:
    """An error when the exported artifact does not hold the weights the accuracy was measured with."""
    check = record.get("artifact_weights_check") or {}
    if record.get("artifact_weights_match") is False:
        st.error("**The exported artifact's weights differ from the weights that were evaluated** — the accuracy "
                 f"shown is not the accuracy of the file you would ship. {check.get('summary', '')}",
                 icon=":material/error:")
    elif record.get("artifact_weights_match") is None and check:
        st.warning(check.get("summary") or "The artifact's weights were not checked.", icon=":material/warning:")


def _notes(record: dict) -> None:
    if words := baseline_words(record):
        st.caption(f":material/target: Compared with the {words} — the same images as this result.")
    meaning = accuracy_meaning(accuracy_meaningful=bool(record.get("accuracy_meaningful")),
                               weights_note=record.get("weights_note"))
    if meaning:
        st.caption(f":material/casino: {meaning}")
    if record.get("latency_note"):
        st.caption(f":material/speed: {record['latency_note']}")
    if busy := spread_note(record.get("latency"), runner="candidate"):
        st.caption(f":material/speed: {busy}")
    if speed := speedup_text(record):
        st.caption(f":material/speed: {speed}")
    check = record.get("size_check") or {}
    if check.get("note"):
        st.caption(f":material/straighten: {check['note']}")
    if record.get("artifact_weights_match"):
        st.caption(f":material/verified: Artifact = evaluated weights: {record['artifact_weights_check']['summary']}")
    layers = record.get("layers") or []
    skipped = [layer for layer in layers if not layer.get("compressed")]
    if layers:
        st.caption(f":material/layers: {len(layers) - len(skipped)} of {len(layers)} weight layers compressed"
                   + (f"; left as they were: {', '.join(layer['name'] for layer in skipped[:6])}"
                      + (" …" if len(skipped) > 6 else "") + " (reasons on the Layers page)" if skipped else "."))
    # untested library versions are said once on the Model page; the record keeps them among its notes
    library_warnings, other_notes = split_library_warnings(record.get("notes"), versions=False)
    if library_warnings:
        st.markdown(":material/warning: **Library warnings from this run**\n"
                    + "\n".join(f"- {_short(line)}" for line in library_warnings))
    if other_notes:
        with st.expander(f"Notes from this run ({len(other_notes)})"):
            for note in other_notes:
                st.markdown(f"- {note}")


def _short(line: str, limit: int = 180) -> str:
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def result_card(record: dict) -> None:
    """The outcome of one run: accuracy Δ, agreement, real size ratio, latency ratio (with its note), time."""
    experiment_id = record.get("id")
    st.success(f"Saved as experiment **#{experiment_id}** — {record.get('spec_summary')}", icon=":material/check_circle:")
    artifact_weights_alert(record)
    _metrics_row(record)
    _notes(record)
    downloads(record, key=f"result.{experiment_id}")
    c1, c2, _ = st.columns([1, 1, 2])
    if c1.button("See it in Compare", icon=":material/monitoring:", key=f"result.{experiment_id}.compare", width="stretch"):
        st.session_state["selected_experiment"] = experiment_id
        st.switch_page("pages/3_Compare.py")
    if c2.button("Open layer histograms", icon=":material/stacked_bar_chart:", key=f"result.{experiment_id}.layers", width="stretch"):
        st.session_state["selected_experiment"] = experiment_id
        st.switch_page("pages/4_Layers.py")
