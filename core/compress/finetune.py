"""The one fine-tuning loop every fine_tune workflow shares (DKM, QAT, gradual pruning, torch QAT)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from core.compress.context import CompressionContext
from core.compress.library_config import count_fine_tune_steps
from core.specs import CompressionSpec


@dataclass
class FineTunePlan:
    """How many optimiser steps a fine-tune will take (known before it starts, so schedules can use it)."""

    images: int
    steps_per_epoch: int
    total_steps: int


def plan_fine_tune(*, spec: CompressionSpec, context: CompressionContext, what: str) -> FineTunePlan:
    dataset = context.require_training_data(what)
    images = min(spec.train_limit, len(dataset.train))
    steps_per_epoch = max(1, math.ceil(images / spec.batch_size))
    total = count_fine_tune_steps(spec, train_images=len(dataset.train))
    return FineTunePlan(images=images, steps_per_epoch=steps_per_epoch, total_steps=total)


def fine_tune(
    *,
    module: nn.Module,
    spec: CompressionSpec,
    context: CompressionContext,
    plan: FineTunePlan,
    after_step: Callable[[int], None] | None = None,
    label: str = "fine-tuning",
) -> dict:
    """Train `module` in place with cross-entropy for plan.total_steps steps; `after_step(i)` runs after each
    optimiser step (e.g. ``pruner.step()``). Progress per step; raises Cancelled when the user cancels."""
    dataset = context.require_training_data(label)
    split = dataset.training_split(limit=spec.train_limit, seed=spec.seed)
    if context.calibration_source is None:
        context.calibration_source = f"{dataset.name} training pool ({len(split):,} images for fine-tuning, seed {spec.seed})"
    generator = torch.Generator().manual_seed(spec.seed)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=spec.learning_rate)
    module.train()
    started = time.perf_counter()
    step = 0
    losses: list[float] = []
    context.progress.update(0.0, f"{label}: 0/{plan.total_steps} steps")
    while step < plan.total_steps:
        order = torch.randperm(len(split), generator=generator)
        for start in range(0, len(split), spec.batch_size):
            if step >= plan.total_steps:
                break
            idx = order[start : start + spec.batch_size]
            inputs = dataset.normalize(split.images[idx])
            labels = split.labels[idx]
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(module(inputs), labels)
            loss.backward()
            optimizer.step()
            step += 1
            if after_step is not None:
                after_step(step)
            losses.append(float(loss.item()))
            context.progress.update(step / plan.total_steps, f"{label}: step {step}/{plan.total_steps}, loss {losses[-1]:.3f}")
    module.eval()
    window = losses[-10:]
    stats = {
        "steps": step,
        "epochs": round(step / plan.steps_per_epoch, 2),
        "train_images": plan.images,
        "learning_rate": spec.learning_rate,
        "batch_size": spec.batch_size,
        "final_loss": sum(window) / len(window) if window else None,
        "seconds": round(time.perf_counter() - started, 2),
    }
    context.note(
        f"{label}: {step} steps ({stats['epochs']} epochs of {plan.images:,} {dataset.name} training images), "
        f"lr {spec.learning_rate:g}, batch {spec.batch_size}, final loss {stats['final_loss']:.3f}."
    )
    return stats
