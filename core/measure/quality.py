"""Quality of a compressed model: accuracy on held-out data and agreement with the uncompressed model.

Logits are collected once per model (batched, under `torch.inference_mode`), then every metric is a cheap
function of the logit tensors — so the metrics below can be tested on hand-made tensors with known answers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from core.data import Dataset, Split
from core.progress import Progress, as_progress


@dataclass
class Evaluation:
    """Logits of one model on one evaluation set (labels are None for synthetic inputs)."""

    logits: torch.Tensor  # N × classes, float32
    labels: torch.Tensor | None
    seconds: float = 0.0

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(dim=1)

    def __len__(self) -> int:
        return len(self.logits)


def _as_logits(output: object) -> torch.Tensor:
    """Models may return a tensor, a tuple, or a dict (e.g. some TorchScript exports); take the logits."""
    if isinstance(output, torch.Tensor):
        tensor = output
    elif isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        tensor = output[0]
    elif isinstance(output, dict) and output:
        tensor = next(v for v in output.values() if isinstance(v, torch.Tensor))
    else:
        raise TypeError(f"the model returned {type(output).__name__}, not a logits tensor")
    if tensor.is_quantized:
        tensor = tensor.dequantize()
    return tensor.detach().float().reshape(len(tensor), -1)


def collect_logits(
    *,
    module: nn.Module,
    batches: list[torch.Tensor] | None = None,
    dataset: Dataset | None = None,
    split: Split | None = None,
    batch_size: int = 256,
    progress: Progress | None = None,
    label: str = "Evaluating",
) -> Evaluation:
    """Run `module` over a dataset split (normalised on the fly) or over pre-made input batches."""
    progress = as_progress(progress)
    if (batches is None) == (split is None):
        raise ValueError("give either input batches or a dataset split")
    if split is not None:
        if dataset is None:
            raise ValueError("a split needs its dataset (for normalisation)")
        total = len(split)
        source = ((x, y) for x, y in dataset.batches(split, batch_size=batch_size))
    else:
        total = sum(len(b) for b in batches)  # type: ignore[union-attr]
        source = ((b, None) for b in batches)  # type: ignore[union-attr]
    logits: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    done = 0
    start = time.perf_counter()
    was_training = module.training
    module.eval()
    progress.update(0.0, f"{label}: 0 / {total:,} images")
    try:
        with torch.inference_mode():
            for inputs, targets in source:
                logits.append(_as_logits(module(inputs)))
                if targets is not None:
                    labels.append(targets)
                done += len(inputs)
                progress.update(done / max(total, 1), f"{label}: {done:,} / {total:,} images")
    finally:
        module.train(was_training)
    return Evaluation(
        logits=torch.cat(logits) if logits else torch.empty(0, 0),
        labels=torch.cat(labels) if labels else None,
        seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- metrics on logits


def topk_accuracy(*, logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows whose true label is among the k largest logits (k is capped at the class count)."""
    if len(labels) == 0:
        raise ValueError("no images to score")
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return int((top == labels.view(-1, 1)).any(dim=1).sum()) / len(labels)  # exact count ÷ n, not a float32 mean


def per_class_accuracy(*, logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float | None]:
    """Top-1 accuracy per true class; None for a class with no evaluation images."""
    predictions = logits.argmax(dim=1)
    out: list[float | None] = []
    for c in range(num_classes):
        mask = labels == c
        n = int(mask.sum())
        out.append(int((predictions[mask] == c).sum()) / n if n else None)
    return out


def top1_agreement(*, reference_logits: torch.Tensor, candidate_logits: torch.Tensor) -> float:
    """Fraction of inputs on which both models predict the same class (the compare_models check of kingreza's
    coremltools quantization deep dive)."""
    _check_same_shape(reference_logits, candidate_logits)
    same = int((reference_logits.argmax(1) == candidate_logits.argmax(1)).sum())
    return same / max(len(reference_logits), 1)


