"""Compress page: every tab renders, impossible settings explain themselves, and a real run is saved and compared."""

from __future__ import annotations

import time

import pytest

from tests.pages.conftest import assert_clean


def test_tabs_render_with_their_knobs(app) -> None:
    at = app(page="pages/2_Compress.py")
    assert_clean(at)
    assert [t.label for t in at.tabs] == ["Palettize", "Quantize weights", "Activations W8A8", "Prune", "PyTorch int8",
                                          "Joint pipeline"]
    assert at.select_slider(key="cfg.palettize.n_bits").value == 4
    assert at.radio(key="cfg.qw.dtype").options == ["int8", "int4"]
    assert at.slider(key="cfg.prune.target_sparsity").value == pytest.approx(0.5)
    run_buttons = [b.key for b in at.button if b.key and b.key.startswith("run.")]
    assert run_buttons == ["run.palettize", "run.quantize_weights", "run.quantize_activations", "run.prune",
                           "run.torch_static", "run.pipeline"]
    assert any("Estimated run time" in c.value for c in at.caption)
    # Every knob has a one-line help text.
    for widget in [*at.slider, *at.select_slider, *at.radio, *at.number_input, *at.toggle, *at.selectbox]:
        assert widget.help, f"{widget.key} has no help text"


def test_impossible_setting_is_explained_not_raised(app) -> None:
    at = app(page="pages/2_Compress.py")
    at.radio(key="cfg.palettize.mode").set_value("uniform").run()
    at.radio(key="cfg.palettize.workflow").set_value("calibration").run()
    assert not at.exception
    assert any("data-free only" in e.value for e in at.error)
    assert "run.palettize" not in [b.key for b in at.button]  # no Run button for an impossible spec


def test_run_from_compress_page_appears_in_compare(app) -> None:
    at = app(page="pages/2_Compress.py")
    at.selectbox(key="cfg.eval_limit").select(500).run()
    at.radio(key="cfg.torch.kind").set_value("dynamic").run()
    at.button(key="run.torch_dynamic").click().run(timeout=400)
    assert_clean(at)
    assert "Saved as experiment **#1** — torch dynamic int8" in at.success[0].value
    metrics = {m.label: (m.value, m.delta) for m in at.metric}
    assert metrics["Top-1 accuracy"][0].endswith("%") and "pts vs" in metrics["Top-1 accuracy"][1]
    assert metrics["Size on disk"][1].endswith("× smaller")
    assert metrics["Latency p50"][1].endswith("% vs baseline")
    assert metrics["Time to compress"][0].endswith("s")
    downloads = [d.label for d in at.get("download_button")]
    assert downloads[0].startswith("TorchScript model")
    assert downloads[1:] == ["Recipe (coremltools YAML)", "Recipe (Python snippet)"]
    assert "Experiments:** 1" in " ".join(m.value for m in at.sidebar.markdown)

    at.switch_page("pages/3_Compare.py").run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(table["#"]) == [1]
    assert table.loc[0, "method"] == "PyTorch dynamic"
    assert table.loc[0, "eval images"] == 500


def test_cancelled_run_saves_nothing(app, studio_home) -> None:
    """The Cancel button's effect (job.cancel → Progress.cancel) on a real run: no row, no files."""
    from core.models.sources import load_model
    from core.specs import PalettizeSpec
    from core.store import ExperimentStore
    from pages._ui.run_client import start_run

    app()  # sets the data folder for this session
    store = ExperimentStore(studio_home)
    before = store.count()
    job = start_run(model=load_model("sample:fashion_cnn"), dataset=None, spec=PalettizeSpec(n_bits=2), limit=500)
    deadline = time.time() + 300
    while job.running and job.fraction < 0.68 and time.time() < deadline:  # after the export wrote its artifact
        time.sleep(0.05)
    written = [p for p in store.staging_root.rglob("*") if p.is_file()]
    job.cancel()
    job.thread.join(timeout=300)
    assert written, "the run should have written its artifact before it was cancelled"
    assert not job.running and job.cancelled and job.error is None and job.record is None
    assert store.count() == before
    assert list(store.staging_root.iterdir()) == []
