"""The int8 form choice: engine × graph form timed once per machine and model, cached, and forceable."""

from __future__ import annotations

import contextlib
import copy
import json
import warnings

import pytest
import torch
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from core.compress.int8_forms import (
    DEFAULT_FORM,
    CpuInt8Features,
    Int8Form,
    Int8FormError,
    already_converted,
    build_form,
    cache_file,
    cache_key,
    candidate_forms,
    choose_int8_form,
    cpu_int8_features,
    engine_unavailable_reason,
    model_fingerprint,
)
from core.measure.latency import LatencySettings, quantized_engine
from core.models.sources import load_model
from core.progress import Progress
from tests.conftest import tiny_model

QUICK = LatencySettings(
    threads=2, batch_sizes=(1,), warmup=1, min_repeats=3, max_repeats=6, seconds_per_batch_size=0.3, calls_per_turn=2
)
AVX2_ONLY = CpuInt8Features(model="test CPU", machine="x86_64", flags=("sse4_1", "avx2"), known=True)
NO_AVX2 = CpuInt8Features(model="an old SSE4 CPU", machine="x86_64", flags=("sse4_1",), known=True)


def _prepared(module: torch.nn.Module, calibration: torch.Tensor) -> torch.fx.GraphModule:
    """FX static int8 prepared with the x86 qconfig (reduce_range activations: safe on every engine) and calibrated."""
    with warnings.catch_warnings(), quantized_engine("x86"):
        warnings.simplefilter("ignore")
        prepared = prepare_fx(
            copy.deepcopy(module).eval(), get_default_qconfig_mapping("x86"), example_inputs=(calibration[:1],)
        )
        with torch.no_grad():
            prepared(calibration)
    return prepared


def _quiet_convert(prepared: torch.nn.Module) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_fx(prepared)


def _messages() -> tuple[Progress, list[str]]:
    messages: list[str] = []
    return Progress(lambda fraction, message: messages.append(message)), messages


@pytest.fixture(scope="module")
def fashion_cnn_int8(fashion):
    model = load_model("sample:fashion_cnn")  # the trained sample: predictions mean something
    calibration, _ = next(iter(fashion.batches(fashion.calibration_split(size=128), batch_size=128)))
    return model, _prepared(model.module, calibration)


@pytest.mark.slow
@pytest.mark.skipif(not cpu_int8_features().is_x86, reason="the x86 / onednn / fbgemm int8 engines need an x86-64 CPU")
def test_automatic_choice_predicts_like_every_other_form(fashion_cnn_int8, fashion, tmp_path):
    model, prepared = fashion_cnn_int8
    example = model.example_input(1)
    choice = choose_int8_form(
        prepared=prepared, convert=_quiet_convert, example=example, settings=QUICK, cache_root=tmp_path
    )
    candidates = candidate_forms()
    assert choice.winner in candidates and not choice.from_cache and not choice.forced
    assert {t.form for t in choice.timings} == set(candidates)
    timed = {t.form: t.p50_ms for t in choice.timings if t.p50_ms is not None}
    assert choice.winner_ms == min(timed.values())
    assert choice.to_dict()["winner"] == choice.winner.key and "fastest of" in choice.summary()

    images, _ = next(iter(fashion.batches(fashion.eval_split(limit=1000), batch_size=1000)))
    with quantized_engine(choice.winner.engine), torch.inference_mode():
        winner_predictions = choice.module(images).argmax(1)
    for form in candidates:
        if form == choice.winner:
            continue
        other = build_form(prepared=prepared, convert=_quiet_convert, form=form, example=example)
        with quantized_engine(form.engine), torch.inference_mode():
            agreement = (other(images).argmax(1) == winner_predictions).float().mean().item()
        assert agreement >= 0.995, f"{form.key} agrees with the winner {choice.winner.key} on only {agreement:.2%}"
    assert not prepared.training  # the prepared model itself was only copied, never converted in place
    assert any("activation_post_process" in name for name, _ in prepared.named_modules())


