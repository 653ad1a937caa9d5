"""Magnitude pruning with coremltools' MagnitudePruner: unstructured, block-structured or n:m.

* data_free → one-shot: prepare, one step of a constant schedule, finalize
* fine_tune → gradual: PolynomialDecayScheduler from 0 to the target over the first 75 % of the fine-tune
"""

from __future__ import annotations

import textwrap
import time

from coremltools.optimize.torch.pruning import MagnitudePruner
from torch import nn

from core.compress import latency_notes, snippets
from core.compress.context import CompressionContext
from core.compress.finetune import fine_tune, plan_fine_tune
from core.compress.layers import LayerFacts, LayerPlan, basic_ineligibility, library_result, plan_layers
from core.compress.library_config import (
    LayerSpecs,
    count_fine_tune_steps,
    entry,
    exact_name_configs,
    layer_specs,
    load_config,
    pattern_configs,
)
from core.compress.registry import STORAGE_SPARSE, CoreMLSide, MethodDescriptor, register_method
from core.compress.result import CompressionResult
from core.library_internals import magnitude_pruner_modules
from core.specs import PruneSpec

SUPPORTED_MODULES = magnitude_pruner_modules()


def eligibility(spec: PruneSpec):
    return _check


def _check(name: str, layer: nn.Module, layer_spec: PruneSpec) -> str | None:
    reason = basic_ineligibility(
        layer, modules=SUPPORTED_MODULES, api="MagnitudePruner", verb="prune", threshold=layer_spec.weight_threshold
    )
    if reason:
        return reason
    weight = layer.weight
    if layer_spec.structure == "block" and layer_spec.block_size > weight.shape[0] // 2:
        return f"block_size {layer_spec.block_size} exceeds half the output channels ({weight.shape[0]})"
    if layer_spec.structure == "n_m" and weight.shape[1] % layer_spec.n_m[1]:
        return f"input channels ({weight.shape[1]}) not divisible by m={layer_spec.n_m[1]} for {layer_spec.n_m[0]}:{layer_spec.n_m[1]} sparsity"
    return None


# --------------------------------------------------------------------------- spec → library config (the one place)


def gradual_update_steps(total_steps: int) -> list[int]:
    """Steps at which the polynomial schedule raises sparsity: up to 20, spread over the first 75 % of training."""
    last_update = max(1, int(total_steps * 0.75))
    updates = max(2, min(20, last_update))
    return sorted({max(1, round(1 + i * (last_update - 1) / (updates - 1))) for i in range(updates)})


def _module_config(spec: PruneSpec, scheduler: dict) -> dict:
    if spec.structure == "n_m":
        return {"scheduler": scheduler, "n_m_ratio": list(spec.n_m), "dim": 1}
    return {
        "scheduler": scheduler,
        "target_sparsity": float(spec.target_sparsity),
        "block_size": spec.block_size if spec.structure == "block" else 1,
    }


def library_config(spec: PruneSpec, *, layers: LayerSpecs | None = None, fine_tune_steps: int | None = None) -> dict:
    """MagnitudePrunerConfig: a constant schedule (data_free) or a polynomial one over the fine-tune's steps."""
    steps = None
    if spec.workflow == "fine_tune":
        steps = fine_tune_steps if fine_tune_steps is not None else count_fine_tune_steps(spec)
        scheduler: dict = {"update_steps": gradual_update_steps(steps)}
    else:
        scheduler = {"begin_step": 0}

    def module_config(layer_spec: PruneSpec) -> dict:
        return _module_config(layer_spec, scheduler)

    if layers is not None:
        config = {"module_name_configs": exact_name_configs(layers, module_config)}
    else:
        config = {"global_config": module_config(spec)}
        if spec.overrides:
            config["module_name_configs"] = pattern_configs(spec, module_config)
    return entry(
        module="coremltools.optimize.torch.pruning", api="MagnitudePruner", config_class="MagnitudePrunerConfig",
        config=config, spec=spec, fine_tune_steps=steps,
        weight_threshold=spec.weight_threshold if layers is None and spec.weight_threshold else None,
    )


def coreml_op_config(spec: PruneSpec) -> dict:
    """The Core ML-side OpMagnitudePrunerConfig (uploaded .mlpackage files)."""
    if spec.structure == "n_m":
        return {"n_m_ratio": list(spec.n_m), "weight_threshold": spec.weight_threshold}
    return {
        "target_sparsity": float(spec.target_sparsity),
        "block_size": spec.block_size if spec.structure == "block" else None,
        "weight_threshold": spec.weight_threshold,
    }


