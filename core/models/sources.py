"""Model sources: the ids the pages and CLI list, and safe loading of every kind of model file.

Source ids: ``sample:<name>`` (bundled, trained), ``torchvision:<arch>`` (random init, user weights, or
pretrained weights already in the local torch hub cache), ``torchscript:<path>``, ``export:<path.pt2>``,
``onnx:<path.onnx>`` (graph forms, lifted to real layers by core.models.graph_forms), ``state_dict:<arch>:<path>``.
Nothing here unpickles untrusted data: state dicts go through ``torch.load(weights_only=True)`` or safetensors.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from core.models.architectures import SAMPLE_ARCHITECTURES

if TYPE_CHECKING:
    from core.models.torchscript_probe import ProbeLimits

SAMPLE_MODELS_DIR = Path(__file__).resolve().parent.parent.parent / "sample_models"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FASHION_MNIST = "fashion_mnist"


class ModelLoadError(ValueError):
    """A model or weights file could not be loaded; the message names the problem and what to do."""


@dataclass(frozen=True)
class SourceInfo:
    """One entry of the model-source registry."""

    source_id: str
    label: str
    description: str
    needs_file: bool = False


@dataclass
class LoadedModel:
    """A model ready for the engine: fp32, CPU, eval mode, plus everything measurement needs to know about it."""

    source_id: str
    label: str
    module: nn.Module
    architecture: str
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    dataset: str | None  # the dataset it is evaluated on; None → synthetic inputs only
    accuracy_meaningful: bool
    weights_note: str
    class_names: tuple[str, ...] | None = None
    is_torchscript: bool = False  # the module is a TorchScript ScriptModule (a graph that could not be lifted)
    manifest: dict = field(default_factory=dict)
    # How the model arrived: "module" (Python nn.Module: sample, torchvision, timm, state_dict), "torchscript",
    # "exported" (a torch.export ExportedProgram) or "onnx". Graph forms are lifted to an nn.Module with real
    # Conv2d / Linear layers where possible (core.models.lifting); the form still decides which methods apply.
    form: str = "module"

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    @property
    def size_fp32_bytes(self) -> int:
        return sum(t.numel() * 4 for t in _float_tensors(self.module))

    @property
    def size_fp16_bytes(self) -> int:
        return sum(t.numel() * 2 for t in _float_tensors(self.module))

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        return torch.randn((batch_size, *self.input_shape), generator=torch.Generator().manual_seed(0))


def _float_tensors(module: nn.Module) -> list[torch.Tensor]:
    return [t for t in module.state_dict().values() if isinstance(t, torch.Tensor) and t.is_floating_point()]


# --------------------------------------------------------------------------- registry

TORCHVISION_ARCHITECTURES: dict[str, str] = {
    "resnet18": "ResNet-18 (11.7 M params)",
    "resnet34": "ResNet-34 (21.8 M params; the model of a PyTorch static/dynamic quantization study)",
    "resnet50": "ResNet-50 (25.6 M params; the model of coremltools' compression guides)",
    "mobilenet_v2": "MobileNetV2 (3.5 M params)",
    "mobilenet_v3_small": "MobileNetV3-Small (2.5 M params)",
    "mobilenet_v3_large": "MobileNetV3-Large (5.5 M params)",
    "squeezenet1_1": "SqueezeNet 1.1 (1.2 M params)",
}


def sample_manifest() -> dict:
    path = SAMPLE_MODELS_DIR / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def list_sources() -> list[SourceInfo]:
    """Every model source the app and CLI offer, samples first."""
    manifest = sample_manifest()
    sources = []
    for name in SAMPLE_ARCHITECTURES:
        entry = manifest.get(name, {})
        acc = entry.get("top1_test_10k")
        detail = f"{entry.get('params', 0) / 1e6:.2f} M params, top-1 {acc:.1%} on Fashion-MNIST" if acc else "not trained yet"
        sources.append(SourceInfo(f"sample:{name}", f"Sample · {name}", detail))
    for arch, desc in TORCHVISION_ARCHITECTURES.items():
        sources.append(
            SourceInfo(
                f"torchvision:{arch}",
                f"torchvision · {arch}",
                f"{desc}; random weights unless you supply a weights file or they are in the torch hub cache",
            )
        )
    sources.append(
        SourceInfo(
            "torchscript:<file>",
            "TorchScript file",
            "a scripted or traced model (.pt); a program, so only files you trust (loaded first in a limited process)",
            needs_file=True,
        )
    )
    sources.append(
        SourceInfo(
            "export:<file.pt2>",
            "torch.export program",
            "a program saved with torch.export.save (.pt2); may hold pickled parts, so only files you trust (loaded "
            "first in a limited process)",
            needs_file=True,
        )
    )
    sources.append(
        SourceInfo("onnx:<file.onnx>", "ONNX file", "an ONNX model (.onnx), converted to PyTorch layers", needs_file=True)
    )
    sources.append(
        SourceInfo(
            "state_dict:<arch>:<file>",
            "state_dict file",
            "weights (.pt/.pth loaded with weights_only=True, or .safetensors) for a listed architecture",
            needs_file=True,
        )
    )
    return sources


def load_model(
    source_id: str, *, weights: Path | None = None, pretrained: bool = False, server_address: str | None = None
) -> LoadedModel:
    """Load a model by source id. `weights` gives a torchvision architecture a state_dict file.

    `server_address` is where a dashboard listens (None: library / CLI use); TorchScript files are refused when
    it reaches beyond localhost unless COMPRESSION_STUDIO_ALLOW_TORCHSCRIPT says otherwise (torchscript_probe).
    """
    kind, _, rest = source_id.partition(":")
    if kind == "sample":
        return load_sample(rest)
    if kind == "torchvision":
        return load_torchvision(rest, weights=weights, pretrained=pretrained)
    if kind == "torchscript":
        return load_torchscript(Path(rest), server_address=server_address)
    if kind == "export":
        from core.models.graph_forms import load_exported

        return load_exported(Path(rest), server_address=server_address)
    if kind == "onnx":
        from core.models.graph_forms import load_onnx

        return load_onnx(Path(rest))
    if kind == "state_dict":
        arch, _, path = rest.partition(":")
        if not path:
            raise ModelLoadError("state_dict sources look like state_dict:<architecture>:<file>.")
        if arch in SAMPLE_ARCHITECTURES:
            return load_sample(arch, weights=Path(path))
        return load_torchvision(arch, weights=Path(path))
    known = ", ".join(s.source_id for s in list_sources())
    raise ModelLoadError(f"unknown model source '{source_id}'. Known sources: {known}.")


def load_sample(name: str, *, weights: Path | None = None) -> LoadedModel:
    if name not in SAMPLE_ARCHITECTURES:
        raise ModelLoadError(f"unknown sample model '{name}'; choose one of {', '.join(SAMPLE_ARCHITECTURES)}.")
    from core.data import FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD

    module = SAMPLE_ARCHITECTURES[name]()
    path = weights or SAMPLE_MODELS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise ModelLoadError(
            f"weights for sample model '{name}' are missing ({path}); restore sample_models/ from git "
            "or run scripts/train_sample_models.py."
        )
    _apply_state_dict(module, read_state_dict(path), arch=name)
    manifest = sample_manifest().get(name, {})
    return LoadedModel(
        source_id=f"sample:{name}" if weights is None else f"state_dict:{name}:{path}",
        label=f"{name} (sample)" if weights is None else f"{name} ← {path.name}",
        module=module.eval(),
        architecture=name,
        input_shape=(1, 28, 28),
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        num_classes=len(FASHION_MNIST_CLASSES),
        dataset=FASHION_MNIST,
        accuracy_meaningful=True,
        weights_note="trained on Fashion-MNIST" if weights is None else f"weights from {path.name}",
        class_names=FASHION_MNIST_CLASSES,
        manifest=manifest,
    )


def _torchvision_builder(arch: str) -> Callable[..., nn.Module]:
    import torchvision.models as tvm

    if arch not in TORCHVISION_ARCHITECTURES:
        raise ModelLoadError(
            f"unsupported architecture '{arch}'; choose one of {', '.join(TORCHVISION_ARCHITECTURES)}."
        )
    return getattr(tvm, arch)


def pretrained_cache_path(arch: str) -> Path:
    """Where torchvision's default pretrained weights for `arch` would sit in the local torch hub cache."""
    import torchvision.models as tvm

    weights_enum = tvm.get_model_weights(arch).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights_enum.url).name


