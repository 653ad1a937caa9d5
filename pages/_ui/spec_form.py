"""The Compress page's method forms, drawn from the specs' knob metadata (core.specs.Knob).

Each method tab shows the method's own knobs in three columns, then its workflow and budget, then per-layer
overrides; every widget's key is the spec's ``widget_key`` (``cfg.<form key>.<field>``), its choices, range, label
and help come from the field's ``Knob``. A method that declares a ``FormInfo`` gets a tab without any page code.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import streamlit as st

from core.compress.registry import method_descriptor
from core.measure.layer_summary import layers_compressed_by_default
from core.specs import (
    SPEC_TYPES,
    CompressionSpec,
    Knob,
    PalettizeSpec,
    PipelineSpec,
    PruneSpec,
    QuantizeWeightsSpec,
    SpecError,
    pipeline_second_steps,
    spec_type,
)

AUTO = "auto"


def tab_groups() -> dict[str, list[type[CompressionSpec]]]:
    """Tab label → the spec types it shows (several share a tab through a Kind radio), in display order."""
    groups: dict[str, list[type[CompressionSpec]]] = {}
    for spec_cls in SPEC_TYPES.values():
        if spec_cls.form is not None:
            groups.setdefault(spec_cls.form.tab, []).append(spec_cls)
    return {tab: sorted(members, key=lambda cls: cls.form.kind_rank) for tab, members in groups.items()}


def persistent(key: str, default: Any) -> str:
    """A widget key whose value survives page switches, starting at `default`."""
    st.session_state.setdefault(key, default)
    return key


def _shown_default(spec_cls: type[CompressionSpec], name: str, meta: Knob) -> Any:
    default = spec_cls.default_of(name)
    return meta.none_as if default is None and meta.optional else default


def _range(meta: Knob) -> tuple:
    return meta.form_range or (meta.minimum, meta.maximum)


def draw_knob(meta: Knob, *, key: str, options: tuple = (), disabled: bool = False, label: str | None = None,
              help: str | None = None, slider_format: str | None = None) -> Any:
    """One widget for a knob, as its metadata says (the value is under `key` in session state already).

    `options`: the values offered (choices); `label`, `help`, `slider_format` ("" = plain) replace the knob's own."""
    common = {"key": key, "help": help or meta.help, "disabled": disabled}
    label = label or meta.label
    widget = meta.widget or ("toggle" if meta.kind == "bool" else "select_slider" if options else "number")
    if widget == "radio":
        return st.radio(label, list(options), format_func=meta.text, horizontal=meta.horizontal, **common)
    if widget == "select_slider":
        return st.select_slider(label, options=list(options), format_func=meta.text, **common)
    if widget == "selectbox":
        return st.selectbox(label, list(options), format_func=meta.text, **common)
    if widget == "toggle":
        return st.toggle(label, **common)
    low, high = _range(meta)
    if widget == "slider":
        shown = meta.slider_format if slider_format is None else (slider_format or None)
        return st.slider(label, min_value=low, max_value=high, step=meta.step, format=shown, **common)
    return st.number_input(label, min_value=low, max_value=high, step=meta.step or 1, **common)


def _field_value(spec_cls: type[CompressionSpec], name: str, meta: Knob, *, disabled: bool) -> Any:
    """Draw one field's widget(s) and return the value the spec takes (a pair from its parts, None from none_as)."""
    if meta.parts:
        parts = []
        for part, part_meta in meta.parts:
            key = persistent(spec_cls.widget_key(part), spec_cls.default_of(name)[len(parts)])
            parts.append(int(draw_knob(part_meta, key=key, disabled=disabled)))
        return tuple(parts)
    key = persistent(spec_cls.widget_key(name), _shown_default(spec_cls, name, meta))
    if meta.widget == "int8_form":
        return int8_form(spec_cls, meta, key=key)
    value = draw_knob(meta, key=key, options=spec_cls.offered_values(name), disabled=disabled)
    kind = meta.value_kind(spec_cls.default_of(name))
    if meta.optional and value == meta.none_as:
        return None
    return int(value) if kind == "int" else float(value) if kind == "float" else value


def int8_form(spec_cls: type[CompressionSpec], meta: Knob, *, key: str) -> dict:
    """torch_static's engine and graph as one "engine/graph" selector (auto: time them all on this CPU)."""
    engines = [e for e in spec_cls.allowed_values("engine") if e != AUTO]
    graphs = [g for g in spec_cls.allowed_values("graph") if g != AUTO]
    options = (AUTO, *(f"{engine}/{graph}" for engine in engines for graph in graphs))
    choice = draw_knob(dataclasses.replace(meta, widget="selectbox"), key=key, options=options)
    engine, _, graph = (AUTO, "", AUTO) if choice == AUTO else str(choice).partition("/")
    return {"engine": engine, "graph": graph}


