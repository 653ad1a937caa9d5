"""The shared fine-tuning loop: step budget from epochs / max_steps / train_limit, and real optimisation."""

from __future__ import annotations

import torch

from core.compress.context import CompressionContext
from core.compress.finetune import fine_tune, plan_fine_tune
from core.progress import Progress
from core.specs import PruneSpec


def _context(model, dataset, messages=None):
    progress = Progress(None if messages is None else (lambda f, m: messages.append(m)))
    return CompressionContext(model=model, dataset=dataset, progress=progress, original=model.module)


def test_budget_follows_epochs_max_steps_and_train_limit(tiny, fashion):
    context = _context(tiny, fashion)
    assert plan_fine_tune(spec=PruneSpec(workflow="fine_tune", train_limit=300, batch_size=64, epochs=2), context=context, what="x").total_steps == 10
    assert plan_fine_tune(spec=PruneSpec(workflow="fine_tune", train_limit=300, batch_size=64, epochs=2, max_steps=7), context=context, what="x").total_steps == 7
    # the bundled subset holds 2,000 training images: train_limit cannot exceed it
    assert plan_fine_tune(spec=PruneSpec(workflow="fine_tune", batch_size=100), context=context, what="x").images == len(fashion.train)


def test_loop_trains_reports_each_step_and_calls_the_hook(tiny, fashion):
    import copy

    module = copy.deepcopy(tiny.module)
    messages: list[str] = []
    hooked: list[int] = []
    spec = PruneSpec(workflow="fine_tune", train_limit=256, batch_size=32, epochs=2, learning_rate=1e-2)
    context = _context(tiny, fashion, messages)
    plan = plan_fine_tune(spec=spec, context=context, what="test")
    stats = fine_tune(module=module, spec=spec, context=context, plan=plan, after_step=hooked.append, label="test loop")
    assert hooked == list(range(1, 17)) and stats["steps"] == 16 and stats["epochs"] == 2.0
    assert sum(m.startswith("test loop: step") for m in messages) == 16
    assert not module.training
    assert not torch.equal(module.fc2.weight, tiny.module.fc2.weight)  # it really optimised a copy
    assert "images for fine-tuning" in context.calibration_source