def load_torchvision(arch: str, *, weights: Path | None = None, pretrained: bool = False) -> LoadedModel:
    builder = _torchvision_builder(arch)
    torch.manual_seed(0)  # random init is still reproducible
    module = builder(weights=None)
    num_classes = _num_outputs(module)
    if pretrained and weights is None:
        cached = pretrained_cache_path(arch)
        if not cached.is_file():
            raise ModelLoadError(
                f"pretrained {arch} weights are not in the local torch hub cache ({cached}) and this app does not "
                "download them. Copy the file there, or pass the weights file explicitly."
            )
        weights = cached
    if weights is not None:
        state = read_state_dict(weights)
        fc_out = _classifier_outputs_in(state)
        if fc_out is not None and fc_out != num_classes:
            module = builder(weights=None, num_classes=fc_out)
            num_classes = fc_out
        _apply_state_dict(module, state, arch=arch)
        note = f"weights from {weights.name}"
    else:
        note = "random initialisation — accuracy numbers are meaningless; use it for size and latency"
    return LoadedModel(
        source_id=f"torchvision:{arch}" if weights is None else f"state_dict:{arch}:{weights}",
        label=f"{arch} ({'random weights' if weights is None else weights.name})",
        module=module.eval(),
        architecture=arch,
        input_shape=(3, 224, 224),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        num_classes=num_classes,
        dataset=None,
        accuracy_meaningful=False,
        weights_note=note,
    )


