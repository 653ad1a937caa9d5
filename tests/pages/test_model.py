"""Model page: summary and baseline of the sample, and clear errors for bad uploads (never a traceback)."""

from __future__ import annotations

import io
import zipfile

from tests.pages.conftest import assert_clean


def test_summary_and_baseline(app) -> None:
    at = app(page="pages/1_Model.py")
    at.selectbox(key="cfg.eval_limit").select(500).run()
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Parameters"] == "0.87 M"
    assert metrics["Weight layers"] == "6"
    assert metrics["Top-1 accuracy"].endswith("%") and float(metrics["Top-1 accuracy"].split()[0]) > 85
    assert metrics["Latency p50"].endswith("ms")
    assert metrics["fp16 .mlpackage"].endswith(("MB", "kB"))
    layers = at.dataframe[0].value
    assert list(layers["layer"]) == ["features.0", "features.3", "features.7", "features.10", "classifier.1", "classifier.4"]
    assert layers.loc[0, "compressed by default?"].startswith("no")
    assert not at.warning  # trained weights: no random-weights warning


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


def test_image_folder_dataset_is_used(app) -> None:
    at = app(page="pages/1_Model.py")
    at.selectbox(key="cfg.eval_limit").select(500).run()
    at.radio(key="cfg.data.kind").set_value("folder").run()
    at.file_uploader(key="data.upload").set_value(("fashion.zip", _image_folder_zip(), "application/zip")).run()
    at.button(key="data.apply").click().run()
    assert_clean(at)
    sidebar = " ".join(m.value + " " for m in at.sidebar.markdown) + " ".join(c.value for c in at.sidebar.caption)
    assert "ImageFolder fashion" in sidebar
    assert "50 evaluation images" in sidebar  # 6 per class, of which round(20 %) = 1 is kept for calibration
    assert any(m.label == "Top-1 accuracy" and m.value.endswith("%") for m in at.metric)


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
    assert "holds no .mlpackage folder" in at.error[0].value

    at.file_uploader(key="model.ml_upload").set_value(("cnn.zip", zip_directory(package), "application/zip")).run()
    at.button(key="model.ml_run").click().run()
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Smaller by"].rstrip("×")) > 3  # 4-bit LUT indices replace fp16 weights
    assert any(d.label == "Compressed package (.zip)" for d in at.get("download_button"))
    # Saved as an experiment through the engine's own transaction (core.runs), not a side path.
    assert "saved as experiment **#1**" in at.success[0].value
    assert "Experiments:** 1" in " ".join(m.value for m in at.sidebar.markdown)


def test_random_weight_architecture_is_flagged(app) -> None:
    at = app(page="pages/1_Model.py")
    at.radio(key="cfg.model.kind").set_value("torchvision").run()
    at.selectbox(key="cfg.model.arch").select("resnet18").run()
    at.button(key="model.load_tv").click().run()
    assert_clean(at)
    assert any("Random or unknown weights" in w.value for w in at.warning)
    assert "resnet18 (random weights)" in " ".join(m.value for m in at.sidebar.markdown)
    assert {m.label: m.value for m in at.metric}["Input"] == "3×224×224"
    # 11.7 M parameters: the slow baseline (Core ML export) waits for a click instead of blocking the page.
    assert at.button(key="model.baseline").label == "Measure baseline"
    assert "synthetic inputs" in " ".join(c.value for c in at.sidebar.caption)
