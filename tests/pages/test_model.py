"""Model page: summary and baseline of the sample, and clear errors for bad uploads (never a traceback).

The baseline and the Core ML package compression are jobs: a worker process measures, the page follows the job.
"""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path

import pytest

from core.jobs import BASELINE_JOB, DONE, MLPACKAGE_JOB, JobQueue
from tests.pages.conftest import assert_clean


@pytest.fixture(autouse=True)
def _private_jobs(tmp_path, monkeypatch) -> None:
    """A timing lock private to the test (other runs on the machine don't block it); idle workers leave soon."""
    monkeypatch.setenv("COMPRESSION_STUDIO_TIMING_LOCK", str(tmp_path / "timing.lock"))
    monkeypatch.setenv("COMPRESSION_STUDIO_WORKER_IDLE", "15")


def _queue() -> JobQueue:
    return JobQueue(home=Path(os.environ["COMPRESSION_STUDIO_HOME"]))


def _until(at, predicate, *, what: str, timeout: float = 300):
    """Rerun the session (what the page's polling does in a browser) until `predicate` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
        at.run()
    return at


def _has_baseline(at) -> bool:
    return any(m.label == "Top-1 accuracy" for m in at.metric)


@pytest.mark.slow
def test_summary_and_baseline(app) -> None:
    from core import baseline

    baseline.clear_caches()  # whatever earlier tests of this process measured
    at = app(page="pages/1_Model.py")
    at.selectbox(key="cfg.eval_limit").select(500).run()
    assert_clean(at)
    # No cached baseline yet: the page queued a baseline job (progress + Cancel) instead of measuring itself.
    jobs = [j for j in _queue().list() if j.kind == BASELINE_JOB and j.options.get("eval_limit") == 500]
    assert len(jobs) == 1 and jobs[0].label == "Baseline · fashion_cnn (sample)"
    at = _until(at, lambda: _has_baseline(at), what="the baseline job")
    assert_clean(at)
    job = _queue().get(job_id=jobs[0].id)
    assert job.state == DONE and job.worker_pid != os.getpid()  # measured by a worker process
    assert not baseline.measured_in_this_process()  # … and never in the app's process
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Parameters"] == "0.87 M"
    assert metrics["Weight layers"] == "6"
    assert metrics["Top-1 accuracy"].endswith("%") and float(metrics["Top-1 accuracy"].split()[0]) > 85
    assert metrics["Latency p50"].endswith("ms")
    assert metrics["fp16 .mlpackage"].endswith(("MB", "kB"))
    layers = next(d.value for d in at.dataframe if "layer" in d.value.columns)  # the card lists methods first
    assert list(layers["layer"]) == ["features.0", "features.3", "features.7", "features.10", "classifier.1", "classifier.4"]
    assert layers.loc[0, "compressed by default?"].startswith("no")
    assert not at.warning  # trained weights: no random-weights warning
    # the baseline says which images it was measured on: the 500 chosen, from the dataset the sidebar names
    label = next(c.value for c in at.caption if "Baseline " in c.value and "test images" in c.value)
    assert f"Baseline {metrics['Top-1 accuracy']} on 500 Fashion-MNIST test images (" in label
    # the untested-library-version line is said once on the page (and kept in the record's notes)
    from core.progress import library_version_warnings

    said = [c.value for c in [*at.caption, *at.markdown] if "has not been tested" in c.value]
    assert len(said) == len(library_version_warnings()) <= 1
    assert at.selectbox(key="cfg.model.arch").value == "sample:fashion_cnn"  # the picker shows the loaded model
    # Another tab (or a reload) shows the cached baseline at once: no second job.
    other = app(page="pages/1_Model.py")
    other.selectbox(key="cfg.eval_limit").select(500).run()
    assert _has_baseline(other)
    assert {m.label: m.value for m in other.metric}["Top-1 accuracy"] == metrics["Top-1 accuracy"]
    assert [j.id for j in _queue().list() if j.kind == BASELINE_JOB and j.options.get("eval_limit") == 500] == [job.id]


def test_sample_picker_shows_the_loaded_model(app) -> None:
    at = app()
    at.session_state["model_choice"] = {"source_id": "sample:fashion_resnet"}  # loaded earlier in this session
    at.switch_page("pages/1_Model.py").run()
    assert_clean(at)
    picker = at.selectbox(key="cfg.model.arch")
    assert picker.value == "sample:fashion_resnet" and picker.format_func(picker.value).endswith(" (loaded)")
    picker.select("sample:fashion_cnn").run()  # the user's own pick stays until a model is loaded
    assert at.selectbox(key="cfg.model.arch").value == "sample:fashion_cnn"
    for job in _queue().list():  # the page queued fashion_resnet's baseline: not needed here
        _queue().cancel(job_id=job.id)


def test_bad_weights_upload_shows_an_error(app) -> None:
    at = app(page="pages/1_Model.py")
    at.radio(key="cfg.model.kind").set_value("state_dict").run()
    at.selectbox(key="cfg.model.sd_arch").select("fashion_cnn").run()
    at.file_uploader(key="model.sd_upload").set_value(("broken.pt", b"this is not a checkpoint", "application/octet-stream")).run()
    at.button(key="model.load_sd").click().run()
    assert not at.exception
    assert len(at.error) == 1
    assert "broken.pt" in at.error[0].value and "Loading the model failed" in at.error[0].value
    # The app keeps working on the model it had.
    assert "fashion_cnn (sample)" in " ".join(m.value for m in at.sidebar.markdown)


@pytest.mark.slow
def test_bad_torchscript_and_dataset_uploads(app) -> None:
    at = app(page="pages/1_Model.py")
    at.radio(key="cfg.model.kind").set_value("torchscript").run()
    at.file_uploader(key="model.ts_upload").set_value(("model.pt", b"\x00" * 64, "application/octet-stream")).run()
    at.button(key="model.load_ts").click().run()
    assert not at.exception
    assert "not a TorchScript archive" in at.error[0].value

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("readme.txt", "no class folders here")
    at = app(page="pages/1_Model.py")
    at.radio(key="cfg.data.kind").set_value("folder").run()
    at.file_uploader(key="data.upload").set_value(("images.zip", buffer.getvalue(), "application/zip")).run()
    at.button(key="data.apply").click().run()
    assert not at.exception
    assert "no class folders" in at.error[0].value


def _image_folder_zip() -> bytes:
    """Ten class folders of real Fashion-MNIST test images (from the bundled subset) as PNGs in a zip."""
    from PIL import Image

    from core.data import FASHION_MNIST_CLASSES, load_bundled_subset

    subset = load_bundled_subset()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        counts = dict.fromkeys(range(10), 0)
        for image, label in zip(subset.test.images, subset.test.labels.tolist(), strict=True):
            if counts[label] >= 6:
                continue
            png = io.BytesIO()
            Image.fromarray(image[0].numpy()).save(png, format="PNG")
            name = FASHION_MNIST_CLASSES[label].replace("/", "-")
            zf.writestr(f"fashion/{label}_{name}/{counts[label]}.png", png.getvalue())
            counts[label] += 1
    return buffer.getvalue()


@pytest.mark.slow
def test_image_folder_dataset_is_used(app) -> None:
    at = app(page="pages/1_Model.py")
    at.selectbox(key="cfg.eval_limit").select(500).run()
    at.radio(key="cfg.data.kind").set_value("folder").run()
    at.file_uploader(key="data.upload").set_value(("fashion.zip", _image_folder_zip(), "application/zip")).run()
    at.button(key="data.apply").click().run()
    assert_clean(at)
    at = _until(at, lambda: _has_baseline(at), what="the baseline job on the uploaded images")
    assert_clean(at)
    sidebar = " ".join(m.value + " " for m in at.sidebar.markdown) + " ".join(c.value for c in at.sidebar.caption)
    assert "ImageFolder fashion" in sidebar
    assert "50 evaluation images" in sidebar  # 6 per class, of which round(20 %) = 1 is kept for calibration
    assert any(m.label == "Top-1 accuracy" and m.value.endswith("%") for m in at.metric)


def test_the_core_ml_side_form_asks_each_method_for_its_own_knob(app) -> None:
    """The package form draws the one knob each Core ML-side method names, from its spec's metadata."""
    from core.compress.registry import coreml_side_methods, method_descriptor

    at = app(page="pages/1_Model.py")
    at.radio(key="cfg.model.kind").set_value("mlpackage").run()
    assert at.radio(key="cfg.ml.method").options == ["Palettize", "Quantize weights", "Prune"]
    for method in coreml_side_methods():
        at.radio(key="cfg.ml.method").set_value(method).run()
        assert_clean(at)
        side = method_descriptor(method).coreml_side
        widget = next(w for w in [*at.select_slider, *at.radio, *at.slider] if w.key == f"cfg.ml.{side.key}")
        assert (widget.label, widget.help) == (side.label, side.help)
        if method == "palettize":  # the choices are the spec's n_bits choices
            assert widget.options == ["1", "2", "3", "4", "6", "8"] and widget.value == 4
        if method == "prune":
            assert widget.value == pytest.approx(0.5) and (widget.min, widget.max) == (0.05, 0.95)