@pytest.mark.slow
@pytest.mark.skipif(not cpu_int8_features().is_x86, reason="the x86 / onednn / fbgemm int8 engines need an x86-64 CPU")
def test_cached_choice_is_reused_and_invalidated_when_the_model_changes(fashion, tmp_path):
    calibration, _ = next(iter(fashion.batches(fashion.calibration_split(size=32), batch_size=32)))
    tiny = tiny_model()
    prepared = _prepared(tiny.module, calibration)
    example = tiny.example_input(1)

    first_progress, first_messages = _messages()
    first = choose_int8_form(
        prepared=prepared, convert=_quiet_convert, example=example, settings=QUICK, cache_root=tmp_path,
        spec={"per_channel": True}, progress=first_progress,
    )
    files = list((tmp_path / "int8_choice").glob("*.json"))
    assert len(files) == 1 and not first.from_cache
    assert any(m.startswith("timing ") for m in first_messages)
    stored = json.loads(files[0].read_text())
    assert stored["winner"] == first.winner.key and stored["key"]["cpu"] == cpu_int8_features().model
    written = files[0].stat().st_mtime_ns

    again_progress, again_messages = _messages()
    again = choose_int8_form(
        prepared=prepared, convert=_quiet_convert, example=example, settings=QUICK, cache_root=tmp_path,
        spec={"per_channel": True}, progress=again_progress,
    )
    assert again.from_cache and again.winner == first.winner and again.timings == first.timings
    assert not any(m.startswith("timing ") for m in again_messages)  # no second timing
    assert files[0].stat().st_mtime_ns == written and list((tmp_path / "int8_choice").glob("*.json")) == files
    with quantized_engine(again.winner.engine), torch.inference_mode():
        assert again.module(example).shape == (1, 10)

    # Same weights, one Linear layer wider: another graph → timed again, into a second cache entry.
    changed = tiny_model()
    changed.module.fc1 = torch.nn.Linear(32, 96)
    changed.module.fc2 = torch.nn.Linear(96, 10)
    changed_prepared = _prepared(changed.module, calibration)
    assert model_fingerprint(changed_prepared, example=example) != model_fingerprint(prepared, example=example)
    changed_progress, changed_messages = _messages()
    other = choose_int8_form(
        prepared=changed_prepared, convert=_quiet_convert, example=example, settings=QUICK, cache_root=tmp_path,
        spec={"per_channel": True}, progress=changed_progress,
    )
    assert not other.from_cache and any(m.startswith("timing ") for m in changed_messages)
    assert len(list((tmp_path / "int8_choice").glob("*.json"))) == 2

    # Another spec, thread count or CPU is another key too.
    base = {"fingerprint": "f", "candidates": candidate_forms(features=AVX2_ONLY), "features": AVX2_ONLY}
    keys = [
        cache_key(**base, threads=2, spec={"per_channel": True}),
        cache_key(**base, threads=2, spec={"per_channel": False}),
        cache_key(**base, threads=1, spec={"per_channel": True}),
        cache_key(**{**base, "features": NO_AVX2}, threads=2, spec={"per_channel": True}),
    ]
    assert len({cache_file(key, cache_root=tmp_path) for key in keys}) == 4


def test_fingerprint_follows_the_structure_not_the_weight_values(fashion):
    calibration, _ = next(iter(fashion.batches(fashion.calibration_split(size=16), batch_size=16)))
    example = calibration[:1]
    a = _prepared(tiny_model(seed=0).module, calibration)
    b = _prepared(tiny_model(seed=1).module, calibration)
    assert model_fingerprint(a, example=example) == model_fingerprint(b, example=example)
    assert model_fingerprint(a, example=example) != model_fingerprint(a, example=torch.zeros(1, 1, 32, 32))


def test_forcing_an_engine_the_cpu_lacks_is_a_clear_error():
    with pytest.raises(Int8FormError, match=r"fbgemm int8 engine needs AVX2, which this CPU \(an old SSE4 CPU\) does not"):
        candidate_forms(engine="fbgemm", features=NO_AVX2)
    with pytest.raises(Int8FormError, match=r"Use engine='auto' or one of: onednn\."):
        candidate_forms(engine="x86", features=NO_AVX2)
    arm = CpuInt8Features(model="Apple M2", machine="arm64", flags=(), known=False)
    with pytest.raises(Int8FormError, match="needs an x86-64 CPU; this one is arm64"):
        candidate_forms(engine="onednn", features=arm)
    with pytest.raises(Int8FormError, match="no int8 engine runs on this machine"):
        candidate_forms(features=arm)
    with pytest.raises(Int8FormError, match="'qnnpack' is not an int8 engine this studio times"):
        candidate_forms(engine="qnnpack")
    with pytest.raises(Int8FormError, match="graph form must be 'auto' or one of"):
        candidate_forms(graph="onnx")
    # Without AVX2 the automatic choice keeps only oneDNN; with it, all three engines × both graph forms.
    assert {f.engine for f in candidate_forms(features=NO_AVX2)} == {"onednn"}
    assert len(candidate_forms(features=AVX2_ONLY)) == 6
    assert engine_unavailable_reason("onednn", features=NO_AVX2) is None


