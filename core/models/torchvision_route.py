"""``torchvision:<arch>``: every classification architecture torchvision lists, with its weights metadata.

Input size, resize, crop, interpolation and normalisation come from the architecture's DEFAULT weights
(``get_model_weights(arch).DEFAULT.transforms()``) and the parameter count from their ``num_params``, so listing
builds nothing. Random weights are seeded and get their BatchNorm statistics recalibrated (core.models.bn_calibration);
user weights come from a .pt/.pth (``weights_only=True``) or .safetensors file for any architecture.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.models.bn_calibration import prepare_random_weights
from core.models.checkpoints import apply_state_dict, checkpoint_num_classes, head_outputs
from core.models.errors import ModelLoadError, unknown_name
from core.models.loaded import IMAGENET_MEAN, IMAGENET_STD, LoadedModel, random_weights_note
from core.models.memory_guard import check_fits_in_memory
from core.models.output_check import check_class_scores
from core.models.preprocessing import Preprocessing, default_preprocessing
from core.models.state_dicts import read_state_dict


@dataclass(frozen=True)
class TorchvisionArch:
    """What torchvision's weights metadata says about one architecture (nothing is built to know it)."""

    name: str
    params: int
    preprocessing: Preprocessing
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.preprocessing.crop_size, self.preprocessing.crop_size)


@functools.cache
def torchvision_architectures() -> tuple[str, ...]:
    """Every classification architecture torchvision lists (its detection, video … models live in submodules)."""
    import torchvision.models as tvm

    return tuple(tvm.list_models(module=tvm))


@functools.cache
def torchvision_arch_info(arch: str) -> TorchvisionArch:
    """Parameter count and preprocessing from the DEFAULT weights; a 0.875 ImageNet crop of 224 where none exist."""
    import torchvision.models as tvm

    if arch not in torchvision_architectures():
        raise unknown_name(what="torchvision architecture", name=arch, known=torchvision_architectures(),
                           hint="`python -m core.cli models --search NAME` lists them.")
    weights = getattr(tvm.get_model_weights(arch), "DEFAULT", None)
    if weights is None:
        return TorchvisionArch(arch, _count_params_on_meta(arch), default_preprocessing(crop_size=224),
                               IMAGENET_MEAN, IMAGENET_STD)
    transforms = weights.transforms()
    crop, resize = int(transforms.crop_size[0]), int(transforms.resize_size[0])
    built_size = _builder_image_size(arch)
    if built_size is not None and built_size != crop:  # e.g. vit_h_14: SWAG weights at 518, a fresh model at 224
        resize, crop = round(built_size * resize / crop), built_size
    preprocessing = Preprocessing(resize_size=max(resize, crop), crop_size=crop,
                                  interpolation=str(transforms.interpolation.value))
    return TorchvisionArch(arch, int(weights.meta["num_params"]), preprocessing,
                           tuple(float(v) for v in transforms.mean), tuple(float(v) for v in transforms.std))


def _builder_image_size(arch: str) -> int | None:
    """The fixed input size a freshly built model demands (ViT's `image_size`), else None."""
    if not arch.startswith("vit_"):
        return None
    return int(getattr(_build_shape_only(arch), "image_size", 0)) or None


def _build(arch: str, *, device: str = "cpu", **kwargs: object) -> nn.Module:
    import torchvision.models as tvm

    with torch.device(device), warnings.catch_warnings():
        # googlenet / inception_v3 warn that their default initialisation may change one day; nothing to act on
        warnings.filterwarnings("ignore", category=FutureWarning, module="torchvision")
        return tvm.get_model(arch, weights=None, **kwargs)


def _build_shape_only(arch: str) -> nn.Module:
    """The architecture for reading shapes: on the meta device (no memory), or on the CPU for builders that compute
    with tensors while building (RegNet's width schedule cannot run on meta)."""
    try:
        return _build(arch, device="meta")
    except (NotImplementedError, RuntimeError):
        return _build(arch)


