"""``timm:<name>``: any timm model, randomly initialised (never downloaded) or from a user checkpoint.

Input size, mean / std, interpolation and crop_pct come from timm's data config for the model
(``timm.data.resolve_model_data_config``); the parameter count from the model built on the ``meta`` device (no
memory), so a model too large for this machine is refused before anything is allocated. A checkpoint
(.safetensors or weights-only .pth) sets the class count from its head.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
from torch import nn

from core.models.bn_calibration import prepare_random_weights
from core.models.checkpoints import apply_state_dict, checkpoint_num_classes, head_outputs
from core.models.errors import unknown_name
from core.models.loaded import LoadedModel, random_weights_note
from core.models.memory_guard import check_fits_in_memory
from core.models.output_check import check_class_scores
from core.models.preprocessing import INTERPOLATIONS, Preprocessing
from core.models.state_dicts import read_state_dict


@functools.cache
def timm_model_names() -> tuple[str, ...]:
    """Every architecture name timm can build (about 1,300; pretrained tags such as `.a1_in1k` are accepted too)."""
    import timm

    return tuple(timm.list_models())


def timm_knows(name: str) -> bool:
    """Whether timm can build `name` (an architecture, optionally with a pretrained tag)."""
    import timm

    return bool(timm.is_model(name))


def _require_known(name: str) -> None:
    if not timm_knows(name):
        raise unknown_name(what="timm model", name=name, known=timm_model_names(),
                           hint="`python -m core.cli models --search NAME` lists timm's names.")


def _build(name: str, *, device: str = "cpu", num_classes: int | None = None) -> nn.Module:
    import timm

    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    with torch.device(device):
        return timm.create_model(name, pretrained=False, **kwargs)  # never a download


def timm_params(name: str) -> int:
    """Parameter count from the model built on the meta device (no weights allocated)."""
    _require_known(name)
    return sum(p.numel() for p in _build(name, device="meta").parameters())


def timm_input_shape(name: str) -> tuple[int, int, int]:
    """The input shape timm's data config gives the model (built on the meta device: no memory)."""
    _require_known(name)
    return timm_data_config(_build(name, device="meta"))[0]


def timm_data_config(module: nn.Module) -> tuple[tuple[int, int, int], tuple[float, ...], tuple[float, ...],
                                                 Preprocessing | None]:
    """(input shape, mean, std, preprocessing) from timm's data config; preprocessing None for non-square inputs."""
    import timm.data

    config = timm.data.resolve_model_data_config(module)
    channels, height, width = (int(v) for v in config["input_size"])
    interpolation = str(config.get("interpolation") or "bilinear")
    if interpolation not in INTERPOLATIONS:  # e.g. "random" (a training-time choice)
        interpolation = "bilinear"
    preprocessing = None
    if height == width:
        crop_pct = float(config.get("crop_pct") or 1.0)
        preprocessing = Preprocessing(resize_size=max(height, math.floor(height / crop_pct)), crop_size=height,
                                      interpolation=interpolation)
    mean = tuple(float(v) for v in config["mean"])
    std = tuple(float(v) for v in config["std"])
    return (channels, height, width), mean, std, preprocessing


def preflight_timm(name: str, *, weights: Path | None = None) -> nn.Module:
    """The checks that need no memory: a known name, and enough memory for it (parameters counted on the meta
    device, or the checkpoint's size); returns the meta-device model."""
    _require_known(name)
    meta_module = _build(name, device="meta")
    file_bytes = Path(weights).stat().st_size if weights is not None and Path(weights).is_file() else None
    check_fits_in_memory(label=f"timm:{name}", params=sum(p.numel() for p in meta_module.parameters()),
                         file_bytes=file_bytes)
    return meta_module


def load_timm(name: str, *, weights: Path | None = None) -> LoadedModel:
    """A timm model: seeded random weights (BatchNorm recalibrated) or the user's checkpoint."""
    meta_module = preflight_timm(name, weights=weights)
    state = read_state_dict(weights) if weights is not None else None
    num_classes = checkpoint_num_classes(module=meta_module, state=state) if state else None
    torch.manual_seed(0)  # random init is still reproducible
    module = _build(name, num_classes=num_classes)
    input_shape, mean, std, preprocessing = timm_data_config(module)
    if state is not None:
        apply_state_dict(module=module, state=state, arch=name, file_name=Path(weights).name)
        note = f"weights from {Path(weights).name}"
    else:
        note = random_weights_note(prepare_random_weights(module, input_shape=input_shape))
    module.eval()
    classes = int(getattr(module, "num_classes", 0) or head_outputs(module))  # timm models state their class count
    check_class_scores(module=module, input_shape=input_shape, num_classes=classes, label=f"timm:{name}")
    return LoadedModel(
        source_id=f"timm:{name}" if weights is None else f"timm:{name}:{weights}",
        label=f"{name} (timm, {'random weights' if weights is None else Path(weights).name})",
        module=module,
        architecture=name,
        input_shape=input_shape,
        mean=mean,
        std=std,
        num_classes=classes,
        dataset=None,
        accuracy_meaningful=False,
        weights_note=note,
        preprocessing=preprocessing,
    )