def test_forcing_an_engine_the_cpu_lacks_fails_before_any_work(fashion, tmp_path):
    calibration, _ = next(iter(fashion.batches(fashion.calibration_split(size=16), batch_size=16)))
    prepared = _prepared(tiny_model().module, calibration)
    with pytest.raises(Int8FormError, match="fbgemm int8 engine needs AVX2"):
        choose_int8_form(
            prepared=prepared, convert=_quiet_convert, example=calibration[:1], engine="fbgemm", features=NO_AVX2,
            cache_root=tmp_path,
        )
    assert not (tmp_path / "int8_choice").exists()


@pytest.mark.slow
@pytest.mark.skipif(not cpu_int8_features().is_x86, reason="the x86 / onednn / fbgemm int8 engines need an x86-64 CPU")
def test_a_fully_forced_form_is_built_without_timing(fashion, tmp_path):
    calibration, _ = next(iter(fashion.batches(fashion.calibration_split(size=16), batch_size=16)))
    prepared = _prepared(tiny_model().module, calibration)
    choice = choose_int8_form(
        prepared=prepared, convert=_quiet_convert, example=calibration[:1], engine="onednn", graph="frozen_torchscript",
        cache_root=tmp_path,
    )
    assert choice.forced and choice.winner == Int8Form("onednn", "frozen_torchscript") and choice.timings == ()
    assert isinstance(choice.module, torch.jit.ScriptModule)
    assert "forced by the spec" in choice.summary() and not (tmp_path / "int8_choice").exists()
    # Forcing only the engine still races the two graph forms of that engine.
    engine_only = choose_int8_form(
        prepared=prepared, convert=_quiet_convert, example=calibration[:1], engine="onednn", settings=QUICK,
        cache_root=tmp_path,
    )
    assert {t.form.engine for t in engine_only.timings} == {"onednn"} and len(engine_only.timings) == 2


def test_form_names_are_validated():
    assert Int8Form.from_key(DEFAULT_FORM.key) == DEFAULT_FORM
    assert DEFAULT_FORM.label == "x86 engine, FX GraphModule"
    with pytest.raises(Int8FormError, match="graph must be one of"):
        Int8Form(engine="x86", graph="eager")


@pytest.mark.slow
@pytest.mark.skipif(not cpu_int8_features().is_x86, reason="the x86 / onednn / fbgemm int8 engines need an x86-64 CPU")
def test_an_already_converted_model_is_repacked_for_each_engine(fashion):
    calibration, _ = next(iter(fashion.batches(fashion.calibration_split(size=32), batch_size=32)))
    prepared = _prepared(tiny_model().module, calibration)
    converted_for_x86 = build_form(prepared=prepared, convert=_quiet_convert, form=DEFAULT_FORM, example=calibration[:1])
    onednn = Int8Form("onednn", "graph_module")
    from_prepared = build_form(prepared=prepared, convert=_quiet_convert, form=onednn, example=calibration[:1])
    repacked = build_form(prepared=converted_for_x86, convert=already_converted, form=onednn, example=calibration[:1])
    with quantized_engine("onednn"), torch.inference_mode():
        assert torch.equal(repacked(calibration), from_prepared(calibration))


@pytest.mark.slow
@pytest.mark.skipif(not cpu_int8_features().is_x86, reason="the x86 / onednn / fbgemm int8 engines need an x86-64 CPU")
def test_the_race_runs_under_the_jobs_timing_lock_and_a_cached_choice_takes_none(fashion, tmp_path):
    from core.jobs.timing_lock import TimingLock

    calibration, _ = next(iter(fashion.batches(fashion.calibration_split(size=32), batch_size=32)))
    tiny = tiny_model()
    prepared = _prepared(tiny.module, calibration)
    lock = TimingLock(path=tmp_path / "timing.lock")
    held: list[bool] = []

    @contextlib.contextmanager
    def guard():
        with lock.timing():
            held.append(True)
            yield

    kwargs = dict(prepared=prepared, convert=_quiet_convert, example=tiny.example_input(1), settings=QUICK,
                  cache_root=tmp_path, spec={"per_channel": True}, timing_guard=guard)
    first = choose_int8_form(**kwargs)
    assert not first.from_cache and held == [True] and lock.timed_exclusively
    again = choose_int8_form(**kwargs)
    assert again.from_cache and held == [True]  # reused: nothing timed, the lock not taken again


def test_a_traced_form_that_fixes_the_batch_size_is_refused_with_the_reason():
    from core.compress.int8_forms import Int8FormError, require_any_batch

    class BakesTheBatch(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(int(x.shape[0]), 1) + x.flatten(1)  # int(): the trace keeps the batch as a constant

    example = torch.zeros(2, 1, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(BakesTheBatch(), example)
    with pytest.raises(Int8FormError, match=r"its trace fixes the batch size at 2"):
        require_any_batch(traced, example)
    require_any_batch(torch.jit.trace(torch.nn.Flatten(), example), example)  # a trace that keeps it: accepted
