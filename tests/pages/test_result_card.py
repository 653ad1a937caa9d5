"""The result card: a mismatch between the shipped artifact and the evaluated weights is an error box; random
weights are said plainly."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from core.models.sources import random_weights_note
from core.store import ExperimentStore
from tests.conftest import make_record

MISMATCH = {
    "match": False,
    "summary": "6 weight layers of the mlpackage compared with the evaluated model; largest difference 1.5. "
    "MISMATCH in 1 layer(s): conv4.",
    "mismatched": ["conv4"],
}
MATCH = {"match": True, "summary": "6 weight layers of the mlpackage compared with the evaluated model; largest "
         "difference 0 (0 fp16 units in the last place): all match.", "mismatched": []}


def _card(experiment_id: int) -> None:
    import streamlit as st

    from pages._ui.result_card import result_card
    from pages._ui.storage import store

    st.session_state.setdefault("session_id", "test")
    result_card(store().get(experiment_id))


def _shown(tmp_path, monkeypatch, match: bool | None, check: dict | None) -> AppTest:
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path))
    record = dict(make_record(), artifact_weights_match=match, artifact_weights_check=check)
    saved_id = ExperimentStore(tmp_path).add(record)
    at = AppTest.from_function(_card, args=(saved_id,), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_mismatch_is_an_error_naming_the_layer(tmp_path, monkeypatch):
    at = _shown(tmp_path, monkeypatch, False, MISMATCH)
    errors = [e.value for e in at.error]
    assert len(errors) == 1
    assert "weights differ from the weights that were evaluated" in errors[0] and "conv4" in errors[0]


@pytest.mark.parametrize("match, check", [(True, MATCH), (None, None)])
def test_no_error_when_the_artifact_matches_or_nothing_was_exported(tmp_path, monkeypatch, match, check):
    at = _shown(tmp_path, monkeypatch, match, check)
    assert not at.error
    captions = " ".join(c.value for c in at.caption)
    assert ("Artifact = evaluated weights" in captions) == bool(match)


def test_a_check_that_could_not_run_is_a_warning(tmp_path, monkeypatch):
    check = {"match": None, "summary": "the artifact's weights could not be checked (boom).", "mismatched": []}
    at = _shown(tmp_path, monkeypatch, None, check)
    assert not at.error and any("could not be checked" in w.value for w in at.warning)


def test_random_weights_card_says_accuracy_is_not_meaningful_and_what_is(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path))
    record = make_record(model="timm:resnet10t")
    record.update(accuracy_meaningful=False, accuracy_top1=None, baseline_accuracy_top1=None,
                  weights_note=random_weights_note("BatchNorm statistics of 14 layers recalibrated on 16 synthetic "
                                                   "images"))
    saved_id = ExperimentStore(tmp_path).add(record)
    at = AppTest.from_function(_card, args=(saved_id,), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label: m.value for m in at.metric}["Top-1 accuracy"] == "n/a"
    shown = " ".join(c.value for c in at.caption)
    assert ("Random weights: accuracy numbers are not meaningful. Size, latency and output SNR / agreement against the "
            "model's own fp32 output are.") in shown


def test_the_cards_are_the_metrics_declared_for_the_card_view(tmp_path, monkeypatch):
    from core.metrics import metrics_in

    at = _shown(tmp_path, monkeypatch, True, MATCH)
    labels = [m.label for m in at.metric]
    assert [m.key for m in metrics_in("card")] == ["accuracy_top1", "agreement_top1", "size_bytes", "latency_ms_p50",
                                                   "compress_seconds"]
    assert labels[:5] == ["Top-1 accuracy", "Agreement", "Size on disk", "Latency p50", "Time to compress"]
