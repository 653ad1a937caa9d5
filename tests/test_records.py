"""The record schema and its one builder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from core.baseline import baseline_record, clear_caches
from core.experiment_options import ExperimentOptions
from core.records import (
    BASELINE,
    BASELINE_FIELDS,
    EXPERIMENT,
    EXPERIMENT_FIELDS,
    RecordError,
    build_record,
    size_fields,
)
from tests.conftest import tiny_rgb_model as tiny_model


def test_builder_fills_orders_and_cleans() -> None:
    record = build_record(EXPERIMENT, model="m", method="palettize", size_bytes=np.int64(10), output_snr_db=math.inf)
    assert list(record) == list(EXPERIMENT_FIELDS)  # every declared key, in the declared order
    assert record["kind"] == "experiment" and record["created_at"]
    assert record["size_bytes"] == 10 and type(record["size_bytes"]) is int
    assert record["output_snr_db"] is None  # JSON has no infinity
    assert record["layers"] == [] and record["notes"] == [] and record["accuracy_top1"] is None
    assert json.loads(json.dumps(record, allow_nan=False)) == record


def test_builder_refuses_undeclared_fields_and_kinds() -> None:
    with pytest.raises(RecordError, match=r"undeclared field.*accuracy"):
        build_record(BASELINE, model="m", accuracy=0.9)
    with pytest.raises(RecordError, match="unknown record kind 'result'"):
        build_record("result", model="m")


def test_every_field_is_documented() -> None:
    for schema in (BASELINE_FIELDS, EXPERIMENT_FIELDS):
        assert all(isinstance(text, str) and text for text in schema.values())
    # the two kinds describe the model, the data, the machine and the notes the same way
    shared = ("model", "model_label", "params", "input_shape", "dataset", "eval_images", "class_names", "threads", "notes")
    assert all(key in BASELINE_FIELDS and key in EXPERIMENT_FIELDS for key in shared)


def test_size_fields_ratios() -> None:
    fields = size_fields(size_bytes=250, size_fp16_bytes=1000, size_fp32_bytes=2000)
    assert fields["compression_ratio_fp16"] == 4.0 and fields["compression_ratio_fp32"] == 8.0
    assert size_fields(size_bytes=None, size_fp16_bytes=1000, size_fp32_bytes=2000)["compression_ratio_fp16"] is None


def test_baseline_record_has_exactly_the_documented_keys(tmp_path) -> None:
    clear_caches()
    options = ExperimentOptions(export=False, measure_latency=False, cache_dir=tmp_path)
    record = baseline_record(model=tiny_model(), dataset=None, options=options)
    assert list(record) == list(BASELINE_FIELDS)
    assert record["kind"] == "baseline" and record["model"] == "test:tiny" and record["eval_images"] == 64
    assert record["accuracy_top1"] is None and "not meaningful" in record["accuracy_note"]
    assert record["latency_ms_p50"] is None and record["peak_memory_bytes"] > 0