@pytest.mark.slow
def test_mlpackage_upload_is_compressed_on_the_core_ml_side(app, tmp_path) -> None:
    from core.export import export_coreml_baseline
    from core.models.sources import load_model
    from core.store import zip_directory

    package = export_coreml_baseline(model=load_model("sample:fashion_cnn"), path=tmp_path / "cnn.mlpackage")
    at = app(page="pages/1_Model.py")
    at.radio(key="cfg.model.kind").set_value("mlpackage").run()
    at.file_uploader(key="model.ml_upload").set_value(("notapackage.zip", _image_folder_zip(), "application/zip")).run()
    at.button(key="model.ml_run").click().run()
    assert not at.exception
    at = _until(at, lambda: at.error, what="the failed package job")
    assert "holds no .mlpackage folder" in at.error[0].value

    # A fresh session: AppTest drops a file field's value on the st.rerun() that follows a submit (a browser keeps it).
    at = app(page="pages/1_Model.py")
    at.radio(key="cfg.model.kind").set_value("mlpackage").run()
    at.file_uploader(key="model.ml_upload").set_value(("cnn.zip", zip_directory(package), "application/zip")).run()
    at.button(key="model.ml_run").click().run()
    assert not at.exception
    [job] = [j for j in _queue().list(limit=1) if j.kind == MLPACKAGE_JOB]  # queued for a worker, not run here
    at = _until(at, lambda: at.success, what="the package job")
    assert_clean(at)
    assert _queue().get(job_id=job.id).worker_pid != os.getpid()
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Size vs the original"].removesuffix("× smaller")) > 3  # 4-bit LUT indices replace fp16
    assert any(d.label == "Compressed package (.zip)" for d in at.get("download_button"))
    # Saved as an experiment through the engine's own transaction (core.runs), not a side path.
    assert "saved as experiment **#1**" in at.success[0].value
    # the sidebar is drawn before the page body: the run that first shows the result may predate the save
    at.run()
    assert "Experiments:** 1" in " ".join(m.value for m in at.sidebar.markdown)
    reloaded = app()  # a reload is a new session: the URL's ?mljob=N brings the package's result back
    assert at.query_params["mljob"] == str(job.id)
    reloaded.query_params["mljob"] = str(job.id)
    reloaded.switch_page("pages/1_Model.py").run()
    assert "cnn: " in reloaded.success[0].value and "saved as experiment **#1**" in reloaded.success[0].value