def _enabled(meta: Knob, values: dict) -> bool:
    return all(values.get(name) in allowed for name, allowed in meta.enabled_when.items())


def own_knob_values(spec_cls: type[CompressionSpec]) -> dict:
    """The method's own knobs, column by column (a knob enabled by another reads that one's value); a disabled
    knob does not apply, so the spec keeps its default there."""
    drawn = {name: meta for name, meta in spec_cls.own_knobs().items() if meta.on_form}
    order = list(drawn)
    placed = sorted(drawn.items(), key=lambda item: (99 if item[1].column is None else item[1].column,
                                                      item[1].order, order.index(item[0])))
    columns = st.columns(3) if any(meta.column is not None for meta in drawn.values()) else None
    values: dict[str, Any] = {}
    for name, meta in placed:
        enabled = _enabled(meta, values)
        with columns[meta.column] if columns and meta.column is not None else st.container():
            value = _field_value(spec_cls, name, meta, disabled=not enabled)
        if isinstance(value, dict):
            values.update(value)
        elif enabled:
            values[name] = value
    return values


def workflow_values(spec_cls: type[CompressionSpec]) -> dict:
    """The workflow (a radio when the method has several) and, depending on it, its data or fine-tuning budget."""
    knobs = spec_cls.knobs()
    if len(spec_cls.workflows) > 1:
        workflow = _field_value(spec_cls, "workflow", knobs["workflow"], disabled=False)
    else:
        workflow = spec_cls.workflows[0]
    values: dict[str, Any] = {"workflow": workflow}
    budget = {name: meta for name, meta in knobs.items() if workflow in meta.workflows}
    columns = st.columns(3) if any(meta.column is not None for meta in budget.values()) else None
    for name, meta in budget.items():
        if meta.column is None:
            values[name] = _field_value(spec_cls, name, meta, disabled=False)
    for name, meta in budget.items():
        if meta.column is not None:
            with columns[meta.column]:
                values[name] = _field_value(spec_cls, name, meta, disabled=False)
    return dict(sorted(values.items(), key=lambda item: list(knobs).index(item[0])))


def overrides_values(spec_cls: type[CompressionSpec], *, layer_names: list[str]) -> dict:
    """Per-layer overrides from multiselects of layer names: skip some, or give some a different setting."""
    form = spec_cls.form
    overrides: dict[str, dict | None] = {}
    with st.expander("Per-layer overrides"):
        skip = st.multiselect("Leave these layers uncompressed", layer_names, key=persistent(spec_cls.widget_key("skip"), []),
                              help="Sensitive layers (often the first conv and the classifier) can stay in fp16.")
        if form.layer_widget is not None:
            chosen = st.multiselect("Use a different setting for these layers", [n for n in layer_names if n not in skip],
                                    key=persistent(spec_cls.widget_key("special"), []),
                                    help="For example more bits for a layer that loses too much accuracy.")
            if chosen:
                value = _layer_value(spec_cls)
                for name in chosen:
                    overrides[f"^{re.escape(name)}$"] = {form.layer_widget.field: value}
        for name in skip:
            overrides[f"^{re.escape(name)}$"] = None
        if overrides:
            st.caption(f"{len(overrides)} override(s): " + ", ".join(f"`{p}`" for p in overrides))
    return overrides


def _layer_value(spec_cls: type[CompressionSpec]) -> Any:
    layer = spec_cls.form.layer_widget
    meta = spec_cls.knobs()[layer.field]
    value = draw_knob(meta, key=persistent(spec_cls.widget_key("special_value"), layer.default),
                      options=spec_cls.offered_values(layer.field), label=layer.label, help=layer.help,
                      slider_format=layer.slider_format)
    return float(value) if meta.value_kind(spec_cls.default_of(layer.field)) == "float" else value


def build(spec_factory: Callable[[], Any]) -> Any:
    """The spec, or None with the reason on screen when the settings are impossible."""
    try:
        return spec_factory()
    except SpecError as exc:
        st.error(f"These settings are not possible: {exc}", icon=":material/error:")
        return None


def method_form(spec_cls: type[CompressionSpec], *, model_layers: dict) -> CompressionSpec | None:
    """Every knob of one method, its workflow and overrides → the validated spec (None: impossible, said why)."""
    own = own_knob_values(spec_cls)
    workflow = workflow_values(spec_cls)
    overrides = overrides_values(spec_cls, layer_names=list(model_layers)) if spec_cls.form.overrides else {}
    spec = build(lambda: spec_cls(**own, **workflow, overrides=overrides))
    method = method_descriptor(spec_cls.method)
    if (spec is not None and spec_cls.form.nothing_eligible
            and not layers_compressed_by_default(model_layers, method=method, spec=spec)):
        st.info(spec_cls.form.nothing_eligible, icon=":material/info:")
    return spec


