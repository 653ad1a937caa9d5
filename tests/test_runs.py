"""Run-and-save: a finished run lands in the store; a failed or cancelled one leaves nothing anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.baseline import clear_caches
from core.experiment_options import ExperimentOptions
from core.export import export_coreml_baseline
from core.measure.latency import LatencySettings
from core.progress import Cancelled, Progress
from core.records import EXPERIMENT_FIELDS
from core.runs import MLPACKAGE_ACCURACY_NOTE, run_and_save, run_mlpackage_and_save
from core.specs import PalettizeSpec, TorchDynamicSpec
from core.store import ExperimentStore
from tests.conftest import fashion_cnn_model
from tests.conftest import tiny_rgb_model as tiny_model

FAST = LatencySettings(threads=1, batch_sizes=(1,), warmup=1, min_repeats=3, max_repeats=3, seconds_per_batch_size=0.02)


@pytest.fixture
def store(tmp_path: Path) -> ExperimentStore:
    clear_caches()
    return ExperimentStore(tmp_path / "home")


def _options(store: ExperimentStore) -> ExperimentOptions:
    return ExperimentOptions(latency=FAST, cache_dir=store.home / "cache")


def _nothing_left(store: ExperimentStore) -> None:
    assert store.count() == 0
    assert list(store.staging_root.iterdir()) == []
    assert list(store.experiments_root.iterdir()) == []


def test_run_and_save_returns_the_saved_record(store: ExperimentStore) -> None:
    seen: list[str] = []
    record = run_and_save(store=store, model=tiny_model(), spec=TorchDynamicSpec(), dataset=None, options=_options(store),
                          progress=Progress(lambda f, m: seen.append(m)))
    assert record["id"] == 1 and store.count() == 1
    assert store.get(1)["spec_summary"] == record["spec_summary"] == TorchDynamicSpec().summary()
    assert set(EXPERIMENT_FIELDS) <= set(record)
    artifact = Path(record["artifact_path"])
    assert artifact.is_file() and artifact.parent == store.experiment_dir(1)
    assert Path(record["weights_path"]).is_file()
    assert seen[-1] == "Saving the experiment"
    assert list(store.staging_root.iterdir()) == []


# "Done": the run finished and the cancel arrives before the save.
@pytest.mark.parametrize("step", ["Evaluating compressed", "Saving weights", "Done", "Saving the experiment"])
def test_cancel_at_any_step_saves_nothing(store: ExperimentStore, step: str) -> None:
    progress = Progress()
    progress.callback = lambda fraction, message: progress.cancel() if message.startswith(step) else None
    with pytest.raises(Cancelled):
        run_and_save(store=store, model=tiny_model(), spec=TorchDynamicSpec(), dataset=None, options=_options(store),
                     progress=progress)
    _nothing_left(store)


def test_failure_saves_nothing(store: ExperimentStore) -> None:
    def explode(fraction: float, message: str) -> None:
        if message.startswith("Saving weights"):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        run_and_save(store=store, model=tiny_model(), spec=TorchDynamicSpec(), dataset=None, options=_options(store),
                     progress=Progress(explode))
    _nothing_left(store)


def test_uploaded_mlpackage_is_compressed_and_saved(store: ExperimentStore, tmp_path: Path) -> None:
    package = export_coreml_baseline(model=fashion_cnn_model(), path=tmp_path / "upload.mlpackage")
    record = run_mlpackage_and_save(store=store, package_path=package, spec=PalettizeSpec(n_bits=4), label="my model")
    assert store.count() == 1 and record["id"] == 1
    assert record["model"] == "mlpackage:my model" and record["artifact_kind"] == "mlpackage"
    assert record["method"] == "palettize" and record["spec_summary"] == PalettizeSpec(n_bits=4).summary()
    assert Path(record["artifact_path"]).is_dir() and Path(record["artifact_path"]).parent == store.experiment_dir(1)
    assert record["compression_ratio_fp16"] > 3.3  # fp16 upload vs its 4-bit palettized form
    assert record["accuracy_top1"] is None and record["accuracy_meaningful"] is False
    assert record["notes"][0] == MLPACKAGE_ACCURACY_NOTE and "Linux" in record["notes"][0]
    big = [w for w in record["coreml_weights"] if w["params"] > 2048]
    assert big and all(w["unique_values"] <= 16 for w in big)
    assert record["params"] > 0


def test_uploaded_mlpackage_refused_leaves_nothing(store: ExperimentStore, tmp_path: Path) -> None:
    from core.compress import CompressionError

    package = export_coreml_baseline(model=fashion_cnn_model(), path=tmp_path / "upload.mlpackage")
    with pytest.raises(CompressionError, match="data-free only"):
        run_mlpackage_and_save(store=store, package_path=package, spec=PalettizeSpec(workflow="calibration"))
    _nothing_left(store)


def test_finalize_fills_fields_before_the_save_and_staging_is_named(store: ExperimentStore) -> None:
    folders: list[str] = []

    def finalize(record: dict, run_seconds: float) -> None:
        folders.extend(p.name for p in store.staging_root.iterdir())
        record["job_id"] = 7
        record["phase_seconds"] = {"run": run_seconds}

    record = run_and_save(store=store, model=tiny_model(), spec=TorchDynamicSpec(), dataset=None,
                          options=_options(store), staging_prefix="job7_", finalize=finalize)
    assert len(folders) == 1 and folders[0].startswith("job7_")
    assert record["job_id"] == 7 and store.get(record["id"])["phase_seconds"]["run"] > 0


def test_an_export_that_fails_on_the_helper_thread_fails_the_run_and_saves_nothing(store: ExperimentStore) -> None:
    import torch
    from torch import nn

    from core.export import ExportError
    from core.models.sources import LoadedModel

    class Unconvertible(nn.Module):  # Core ML has no conversion for this op: the export (helper thread) fails
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.special.bessel_j0(self.fc(x.flatten(1)))

    model = LoadedModel(
        source_id="test:unconvertible", label="unconvertible (random)", module=Unconvertible().eval(),
        architecture="unconvertible", input_shape=(1, 8, 8), mean=(0.5,), std=(0.5,), num_classes=64, dataset=None,
        accuracy_meaningful=False, weights_note="random initialisation — accuracy numbers are meaningless",
    )
    seen: list[str] = []
    with pytest.raises(ExportError, match="special_bessel_j0"):
        run_and_save(store=store, model=model, spec=PalettizeSpec(n_bits=4), dataset=None, options=_options(store),
                     progress=Progress(lambda f, m: seen.append(m)))
    assert "Core ML export started on a helper thread" in seen  # it really ran beside the evaluation
    _nothing_left(store)
