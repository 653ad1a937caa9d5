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

import textwrap
import time

import numpy as np
import torch
from coremltools.optimize.torch.palettization import (
    DKMPalettizer,
    PostTrainingPalettizer,
    PostTrainingPalettizerConfig,
    SKMPalettizer,
)
from torch import nn

from core.compress import latency_notes, snippets
from core.compress.context import CompressionContext, CompressionError
from core.compress.finetune import fine_tune, plan_fine_tune
from core.compress.layers import (
    EligibilityCheck,
    LayerFacts,
    LayerPlan,
    basic_ineligibility,
    library_result,
    plan_layers,
)
from core.compress.library_config import (
    LayerSpecs,
    entry,
    exact_name_configs,
    exact_name_pattern,
    layer_specs,
    load_config,
    pattern_configs,
)
from core.compress.registry import STORAGE_LUT, CoreMLSide, MethodDescriptor, register_method
from core.compress.result import CompressionResult
from core.library_internals import (
    CompressionMetadata,
    CoreMLPalettizePass,
    KMeansConfig,
    SequentialKMeans,
    dkm_palettizer_modules,
    post_training_palettizer_modules,
    register_metadata_version,
    release_skm_tempdir,
)
from core.specs import PalettizeSpec

POST_TRAINING_MODULES = post_training_palettizer_modules()
DKM_MODULES = dkm_palettizer_modules()


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


# --------------------------------------------------------------------------- spec → library config (the one place)

_TORCH_PALETTIZATION = "coremltools.optimize.torch.palettization"


def _module_config(spec: PalettizeSpec) -> dict:
    """Per-layer torch-side config: ModulePostTrainingPalettizerConfig / ModuleSKMPalettizerConfig fields."""
    return {
        "n_bits": spec.n_bits,
        "lut_dtype": "int8" if spec.lut_dtype == "int8" else None,
        "granularity": spec.granularity,
        "group_size": spec.group_size if spec.granularity == "per_grouped_channel" else None,
        "cluster_dim": spec.cluster_dim if spec.cluster_dim > 1 else None,
        "enable_per_channel_scale": spec.enable_per_channel_scale,
    }


def _dkm_module_config(spec: PalettizeSpec, *, weight_threshold: int) -> dict:
    return {
        "n_bits": spec.n_bits,
        "weight_threshold": weight_threshold,
        "granularity": spec.granularity,
        "group_size": spec.group_size if spec.granularity == "per_grouped_channel" else None,
        "cluster_dim": spec.cluster_dim,
        "enable_per_channel_scale": spec.enable_per_channel_scale,
        "lut_dtype": "i8" if spec.lut_dtype == "int8" else "f32",
        "milestone": 0,
        # DKM's default "auto" init runs GPU-style k-means++ (10 restarts × 100 iterations) on every layer above
        # 1,024 weights: minutes per layer on a CPU. Exact 1-D k-means (the post-training algorithm) is seconds;
        # vector LUTs still need k-means++, with fewer restarts.
        "kmeans_init": "opt1d" if spec.cluster_dim == 1 else "auto",
        "kmeans_n_init": 10 if spec.cluster_dim == 1 else 2,
    }


def coreml_op_config(spec: PalettizeSpec) -> dict:
    """The Core ML-side OpPalettizerConfig fields (uniform / unique modes, and uploaded .mlpackage files)."""
    if spec.lut_dtype == "int8":
        raise CompressionError("int8 LUTs are available for PyTorch models only; use lut_dtype 'float' on an .mlpackage.")
    return {
        "mode": spec.mode,
        "nbits": None if spec.mode == "unique" else spec.n_bits,
        "granularity": spec.granularity,
        "group_size": spec.group_size,
        "cluster_dim": spec.cluster_dim,
        "enable_per_channel_scale": spec.enable_per_channel_scale,
        "weight_threshold": spec.weight_threshold,
    }


