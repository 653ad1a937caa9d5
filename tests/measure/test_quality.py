"""Quality metrics on hand-made logits with known answers, and batched logit collection."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from core.data import load_bundled_subset
from core.measure.quality import (
    Evaluation,
    accuracy_summary,
    agreement_summary,
    collect_logits,
    flipped_images,
    output_psnr_db,
    output_snr_db,
    per_class_accuracy,
    snr_db,
    top1_agreement,
    topk_accuracy,
)
from core.progress import Cancelled, Progress


def test_topk_accuracy_counts_label_within_k_largest() -> None:
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.7, 0.2, 0.1]])
    labels = torch.tensor([0, 2, 2, 1])  # right, second-best, right, second-best
    assert topk_accuracy(logits=logits, labels=labels, k=1) == pytest.approx(0.5)
    assert topk_accuracy(logits=logits, labels=labels, k=2) == pytest.approx(1.0)
    assert topk_accuracy(logits=logits, labels=labels, k=5) == pytest.approx(1.0)  # k capped at the class count


def test_per_class_accuracy_and_missing_class() -> None:
    logits = torch.eye(3)[[0, 0, 1, 2]] * 5  # predictions 0, 0, 1, 2: class 1 is right once in three
    labels = torch.tensor([0, 1, 1, 1])
    assert per_class_accuracy(logits=logits, labels=labels, num_classes=4) == [1.0, pytest.approx(1 / 3), None, None]


def test_agreement_of_known_predictions() -> None:
    ref = torch.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3]]
    cand = torch.eye(4)[[0, 1, 2, 3, 1, 1, 3, 3]]  # 2 of 8 differ
    assert top1_agreement(reference_logits=ref, candidate_logits=cand) == pytest.approx(0.75)
    count, rows = flipped_images(reference_logits=ref, candidate_logits=cand, labels=torch.tensor([0, 1, 2, 3, 0, 1, 2, 2]))
    assert count == 2
    assert rows == [{"index": 4, "true": 0, "before": 0, "after": 1}, {"index": 6, "true": 2, "before": 2, "after": 3}]
    count, rows = flipped_images(reference_logits=ref, candidate_logits=cand, labels=None, limit=1)
    assert count == 2 and len(rows) == 1 and rows[0]["true"] is None
    # a sample of a dataset: the rows name each image's position in the dataset, not in the sample
    sample = torch.tensor([3, 8, 9, 20, 31, 40, 52, 77])
    _, rows = flipped_images(reference_logits=ref, candidate_logits=cand, labels=None, dataset_indices=sample)
    assert [r["index"] for r in rows] == [31, 52]
    with pytest.raises(ValueError, match="7 dataset indices for 8 evaluated images"):
        flipped_images(reference_logits=ref, candidate_logits=cand, labels=None, dataset_indices=sample[:7])


def test_snr_of_known_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    signal = torch.randn(20_000, 10, generator=gen)
    noise = torch.randn(20_000, 10, generator=gen) * 0.1  # power ratio 100 → 20 dB
    assert output_snr_db(reference=signal, candidate=signal + noise) == pytest.approx(20.0, abs=0.1)
    # exact: signal power 4 per element, noise 0.25 per element → 16 → 12.04 dB
    ref = torch.full((4, 4), 2.0)
    assert output_snr_db(reference=ref, candidate=ref + 0.5) == pytest.approx(10 * math.log10(16))
    assert output_snr_db(reference=ref, candidate=ref.clone()) == math.inf


def test_one_snr_for_outputs_and_weights() -> None:
    """Weights use the same function and convention; the per-layer report stores an infinite SNR as None."""
    from core.compress.layers import weight_snr_db

    assert output_snr_db is snr_db
    weight = torch.full((8, 3, 3, 3), 0.5)
    assert snr_db(reference=weight, candidate=weight.clone()) == math.inf
    assert snr_db(reference=torch.zeros(4), candidate=torch.ones(4)) == -math.inf
    assert weight_snr_db(weight, weight.clone()) is None
    assert weight_snr_db(weight, weight * 1.25) == pytest.approx(10 * math.log10(1 / 0.0625))


def test_psnr_uses_reference_range() -> None:
    ref = torch.tensor([[0.0, 4.0], [2.0, 2.0]])  # range 4
    cand = ref + torch.tensor([[1.0, -1.0], [1.0, -1.0]])  # MSE 1
    assert output_psnr_db(reference=ref, candidate=cand) == pytest.approx(10 * math.log10(16))
    assert output_psnr_db(reference=ref, candidate=ref) == math.inf


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        top1_agreement(reference_logits=torch.zeros(3, 2), candidate_logits=torch.zeros(2, 2))


def test_summaries_store_identical_outputs_as_none_with_flag() -> None:
    logits = torch.randn(10, 3, generator=torch.Generator().manual_seed(1))
    base = Evaluation(logits=logits, labels=torch.zeros(10, dtype=torch.long))
    summary = agreement_summary(baseline=base, candidate=Evaluation(logits=logits.clone(), labels=base.labels))
    assert summary["output_snr_db"] is None and summary["outputs_identical"] is True
    assert summary["agreement_top1"] == 1.0 and summary["flipped"] == 0
    synthetic = accuracy_summary(evaluation=Evaluation(logits=logits, labels=None), num_classes=3)
    assert synthetic == {"accuracy_top1": None, "accuracy_top5": None, "per_class_accuracy": []}


def test_collect_logits_batches_dataset_with_progress_and_restores_mode() -> None:
    dataset = load_bundled_subset()
    split = dataset.eval_split(limit=300)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)).train()
    seen: list[float] = []
    evaluation = collect_logits(module=model, dataset=dataset, split=split, batch_size=128, progress=Progress(lambda f, m: seen.append(f)))
    assert evaluation.logits.shape == (300, 10)
    assert torch.equal(evaluation.labels, split.labels)
    assert seen[-1] == pytest.approx(1.0) and len(seen) == 4  # start + 3 batches
    assert model.training  # mode restored
    with torch.no_grad():
        expected = model.eval()(dataset.normalize(split.images[:5]))
    assert torch.allclose(evaluation.logits[:5], expected, atol=1e-6)


def test_collect_logits_can_be_cancelled() -> None:
    progress = Progress()
    progress.cancel()
    with pytest.raises(Cancelled):
        collect_logits(module=nn.Flatten(), batches=[torch.zeros(2, 4)], progress=progress)
