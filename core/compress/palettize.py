"""Palettization: every weight becomes an index into a look-up table (LUT) of 2^n_bits values.

* data_free, mode kmeans   → coremltools.optimize.torch PostTrainingPalettizer (k-means per tensor / channel group)
* data_free, uniform/unique → the Core ML-side LUT routines of coremltools.optimize.coreml (the torch-side API
  offers only k-means), applied to the torch weights and registered as compression metadata
* calibration              → SKMPalettizer (Fisher-weighted k-means, sensitivities from a loss on calibration data)
* fine_tune                → DKMPalettizer (differentiable k-means) inside the shared fine-tuning loop

In a prune → palettize pipeline the pruning mask is passed to the library's masked k-means, so zeros stay zeros
and all 2^n_bits entries go to the surviving weights.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from coremltools.optimize.coreml._quantization_passes import palettize_weights as CoreMLPalettizePass
from coremltools.optimize.torch._utils.k_means import KMeansConfig, SequentialKMeans
from coremltools.optimize.torch._utils.metadata_utils import CompressionMetadata, register_metadata_version
from coremltools.optimize.torch.palettization import (
    DKMPalettizer,
    DKMPalettizerConfig,
    ModuleDKMPalettizerConfig,
    ModulePostTrainingPalettizerConfig,
    ModuleSKMPalettizerConfig,
    PostTrainingPalettizer,
    PostTrainingPalettizerConfig,
    SKMPalettizer,
    SKMPalettizerConfig,
)
from coremltools.optimize.torch.palettization._supported_modules import DKMPalettizerModulesRegistry
from torch import nn

from core.compress.context import CompressionContext
from core.compress.finetune import fine_tune, plan_fine_tune
from core.compress.layers import (
    EligibilityCheck,
    LayerFacts,
    LayerPlan,
    basic_ineligibility,
    exact_name_pattern,
    library_result,
    plan_layers,
)
from core.compress.result import CompressionResult
from core.specs import PalettizeSpec

POST_TRAINING_MODULES = PostTrainingPalettizer._supported_modules
DKM_MODULES = DKMPalettizerModulesRegistry.get_supported_modules()


def eligibility(spec: PalettizeSpec) -> EligibilityCheck:
    modules = DKM_MODULES if spec.workflow == "fine_tune" else POST_TRAINING_MODULES
    api = "DKMPalettizer" if spec.workflow == "fine_tune" else "PostTrainingPalettizer/SKMPalettizer"

    def check(name: str, layer: nn.Module, layer_spec: PalettizeSpec) -> str | None:
        reason = basic_ineligibility(
            layer, modules=modules, api=api, verb="palettize", threshold=layer_spec.weight_threshold
        )
        if reason:
            return reason
        weight = layer.weight
        channels = weight.shape[0]
        if layer_spec.granularity == "per_grouped_channel" and channels % layer_spec.group_size:
            return f"output channels ({channels}) not divisible by group_size {layer_spec.group_size}"
        if layer_spec.cluster_dim > 1 and channels % layer_spec.cluster_dim:
            return f"output channels ({channels}) not divisible by cluster_dim {layer_spec.cluster_dim}"
        return None

    return check


def palettize(module: nn.Module, spec: PalettizeSpec, context: CompressionContext) -> CompressionResult:
    started = time.perf_counter()
    plans = plan_layers(module, spec, eligibility(spec))
    eligible = {name: plan for name, plan in plans.items() if plan.eligible}
    facts: dict[str, LayerFacts] = {}
    if eligible:
        if spec.workflow == "fine_tune":
            module = _dkm(module, spec, eligible, context)
        elif spec.mode != "kmeans":
            facts = _lut_from_coreml_routine(module, eligible, context)
        elif spec.workflow == "calibration":
            module = _sensitive_kmeans(module, spec, eligible, context)
        else:
            module = _post_training_kmeans(module, eligible, context)
    else:
        context.note("No layer qualified for palettization; the model is unchanged.")
    for name, plan in eligible.items():
        fact = facts.setdefault(name, LayerFacts())
        fact.extra.setdefault("mode", plan.spec.mode)
        fact.extra.setdefault("workflow", spec.workflow)
    return library_result(
        module=module, spec=spec, plans=plans, facts=facts, context=context, method="palettize", started=started
    )


# --------------------------------------------------------------------------- configs


def _lut_dtype(spec: PalettizeSpec) -> str | None:
    return "int8" if spec.lut_dtype == "int8" else None


def _post_training_config(spec: PalettizeSpec) -> ModulePostTrainingPalettizerConfig:
    return ModulePostTrainingPalettizerConfig(
        n_bits=spec.n_bits,
        lut_dtype=_lut_dtype(spec),
        granularity=spec.granularity,
        group_size=spec.group_size if spec.granularity == "per_grouped_channel" else None,
        cluster_dim=spec.cluster_dim if spec.cluster_dim > 1 else None,
        enable_per_channel_scale=spec.enable_per_channel_scale,
    )


def _kmeans_config(spec: PalettizeSpec, *, mask: torch.Tensor, importance: torch.Tensor | None) -> KMeansConfig:
    return KMeansConfig(
        n_bits=spec.n_bits,
        axis=0,
        lut_dtype=torch.int8 if spec.lut_dtype == "int8" else None,
        block_size=spec.group_size if spec.granularity == "per_grouped_channel" else None,
        cluster_dim=spec.cluster_dim if spec.cluster_dim > 1 else None,
        enable_per_channel_scale=spec.enable_per_channel_scale,
        mask=mask,
        importance=importance,
    )


def _uses_mask(plan: LayerPlan, context: CompressionContext) -> bool:
    # The library's masked k-means is scalar only; vector palettization re-applies the mask afterwards.
    return plan.name in context.masks and plan.spec.cluster_dim == 1


# --------------------------------------------------------------------------- workflows


def _post_training_kmeans(module: nn.Module, eligible: dict[str, LayerPlan], context: CompressionContext) -> nn.Module:
    unmasked = {n: p for n, p in eligible.items() if not _uses_mask(p, context)}
    masked = {n: p for n, p in eligible.items() if _uses_mask(p, context)}
    context.progress.update(0.05, f"k-means palettization of {len(eligible)} layers")
    with context.library_logging():
        if unmasked:
            config = PostTrainingPalettizerConfig(
                module_name_configs={exact_name_pattern(n): _post_training_config(p.spec) for n, p in unmasked.items()}
            )
            module = PostTrainingPalettizer(module, config).compress(inplace=True)
        if masked:
            _masked_kmeans(module, masked, context, sensitivities=None)
    context.progress.update(1.0, "palettized")
    return module


def _masked_kmeans(
    module: nn.Module,
    plans: dict[str, LayerPlan],
    context: CompressionContext,
    *,
    sensitivities: dict[str, torch.Tensor] | None,
) -> None:
    """k-means on the surviving (non-zero) weights only, so the pruned zeros stay exactly zero."""
    configs = {
        name: {
            "weight": _kmeans_config(
                plan.spec,
                mask=context.masks[name].bool(),
                importance=None if sensitivities is None else sensitivities.get(f"{name}.weight"),
            )
        }
        for name, plan in plans.items()
    }
    SequentialKMeans.cluster_weights(module, configs)
    context.note(
        f"Palettized {len(plans)} pruned layer(s) with coremltools' masked k-means: the LUT holds only non-zero "
        "values and the pruning mask is kept (sparse + palettized storage)."
    )


def _calibration_items(context: CompressionContext, spec: PalettizeSpec) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Single-image (input, label) items: SKM squares per-sample gradients (a Fisher information estimate)."""
    batches = context.calibration_batches(samples=spec.calibration_samples, seed=spec.seed)
    items = []
    for inputs, labels in batches:
        if labels is None:  # no dataset: the original model's own predictions are the targets
            with torch.no_grad():
                labels = context.original(inputs).argmax(dim=1)
        items.extend((inputs[i : i + 1], labels[i : i + 1]) for i in range(len(inputs)))
    if context.dataset is None:
        context.note("SKM sensitivities use the original model's predictions on synthetic inputs as targets.")
    return items


