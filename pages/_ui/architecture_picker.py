"""The Model page's one searchable picker over every architecture of every route (sample, torchvision, timm),
with the parameter count shown and an optional weights upload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from core.models.catalog import architecture_choices
from core.models.timm_route import timm_params
from core.models.torchvision_route import pretrained_cache_path
from pages._ui.uploads import upload_field

WEIGHT_KINDS = {
    "sample": ("bundled", "file"),
    "torchvision": ("random", "pretrained", "file"),
    "timm": ("random", "file"),
}
WEIGHT_LABELS = {
    "bundled": "Trained weights (bundled)",
    "random": "Random initialisation",
    "pretrained": "Pretrained (local torch hub cache)",
    "file": "Upload a weights file",
}


@dataclass(frozen=True)
class ArchitecturePick:
    """What the picker chose: the architecture, where its weights come from, and an upload when there is one."""

    source_id: str
    route: str
    name: str
    weights: str
    upload: Any = None

    def choice(self) -> dict:
        """The session's model choice when no file is involved."""
        return {"source_id": self.source_id, "pretrained": self.weights == "pretrained"}

    def choice_with_file(self, *, path: str, digest: str) -> dict:
        """The session's model choice for an uploaded weights file saved at `path`."""
        source = f"timm:{self.name}:{path}" if self.route == "timm" else f"state_dict:{self.name}:{path}"
        return {"source_id": source, "hash": digest}


@st.cache_data(show_spinner=False)
def _options() -> dict[str, str]:
    """source id → picker label (route prefix, name, parameter count where it is known without building)."""
    return {c.source_id: c.label for c in architecture_choices()}


@st.cache_data(show_spinner="Counting parameters…")
def _timm_params(name: str) -> int:
    return timm_params(name)


def _detail(source_id: str) -> str:
    route, _, name = source_id.partition(":")
    if route == "timm":
        return (f"{_timm_params(name) / 1e6:,.1f} M parameters · input size, mean / std and interpolation from "
                "timm's data config")
    [choice] = [c for c in architecture_choices(search=name, routes=(route,)) if c.name == name]
    return choice.detail


def architecture_picker(*, key: str, loaded: str | None = None) -> ArchitecturePick | None:
    """The picker, its details and the weights choice; None until an architecture is picked.

    `loaded` is the loaded model's source id: the picker shows it (and follows it when another page or a reload
    changes the model), so it never names one model while another is loaded."""
    options = _options()
    if loaded is not None and st.session_state.get(f"{key}.shown_for") != loaded:
        if loaded in options:
            st.session_state[key] = loaded
        st.session_state[f"{key}.shown_for"] = loaded
    source_id = st.selectbox(
        f"Architecture ({len(options):,}; type to search)", list(options),
        format_func=lambda s: options[s] + (" (loaded)" if s == loaded else ""), key=key,
        help="Every sample model, every torchvision classification architecture and every timm model. Random "
        "weights are fine for size and latency studies; accuracy needs trained weights.",
    )
    if source_id is None:
        return None
    route, _, name = source_id.partition(":")
    st.caption(_detail(source_id))
    weights = st.radio("Weights", WEIGHT_KINDS[route], format_func=WEIGHT_LABELS.get, horizontal=True,
                       key=f"{key}.weights.{route}")
    if weights == "pretrained":
        st.caption(f"Looked up at `{pretrained_cache_path(name)}` — this app never downloads weights.")
    upload = None
    if weights == "file":
        kinds = ".safetensors or a weights-only .pt / .pth" + (" (timm checkpoint)" if route == "timm" else "")
        upload = upload_field(f"Weights for {name}: {kinds}", type=["pt", "pth", "safetensors"],
                              key=f"model.arch_upload.{route}")
    return ArchitecturePick(source_id=source_id, route=route, name=name, weights=weights, upload=upload)


def state_dict_architecture_picker(*, key: str) -> str:
    """The architecture an uploaded state_dict belongs to: a sample or torchvision architecture (searchable)."""
    options = {c.name: c.label for c in architecture_choices(routes=("sample", "torchvision"))}
    return st.selectbox("Architecture the weights belong to", list(options), format_func=options.get, key=key)
