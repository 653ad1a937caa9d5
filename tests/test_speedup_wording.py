"""Speed-up wording: the ratio against PyTorch fp32 eager, the benchmark's fastest fp32 runtime, and the CPU note."""

from __future__ import annotations

import json

import pytest

from core.speedup_wording import (
    bench_results_path,
    cpu_int8_note,
    load_bench_results,
    speedup_text,
    speedup_wording,
    wording_for_record,
    write_bench_results,
)

CPU = "AMD EPYC"
AVX2 = ["avx2"]


def _bench(tmp_path, *, cpu: str = CPU) -> None:
    write_bench_results(
        cpu=cpu, cpu_flags=AVX2, torch_version="2.x", threads=2, cache_root=tmp_path,
        models={
            "resnet18": {
                "architecture": "resnet18", "input_shape": [3, 224, 224], "source": "torchvision:resnet18",
                "runtimes": [
                    {"name": "PyTorch fp32 eager", "kind": "fp32", "p50_ms": 74.4, "product": False},
                    {"name": "OpenVINO fp32", "kind": "fp32", "p50_ms": 50.0, "product": False},
                    {"name": "ONNX Runtime fp32", "kind": "fp32", "p50_ms": 50.3, "product": False},
                    {"name": "OpenVINO int8 (NNCF)", "kind": "int8", "p50_ms": 47.8, "product": False},
                    {"name": "torch_static int8", "kind": "int8", "p50_ms": 50.4, "product": True},
                ],
            },
            "resnet50": {
                "architecture": "resnet50", "input_shape": [3, 224, 224], "source": "torchvision:resnet50",
                "runtimes": [
                    {"name": "PyTorch fp32 eager", "kind": "fp32", "p50_ms": 160.0, "product": False},
                    {"name": "ONNX Runtime fp32", "kind": "fp32", "p50_ms": 125.0, "product": False},
                ],
            },
        },
    )


def _record(**overrides) -> dict:
    record = {
        "architecture": "resnet18", "input_shape": [3, 224, 224], "latency_ms_p50": 57.5,
        "baseline_latency_ms_p50": 74.4, "runs_int8_kernels": True,
        "machine": {"cpu": CPU, "cpu_features": AVX2, "threads": 2},
    }
    record.update(overrides)
    return record


def test_ratio_against_pytorch_eager_with_the_times():
    wording = speedup_wording(candidate_ms=57.5, eager_fp32_ms=74.4, int8=False)
    assert wording.ratio == pytest.approx(74.4 / 57.5)
    assert wording.headline == (
        "1.29× faster than PyTorch fp32 eager (57.50 ms vs 74.40 ms, batch 1, same process, interleaved)."
    )
    assert wording.lines == [wording.headline]
    assert speedup_wording(candidate_ms=100.0, eager_fp32_ms=74.4, int8=False).headline.startswith("1.34× slower")
    assert speedup_wording(candidate_ms=75.0, eager_fp32_ms=74.4, int8=False).headline.startswith("As fast as")
    assert speedup_wording(candidate_ms=None, eager_fp32_ms=74.4, int8=True).ratio is None


def test_the_benchmarks_fastest_fp32_runtime_for_the_same_model(tmp_path):
    _bench(tmp_path)
    wording = wording_for_record(_record(), cache_root=tmp_path)
    assert wording.fastest_fp32.startswith("Fastest fp32 runtime for resnet18 measured on this machine by the benchmark")
    assert "OpenVINO fp32, 50.00 ms — 1.15× faster than this model." in wording.fastest_fp32
    faster = wording_for_record(_record(latency_ms_p50=40.0), cache_root=tmp_path)
    assert "this model is 1.25× faster than it" in faster.fastest_fp32


def test_a_model_the_benchmark_did_not_run_gets_the_range_of_fp32_gains(tmp_path):
    _bench(tmp_path)
    wording = wording_for_record(
        _record(architecture="fashion_cnn", input_shape=[1, 28, 28], latency_ms_p50=0.3, baseline_latency_ms_p50=0.5),
        cache_root=tmp_path,
    )
    assert wording.fastest_fp32.startswith("Without any compression, the fastest fp32 runtime measured on this machine")
    assert "ran 1.28×–1.49× faster than PyTorch fp32 eager (resnet18, resnet50;" in wording.fastest_fp32
    assert "fastest on resnet18: OpenVINO fp32" in wording.fastest_fp32


def test_no_benchmark_or_another_machines_benchmark_adds_no_line(tmp_path):
    assert wording_for_record(_record(), cache_root=tmp_path).fastest_fp32 is None
    _bench(tmp_path, cpu="Intel Xeon Platinum 8480+")
    assert load_bench_results(cpu=CPU, cache_root=tmp_path) is None
    assert wording_for_record(_record(), cache_root=tmp_path).fastest_fp32 is None
    bench_results_path(cache_root=tmp_path).write_text("{not json")
    assert load_bench_results(cache_root=tmp_path) is None