def _cross_entropy(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    inputs, labels = data
    return nn.functional.cross_entropy(model(inputs), labels)


def _sensitive_kmeans(
    module: nn.Module, spec: PalettizeSpec, eligible: dict[str, LayerPlan], context: CompressionContext
) -> nn.Module:
    items = _calibration_items(context, spec)
    unmasked = {n: p for n, p in eligible.items() if not _uses_mask(p, context)}
    masked = {n: p for n, p in eligible.items() if _uses_mask(p, context)}
    context.progress.update(0.1, f"sensitivities from {len(items)} calibration images (SKM)")
    module.eval()
    with context.library_logging():
        name_configs = {
            exact_name_pattern(n): ModuleSKMPalettizerConfig(
                n_bits=p.spec.n_bits,
                lut_dtype=_lut_dtype(p.spec),
                granularity=p.spec.granularity,
                group_size=p.spec.group_size if p.spec.granularity == "per_grouped_channel" else None,
                cluster_dim=p.spec.cluster_dim if p.spec.cluster_dim > 1 else None,
                enable_per_channel_scale=p.spec.enable_per_channel_scale,
            )
            for n, p in eligible.items()
        }
        config = SKMPalettizerConfig(module_name_configs=name_configs, calibration_nsamples=len(items))
        skm = SKMPalettizer(module, config)
        if not masked:
            module = skm.compress(dataloader=items, loss_fn=_cross_entropy, inplace=True)
        else:
            sensitivities = skm.compute_sensitivity(items, _cross_entropy)
            if unmasked:
                SequentialKMeans.cluster_weights(
                    module,
                    {
                        n: {"weight": _kmeans_config(p.spec, mask=None, importance=sensitivities[f"{n}.weight"])}
                        for n, p in unmasked.items()
                    },
                )
            _masked_kmeans(module, masked, context, sensitivities=sensitivities)
            register_metadata_version(module)
        skm._tempdir.cleanup()  # the library keeps sensitivities in a temp dir until garbage collection
    context.progress.update(1.0, "palettized (SKM)")
    return module


def _dkm(module: nn.Module, spec: PalettizeSpec, eligible: dict[str, LayerPlan], context: CompressionContext) -> nn.Module:
    plan = plan_fine_tune(spec=spec, context=context, what="palettize fine_tune (DKM)")
    name_configs = {
        exact_name_pattern(n): ModuleDKMPalettizerConfig(
            n_bits=p.spec.n_bits,
            weight_threshold=0,  # the engine's plan already applied weight_threshold and the overrides
            granularity=p.spec.granularity,
            group_size=p.spec.group_size if p.spec.granularity == "per_grouped_channel" else None,
            cluster_dim=p.spec.cluster_dim,
            enable_per_channel_scale=p.spec.enable_per_channel_scale,
            lut_dtype="i8" if p.spec.lut_dtype == "int8" else "f32",
            milestone=0,
            # DKM's default "auto" init runs GPU-style k-means++ (10 restarts × 100 iterations) on every layer
            # above 1,024 weights: minutes per layer on a CPU. Exact 1-D k-means (the post-training algorithm)
            # is seconds; vector LUTs still need k-means++, with fewer restarts.
            kmeans_init="opt1d" if p.spec.cluster_dim == 1 else "auto",
            kmeans_n_init=10 if p.spec.cluster_dim == 1 else 2,
        )
        for n, p in eligible.items()
    }
    with context.library_logging():
        palettizer = DKMPalettizer(module, DKMPalettizerConfig(module_name_configs=name_configs))
        prepared = palettizer.prepare(inplace=True)
        fine_tune(
            module=prepared, spec=spec, context=context, plan=plan,
            after_step=lambda _step: palettizer.step(), label="DKM palettization fine-tuning",
        )
        module = palettizer.finalize(inplace=True)
    return module


def _lut_from_coreml_routine(
    module: nn.Module, eligible: dict[str, LayerPlan], context: CompressionContext
) -> dict[str, LayerFacts]:
    """uniform / unique LUTs: coremltools' Core ML-side routine, written back into the torch weights."""
    facts: dict[str, LayerFacts] = {}
    with context.library_logging() as log:
        for index, (name, plan) in enumerate(eligible.items()):
            spec = plan.spec
            layer = module.get_submodule(name)
            weight = layer.weight.detach().float().cpu().numpy()
            per_channel_scale = None
            if spec.enable_per_channel_scale:
                axes = tuple(range(1, weight.ndim))
                per_channel_scale = np.max(np.abs(weight), axis=axes, keepdims=True)
                per_channel_scale[per_channel_scale == 0] = 1.0
                weight = weight / per_channel_scale
            params = CoreMLPalettizePass.grouped_channelwise_compress(
                weight,
                spec.mode.upper(),
                None if spec.mode == "unique" else spec.n_bits,
                channel_axis=0,
                channel_group_size=spec.group_size if spec.granularity == "per_grouped_channel" else 0,
                cluster_dim=spec.cluster_dim,
            )
            if params is None:
                reason = log[-1] if log else "the Core ML-side routine could not palettize it"
                log.append(f"{name}.weight: {reason}")
                continue
            dense = CoreMLPalettizePass.decompress(params)
            if per_channel_scale is not None:
                dense = dense * per_channel_scale
            layer.weight.data = torch.from_numpy(np.ascontiguousarray(dense)).to(layer.weight.dtype).reshape(layer.weight.shape)
            metadata = CompressionMetadata("weight")
            metadata.lut = torch.from_numpy(np.asarray(params.lut, dtype=np.float32))
            if per_channel_scale is not None:
                metadata.palettization_scale = torch.from_numpy(per_channel_scale.astype(np.float32))
            if params.vector_axis is not None:
                metadata.vector_axis = int(params.vector_axis)
            metadata.compression_type = ["palettization"]
            metadata.register(layer)
            if name in context.masks:
                layer.weight.data *= context.masks[name].to(layer.weight.dtype)
            facts[name] = LayerFacts(extra={"lut_routine": f"coremltools.optimize.coreml {spec.mode} LUT"})
            context.progress.update((index + 1) / len(eligible), f"{spec.mode} LUT for {name}")
    register_metadata_version(module)
    context.note(
        f"mode '{next(iter(eligible.values())).spec.mode}' is not offered by coremltools.optimize.torch; the LUTs come "
        "from coremltools.optimize.coreml's palettization routine applied to the PyTorch weights."
    )
    return facts