@pytest.mark.slow
def test_random_weight_architecture_is_flagged(app) -> None:
    at = app(page="pages/1_Model.py")
    at.radio(key="cfg.model.kind").set_value("architecture").run()
    at.selectbox(key="cfg.model.arch").select("torchvision:resnet18").run()
    at.button(key="model.load_arch").click().run()
    assert_clean(at)
    assert any("Random weights: accuracy numbers are not meaningful. Size, latency and output SNR / agreement against "
               "the model's own fp32 output are." in w.value for w in at.warning)
    assert "resnet18 (random weights)" in " ".join(m.value for m in at.sidebar.markdown)
    assert {m.label: m.value for m in at.metric}["Input"] == "3×224×224"
    # 11.7 M parameters: the slow baseline (Core ML export) waits for a click instead of blocking the page.
    assert at.button(key="model.baseline").label == "Measure baseline"
    assert not [j for j in _queue().list() if j.kind == BASELINE_JOB and "resnet18" in j.label]
    at.run()  # AppTest drops the first click after the st.rerun() that loaded the model (a browser does not)
    at.button(key="model.baseline").click().run()  # queued for a worker; Cancel stops it, nothing is kept
    [job] = [j for j in _queue().list() if j.kind == BASELINE_JOB and "resnet18" in j.label]
    at.button(key="model.baseline_cancel").click().run()
    at = _until(at, lambda: any("cancelled" in i.value for i in at.info), what="the cancelled baseline", timeout=120)
    assert _queue().get(job_id=job.id).state == "cancelled"
    assert at.button(key="model.baseline_retry").label == "Measure again"
    assert "synthetic inputs" in " ".join(c.value for c in at.sidebar.caption)


