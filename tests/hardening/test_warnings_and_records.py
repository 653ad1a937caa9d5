"""Library warnings that matter reach the record once; the record names the int8 engine actually used; the
Compare scatter draws one baseline per evaluation set."""

from __future__ import annotations

import warnings

import pytest
import torch

from core import charts
from core.progress import (
    captured_library_output,
    is_library_warning,
    library_notes_into,
    library_version_warnings,
    split_library_warnings,
)
from core.tables import experiments_frame
from tests.conftest import make_record


def test_deprecations_and_untested_versions_are_kept_once():
    notes: list[str] = []
    for _ in range(3):  # three calls of the same library code in one run
        with library_notes_into(notes):
            warnings.warn("torch.ao.quantization is deprecated and will be removed in 2.10", DeprecationWarning,
                          stacklevel=1)
            print("Torch version 2.14.1 has not been tested with coremltools. You may run into unexpected errors.")
            print("Running MIL pass: 100%")
    assert notes == [
        "torch.ao.quantization is deprecated and will be removed in 2.10",
        "Torch version 2.14.1 has not been tested with coremltools. You may run into unexpected errors.",
        "Running MIL pass: 100%",
    ]
    found, others = split_library_warnings([*notes, "Evaluated on 500 of 10,000 images."])
    assert found == notes[:2] and others == ["Running MIL pass: 100%", "Evaluated on 500 of 10,000 images."]
    assert is_library_warning("X is DEPRECATED") and not is_library_warning("calibrated on 128 images")


def test_captured_output_no_longer_drops_the_untested_version_line():
    notes: list[str] = []
    with captured_library_output(notes):
        warnings.warn("Torch version 9.9 has not been tested with coremltools.", UserWarning, stacklevel=1)
    assert notes == ["Torch version 9.9 has not been tested with coremltools."]


def test_version_warning_restates_what_coremltools_logs_only_at_import():
    from packaging.version import Version

    from core.library_internals import COREMLTOOLS_TESTED_TORCH

    lines = library_version_warnings()
    newer = Version(torch.__version__.split("+")[0]) > Version(COREMLTOOLS_TESTED_TORCH)
    assert bool(lines) == newer
    if lines:
        assert lines[0].startswith(f"Torch {torch.__version__} has not been tested with coremltools")
        assert is_library_warning(lines[0])


def test_record_names_the_int8_engine_used_not_the_process_default(tmp_path):
    from core.experiment import run_experiment
    from core.experiment_options import ExperimentOptions
    from core.models.sources import load_model
    from core.specs import TorchStaticSpec

    if "onednn" not in torch.backends.quantized.supported_engines:
        pytest.skip("this PyTorch build has no onednn engine")
    default = torch.backends.quantized.engine
    assert default != "onednn"
    spec = TorchStaticSpec(backend="onednn", engine="onednn", graph="graph_module", calibration_samples=32)
    try:
        record = run_experiment(
            model=load_model("sample:fashion_cnn"), spec=spec, dataset=None, artifacts_dir=tmp_path / "run",
            options=ExperimentOptions(eval_limit=64, measure_latency=False, measure_memory=False, export=False,
                                      cache_dir=tmp_path / "cache"),
        )
    finally:
        torch.backends.quantized.engine = default  # torch_static sets the process-wide engine (see the report)
    assert record["machine"]["quantized_engine"] == "onednn"
    assert any("has not been tested" in n for n in record["notes"]) == bool(library_version_warnings())


def test_scatter_compares_each_experiment_with_its_own_evaluation_sets_baseline():
    subset = [dict(make_record(accuracy=0.90, baseline=0.92), id=1, eval_images=500)]
    full = [dict(make_record(accuracy=0.88, baseline=0.905), id=2, eval_images=10_000, dataset_source="data/ folder")]
    frame = experiments_frame(subset + full)
    points = charts.baseline_points(frame, "accuracy_top1")
    assert [(p.label, round(p.y_pct, 2)) for p in points] == [
        ("Fashion-MNIST, 10,000 images", 90.5),
        ("Fashion-MNIST, 500 images", 92.0),
    ]
    fig = charts.accuracy_size_figure(frame, budget_pts=1.0)
    stars = [t for t in fig.data if t.marker.symbol == "star"]
    assert sorted(t.name for t in stars) == ["Baseline (fp16) · Fashion-MNIST, 10,000 images",
                                            "Baseline (fp16) · Fashion-MNIST, 500 images"]
    budget_lines = sorted(round(shape.y0, 2) for shape in fig.layout.shapes if shape.type == "line")
    assert budget_lines == [89.5, 91.0]  # each set's budget sits below its own baseline
    # the newest record's baseline is no longer used for every experiment
    one = charts.baseline_points(experiments_frame(subset), "accuracy_top1")
    assert len(one) == 1 and one[0].y_pct == pytest.approx(92.0)
    single = charts.accuracy_size_figure(experiments_frame(subset))
    assert [t.name for t in single.data if t.marker.symbol == "star"] == ["Baseline (fp16)"]


def test_result_card_lists_library_warnings_apart_from_other_notes(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.store import ExperimentStore

    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path))
    record = make_record()
    record["notes"] = [
        "Evaluated on 500 of the 2,500 evaluation images: a seeded, class-balanced sample (50 per class, seed 0).",
        "`torch.jit.trace` is deprecated. Please switch to torch.compile or torch.export. " + "x" * 300,
        "Torch 2.14.1 has not been tested with coremltools 9.0 (newest tested: 2.7.0); results are real.",
    ]
    saved_id = ExperimentStore(tmp_path).add(record)

    def card(experiment_id: int) -> None:
        import streamlit as st

        from pages._ui.result_card import result_card
        from pages._ui.storage import store

        st.session_state.setdefault("session_id", "test")
        result_card(store().get(experiment_id))

    at = AppTest.from_function(card, args=(saved_id,), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    listing = next(m.value for m in at.markdown if "Library warnings from this run" in m.value)
    lines = [line for line in listing.splitlines() if line.startswith("- ")]
    assert len(lines) == 1 and lines[0].startswith("- `torch.jit.trace` is deprecated") and lines[0].endswith("…")
    assert len(lines[0]) <= 182
    # the untested-version line is said once on the Model page: on the card it stays among the notes only
    assert [e.label for e in at.expander] == ["Notes from this run (2)"]
    outside = [m.value for m in at.markdown if "Notes from this run" not in m.value and m.value.startswith(":material")]
    assert not any("has not been tested" in text for text in outside + [c.value for c in at.caption])
    notes = [m.value for m in at.expander[0].markdown]
    assert any("has not been tested" in n for n in notes) and any("Evaluated on 500" in n for n in notes)
    # the baseline beside the result says which images both were measured on
    base = record["baseline_accuracy_top1"] * 100
    assert any(f"Compared with the baseline {base:.2f} % on 2,000 Fashion-MNIST test images (bundled subset)" in c.value
               for c in at.caption)