def snr_db(*, reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """Signal-to-noise ratio in dB: 10·log10(Σ reference² / Σ (reference − candidate)²).

    The one SNR of the product, for model outputs and for layer weights alike. Convention: +inf when the two are
    identical (no noise), −inf when the reference is all zeros but the candidate is not. JSON records have no
    infinity: they store such values as None (``finite_or_none``), next to an explicit flag where one exists.
    """
    _check_same_shape(reference, candidate)
    ref = reference.double()
    noise = float(((ref - candidate.double()) ** 2).sum())
    signal = float((ref**2).sum())
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


output_snr_db = snr_db  # model outputs (logits) vs the baseline's


def output_psnr_db(*, reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """10·log10(peak² / MSE) with peak = the reference logits' range (max − min); +inf when identical."""
    _check_same_shape(reference, candidate)
    ref = reference.double()
    mse = float(((ref - candidate.double()) ** 2).mean())
    peak = float(ref.max() - ref.min()) if ref.numel() else 0.0
    if mse == 0.0:
        return math.inf
    if peak == 0.0:
        return -math.inf
    return 10.0 * math.log10(peak**2 / mse)


def flipped_images(
    *,
    reference_logits: torch.Tensor,
    candidate_logits: torch.Tensor,
    labels: torch.Tensor | None,
    limit: int | None = None,
    dataset_indices: torch.Tensor | None = None,
) -> tuple[int, list[dict]]:
    """Images whose top-1 prediction changed: (count, [{index, true, before, after}, …] up to `limit`).

    `index` is the image's position in the dataset: `dataset_indices[i]` for row i of the logits when the
    evaluation used a subset of the dataset (a seeded sample of it), else i itself.
    """
    _check_same_shape(reference_logits, candidate_logits)
    before = reference_logits.argmax(1)
    after = candidate_logits.argmax(1)
    changed = torch.nonzero(before != after).flatten()
    listed = changed if limit is None else changed[:limit]
    if dataset_indices is not None and len(dataset_indices) != len(before):
        raise ValueError(f"{len(dataset_indices)} dataset indices for {len(before)} evaluated images")
    rows = [
        {
            "index": int(i) if dataset_indices is None else int(dataset_indices[i]),
            "true": None if labels is None else int(labels[i]),
            "before": int(before[i]),
            "after": int(after[i]),
        }
        for i in listed.tolist()
    ]
    return len(changed), rows


def _check_same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"outputs differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")


# --------------------------------------------------------------------------- summaries


def accuracy_summary(*, evaluation: Evaluation, num_classes: int) -> dict:
    """top-1 / top-5 / per-class accuracy (fractions), or Nones when there are no true labels."""
    if evaluation.labels is None or len(evaluation) == 0:
        return {"accuracy_top1": None, "accuracy_top5": None, "per_class_accuracy": []}
    return {
        "accuracy_top1": topk_accuracy(logits=evaluation.logits, labels=evaluation.labels, k=1),
        "accuracy_top5": topk_accuracy(logits=evaluation.logits, labels=evaluation.labels, k=5),
        "per_class_accuracy": per_class_accuracy(
            logits=evaluation.logits, labels=evaluation.labels, num_classes=num_classes
        ),
    }


def agreement_summary(
    *,
    baseline: Evaluation,
    candidate: Evaluation,
    flipped_limit: int | None = 1000,
    dataset_indices: torch.Tensor | None = None,
) -> dict:
    """Agreement, output SNR / PSNR (dB; None when the outputs are identical) and the flipped images (indexed
    by their position in the dataset: see `flipped_images`)."""
    snr = output_snr_db(reference=baseline.logits, candidate=candidate.logits)
    psnr = output_psnr_db(reference=baseline.logits, candidate=candidate.logits)
    count, rows = flipped_images(
        reference_logits=baseline.logits,
        candidate_logits=candidate.logits,
        labels=baseline.labels,
        limit=flipped_limit,
        dataset_indices=dataset_indices,
    )
    return {
        "agreement_top1": top1_agreement(reference_logits=baseline.logits, candidate_logits=candidate.logits),
        "output_snr_db": finite_or_none(snr),
        "output_psnr_db": finite_or_none(psnr),
        "outputs_identical": math.isinf(snr) and snr > 0,
        "flipped": count,
        "flipped_images": rows,
        "flipped_images_truncated": count > len(rows),
        "flipped_index_base": "evaluated" if dataset_indices is None else "dataset",
    }


def finite_or_none(value: float | None) -> float | None:
    """JSON has no infinity: identical outputs (SNR = +inf) are stored as None plus an explicit flag."""
    if value is None or math.isinf(value) or math.isnan(value):
        return None
    return float(value)