@pytest.mark.slow
def test_pt2_upload_loads_and_the_model_card_says_which_methods_apply(app, tmp_path) -> None:
    """A .pt2 through the upload field: loaded (child-process probe, lifting) and every method applies."""
    import torch

    from core.models.architectures import FashionCNN

    path = tmp_path / "cnn.pt2"
    torch.export.save(torch.export.export(FashionCNN().eval(), (torch.zeros(1, 1, 28, 28),)), path)
    at = app(page="pages/1_Model.py")
    at.radio(key="cfg.model.kind").set_value("export").run()
    assert any("can run code when it loads" in w.value for w in at.warning)
    at.file_uploader(key="model.ep_upload").set_value(("cnn.pt2", path.read_bytes(), "application/octet-stream")).run()
    at.button(key="model.load_ep").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Exported cnn.pt2" in " ".join(m.value for m in at.sidebar.markdown)
    card = next(e for e in at.expander if e.label == "Every method applies to this model")
    assert any("torch.export program: 6 convolution / linear call(s) lifted to real layers" in c.value for c in card.caption)
    table = card.dataframe[0].value.set_index("Method or workflow")
    assert table.loc["Palettize", "Applies"] == "yes" and table.loc["fine-tune workflow", "Applies"] == "yes"
    assert set(table["Applies"]) == {"yes"} and set(table["Why not"]) == {""}


def test_bad_onnx_upload_names_the_problem(app) -> None:
    at = app(page="pages/1_Model.py")
    at.radio(key="cfg.model.kind").set_value("onnx").run()
    at.file_uploader(key="model.onnx_upload").set_value(("model.onnx", b"PK\x03\x04 not onnx", "application/octet-stream")).run()
    at.button(key="model.load_onnx").click().run()
    assert not at.exception
    assert "model.onnx is not an ONNX model" in at.error[0].value


def test_model_card_names_why_methods_do_not_apply_to_unconvertible_torchscript(app, unconvertible_torchscript) -> None:
    path = unconvertible_torchscript
    at = app(page="pages/1_Model.py")
    at.radio(key="cfg.model.kind").set_value("torchscript").run()
    at.file_uploader(key="model.ts_upload").set_value(("loops.pt", path.read_bytes(), "application/octet-stream")).run()
    at.button(key="model.load_ts").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    card = next(e for e in at.expander if e.label.startswith("Methods: 0 apply"))
    assert any("Kept as TorchScript" in c.value and "prim::Loop" in c.value for c in card.caption)
    table = card.dataframe[0].value
    assert set(table["Applies"]) == {"no"} and table["Why not"].str.contains("export it with torch.export").all()


def test_one_picker_lists_every_route_and_loads_a_timm_model(app) -> None:
    at = app(page="pages/1_Model.py")
    at.radio(key="cfg.model.kind").set_value("architecture").run()
    picker = at.selectbox(key="cfg.model.arch")
    labels = picker.options  # as the user sees them (formatted)
    assert "torchvision:vit_b_16 — 86.6 M params" in labels and "sample:fashion_resnet — 2.4 M params" in labels
    assert sum(label.startswith("timm:") for label in labels) > 1000 and "(1" in picker.label  # "(1,4xx; type to search)"
    picker.select("timm:resnet10t").run()
    assert any("5.4 M parameters" in c.value and "timm's data config" in c.value for c in at.caption)
    assert at.radio(key="cfg.model.arch.weights.timm").options == ["Random initialisation", "Upload a weights file"]
    at.button(key="model.load_arch").click().run()
    assert_clean(at)
    assert "resnet10t (timm, random weights)" in " ".join(m.value for m in at.sidebar.markdown)
    assert {m.label: m.value for m in at.metric}["Input"] == "3×176×176"
    assert any("Random weights: accuracy numbers are not meaningful" in w.value for w in at.warning)


def test_sample_picker_says_what_each_sample_shows(app) -> None:
    at = app(page="pages/1_Model.py")
    at.radio(key="cfg.model.kind").set_value("architecture").run()
    picker = at.selectbox(key="cfg.model.arch")
    samples = [o.split(" — ")[0] for o in picker.options if o.startswith("sample:")]
    assert samples == ["sample:fashion_cnn", "sample:fashion_resnet", "sample:fashion_mobilenet"]
    picker.select("sample:fashion_mobilenet").run()
    assert_clean(at)
    captions = " ".join(c.value for c in at.caption)
    assert "MobileNetV2-style" in captions and "the MobileNet quantization question" in captions
    from core.learn.depthwise import accuracy_note
    from core.models.sources import sample_manifest

    assert accuracy_note(sample_manifest()["fashion_mobilenet"]) in captions  # the measured int8 accuracies
