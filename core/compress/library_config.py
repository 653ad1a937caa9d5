"""Spec → library config, the shared pieces.

Each method module has ONE ``library_config(spec, *, layers=None, fine_tune_steps=None)`` that returns the
config entry ``{"api", "config_class", "config", "workflow", …}``. The handler builds its coremltools / torch.ao
objects from that entry (``load_config``) and records it on the result; ``core.config_export`` exports the same entry.

Two forms of ``module_name_configs``:

* ``layers`` given (the handler, or a config for a known model): one entry per layer by exact name, from the
  engine's own per-layer plan (weight_threshold, overrides and the library's limits already applied);
* ``layers=None`` (a portable config): the spec's overrides as patterns. The app matches overrides with
  ``re.search`` and the last match wins; coremltools uses ``re.fullmatch`` and the first match wins, so the
  patterns are wrapped and listed in reverse order.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from core.specs import CompressionSpec

LayerSpecs = Mapping[str, "CompressionSpec | None"]  # layer name → its resolved spec, or None = leave uncompressed


def fullmatch_pattern(search_pattern: str) -> str:
    """An override pattern (re.search semantics) as a coremltools module_name_configs key (re.fullmatch)."""
    return f".*(?:{search_pattern}).*"


def exact_name_pattern(name: str) -> str:
    """optimize.torch matches module_name_configs keys with re.fullmatch; escape so only this layer matches."""
    return re.escape(name)


def layer_specs(plans: Mapping[str, Any]) -> dict[str, CompressionSpec | None]:
    """The engine's plan as `layers` for library_config: the resolved spec of each eligible layer, else None."""
    return {name: plan.spec if plan.eligible else None for name, plan in plans.items()}


def exact_name_configs(
    layers: LayerSpecs, module_config: Callable[[Any], dict], *, escape: bool = True, skipped: bool = False
) -> dict[str, dict | None]:
    """One config per eligible layer by exact name (escaped for re.fullmatch unless the API wants plain names);
    with `skipped`, ineligible layers get an explicit None."""
    key = exact_name_pattern if escape else str
    configs: dict[str, dict | None] = {}
    for name, layer_spec in layers.items():
        if layer_spec is not None:
            configs[key(name)] = module_config(layer_spec)
        elif skipped:
            configs[key(name)] = None
    return configs


def pattern_configs(spec: CompressionSpec, module_config: Callable[[Any], dict]) -> dict[str, dict | None]:
    """The spec's overrides as fullmatch patterns, last override first (coremltools takes the first match)."""
    return {
        fullmatch_pattern(pattern): None if partial is None else module_config(spec.for_layer_values(partial))
        for pattern, partial in reversed(list(spec.overrides.items()))
    }


def entry(*, module: str, api: str, config_class: str, config: dict, spec: CompressionSpec, **extra: Any) -> dict:
    """A config entry: the library call, its config class and the dict that class's ``from_dict`` takes."""
    out = {
        "api": f"{module}.{api}",
        "config_class": f"{module}.{config_class}",
        "config": config,
        "workflow": spec.workflow,
    }
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def load_config(config_entry: dict) -> Any:
    """The library config object of an entry: ``<config_class>.from_dict(entry["config"])``."""
    module_name, _, class_name = config_entry["config_class"].rpartition(".")
    config_class = getattr(importlib.import_module(module_name), class_name)
    return config_class.from_dict(config_entry["config"])


def count_fine_tune_steps(spec: CompressionSpec, *, train_images: int | None = None) -> int:
    """Optimiser steps a fine-tune takes: ⌈min(train_limit, images) / batch_size⌉ × epochs, capped at max_steps.

    Without `train_images` (a config written before any dataset is known) the pool is assumed to hold at least
    `train_limit` images.
    """
    images = spec.train_limit if train_images is None else min(spec.train_limit, int(train_images))
    total = max(1, math.ceil(images / spec.batch_size)) * spec.epochs
    return min(total, spec.max_steps) if spec.max_steps is not None else total


def qat_milestones(total_steps: int) -> list[int]:
    """LinearQuantizer milestones of a QAT fine-tune: observers and fake-quant on from step 0, observers frozen at
    80 % and BatchNorm statistics at 50 % of the steps."""
    return [0, 0, max(1, int(total_steps * 0.8)), max(1, total_steps // 2)]
