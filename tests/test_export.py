"""Real artifacts: .mlpackage sizes that show the compression, TorchScript that reloads, Core ML-side compression."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from core.compress import compress
from core.data import load_bundled_subset
from core.export import (
    ExportError,
    artifact_for,
    compress_mlpackage,
    export_coreml,
    export_coreml_baseline,
    export_torchscript,
)
from core.measure.size import path_size_bytes
from core.specs import PalettizeSpec, PipelineSpec, PruneSpec, QuantizeWeightsSpec, TorchDynamicSpec, TorchStaticSpec
from tests.conftest import fashion_cnn_model, tiny_model

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def model():
    return fashion_cnn_model()


@pytest.fixture(scope="module")
def fashion():
    return load_bundled_subset()


@pytest.fixture(scope="module")
def baseline(model, tmp_path_factory) -> Path:
    return export_coreml_baseline(model=model, path=tmp_path_factory.mktemp("base") / "fp16.mlpackage")


def test_baseline_is_the_fp16_size(model, baseline):
    size = path_size_bytes(baseline)
    assert size == pytest.approx(model.size_fp16_bytes, rel=0.03)


@pytest.mark.parametrize(
    ("spec", "low", "high"),
    [
        (PalettizeSpec(n_bits=4), 3.5, 4.1),  # 4-bit indices + tiny LUTs (conv1 and biases stay fp16)
        (QuantizeWeightsSpec(dtype="int8"), 1.85, 2.05),
        (PruneSpec(target_sparsity=0.75), 2.8, 3.3),  # fp16 non-zeros (25 %) + 1-bit mask
        (PipelineSpec((PruneSpec(target_sparsity=0.5), PalettizeSpec(n_bits=4))), 4.6, 5.5),  # sparse 4-bit
    ],
    ids=["palettize4", "int8", "prune75", "prune50+palettize4"],
)
@pytest.mark.slow
def test_mlpackage_keeps_the_compression(model, fashion, baseline, tmp_path, spec, low, high):
    result = compress(model=model, spec=spec, dataset=fashion)
    path, kind = artifact_for(result, input_shape=model.input_shape, out_dir=tmp_path)
    assert kind == "mlpackage" and result.artifact_path == path and path.suffix == ".mlpackage"
    ratio = path_size_bytes(baseline) / path_size_bytes(path)
    assert low <= ratio <= high


@pytest.mark.slow
@pytest.mark.parametrize("spec", [TorchStaticSpec(calibration_samples=32), TorchDynamicSpec()], ids=["static", "dynamic"])
def test_torchscript_reloads_with_identical_outputs(fashion, tmp_path, spec):
    tiny = tiny_model()
    result = compress(model=tiny, spec=spec, dataset=fashion)
    path, kind = artifact_for(result, input_shape=tiny.input_shape, out_dir=tmp_path)
    assert kind == "torchscript" and path.suffix == ".pt"
    reloaded = torch.jit.load(str(path))
    images = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(reloaded(images), result.module(images))
    assert path_size_bytes(path) > 0


def test_export_rejects_a_wrong_suffix(tmp_path):
    with pytest.raises(ExportError, match=r"\.mlpackage"):
        export_coreml(module=tiny_model().module, input_shape=(1, 28, 28), path=tmp_path / "model.zip")


def test_export_torchscript_of_a_float_model(tmp_path):
    tiny = tiny_model()
    path = export_torchscript(module=tiny.module, input_shape=tiny.input_shape, path=tmp_path / "m.pt")
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(path))(images), tiny.module(images))


def test_compress_an_uploaded_mlpackage_on_the_coreml_side(baseline, tmp_path):
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in baseline.rglob("*"):
            zf.write(file, Path("upload") / baseline.name / file.relative_to(baseline))
    out = compress_mlpackage(path=archive, spec=PalettizeSpec(n_bits=4), out_path=tmp_path / "p4.mlpackage")
    assert out["original_size_bytes"] / out["size_bytes"] > 3.3
    assert out["accuracy_available"] is False and "Linux" in out["notes"][0]
    big = [w for w in out["weights"] if w["params"] > 2048]
    assert big and all(w["unique_values"] <= 16 for w in big)
    pruned = compress_mlpackage(path=baseline, spec=PruneSpec(target_sparsity=0.5), out_path=tmp_path / "s.mlpackage")
    masks = [w for w in pruned["weights"] if w["role"] == "sparsity mask"]
    assert len(masks) == 5 and all(w["sparsity"] == pytest.approx(0.5, abs=0.01) for w in masks)
    assert not any(w["dtype"].startswith("int32") for w in pruned["weights"])


def test_coreml_side_refuses_data_dependent_workflows(baseline, tmp_path):
    from core.compress import CompressionError

    with pytest.raises(CompressionError, match="data-free only"):
        compress_mlpackage(path=baseline, spec=PalettizeSpec(workflow="calibration"), out_path=tmp_path / "x.mlpackage")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ExportError, match=r"neither an \.mlpackage"):
        compress_mlpackage(path=broken, spec=PalettizeSpec(), out_path=tmp_path / "y.mlpackage")


def test_uploaded_mlpackage_zip_goes_through_the_safe_extractor(tmp_path):
    """A zip bomb posing as a package is refused with the extractor's message; nothing stays in the work folder."""
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m.mlpackage/Data/weights.bin", b"\0" * 1_000_000)
    from core.safe_zip import ZipLimits

    work = tmp_path / "work"
    # the default cap is 2 GB; a 100 kB cap shows the same refusal without writing gigabytes here
    with pytest.raises(ExportError, match="would expand to more than"):
        compress_mlpackage(path=bomb, spec=PalettizeSpec(), out_path=tmp_path / "z.mlpackage", extract_to=work,
                           zip_limits=ZipLimits(max_total_bytes=100_000))
    assert not work.exists() and not (tmp_path / "z.mlpackage").exists()


def _shufflenet():
    import torchvision

    return torchvision.models.shufflenet_v2_x0_5(num_classes=10), 64


def _vit():
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128,
                             num_classes=10), 32


def _deit():
    import timm

    return timm.create_model("deit_tiny_patch16_224", img_size=32, depth=2, num_classes=10), 32


@pytest.mark.parametrize("build", [_shufflenet, _vit, _deit], ids=["shufflenet_v2", "torchvision_vit", "timm_deit"])
def test_module_form_of_shape_computing_models_converts_compressed(build, tmp_path):
    """Traced shape arithmetic (channel shuffle, patch grid) and nn.MultiheadAttention convert; the package is
    palettized and holds exactly the evaluated weights."""
    from core.measure.artifact_weights import check_artifact_weights
    from core.models.sources import LoadedModel

    torch.manual_seed(0)
    module, side = build()
    loaded = LoadedModel(source_id="test", label="test", module=module.eval(), architecture="test",
                         input_shape=(3, side, side), mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=10, dataset=None,
                         accuracy_meaningful=False, weights_note="random weights")
    result = compress(model=loaded, spec=PalettizeSpec(n_bits=4), dataset=None)
    path, kind = artifact_for(result, input_shape=loaded.input_shape, out_dir=tmp_path)
    assert kind == "mlpackage"
    assert path_size_bytes(path) < 0.6 * loaded.size_fp16_bytes
    check = check_artifact_weights(module=result.module, artifact_path=path, artifact_kind=kind)
    assert check.match, check.summary()
