"""What a model is evaluated on: its own dataset, a compatible user dataset, or seeded synthetic inputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from core.compatibility import check_dataset_fits
from core.data import Dataset, Split, load_fashion_mnist, synthetic_inputs
from core.experiment_options import ExperimentOptions
from core.measure.quality import Evaluation, collect_logits
from core.models.sources import FASHION_MNIST, LoadedModel
from core.progress import Progress


@dataclass
class EvalData:
    """What a model is evaluated on: a labelled split, or synthetic inputs when it has no dataset."""

    key: str
    source: str
    name: str
    dataset: Dataset | None
    split: Split | None
    batches: list[torch.Tensor] | None
    accuracy_meaningful: bool
    class_names: list[str]
    notes: list[str] = field(default_factory=list)
    # where each evaluated image sits in dataset.test (None: synthetic inputs, positions are their own)
    dataset_indices: torch.Tensor | None = None

    @property
    def size(self) -> int:
        if self.split is not None:
            return len(self.split)
        return sum(len(b) for b in self.batches or [])


def resolve_eval_data(*, model: LoadedModel, dataset: Dataset | None, options: ExperimentOptions) -> EvalData:
    """The model's own dataset (loaded if not given), a compatible user dataset, or seeded synthetic inputs."""
    explicit = dataset is not None
    if dataset is None and model.dataset == FASHION_MNIST:
        dataset = load_fashion_mnist()
    if dataset is not None:
        return _labelled(model=model, dataset=dataset, explicit=explicit, options=options)
    return _synthetic(model=model, options=options)


def _labelled(*, model: LoadedModel, dataset: Dataset, explicit: bool, options: ExperimentOptions) -> EvalData:
    check_dataset_fits(model=model, dataset=dataset)
    split = dataset.eval_split(limit=options.eval_limit)
    meaningful = model.accuracy_meaningful or (explicit and not model.weights_note.startswith("random"))
    notes = list(dataset.notes)
    subset_note = dataset.eval_subset_note(limit=options.eval_limit)
    if subset_note:
        notes.append(subset_note)
    if not meaningful:
        notes.append(f"Accuracy is not meaningful for {model.label} ({model.weights_note}).")
    return EvalData(
        # the images' content hash, not where they came from: a new upload under an old name never hits a stale cache
        key=f"{dataset.name}|{dataset.fingerprint}|{len(dataset.test)}|{len(split)}",
        source=dataset.source,
        name=dataset.name,
        dataset=dataset,
        split=split,
        batches=None,
        accuracy_meaningful=meaningful,
        class_names=list(dataset.class_names),
        notes=notes,
        dataset_indices=dataset.eval_indices(limit=options.eval_limit),
    )


def _synthetic(*, model: LoadedModel, options: ExperimentOptions) -> EvalData:
    count = min(options.eval_limit or options.synthetic_eval_images, options.synthetic_eval_images)
    inputs = synthetic_inputs(input_shape=model.input_shape, count=count, seed=options.seed, purpose="evaluation")
    batch = min(options.eval_batch_size, 16 if int(np.prod(model.input_shape)) > 64 * 64 * 3 else 256)
    shape = "×".join(map(str, model.input_shape))
    return EvalData(
        key=f"synthetic|evaluation|{shape}|{count}|{options.seed}",  # the evaluation stream (never calibration's)
        source=f"synthetic inputs ({count} standard-normal {shape} tensors, seed {options.seed})",
        name="synthetic",
        dataset=None,
        split=None,
        batches=[inputs[i : i + batch] for i in range(0, count, batch)],
        accuracy_meaningful=False,
        class_names=list(model.class_names or [str(i) for i in range(model.num_classes)]),
        notes=[
            f"{model.label} has no matching dataset ({model.weights_note}): accuracy is not reported; agreement and "
            "output SNR compare it with the uncompressed model on synthetic inputs."
        ],
    )


def evaluate(
    *, module: nn.Module, data: EvalData, options: ExperimentOptions, progress: Progress, label: str
) -> Evaluation:
    """Logits (and labels) of `module` on `data`."""
    if data.split is not None:
        return collect_logits(
            module=module,
            dataset=data.dataset,
            split=data.split,
            batch_size=options.eval_batch_size,
            progress=progress,
            label=label,
        )
    return collect_logits(module=module, batches=data.batches, progress=progress, label=label)


def input_factory(input_shape: tuple[int, ...], seed: int) -> Callable[[int], torch.Tensor]:
    """Seeded synthetic inputs of a given batch size, for latency and memory measurements."""
    return lambda batch: synthetic_inputs(input_shape=tuple(input_shape), count=batch, seed=seed, purpose="timing")  # type: ignore[arg-type]


def eval_set_words(*, images: int | None, dataset: str | None, source: str | None) -> str:
    """The images a number was measured on, in words: '10,000 Fashion-MNIST test images (Debian package …)'.
    `source` is a dataset's or record's ``dataset_source``; its folder in parentheses is left out."""
    count = f"{int(images):,}" if images else "the"
    where = (source or "").split(" (", 1)[0].strip()
    if not dataset or dataset == "synthetic":
        return f"{count} synthetic inputs"
    return f"{count} {dataset} test images" + (f" ({where})" if where else "")


def baseline_words(record: dict) -> str | None:
    """'baseline 93.36 % on 10,000 Fashion-MNIST test images (…)' for a baseline or experiment record: the
    uncompressed model's top-1 on the record's own evaluation images (None when accuracy is not reported)."""
    key = "accuracy_top1" if record.get("kind") == "baseline" else "baseline_accuracy_top1"
    value = record.get(key)
    if value is None or not record.get("accuracy_meaningful", True):
        return None
    where = eval_set_words(images=record.get("eval_images"), dataset=record.get("dataset"),
                           source=record.get("dataset_source"))
    return f"baseline {float(value) * 100:.2f} % on {where}"