def library_config(spec: PalettizeSpec, *, layers: LayerSpecs | None = None, fine_tune_steps: int | None = None) -> dict:
    """PostTrainingPalettizerConfig / SKMPalettizerConfig / DKMPalettizerConfig, or the Core ML-side
    OptimizationConfig for the uniform and unique modes (which coremltools.optimize.torch does not offer)."""
    if spec.mode != "kmeans":
        config: dict = {"config_type": "OpPalettizerConfig"}
        if layers is not None:
            config["op_name_configs"] = exact_name_configs(layers, coreml_op_config, escape=False)
        else:
            config["global_config"] = coreml_op_config(spec)
        return entry(
            module="coremltools.optimize.coreml", api="palettize_weights", config_class="OptimizationConfig",
            config=config, spec=spec,
            note=f"mode '{spec.mode}' exists only on the Core ML side: apply it to the converted .mlpackage "
            "(the app applies the same LUT routine to the PyTorch weights).",
        )
    if spec.workflow == "fine_tune":
        # The engine's plan applies weight_threshold itself; a portable config leaves it to DKM.
        threshold = 0 if layers is not None else spec.weight_threshold

        def module_config(layer_spec: PalettizeSpec) -> dict:
            return _dkm_module_config(layer_spec, weight_threshold=threshold)
    else:
        module_config = _module_config
    if layers is not None:
        config = {"module_name_configs": exact_name_configs(layers, module_config)}
    else:
        config = {"global_config": module_config(spec)}
        if spec.overrides:
            config["module_name_configs"] = pattern_configs(spec, module_config)
    if spec.workflow == "calibration":
        config["calibration_nsamples"] = spec.calibration_samples
    api = {"data_free": "PostTrainingPalettizer", "calibration": "SKMPalettizer", "fine_tune": "DKMPalettizer"}[spec.workflow]
    return entry(
        module=_TORCH_PALETTIZATION, api=api, config_class=f"{api}Config", config=config, spec=spec,
        weight_threshold=spec.weight_threshold if layers is None and spec.workflow != "fine_tune" else None,
    )


def _kmeans_config(layer_config, *, mask: torch.Tensor | None, importance: torch.Tensor | None) -> KMeansConfig:
    """The library's k-means settings for one layer, from that layer's palettizer config object."""
    lut_dtype = layer_config.lut_dtype
    if isinstance(lut_dtype, str):
        lut_dtype = torch.int8 if lut_dtype in ("int8", "i8") else None
    return KMeansConfig(
        n_bits=layer_config.n_bits,
        axis=0,
        lut_dtype=lut_dtype,
        block_size=layer_config.group_size if _value(layer_config.granularity) == "per_grouped_channel" else None,
        cluster_dim=layer_config.cluster_dim,
        enable_per_channel_scale=layer_config.enable_per_channel_scale,
        mask=mask,
        importance=importance,
    )


def _value(choice) -> str:
    return str(getattr(choice, "value", choice))


def snippet(spec: PalettizeSpec, config_entry: dict, var: str) -> str:
    if spec.mode != "kmeans":
        return textwrap.dedent(
            f"""
            # mode '{spec.mode}' exists on the Core ML side: convert first, then palettize the .mlpackage.
            import coremltools.optimize.coreml as cto

            mlmodel = ct.convert(torch.jit.trace(model.eval(), example), inputs=[ct.TensorType(shape=example.shape)],
                                 convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18)
            mlmodel = cto.palettize_weights(mlmodel, cto.OptimizationConfig.from_dict({config_entry["config"]!r}))
            """
        )
    head = snippets.head(spec, config_entry, var)
    build = snippets.build_expression(config_entry, var)
    if spec.workflow == "data_free":
        return head + f"model = PostTrainingPalettizer(model, {build}).compress()\n"
    if spec.workflow == "calibration":
        return head + textwrap.dedent(
            f"""
            def loss_fn(net, data):
                images, labels = data
                return torch.nn.functional.cross_entropy(net(images), labels)

            samples = [(x[i : i + 1], y[i : i + 1]) for x, y in batches for i in range(len(x))]
            model = SKMPalettizer(model.eval(), {build}).compress(dataloader=samples, loss_fn=loss_fn)
            """
        )
    return head + snippets.fine_tune_loop(spec, config_entry, var)