def snippet(spec: PruneSpec, config_entry: dict, var: str) -> str:
    head = snippets.head(spec, config_entry, var)
    if spec.workflow == "data_free":
        return head + textwrap.dedent(
            f"""
            pruner = MagnitudePruner(model, {snippets.build_expression(config_entry, var)})
            pruner.prepare(inplace=True)
            pruner.step()  # constant schedule: target sparsity at the first step
            model = pruner.finalize(inplace=True)
            """
        )
    return head + snippets.fine_tune_loop(spec, config_entry, var)


# --------------------------------------------------------------------------- handler


def prune(module: nn.Module, spec: PruneSpec, context: CompressionContext) -> CompressionResult:
    started = time.perf_counter()
    plans = plan_layers(module, spec, _check)
    eligible = {name: plan for name, plan in plans.items() if plan.eligible}
    config_entry = None
    if eligible:
        if spec.workflow == "fine_tune":
            module, config_entry = _gradual(module, spec, plans, context)
        else:
            module, config_entry = _one_shot(module, spec, plans, context)
    else:
        context.note("No layer qualified for pruning; the model is unchanged.")
    facts = {
        name: LayerFacts(
            granularity={"unstructured": "unstructured", "block": f"block {p.spec.block_size}", "n_m": f"{p.spec.n_m[0]}:{p.spec.n_m[1]}"}[p.spec.structure],
            extra={"target_sparsity": p.spec.effective_sparsity, "structure": p.spec.structure, "workflow": spec.workflow},
        )
        for name, p in eligible.items()
    }
    result = library_result(
        module=module, spec=spec, plans=plans, facts=facts, context=context, method="prune", started=started
    )
    result.library_config = config_entry
    return result


def _one_shot(
    module: nn.Module, spec: PruneSpec, plans: dict[str, LayerPlan], context: CompressionContext
) -> tuple[nn.Module, dict]:
    config_entry = library_config(spec, layers=layer_specs(plans))
    context.progress.update(0.1, f"pruning {sum(p.eligible for p in plans.values())} layers")
    with context.library_logging():
        pruner = MagnitudePruner(module, load_config(config_entry))
        pruner.prepare(inplace=True)
        pruner.step()  # the constant schedule sets every layer to its target at the first step
        module = pruner.finalize(inplace=True)
    context.progress.update(1.0, "pruned")
    return module, config_entry


def _gradual(
    module: nn.Module, spec: PruneSpec, plans: dict[str, LayerPlan], context: CompressionContext
) -> tuple[nn.Module, dict]:
    plan = plan_fine_tune(spec=spec, context=context, what="prune fine_tune (gradual magnitude pruning)")
    config_entry = library_config(spec, layers=layer_specs(plans), fine_tune_steps=plan.total_steps)
    with context.library_logging():
        pruner = MagnitudePruner(module, load_config(config_entry))
        prepared = pruner.prepare(inplace=True)
        fine_tune(
            module=prepared, spec=spec, context=context, plan=plan,
            after_step=lambda _step: pruner.step(), label="gradual pruning fine-tuning",
        )
        module = pruner.finalize(inplace=True)
    update_steps = gradual_update_steps(plan.total_steps)
    context.note(
        f"Sparsity rose from 0 to the target on a polynomial schedule at steps {update_steps[0]}…{update_steps[-1]} "
        f"of {plan.total_steps}; the remaining steps fine-tune at full sparsity."
    )
    return module, config_entry


DESCRIPTOR = register_method(
    MethodDescriptor(
        name="prune",
        label="Prune",
        color="#e45756",
        source="coremltools' MagnitudePruner (one-shot, or gradual during fine-tuning)",
        spec_type=PruneSpec,
        handler=prune,
        eligibility=eligibility,
        library_config=library_config,
        snippet=snippet,
        storage=STORAGE_SPARSE,
        latency_note=latency_notes.weight_only,
        coreml_side=CoreMLSide(op_config=coreml_op_config, config_type="OpMagnitudePrunerConfig", function="prune_weights",
                               knob="target_sparsity", label="Target sparsity", help="Fraction of weights set to zero.",
                               key="sparsity", form_range=(0.05, 0.95)),
        home_text="Set the smallest weights to exactly zero; only the non-zeros and a bitmask are stored.",
        search_refinable=True,
    )
)
