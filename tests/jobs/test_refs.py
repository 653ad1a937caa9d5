"""Model / data / options references: validated, JSON round trip, unknown keys rejected, gone files named."""

from __future__ import annotations

import json

import pytest

from core.jobs.refs import (
    DataRef,
    ModelRef,
    RefError,
    load_data_ref,
    load_model_ref,
    options_from_dict,
    options_to_dict,
)
from core.measure.latency import LatencySettings


@pytest.mark.parametrize(
    "ref",
    [
        ModelRef(kind="sample", name="fashion_cnn"),
        ModelRef(kind="torchvision", name="resnet18"),
        ModelRef(kind="state_dict", name="resnet18", path="/uploads/s1/weights.safetensors"),
        ModelRef(kind="torchscript", path="/uploads/s1/model.pt"),
        ModelRef(kind="timm", name="resnet10t"),
        ModelRef(kind="timm", name="resnet10t", path="/uploads/s1/r10t.safetensors"),
    ],
)
def test_model_refs_survive_json(ref: ModelRef) -> None:
    assert ModelRef.from_dict(json.loads(json.dumps(ref.to_dict()))) == ref


def test_data_refs_survive_json_with_tuples_restored() -> None:
    ref = DataRef(kind="folder", path="/u/flowers.zip", image_size=(64, 64), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    back = DataRef.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert back == ref and back.image_size == (64, 64)


def test_unknown_keys_and_bad_values_name_the_field() -> None:
    with pytest.raises(RefError, match=r"unknown key.*colour"):
        ModelRef.from_dict({"kind": "sample", "name": "fashion_cnn", "colour": "red"})
    with pytest.raises(RefError, match=r"ModelRef\.kind"):
        ModelRef(kind="keras", name="x")
    with pytest.raises(RefError, match=r"ModelRef\.path"):
        ModelRef(kind="torchscript")
    with pytest.raises(RefError, match=r"DataRef\.image_size"):
        DataRef(kind="folder", path="/x.zip")
    with pytest.raises(RefError, match="unknown experiment option"):
        options_from_dict(data={"eval_limt": 5})


def test_source_ids_map_to_refs_and_back() -> None:
    assert ModelRef.from_source_id("sample:fashion_cnn").source_id == "sample:fashion_cnn"
    ref = ModelRef.from_source_id("torchvision:resnet18", weights="/w.pt")
    assert ref == ModelRef(kind="state_dict", name="resnet18", path="/w.pt")
    assert ModelRef.from_source_id("state_dict:resnet18:/w.pt") == ref
    assert ModelRef.from_source_id("export:/u/m.pt2") == ModelRef(kind="exported", path="/u/m.pt2")
    assert ModelRef.from_source_id("export:/u/m.pt2").source_id == "export:/u/m.pt2"
    assert ModelRef.from_source_id("onnx:/u/m.onnx").source_id == "onnx:/u/m.onnx"
    with pytest.raises(RefError, match=r"ModelRef\.path: kind 'exported' needs the file"):
        ModelRef(kind="exported")
    timm_ref = ModelRef.from_source_id("timm:resnet10t", weights="/c.safetensors")
    assert timm_ref == ModelRef(kind="timm", name="resnet10t", path="/c.safetensors")
    assert timm_ref.source_id == "timm:resnet10t:/c.safetensors" == ModelRef.from_source_id(timm_ref.source_id).source_id
    with pytest.raises(RefError, match=r"ModelRef\.name: a timm model needs"):
        ModelRef(kind="timm")


def test_options_round_trip_with_latency_settings() -> None:
    options = options_from_dict(data={"eval_limit": 50, "latency": {"threads": 1, "batch_sizes": [1, 4]}})
    assert options.eval_limit == 50 and options.latency == LatencySettings(threads=1, batch_sizes=(1, 4))
    assert options_from_dict(data=options_to_dict(options=options)) == options


def test_gone_files_fail_with_their_name(tmp_path) -> None:
    with pytest.raises(RefError, match=r"model\.pt is gone"):
        load_model_ref(ref=ModelRef(kind="torchscript", path=str(tmp_path / "model.pt")))
    model = load_model_ref(ref=ModelRef(kind="sample", name="fashion_cnn"))
    gone = DataRef(kind="folder", path=str(tmp_path / "images.zip"), image_size=(28, 28), channels=1, mean=(0.5,),
                   std=(0.5,))
    with pytest.raises(RefError, match=r"images\.zip is gone"):
        load_data_ref(ref=gone, model=model)
    assert load_data_ref(ref=DataRef(kind="none"), model=model) is None
    assert len(load_data_ref(ref=DataRef(kind="bundled"), model=model).test) > 0


def test_a_path_reference_reads_a_dataset_at_the_models_input_size(tmp_path) -> None:
    """What the CLI's --data PATH becomes: an ImageFolder read at the model's own size, channels and classes."""
    from PIL import Image

    for label in range(10):
        (tmp_path / "images" / f"class{label}").mkdir(parents=True)
        for n in range(2):
            Image.new("L", (40, 40), color=20 * label + n).save(tmp_path / "images" / f"class{label}" / f"{n}.png")
    model = load_model_ref(ref=ModelRef(kind="sample", name="fashion_cnn"))
    dataset = load_data_ref(ref=DataRef(kind="path", path=str(tmp_path / "images")), model=model)
    assert tuple(dataset.test.images.shape[1:]) == (1, 28, 28)  # resized to the model's input
    with pytest.raises(RefError, match=r"DataRef\.path"):
        DataRef(kind="path")
    with pytest.raises(RefError, match=r"nope is gone"):
        load_data_ref(ref=DataRef(kind="path", path=str(tmp_path / "nope")), model=model)


def test_latency_overrides_are_laid_over_the_models_defaults() -> None:
    from core.experiment_options import default_latency_settings
    from core.jobs.refs import apply_latency_overrides, split_latency_overrides

    values, overrides = split_latency_overrides(data={"eval_limit": 10, "latency_overrides": {"threads": 1}})
    options = apply_latency_overrides(options=options_from_dict(data=values), overrides=overrides,
                                      input_shape=(3, 224, 224))
    assert options.eval_limit == 10 and options.latency.threads == 1
    assert options.latency.batch_sizes == default_latency_settings((3, 224, 224)).batch_sizes == (1,)  # 224 px
    # the large batch is opt-in for 224 px models: the option carries through the job's JSON to the settings
    values, overrides = split_latency_overrides(data={"large_batch": True, "latency_overrides": {"threads": 1}})
    options = apply_latency_overrides(options=options_from_dict(data=values), overrides=overrides,
                                      input_shape=(3, 224, 224))
    assert options.large_batch and options.latency.batch_sizes == (1, 8) and options.latency.threads == 1
    with pytest.raises(RefError, match="latency_overrides"):
        split_latency_overrides(data={"latency_overrides": 3})


def test_default_latency_times_batch_one_honestly_and_the_large_batch_on_request() -> None:
    from core.experiment_options import ExperimentOptions, default_latency_settings

    big = default_latency_settings((3, 224, 224))
    assert big.batch_sizes == (1,) and big.seconds_per_batch_size >= 2.0 and big.min_repeats >= 5 and big.warmup >= 1
    assert default_latency_settings((3, 224, 224), large_batch=True).batch_sizes == (1, 8)
    assert default_latency_settings((1, 28, 28)).batch_sizes == (1, 32)  # small inputs: the large batch is cheap
    assert ExperimentOptions(large_batch=True).latency_settings((3, 224, 224)).batch_sizes == (1, 8)
    assert ExperimentOptions().latency_settings((3, 224, 224)).batch_sizes == (1,)