# --------------------------------------------------------------------------- handler


def palettize(module: nn.Module, spec: PalettizeSpec, context: CompressionContext) -> CompressionResult:
    started = time.perf_counter()
    plans = plan_layers(module, spec, eligibility(spec))
    eligible = {name: plan for name, plan in plans.items() if plan.eligible}
    facts: dict[str, LayerFacts] = {}
    config_entry = None
    if eligible:
        if spec.workflow == "fine_tune":
            plan = plan_fine_tune(spec=spec, context=context, what="palettize fine_tune (DKM)")
            config_entry = library_config(spec, layers=layer_specs(plans), fine_tune_steps=plan.total_steps)
            module = _dkm(module, spec, load_config(config_entry), context, plan)
        else:
            config_entry = library_config(spec, layers=layer_specs(plans))
            config = load_config(config_entry)
            if spec.mode != "kmeans":
                facts = _lut_from_coreml_routine(module, eligible, config, context)
            elif spec.workflow == "calibration":
                module = _sensitive_kmeans(module, spec, eligible, config, context)
            else:
                module = _post_training_kmeans(module, eligible, config, context)
    else:
        context.note("No layer qualified for palettization; the model is unchanged.")
    for name, plan in eligible.items():
        fact = facts.setdefault(name, LayerFacts())
        fact.extra.setdefault("mode", plan.spec.mode)
        fact.extra.setdefault("workflow", spec.workflow)
    result = library_result(
        module=module, spec=spec, plans=plans, facts=facts, context=context, method="palettize", started=started
    )
    result.library_config = config_entry
    return result


def _uses_mask(plan: LayerPlan, context: CompressionContext) -> bool:
    # The library's masked k-means is scalar only; vector palettization re-applies the mask afterwards.
    return plan.name in context.masks and plan.spec.cluster_dim == 1


def _layer_config(config, name: str):
    return config.module_name_configs[exact_name_pattern(name)]


# --------------------------------------------------------------------------- workflows


def _post_training_kmeans(
    module: nn.Module, eligible: dict[str, LayerPlan], config, context: CompressionContext
) -> nn.Module:
    unmasked = [n for n, p in eligible.items() if not _uses_mask(p, context)]
    masked = [n for n, p in eligible.items() if _uses_mask(p, context)]
    context.progress.update(0.05, f"k-means palettization of {len(eligible)} layers")
    with context.library_logging(layers=len(unmasked)):
        if unmasked:
            # the same per-layer configs; layers with a pruning mask go through the masked k-means below
            subset = PostTrainingPalettizerConfig(
                module_name_configs={exact_name_pattern(n): _layer_config(config, n) for n in unmasked}
            )
            module = PostTrainingPalettizer(module, subset).compress(inplace=True)
        if masked:
            _masked_kmeans(module, masked, config, context, sensitivities=None)
    context.progress.update(1.0, "palettized")
    return module


def _masked_kmeans(
    module: nn.Module,
    names: list[str],
    config,
    context: CompressionContext,
    *,
    sensitivities: dict[str, torch.Tensor] | None,
) -> None:
    """k-means on the surviving (non-zero) weights only, so the pruned zeros stay exactly zero."""
    configs = {
        name: {
            "weight": _kmeans_config(
                _layer_config(config, name),
                mask=context.masks[name].bool(),
                importance=None if sensitivities is None else sensitivities.get(f"{name}.weight"),
            )
        }
        for name in names
    }
    SequentialKMeans.cluster_weights(module, configs)
    context.note(
        f"Palettized {len(names)} pruned layer(s) with coremltools' masked k-means: the LUT holds only non-zero "
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
    module: nn.Module, spec: PalettizeSpec, eligible: dict[str, LayerPlan], config, context: CompressionContext
) -> nn.Module:
    items = _calibration_items(context, spec)
    unmasked = [n for n, p in eligible.items() if not _uses_mask(p, context)]
    masked = [n for n, p in eligible.items() if _uses_mask(p, context)]
    context.progress.update(0.1, f"sensitivities from {len(items)} calibration images (SKM)")
    module.eval()
    with context.library_logging():
        skm = SKMPalettizer(module, config)
        if not masked:
            module = skm.compress(dataloader=items, loss_fn=_cross_entropy, inplace=True)
        else:
            sensitivities = skm.compute_sensitivity(items, _cross_entropy)
            if unmasked:
                SequentialKMeans.cluster_weights(
                    module,
                    {
                        n: {"weight": _kmeans_config(_layer_config(config, n), mask=None, importance=sensitivities[f"{n}.weight"])}
                        for n in unmasked
                    },
                )
            _masked_kmeans(module, masked, config, context, sensitivities=sensitivities)
            register_metadata_version(module)
        release_skm_tempdir(skm)
    context.progress.update(1.0, "palettized (SKM)")
    return module