def method_tab(members: list[type[CompressionSpec]], *, model_layers: dict) -> tuple[str, CompressionSpec | None]:
    """One tab: its caption, a Kind radio when several methods share it, and the chosen method's form."""
    first = members[0]
    st.caption(first.form.caption)
    chosen = first
    if len(members) > 1:
        by_kind = {cls.form.kind: cls for cls in members}
        kind = st.radio("Kind", list(by_kind), horizontal=True, key=persistent(first.widget_key("kind"), first.form.kind),
                        format_func=lambda k: by_kind[k].form.kind_label,
                        help=" / ".join(cls.help for cls in members))
        chosen = by_kind[kind]
    return chosen.method, method_form(chosen, model_layers=model_layers)


def coreml_side_form(method: str) -> CompressionSpec | None:
    """The Model page's form for compressing an uploaded .mlpackage: the method's one Core ML-side knob (its
    choices or range from the spec's metadata), widget key cfg.ml.<key>."""
    side = method_descriptor(method).coreml_side
    spec_cls = spec_type(method)
    meta = spec_cls.knobs()[side.knob]
    if side.form_range:
        meta = dataclasses.replace(meta, form_range=side.form_range)
    value = draw_knob(meta, key=persistent(f"cfg.ml.{side.key}", spec_cls.default_of(side.knob)),
                      options=spec_cls.offered_values(side.knob), label=side.label, help=side.help)
    if meta.value_kind(spec_cls.default_of(side.knob)) == "float":
        value = float(value)
    return build(lambda: spec_cls(**{side.knob: value}))


PIPELINE_KEY = "cfg.pipe."  # the joint pipeline's widget keys


def pipeline_form() -> PipelineSpec | None:
    """Prune, then palettize or quantize the surviving weights; the choices come from the two steps' knobs."""
    prune = PruneSpec.knobs()
    c = st.columns(2)
    with c[0]:
        st.markdown("**Step 1 · Prune**")
        sparsity = draw_knob(dataclasses.replace(prune["target_sparsity"], form_range=(0.05, 0.95)),
                             key=persistent(PIPELINE_KEY + "sparsity", PruneSpec.default_of("target_sparsity")),
                             help="Share of weights set to zero before step 2.", slider_format="percent")
        structures = tuple(s for s in PruneSpec.allowed_values("structure") if s != "block")
        structure = draw_knob(dataclasses.replace(prune["structure"], option_labels={}, horizontal=True),
                              key=persistent(PIPELINE_KEY + "structure", structures[0]), options=structures,
                              help=f"n:m uses {':'.join(map(str, PruneSpec.default_of('n_m')))} here.")
    with c[1]:
        st.markdown("**Step 2**")
        seconds = pipeline_second_steps(PruneSpec.method)
        second = st.radio("Then", seconds, format_func=lambda m: m.replace("_", " "), horizontal=True,
                          key=persistent(PIPELINE_KEY + "second", seconds[0]),
                          help="Palettizing the non-zeros keeps the zeros exact (sparse + LUT storage).")
        step2 = _pipeline_second_step(spec_type(second))
    workflows = tuple(w for w in PruneSpec.workflows if w != "calibration")
    workflow = draw_knob(prune["workflow"], key=persistent(PIPELINE_KEY + "workflow", workflows[0]), options=workflows,
                         help="Applied to both steps.")
    return build(lambda: PipelineSpec((
        PruneSpec(target_sparsity=float(sparsity), structure=structure, workflow=workflow),
        spec_type(second)(**step2, workflow=workflow))))


# The second step's one knob on the pipeline form: its field, label and help there.
_SECOND_STEP_KNOB = {
    PalettizeSpec: ("n_bits", "Bits", "LUT size 2ⁿ for the surviving weights."),
    QuantizeWeightsSpec: ("dtype", "Integer type", "Integer grid for the surviving weights."),
}


def _pipeline_second_step(spec_cls: type[CompressionSpec]) -> dict:
    name, label, help_text = _SECOND_STEP_KNOB[spec_cls]
    meta = spec_cls.knobs()[name]
    value = draw_knob(meta, key=persistent(PIPELINE_KEY + name, spec_cls.default_of(name)),
                      options=spec_cls.offered_values(name), label=label, help=help_text)
    return {name: value}
