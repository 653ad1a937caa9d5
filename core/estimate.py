"""A rough wall-time estimate of an experiment before it runs, so a user knows whether to wait or get coffee.

Earlier runs of the same method and workflow on the same model are the best guide; without them the guess
scales with the model's parameter count and the per-image forward time measured by the baseline.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from core.specs import AnySpec

# Without a measured forward time: milliseconds per image per million parameters (a modest laptop CPU).
_MS_PER_IMAGE_PER_MPARAM = 0.4
_MIN_MS_PER_IMAGE = 0.05
SYNTHETIC_EVAL_IMAGES = 64  # what a run without a dataset evaluates on


def forward_ms_per_image(baseline: dict) -> float | None:
    """The baseline's median batch forward time divided by the batch size, at the largest batch timed."""
    batches = ((baseline.get("latency") or {}).get("batches") or {})
    if not batches:
        return None
    largest = max(batches, key=int)
    p50 = ((batches[largest] or {}).get("baseline") or {}).get("p50_ms")
    if isinstance(p50, bool) or not isinstance(p50, int | float):
        return None
    return float(p50) / int(largest)


def eval_image_count(*, limit: int | None, dataset_size: int | None) -> int:
    """How many images a run evaluates: the limit (None: all), capped by the dataset; synthetic inputs otherwise."""
    if dataset_size is None:
        return limit or SYNTHETIC_EVAL_IMAGES
    return min(limit, dataset_size) if limit else dataset_size


def estimate_seconds(
    *,
    params: int,
    spec: AnySpec,
    eval_images: int,
    history: Sequence[dict],
    forward_ms_per_image: float | None,
) -> tuple[float, str]:
    """(seconds, what the estimate is based on) for compress → export → evaluate → time latency.

    `history` holds earlier experiment records of the same model; `params` is its parameter count.
    """
    method = getattr(spec, "method", "pipeline")
    workflow = getattr(spec, "workflow", "data_free")
    same = [
        r["compress_seconds"] for r in history
        if r.get("method") == method and r.get("workflow") == workflow
        and isinstance(r.get("compress_seconds"), int | float)
    ]
    mparams = params / 1e6
    per_image = (forward_ms_per_image or max(_MIN_MS_PER_IMAGE, mparams * _MS_PER_IMAGE_PER_MPARAM)) / 1000
    if same:
        compress = statistics.median(same)
        basis = f"compression time is the median of {len(same)} earlier {method} / {workflow} run(s) of this model"
    else:
        compress = sum(_step_seconds(step, mparams=mparams, per_image=per_image) for step in _steps(spec))
        basis = "no earlier run of this kind: a rough guess from the model size"
    export = 4.0 + mparams * 3.0
    evaluate = eval_images * per_image * 2 + 8.0  # both models + the latency harness
    return compress + export + evaluate, basis


def _steps(spec: AnySpec) -> tuple:
    return tuple(spec.steps) if hasattr(spec, "steps") else (spec,)


def _step_seconds(step: AnySpec, *, mparams: float, per_image: float) -> float:
    from core.compress.registry import method_descriptor  # the engine is heavy to import: only when estimating

    seconds = 1.0 + mparams * method_descriptor(step.method).seconds_per_mparam  # k-means is the slow one
    workflow = getattr(step, "workflow", "data_free")
    if workflow == "calibration":
        seconds += step.calibration_samples * per_image * 4
    if workflow == "fine_tune":
        images = step.max_steps * step.batch_size if step.max_steps else step.epochs * step.train_limit
        seconds += images * per_image * 3
    return seconds


# Baselines of bigger models (a Core ML export of a ResNet-50 takes minutes) are measured on request only.
QUICK_BASELINE_MAX_PARAMS = 5_000_000


def baseline_is_quick(params: int) -> bool:
    """Is measuring this model's baseline quick enough to start without asking?"""
    return params <= QUICK_BASELINE_MAX_PARAMS


def estimate_sensitivity_seconds(
    *,
    layer_params: Sequence[int],
    methods: Sequence[str],
    eval_images: int,
    params: int,
    forward_ms_per_image: float | None,
) -> tuple[float, str]:
    """(seconds, what it is based on) for a per-layer sensitivity analysis before it starts: every weight layer
    (`layer_params`: its weight count) compressed alone with every setting (`methods`: each setting's method), then
    the whole model evaluated on `eval_images`; plus one evaluation of the uncompressed model."""
    from core.compress.registry import method_descriptor  # the engine is heavy to import: only when estimating

    mparams = params / 1e6
    per_image = (forward_ms_per_image or max(_MIN_MS_PER_IMAGE, mparams * _MS_PER_IMAGE_PER_MPARAM)) / 1000
    evaluate = eval_images * per_image
    # about 1 s per probe besides the model's arithmetic (copying the model, the library's layer config):
    # measured 3.5 s per probe for fashion_cnn at 1,000 images and 2.3 s for fashion_resnet at 500, on a busy 2-core box
    compress = sum(
        1.0 + count / 1e6 * method_descriptor(method).seconds_per_mparam for method in methods for count in layer_params
    )
    seconds = 3.0 + evaluate * (1 + len(methods) * len(layer_params)) + compress
    basis = ("the forward time measured by this model's baseline" if forward_ms_per_image is not None
             else "a rough guess from the model size (no baseline measured yet)")
    return seconds, f"{len(methods) * len(layer_params)} probes × {eval_images:,} images; per-image time from {basis}"