def _checkpoint_build_options(arch: str, state: dict[str, torch.Tensor]) -> dict:
    """Builder options a checkpoint implies: its class count (from the head), and no auxiliary classifiers when
    the file has none (GoogLeNet / Inception-v3 saved after loading pretrained weights drop them)."""
    shape_model = _build_shape_only(arch)
    options: dict = {}
    num_classes = checkpoint_num_classes(module=shape_model, state=state)
    if num_classes is not None:
        options["num_classes"] = num_classes
    missing = [k for k in shape_model.state_dict() if k not in state]
    if missing and hasattr(shape_model, "aux_logits") and all(k.lower().startswith("aux") for k in missing):
        options["aux_logits"] = False
    return options


def _drop_auxiliary_classifiers(module: nn.Module) -> list[str]:
    """GoogLeNet / Inception-v3 carry auxiliary classifiers that only training uses; torchvision drops them after
    loading its pretrained weights, and so does this route: otherwise they would be compressed and counted in the
    model's size while the exported artifact (traced in inference mode) has none of them."""
    if not getattr(module, "aux_logits", False):
        return []
    dropped = [name for name, _ in module.named_children() if name.lower().startswith("aux")]
    module.aux_logits = False
    for name in dropped:
        setattr(module, name, None)
    return dropped


def _count_params_on_meta(arch: str) -> int:
    return sum(p.numel() for p in _build_shape_only(arch).parameters())


def pretrained_cache_path(arch: str) -> Path:
    """Where torchvision's default pretrained weights for `arch` would sit in the local torch hub cache."""
    import torchvision.models as tvm

    weights_enum = tvm.get_model_weights(arch).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights_enum.url).name


def preflight_torchvision(arch: str, *, weights: Path | None = None) -> TorchvisionArch:
    """The checks that need nothing built or read: a known name, and enough memory (parameters / file size)."""
    info = torchvision_arch_info(arch)
    file_bytes = Path(weights).stat().st_size if weights is not None and Path(weights).is_file() else None
    check_fits_in_memory(label=f"torchvision:{arch}", params=info.params, file_bytes=file_bytes)
    return info


def load_torchvision(arch: str, *, weights: Path | None = None, pretrained: bool = False) -> LoadedModel:
    """A torchvision classifier: seeded random weights (BatchNorm recalibrated), a weights file, or the hub cache."""
    info = torchvision_arch_info(arch)
    if pretrained and weights is None:
        weights = pretrained_cache_path(arch)
        if not weights.is_file():
            raise ModelLoadError(
                f"pretrained {arch} weights are not in the local torch hub cache ({weights}) and this app does not "
                "download them. Copy the file there, or pass the weights file explicitly."
            )
    preflight_torchvision(arch, weights=weights)
    state = read_state_dict(weights) if weights is not None else None
    options = _checkpoint_build_options(arch, state) if state else {}
    torch.manual_seed(0)  # random init is still reproducible
    module = _build(arch, **options)
    if state is not None:
        apply_state_dict(module=module, state=state, arch=arch, file_name=Path(weights).name)
        note = f"weights from {Path(weights).name}"
    else:
        note = random_weights_note(prepare_random_weights(module, input_shape=info.input_shape))
    if _drop_auxiliary_classifiers(module):
        note += "; auxiliary training classifiers dropped (inference never runs them, and no export holds them)"
    module.eval()
    classes = head_outputs(module)
    check_class_scores(module=module, input_shape=info.input_shape, num_classes=classes, label=f"torchvision:{arch}")
    return LoadedModel(
        source_id=f"torchvision:{arch}" if weights is None else f"state_dict:{arch}:{weights}",
        label=f"{arch} ({'random weights' if weights is None else Path(weights).name})",
        module=module,
        architecture=arch,
        input_shape=info.input_shape,
        mean=info.mean,
        std=info.std,
        num_classes=classes,
        dataset=None,
        accuracy_meaningful=False,
        weights_note=note,
        preprocessing=info.preprocessing,
    )