def test_int8_on_a_cpu_without_vnni_gets_the_note_with_its_source(tmp_path):
    wording = wording_for_record(_record(), cache_root=tmp_path)
    assert "This CPU (AMD EPYC) has no VNNI or AMX int8 instructions, so int8 gains are small on it" in wording.cpu_note
    assert "1.9× faster than fp32 on an AVX2 desktop CPU vs 3.7× with VNNI" in wording.cpu_note
    assert "source: OpenVINO's published performance benchmarks" in wording.cpu_note
    assert wording.lines[-1] == wording.cpu_note and wording.cpu_note in wording.text()
    assert cpu_int8_note(cpu="Xeon", cpu_flags=["avx2", "avx512f", "avx512_vnni"]) is None
    assert cpu_int8_note(cpu="Sapphire Rapids", cpu_flags=["avx2", "amx_int8"]) is None
    assert cpu_int8_note(cpu="Apple M2", cpu_flags=[]) is None  # flags unknown: nothing honest to say
    assert wording_for_record(_record(runs_int8_kernels=False), cache_root=tmp_path).cpu_note is None


def test_bench_results_are_validated_when_written(tmp_path):
    with pytest.raises(ValueError, match=r"need kind fp32\|int8 and a p50_ms"):
        write_bench_results(
            cpu=CPU, cpu_flags=AVX2, torch_version="2.x", threads=2, cache_root=tmp_path,
            models={"resnet18": {"runtimes": [{"name": "x", "kind": "int4", "p50_ms": 1.0}]}},
        )
    _bench(tmp_path)
    stored = json.loads(bench_results_path(cache_root=tmp_path).read_text())
    assert stored["cpu"] == CPU and set(stored["models"]) == {"resnet18", "resnet50"}


def test_one_function_words_a_record_or_the_fastest_of_several(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path))  # speedup_text reads the benchmark from cache_dir()
    _bench(tmp_path / "cache")
    single = speedup_text(_record())
    assert single == wording_for_record(_record(), cache_root=tmp_path / "cache").text()
    assert single.startswith("1.29× faster than PyTorch fp32 eager") and "OpenVINO fp32, 50.00 ms" in single
    assert "no VNNI or AMX" in single
    slow = _record(id=1, spec_summary="palettize 4-bit", latency_ms_p50=74.0, runs_int8_kernels=False)
    fast = _record(id=2, spec_summary="torch static int8 x86", latency_ms_p50=40.0)
    both = speedup_text([slow, fast])
    assert both.startswith("Fastest here (#2 torch static int8 x86): 1.86× faster than PyTorch fp32 eager")
    assert speedup_text(_record(latency_ms_p50=None)) is None and speedup_text([]) is None
    # decompressed weights run the baseline's computation: a lucky timing (noise) is never worded as a speed-up
    noisy = _record(id=3, spec_summary="palettize 4-bit", latency_ms_p50=4.3, baseline_latency_ms_p50=8.1,
                    runs_int8_kernels=False)
    assert speedup_text(noisy) is None
    assert speedup_text([noisy, fast]).startswith("Fastest here (#2 torch static int8 x86)")
    uploaded = speedup_text(_record(model="torchscript:abc"))
    assert "faster than PyTorch fp32 (TorchScript)" in uploaded


def test_the_html_report_and_the_cli_show_the_same_wording(tmp_path, monkeypatch, capsys):
    from core.cli import print_run
    from core.report import build_report
    from tests.conftest import make_record

    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path))
    record = make_record(method="torch_static", summary="torch static int8 x86", latency=0.5)
    record.update(id=7, runs_int8_kernels=True, latency_ms_p50=0.5, baseline_latency_ms_p50=1.0, artifact_kind="torchscript",
                  latency_note="real int8 kernels", latency_ratio=0.5,
                  machine={"cpu": CPU, "cpu_features": AVX2})
    expected = speedup_text(record)
    assert expected.startswith("2.00× faster than PyTorch fp32 eager")
    html = build_report(records=[record])
    assert "Speed-up: Fastest here (#7 torch static int8 x86): 2.00× faster than PyTorch fp32 eager" in html
    print_run(record)
    assert f"speed-up         {expected}" in capsys.readouterr().out


# --------------------------------------------------------------------------- latency ratio with its interval


def test_no_difference_is_worded_as_no_measurable_difference_never_a_percentage():
    from core.measure.latency import ratio_interval
    from core.speedup_wording import latency_change

    base = [0.010 + 0.002 * ((i * 7) % 5) / 5 for i in range(40)]
    cand = [b * (1.22 if i % 2 else 0.85) for i, b in enumerate(base)]  # noisy, no real difference
    interval = ratio_interval(baseline=base, candidate=cand)
    assert interval.includes_one
    change = latency_change(interval, by_construction=True)
    assert change.short.startswith("no measurable difference (±") and change.short.endswith(" %)")
    assert "+22 %" not in change.sentence and not change.measurable
    assert change.sentence.startswith("Same computation as the baseline: no measurable difference")
    assert "95 % interval from 40 interleaved" in change.sentence.replace("95%", "95 %")


