"""core.evaluation's words for an evaluation set: every baseline shown says which images it was measured on."""

from __future__ import annotations

from core.evaluation import baseline_words, eval_set_words


def test_eval_set_words_name_count_dataset_and_source() -> None:
    assert eval_set_words(images=10_000, dataset="Fashion-MNIST",
                          source="Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)") == (
        "10,000 Fashion-MNIST test images (Debian package dataset-fashion-mnist)")
    assert eval_set_words(images=64, dataset="synthetic", source="synthetic inputs (64 …)") == "64 synthetic inputs"


def test_baseline_words_of_baseline_and_experiment_records() -> None:
    where = {"dataset": "Fashion-MNIST", "dataset_source": "bundled subset (sample_models/x.npz)", "eval_images": 2000,
             "accuracy_meaningful": True}
    assert baseline_words({"kind": "baseline", "accuracy_top1": 0.93355, **where}) == (
        "baseline 93.36 % on 2,000 Fashion-MNIST test images (bundled subset)")
    experiment = {"kind": "experiment", "accuracy_top1": 0.9, "baseline_accuracy_top1": 0.922, **where}
    assert baseline_words(experiment) == "baseline 92.20 % on 2,000 Fashion-MNIST test images (bundled subset)"
    assert baseline_words({**experiment, "accuracy_meaningful": False}) is None