def load_torchscript(path: Path, *, limits: ProbeLimits | None = None, server_address: str | None = None) -> LoadedModel:
    """A TorchScript file, loaded and probed first in a child process with a time and memory limit
    (core.models.torchscript_probe), then loaded here. Refused when TorchScript uploads are turned off."""
    from core.models.torchscript_probe import (
        probe_torchscript,
        torchscript_disabled_message,
        torchscript_uploads_allowed,
    )

    path = Path(path)
    if not torchscript_uploads_allowed(server_address):
        raise ModelLoadError(torchscript_disabled_message())
    _require_nonempty_file(path)
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path.name} is not a TorchScript archive (not a zip file); export with torch.jit.save.")
    probe = probe_torchscript(path, limits=limits)
    try:
        script = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # it loaded in the child; only a changed file or environment gets here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path.name} could not be loaded ({first[:200]}).") from None
    from core.models.graph_forms import graph_model, torchscript_graph

    script.eval()
    module, report, graph_error = torchscript_graph(script, probe.input_shape)
    manifest = {"lifting": report.to_dict()} if report is not None else {"graph_error": graph_error}
    return graph_model(
        source_id=f"torchscript:{path}", label=f"TorchScript {path.name}", module=module if module is not None else script,
        form="torchscript", input_shape=probe.input_shape, num_classes=probe.num_classes, manifest=manifest,
        is_torchscript=module is None,
    )


# --------------------------------------------------------------------------- state dicts


def _require_nonempty_file(path: Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path.name} is empty (0 bytes); upload the file again.")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read weights without executing anything: safetensors, or torch.load(weights_only=True)."""
    path = Path(path)
    _require_nonempty_file(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{path.name} is not a valid safetensors file ({exc}); it may be truncated.") from None
        return _finite(state, path.name)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else ""
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise ModelLoadError(
                f"{path.name} contains Python objects or code, not just tensors, and was refused for safety "
                f"({msg[:160]}). Save a plain state_dict (torch.save(model.state_dict())) or use safetensors."
            ) from None
        raise ModelLoadError(f"{path.name} is not a PyTorch weights file ({msg[:160]}).") from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(
            f"{path.name} is corrupt or truncated, or not a file written by torch.save "
            f"({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}). Upload it again, or save a "
            "plain state_dict (torch.save(model.state_dict(), path)) or a .safetensors file."
        ) from None
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path.name} does not hold a state_dict (a mapping of parameter names to tensors).")
    return _finite({k.removeprefix("module."): v for k, v in obj.items()}, path.name)


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """'name (k NaN, j inf)' for every floating tensor holding NaN or ±inf values."""
    found = []
    for key, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            nan = int(torch.isnan(tensor).sum())
            inf = int(torch.isinf(tensor).sum())
            if nan or inf:
                found.append(f"{key} ({', '.join(p for p in (f'{nan:,} NaN' if nan else '', f'{inf:,} inf' if inf else '') if p)})")
    return found


def _finite(state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    bad = nonfinite_tensors(state)
    if bad:
        raise ModelLoadError(
            f"{name} has NaN or infinite values in {len(bad)} tensor(s): {', '.join(bad[:5])}{' …' if len(bad) > 5 else ''}. "
            "The weights are corrupt or training diverged; use weights saved from a healthy checkpoint."
        )
    return state


def _apply_state_dict(module: nn.Module, state: dict[str, torch.Tensor], *, arch: str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)}≠{tuple(v.shape)}" for k, v in expected.items() if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''} ({len(keys)})")
        raise ModelLoadError(f"these weights do not fit architecture '{arch}' — " + "; ".join(parts) + ".")
    module.load_state_dict(state, strict=True)


def _num_outputs(module: nn.Module) -> int:
    last = [m for m in module.modules() if isinstance(m, nn.Linear | nn.Conv2d)][-1]
    return last.out_features if isinstance(last, nn.Linear) else last.out_channels


def _classifier_outputs_in(state: dict[str, torch.Tensor]) -> int | None:
    for key in ("fc.weight", "classifier.3.weight", "classifier.1.weight", "classifier.1.bias"):
        if key in state:
            return int(state[key].shape[0])
    return None
