"""Every architecture of every route in one list: the Model page's searchable picker and `core.cli models --search`.

torchvision's parameter counts come from its weights metadata (nothing built); timm's ~1,300 names are listed
without building anything, and a parameter count is worked out on the meta device only when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ROUTE_NAMES = ("sample", "torchvision", "timm")
MAX_TIMM_PARAM_LOOKUPS = 60  # each one builds the model on the meta device (~20-500 ms)


@dataclass(frozen=True)
class ArchitectureChoice:
    """One pickable architecture: its source id, route, name and (where known) parameter count."""

    source_id: str
    route: str
    name: str
    params: int | None
    detail: str

    @property
    def label(self) -> str:
        """What the picker shows: the route prefix, the name and the parameter count where known."""
        size = f" — {self.params / 1e6:,.1f} M params" if self.params else ""
        return f"{self.route}:{self.name}{size}"


def _samples() -> list[ArchitectureChoice]:
    from core.models.architectures import SAMPLE_ARCHITECTURES
    from core.models.sources import sample_manifest

    manifest = sample_manifest()
    return [ArchitectureChoice(f"sample:{name}", "sample", name, manifest.get(name, {}).get("params"),
                               "trained here on Fashion-MNIST") for name in SAMPLE_ARCHITECTURES]


def _torchvision() -> list[ArchitectureChoice]:
    from core.models.torchvision_route import torchvision_arch_info, torchvision_architectures

    choices = []
    for arch in torchvision_architectures():
        info = torchvision_arch_info(arch)
        choices.append(ArchitectureChoice(
            f"torchvision:{arch}", "torchvision", arch, info.params,
            f"{info.params / 1e6:,.1f} M params, input {'×'.join(map(str, info.input_shape))}, "
            f"{info.preprocessing.describe()}"))
    return choices


def _timm(names: Sequence[str], *, with_params: bool) -> list[ArchitectureChoice]:
    from core.models.timm_route import timm_params

    count_params = with_params and len(names) <= MAX_TIMM_PARAM_LOOKUPS
    choices = []
    for name in names:
        params = timm_params(name) if count_params else None
        detail = f"{params / 1e6:,.1f} M params" if params else "timm model (parameter count: search a narrower name)"
        choices.append(ArchitectureChoice(f"timm:{name}", "timm", name, params, detail))
    return choices


def architecture_choices(*, search: str | None = None, routes: Sequence[str] | None = None,
                         with_timm_params: bool = False) -> list[ArchitectureChoice]:
    """Every architecture of `routes` (default: all) whose name contains `search` (case-insensitive)."""
    from core.models.timm_route import timm_model_names

    routes = tuple(routes or ROUTE_NAMES)
    unknown = [r for r in routes if r not in ROUTE_NAMES]
    if unknown:
        raise ValueError(f"unknown route(s) {', '.join(unknown)}; choose from {', '.join(ROUTE_NAMES)}.")
    needle = (search or "").strip().lower()
    choices: list[ArchitectureChoice] = []
    if "sample" in routes:
        choices += [c for c in _samples() if needle in c.name.lower()]
    if "torchvision" in routes:
        choices += [c for c in _torchvision() if needle in c.name.lower()]
    if "timm" in routes:
        choices += _timm([n for n in timm_model_names() if needle in n.lower()], with_params=with_timm_params)
    return choices
