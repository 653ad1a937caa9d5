"""Model sources: the ids the pages and CLI list, and safe loading of every kind of model file.

Source ids: ``sample:<name>`` (bundled, trained), ``torchvision:<arch>`` (core.models.torchvision_route: random
init, user weights, or pretrained weights already in the local torch hub cache), ``timm:<name>``
(core.models.timm_route), ``torchscript:<path>``, ``export:<path.pt2>``, ``onnx:<path.onnx>`` (graph forms, lifted to
real layers by core.models.graph_forms), ``state_dict:<arch>:<path>``.
Nothing here unpickles untrusted data: state dicts go through ``torch.load(weights_only=True)`` or safetensors.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from core.models.architectures import SAMPLE_ARCHITECTURES
from core.models.checkpoints import apply_state_dict
from core.models.errors import ModelLoadError
from core.models.loaded import (  # noqa: F401  (re-exported: the pages and the CLI import them from here)
    FASHION_MNIST,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RANDOM_WEIGHTS_MEANING,
    LoadedModel,
    random_weights_note,
)
from core.models.state_dicts import read_state_dict, require_nonempty_file

if TYPE_CHECKING:
    from core.models.torchscript_probe import ProbeLimits

SAMPLE_MODELS_DIR = Path(__file__).resolve().parent.parent.parent / "sample_models"


@dataclass(frozen=True)
class SourceInfo:
    """One entry of the model-source registry."""

    source_id: str
    label: str
    description: str
    needs_file: bool = False


# --------------------------------------------------------------------------- registry

def accuracy_meaning(*, accuracy_meaningful: bool, weights_note: str | None) -> str | None:
    """What a page or the CLI says when accuracy is not meaningful: why, and which numbers are (None when it is)."""
    if accuracy_meaningful:
        return None
    if (weights_note or "").startswith("random"):
        return ("Random weights: accuracy numbers are not meaningful. Size, latency and output SNR / agreement against "
                "the model's own fp32 output are.")
    return ("No labelled dataset for this model: accuracy is not measured. Size, latency and output SNR / agreement "
            "against the uncompressed model are meaningful.")


def sample_manifest() -> dict:
    path = SAMPLE_MODELS_DIR / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


ROUTES = ("sample:<name>", "torchvision:<arch>", "timm:<name>", "torchscript:<file>", "state_dict:<arch>:<file>")


def list_sources() -> list[SourceInfo]:
    """Every model source the app and CLI offer: samples, each torchvision architecture, then the open routes."""
    from core.models.torchvision_route import torchvision_arch_info, torchvision_architectures

    manifest = sample_manifest()
    sources = []
    for name in SAMPLE_ARCHITECTURES:
        entry = manifest.get(name, {})
        acc = entry.get("top1_test_10k")
        detail = f"{entry.get('params', 0) / 1e6:.2f} M params, top-1 {acc:.1%} on Fashion-MNIST" if acc else "not trained yet"
        sources.append(SourceInfo(f"sample:{name}", f"Sample · {name}", detail))
    for arch in torchvision_architectures():
        info = torchvision_arch_info(arch)
        sources.append(SourceInfo(
            f"torchvision:{arch}", f"torchvision · {arch}",
            f"{info.params / 1e6:,.1f} M params, input {'×'.join(map(str, info.input_shape))} "
            f"({info.preprocessing.describe()}); random weights unless --weights or the torch hub cache has them",
        ))
    sources.append(SourceInfo(
        "timm:<name>", "timm model",
        "any timm model name (`models --search NAME` lists them): random weights, or a checkpoint via --weights "
        "(.safetensors or weights-only .pth); input size and normalisation from timm's data config",
    ))
    sources.append(SourceInfo(
        "torchscript:<file>", "TorchScript file",
        "a scripted or traced model (.pt); a program, so only files you trust (loaded first in a limited process)",
        needs_file=True,
    ))
    sources.append(SourceInfo(
        "export:<file.pt2>", "torch.export program",
        "a program saved with torch.export.save (.pt2); may hold pickled parts, so only files you trust (loaded "
        "first in a limited process)",
        needs_file=True,
    ))
    sources.append(SourceInfo(
        "onnx:<file.onnx>", "ONNX file", "an ONNX model (.onnx), converted to PyTorch layers", needs_file=True,
    ))
    sources.append(SourceInfo(
        "state_dict:<arch>:<file>", "state_dict file",
        "weights (.pt/.pth loaded with weights_only=True, or .safetensors) for a sample or torchvision architecture",
        needs_file=True,
    ))
    return sources


def load_model(
    source_id: str, *, weights: Path | None = None, pretrained: bool = False, server_address: str | None = None
) -> LoadedModel:
    """Load a model by source id. `weights` gives a torchvision or timm architecture a weights file.

    `server_address` is where a dashboard listens (None: library / CLI use); TorchScript files are refused when
    it reaches beyond localhost unless COMPRESSION_STUDIO_ALLOW_TORCHSCRIPT says otherwise (torchscript_probe).
    """
    from core.models.timm_route import load_timm, timm_knows
    from core.models.torchvision_route import load_torchvision, torchvision_architectures

    kind, _, rest = source_id.partition(":")
    if kind == "sample":
        if weights is not None:
            return load_sample(rest, weights=Path(weights))
        return load_sample(rest)
    if kind == "torchvision":
        return load_torchvision(rest, weights=weights, pretrained=pretrained)
    if kind == "timm":
        name, _, path = rest.partition(":")  # timm:<name>:<file> is how a timm model with a checkpoint is saved
        return load_timm(name, weights=Path(path) if path else weights)
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
        if arch not in torchvision_architectures() and timm_knows(arch):
            return load_timm(arch, weights=Path(path))  # a timm name: the same as timm:<name>:<file>
        return load_torchvision(arch, weights=Path(path))
    raise ModelLoadError(f"unknown model source '{source_id}'. Model sources look like {', '.join(ROUTES)} "
                         f"(e.g. sample:{next(iter(SAMPLE_ARCHITECTURES))}); `python -m core.cli models` lists them.")


def preflight_model(source_id: str, *, weights: Path | None = None) -> None:
    """Refuse an unknown architecture or a model too large for this machine without building or reading anything
    (the CLI checks before it queues a job). Other sources are checked when they load."""
    from core.models.timm_route import preflight_timm
    from core.models.torchvision_route import preflight_torchvision

    kind, _, rest = source_id.partition(":")
    if kind == "torchvision":
        preflight_torchvision(rest, weights=weights)
    elif kind == "timm":
        name, _, path = rest.partition(":")
        preflight_timm(name, weights=Path(path) if path else weights)


def load_sample(name: str, *, weights: Path | None = None) -> LoadedModel:
    if name not in SAMPLE_ARCHITECTURES:
        raise ModelLoadError(f"unknown sample model '{name}'; choose one of {', '.join(SAMPLE_ARCHITECTURES)}.")
    from core.fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD

    module = SAMPLE_ARCHITECTURES[name]()
    path = weights or SAMPLE_MODELS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise ModelLoadError(
            f"weights for sample model '{name}' are missing ({path}); restore sample_models/ from git "
            "or run scripts/train_sample_models.py."
        )
    apply_state_dict(module=module, state=read_state_dict(path), arch=name, file_name=path.name)
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
    require_nonempty_file(path)
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