def _dkm(module: nn.Module, spec: PalettizeSpec, config, context: CompressionContext, plan) -> nn.Module:
    with context.library_logging():
        palettizer = DKMPalettizer(module, config)
        prepared = palettizer.prepare(inplace=True)
        fine_tune(
            module=prepared, spec=spec, context=context, plan=plan,
            after_step=lambda _step: palettizer.step(), label="DKM palettization fine-tuning",
        )
        module = palettizer.finalize(inplace=True)
    return module


def _lut_from_coreml_routine(
    module: nn.Module, eligible: dict[str, LayerPlan], config, context: CompressionContext
) -> dict[str, LayerFacts]:
    """uniform / unique LUTs: coremltools' Core ML-side routine, written back into the torch weights."""
    facts: dict[str, LayerFacts] = {}
    with context.library_logging() as log:
        for index, name in enumerate(eligible):
            op = config.op_name_configs[name]
            layer = module.get_submodule(name)
            weight = layer.weight.detach().float().cpu().numpy()
            per_channel_scale = None
            if op.enable_per_channel_scale:
                axes = tuple(range(1, weight.ndim))
                per_channel_scale = np.max(np.abs(weight), axis=axes, keepdims=True)
                per_channel_scale[per_channel_scale == 0] = 1.0
                weight = weight / per_channel_scale
            grouped = str(op.granularity.name).lower() == "per_grouped_channel"
            params = CoreMLPalettizePass.grouped_channelwise_compress(
                weight,
                op.mode,
                op.nbits,
                channel_axis=0,
                channel_group_size=op.group_size if grouped else 0,
                cluster_dim=op.cluster_dim,
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
            facts[name] = LayerFacts(extra={"lut_routine": f"coremltools.optimize.coreml {op.mode.lower()} LUT"})
            context.progress.update((index + 1) / len(eligible), f"{op.mode.lower()} LUT for {name}")
    register_metadata_version(module)
    context.note(
        f"mode '{next(iter(eligible.values())).spec.mode}' is not offered by coremltools.optimize.torch; the LUTs come "
        "from coremltools.optimize.coreml's palettization routine applied to the PyTorch weights."
    )
    return facts


DESCRIPTOR = register_method(
    MethodDescriptor(
        name="palettize",
        label="Palettize",
        color="#4c78a8",
        source="coremltools' palettization (post-training k-means, sensitive k-means, DKM fine-tuning)",
        spec_type=PalettizeSpec,
        handler=palettize,
        eligibility=eligibility,
        library_config=library_config,
        snippet=snippet,
        storage=STORAGE_LUT,
        latency_note=latency_notes.weight_only,
        coreml_side=CoreMLSide(op_config=coreml_op_config, config_type="OpPalettizerConfig", function="palettize_weights",
                               knob="n_bits", label="Bits", help="LUT of 2ⁿ values per tensor.", key="bits"),
        seconds_per_mparam=4.0,
        home_text="Cluster the weights into 2ⁿ shared values (a look-up table). Each weight stores only an n-bit index.",
        search_refinable=True,
    )
)
