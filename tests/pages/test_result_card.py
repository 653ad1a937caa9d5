"""The result card says plainly when accuracy is not meaningful (random weights) and which numbers are."""

from __future__ import annotations

from core.models.sources import random_weights_note
from tests.test_store import make_record


def test_random_weights_card_says_accuracy_is_not_meaningful_and_what_is(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.store import ExperimentStore

    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path))
    record = make_record(model="timm:resnet10t")
    record.update(accuracy_meaningful=False, accuracy_top1=None, baseline_accuracy_top1=None,
                  weights_note=random_weights_note("BatchNorm statistics of 14 layers recalibrated on 16 synthetic "
                                                   "images"))
    saved_id = ExperimentStore(tmp_path).add(record)

    def card(experiment_id: int) -> None:
        import streamlit as st

        from pages._ui.result_card import result_card
        from pages._ui.storage import store

        st.session_state.setdefault("session_id", "test")
        result_card(store().get(experiment_id))

    at = AppTest.from_function(card, args=(saved_id,), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label: m.value for m in at.metric}["Top-1 accuracy"] == "n/a"
    shown = " ".join(c.value for c in at.caption)
    assert ("Random weights: accuracy numbers are not meaningful. Size, latency and output SNR / agreement against the "
            "model's own fp32 output are.") in shown
