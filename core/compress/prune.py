"""Magnitude pruning with coremltools' MagnitudePruner: unstructured, block-structured or n:m.

* data_free → one-shot: prepare, one step of a constant schedule, finalize
* fine_tune → gradual: PolynomialDecayScheduler from 0 to the target over the first 75 % of the fine-tune
"""

from __future__ import annotations

import time

from coremltools.optimize.torch.pruning import (
    ConstantSparsityScheduler,
    MagnitudePruner,
    MagnitudePrunerConfig,
    ModuleMagnitudePrunerConfig,
    PolynomialDecayScheduler,
)
from coremltools.optimize.torch.pruning.magnitude_pruner import _SUPPORTED_MODULES
from torch import nn

from core.compress.context import CompressionContext
from core.compress.finetune import fine_tune, plan_fine_tune
from core.compress.layers import (
    LayerFacts,
    LayerPlan,
    basic_ineligibility,
    exact_name_pattern,
    library_result,
    plan_layers,
)
from core.compress.result import CompressionResult
from core.specs import PruneSpec


def _check(name: str, layer: nn.Module, layer_spec: PruneSpec) -> str | None:
    reason = basic_ineligibility(
        layer, modules=_SUPPORTED_MODULES, api="MagnitudePruner", verb="prune", threshold=layer_spec.weight_threshold
    )
    if reason:
        return reason
    weight = layer.weight
    if layer_spec.structure == "block" and layer_spec.block_size > weight.shape[0] // 2:
        return f"block_size {layer_spec.block_size} exceeds half the output channels ({weight.shape[0]})"
    if layer_spec.structure == "n_m" and weight.shape[1] % layer_spec.n_m[1]:
        return f"input channels ({weight.shape[1]}) not divisible by m={layer_spec.n_m[1]} for {layer_spec.n_m[0]}:{layer_spec.n_m[1]} sparsity"
    return None


def _module_config(spec: PruneSpec, scheduler) -> ModuleMagnitudePrunerConfig:
    if spec.structure == "n_m":
        return ModuleMagnitudePrunerConfig(scheduler=scheduler, n_m_ratio=tuple(spec.n_m), dim=1)
    return ModuleMagnitudePrunerConfig(
        scheduler=scheduler,
        target_sparsity=float(spec.target_sparsity),
        block_size=spec.block_size if spec.structure == "block" else 1,
    )


def prune(module: nn.Module, spec: PruneSpec, context: CompressionContext) -> CompressionResult:
    started = time.perf_counter()
    plans = plan_layers(module, spec, _check)
    eligible = {name: plan for name, plan in plans.items() if plan.eligible}
    if eligible:
        module = _gradual(module, spec, eligible, context) if spec.workflow == "fine_tune" else _one_shot(module, eligible, context)
    else:
        context.note("No layer qualified for pruning; the model is unchanged.")
    facts = {
        name: LayerFacts(
            granularity={"unstructured": "unstructured", "block": f"block {p.spec.block_size}", "n_m": f"{p.spec.n_m[0]}:{p.spec.n_m[1]}"}[p.spec.structure],
            extra={"target_sparsity": p.spec.effective_sparsity, "structure": p.spec.structure, "workflow": spec.workflow},
        )
        for name, p in eligible.items()
    }
    return library_result(
        module=module, spec=spec, plans=plans, facts=facts, context=context, method="prune", started=started
    )


def _one_shot(module: nn.Module, eligible: dict[str, LayerPlan], context: CompressionContext) -> nn.Module:
    scheduler = ConstantSparsityScheduler(begin_step=0)
    config = MagnitudePrunerConfig(
        module_name_configs={exact_name_pattern(n): _module_config(p.spec, scheduler) for n, p in eligible.items()}
    )
    context.progress.update(0.1, f"pruning {len(eligible)} layers")
    with context.library_logging():
        pruner = MagnitudePruner(module, config)
        pruner.prepare(inplace=True)
        pruner.step()  # the constant schedule sets every layer to its target at the first step
        module = pruner.finalize(inplace=True)
    context.progress.update(1.0, "pruned")
    return module


def _gradual(module: nn.Module, spec: PruneSpec, eligible: dict[str, LayerPlan], context: CompressionContext) -> nn.Module:
    plan = plan_fine_tune(spec=spec, context=context, what="prune fine_tune (gradual magnitude pruning)")
    last_update = max(1, int(plan.total_steps * 0.75))
    updates = max(2, min(20, last_update))
    update_steps = sorted({max(1, round(1 + i * (last_update - 1) / (updates - 1))) for i in range(updates)})
    scheduler = PolynomialDecayScheduler(update_steps=update_steps)
    config = MagnitudePrunerConfig(
        module_name_configs={exact_name_pattern(n): _module_config(p.spec, scheduler) for n, p in eligible.items()}
    )
    with context.library_logging():
        pruner = MagnitudePruner(module, config)
        prepared = pruner.prepare(inplace=True)
        fine_tune(
            module=prepared, spec=spec, context=context, plan=plan,
            after_step=lambda _step: pruner.step(), label="gradual pruning fine-tuning",
        )
        module = pruner.finalize(inplace=True)
    context.note(
        f"Sparsity rose from 0 to the target on a polynomial schedule at steps {update_steps[0]}…{update_steps[-1]} "
        f"of {plan.total_steps}; the remaining steps fine-tune at full sparsity."
    )
    return module