def test_a_clear_two_fold_difference_is_stated_with_its_interval():
    from core.measure.latency import ratio_interval
    from core.speedup_wording import latency_change

    base = [0.010 + 0.001 * (i % 4) for i in range(40)]
    slower = latency_change(ratio_interval(baseline=base, candidate=[2 * b for b in base]))
    assert slower.measurable and slower.short.startswith("+100 % (95% CI +")
    assert slower.sentence.startswith("2.00× slower than the baseline (2.00×–2.00×)")
    faster = latency_change(ratio_interval(baseline=base, candidate=[b / 2 for b in base]))
    assert faster.measurable and faster.short.startswith("-50 %")
    assert faster.sentence.startswith("2.00× faster than the baseline")


def test_the_headline_says_no_measurable_difference_when_the_interval_includes_one():
    from core.measure.latency import RatioInterval

    tie = RatioInterval(ratio=1.12, low=0.93, high=1.31, confidence=0.95, resamples=2000, pairs=6)
    wording = speedup_wording(candidate_ms=56.0, eager_fp32_ms=50.0, int8=True, interval=tie)
    assert wording.headline.startswith("No measurable difference from PyTorch fp32 eager (±31 %)")
    clear = RatioInterval(ratio=0.5, low=0.45, high=0.55, confidence=0.95, resamples=2000, pairs=60)
    wording = speedup_wording(candidate_ms=25.0, eager_fp32_ms=50.0, int8=True, interval=clear)
    assert wording.headline.startswith("2.00× faster than PyTorch fp32 eager (95% interval 1.82×–2.22×)")


def test_a_wide_spread_is_said_with_its_numbers():
    from core.speedup_wording import spread_note

    # A cached measurement from before re-timing: p90 27× the p50 is called out, with both numbers.
    old = {"batches": {"1": {"baseline": {"p50_ms": 10.476, "p90_ms": 287.726}}}}
    note = spread_note(old)
    assert note.startswith("Taken on a busy machine: at batch 1 the p90 is 27.5× the p50 (p50 10.476 ms, p90 287.726 ms)")
    retimed = {"batches": {"1": {"baseline": {"p50_ms": 10.1, "p90_ms": 11.0}, "spread": {
        "p90_over_p50": 1.09, "limit": 1.5, "remeasured": True, "busy": False,
        "first_attempt": {"baseline": {"p50_ms": 10.476, "p90_ms": 287.726}}}}}}
    assert spread_note(retimed) == ("Timed twice at batch 1: the first try spread too widely (p90 over 1.5× p50; first "
                                    "try p50 10.476 ms, p90 287.726 ms); kept the second (p50 10.100 ms, p90 11.000 ms).")
    still = {"batches": {"1": {"baseline": {"p50_ms": 10.0, "p90_ms": 30.0}, "spread": {
        "p90_over_p50": 3.0, "limit": 1.5, "remeasured": True, "busy": True, "first_attempt": {}}}}}
    assert spread_note(still).startswith("Taken on a busy machine: at batch 1 the p90 is 3.0× the p50 (p50 10.000 ms, "
                                         "p90 30.000 ms, after timing twice)")
    steady = {"batches": {"1": {"baseline": {"p50_ms": 10.0, "p90_ms": 11.0}, "spread": {"remeasured": False}}}}
    assert spread_note(steady) is None and spread_note(None) is None


def test_two_tries_whose_medians_disagree_are_called_a_busy_machine():
    from core.speedup_wording import spread_note

    moved = {"batches": {"1": {"baseline": {"p50_ms": 417.546, "p90_ms": 588.898}, "spread": {
        "p90_over_p50": 1.41, "limit": 1.5, "remeasured": True, "busy": True,
        "first_attempt": {"baseline": {"p50_ms": 75.111, "p90_ms": 480.891}}}}}}
    assert spread_note(moved) == (
        "Taken on a busy machine: timed twice at batch 1, the medians disagree (first try p50 75.111 ms, p90 "
        "480.891 ms; second try p50 417.546 ms, p90 588.898 ms). Other work changed the speed between the tries; "
        "compare ratios, which are timed interleaved, rather than these absolute times.")


def test_a_difference_in_the_same_computation_is_blamed_on_the_machine_not_shown_as_a_speed_up():
    from core.measure.latency import ratio_interval
    from core.speedup_wording import latency_change

    base = [0.010 + 0.001 * (i % 4) for i in range(40)]
    change = latency_change(ratio_interval(baseline=base, candidate=[0.94 * b for b in base]), by_construction=True)
    assert change.short == "same computation (-6 % load)"
    assert "other work on this machine caused the difference" in change.sentence
