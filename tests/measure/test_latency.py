"""Latency harness: ordered percentiles, interleaving, fixed threads; machine description."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from core.measure.latency import (
    CONFIRMATION_REPEATS,
    LatencySettings,
    confirmation_holds,
    confirmation_settings,
    coreml_latency,
    fixed_threads,
    latency_ratio,
    measure_interleaved,
    percentile,
    quantized_engine,
    same_computation,
)
from core.measure.machine import describe_machine


def test_percentile_interpolates_like_numpy() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 90) == pytest.approx(4.6)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 5.0


def test_interleaved_harness_returns_sane_ordered_percentiles() -> None:
    calls: list[str] = []

    def fast(x: torch.Tensor) -> None:
        calls.append("a")
        time.sleep(0.001)

    def slow(x: torch.Tensor) -> None:
        calls.append("b")
        time.sleep(0.004)

    settings = LatencySettings(threads=1, batch_sizes=(1, 4), warmup=1, min_repeats=5, max_repeats=8, seconds_per_batch_size=0.01)
    result = measure_interleaved(runners={"a": fast, "b": slow}, make_input=lambda b: torch.zeros(b, 3), settings=settings)
    assert result["threads"] == 1 and set(result["batches"]) == {"1", "4"}
    for entry in result["batches"].values():
        for name in ("a", "b"):
            stats = entry[name]
            assert 5 <= stats["repeats"] <= 8
            assert stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["max_ms"]
        assert entry["a"]["p50_ms"] >= 1.0 and entry["b"]["p50_ms"] >= 4.0
        assert entry["a"]["p50_ms"] < entry["b"]["p50_ms"]
    # strictly A B A B after the warm-up
    timed = calls[2:]
    assert all(timed[i] == "a" and timed[i + 1] == "b" for i in range(0, 10, 2))
    ratio = latency_ratio(result, candidate="b", baseline="a")
    assert ratio is not None and ratio > 1.5


def test_harness_times_a_real_module_under_fixed_threads() -> None:
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10)).eval()
    model(torch.zeros(1, 1, 8, 8))
    seen_threads: list[int] = []
    settings = LatencySettings(threads=1, batch_sizes=(2,), warmup=1, min_repeats=4, max_repeats=6, seconds_per_batch_size=0.01)
    before = torch.get_num_threads()
    result = measure_interleaved(
        runners={"m": model, "probe": lambda x: seen_threads.append(torch.get_num_threads())},
        make_input=lambda b: torch.randn(b, 1, 8, 8),
        settings=settings,
    )
    assert set(seen_threads) == {1}
    assert torch.get_num_threads() == before
    assert result["batches"]["2"]["m"]["p50_ms"] > 0


def test_settings_reject_impossible_values() -> None:
    with pytest.raises(ValueError):
        LatencySettings(threads=0)
    with pytest.raises(ValueError):
        LatencySettings(batch_sizes=())


def test_thread_and_engine_contexts_restore() -> None:
    before_threads, before_engine = torch.get_num_threads(), torch.backends.quantized.engine
    with fixed_threads(1), quantized_engine("qnnpack"):
        assert torch.get_num_threads() == 1
        assert torch.backends.quantized.engine == "qnnpack"
    assert torch.get_num_threads() == before_threads and torch.backends.quantized.engine == before_engine


def test_machine_description_and_coreml_on_linux(tmp_path) -> None:
    machine = describe_machine(threads=2)
    assert machine["threads"] == 2 and machine["torch"] == torch.__version__
    assert machine["cpu"] and machine["quantized_engine"] in torch.backends.quantized.supported_engines
    if machine["system"] == "Linux":
        result = coreml_latency(package=tmp_path / "x.mlpackage", input_shape=(1, 28, 28))
        assert result["measurable"] is False and "not measurable on Linux" in result["note"]


def test_calls_per_turn_runs_blocks_and_drops_the_switch_call() -> None:
    calls: list[str] = []
    settings = LatencySettings(
        threads=1, batch_sizes=(1,), warmup=1, min_repeats=4, max_repeats=4, seconds_per_batch_size=0.0, calls_per_turn=3
    )
    result = measure_interleaved(
        runners={"a": lambda x: calls.append("a"), "b": lambda x: calls.append("b")},
        make_input=lambda b: torch.zeros(b),
        settings=settings,
    )
    assert calls[2:8] == ["a", "a", "a", "b", "b", "b"]
    assert result["batches"]["1"]["a"]["repeats"] == 4  # two turns × (3 calls − 1 dropped)
    assert len(calls) == 2 + 2 * 2 * 3


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()


def test_same_computation_ignores_weight_values_and_coreml_metadata_only() -> None:
    import copy

    from torch.nn.utils import parametrize

    base = _net()
    candidate = copy.deepcopy(base)
    with torch.no_grad():
        candidate[0].weight.mul_(0.0)  # other values (pruned to zero) and a metadata buffer: same computation
    candidate[0].register_buffer("_COREML_/weight/lut", torch.zeros(16))
    assert same_computation(baseline=base, candidate=candidate) is None

    replaced = copy.deepcopy(base)
    replaced[2] = nn.GELU()
    assert "module tree" in same_computation(baseline=base, candidate=replaced)
    hooked = copy.deepcopy(base)
    hooked[4].register_forward_hook(lambda module, args, out: out)
    assert "hooks" in same_computation(baseline=base, candidate=hooked)

    class Masked(nn.Module):
        def forward(self, weight: torch.Tensor) -> torch.Tensor:
            return weight * (weight.abs() > 0.1)

    masked = copy.deepcopy(base)
    parametrize.register_parametrization(masked[4], "weight", Masked())
    assert same_computation(baseline=base, candidate=masked) is not None  # recomputes its weight every call
    half = copy.deepcopy(base).half()
    assert "dtypes" in same_computation(baseline=base, candidate=half)
    traced = torch.fx.symbolic_trace(base)
    assert "different module" in same_computation(baseline=base, candidate=traced)


def test_confirmation_is_short_and_checks_the_ratio() -> None:
    full = LatencySettings(threads=1, batch_sizes=(1, 32), warmup=3, min_repeats=10, seconds_per_batch_size=2.0)
    short = confirmation_settings(full)
    assert (short.batch_sizes, short.threads) == (full.batch_sizes, full.threads)
    assert short.min_repeats == short.max_repeats == CONFIRMATION_REPEATS and short.warmup == 1
    net = _net()
    latency = measure_interleaved(runners={"baseline": net, "candidate": net}, make_input=lambda b: torch.randn(b, 1, 8, 8),
                                  settings=short)
    assert all(e["baseline"]["repeats"] == CONFIRMATION_REPEATS for e in latency["batches"].values())

    def entry(base: float, cand: float, base_min: float | None = None, cand_min: float | None = None) -> dict:
        return {"baseline": {"p50_ms": base, "min_ms": base_min or base},
                "candidate": {"p50_ms": cand, "min_ms": cand_min or cand}}

    assert confirmation_holds({"batches": {"1": entry(1.0, 1.1), "32": entry(10.0, 9.0)}})
    assert not confirmation_holds({"batches": {"1": entry(1.0, 1.0), "32": entry(10.0, 14.0)}})
    # a noisy median but equal fastest calls: still the same work
    assert confirmation_holds({"batches": {"1": entry(1.0, 1.6, base_min=0.9, cand_min=0.95)}})
    assert not confirmation_holds({"batches": {"1": entry(1.0, 1.6, base_min=0.9, cand_min=1.4)}})


# --------------------------------------------------------------------------- ratio intervals and spread


def _pairs(n: int, *, factor: float, seed: int) -> tuple[list[float], list[float]]:
    """n interleaved A/B pairs: a shared machine-load term per round (both halves of a pair) plus own noise."""
    import random

    rng = random.Random(seed)
    base, cand = [], []
    for _ in range(n):
        load = rng.uniform(0.0, 0.004)
        base.append(0.010 + load + rng.gauss(0, 0.0005))
        cand.append(0.010 * factor + load + rng.gauss(0, 0.0005))
    return base, cand


def test_ratio_interval_includes_one_when_both_runners_are_the_same() -> None:
    from core.measure.latency import ratio_interval

    base, cand = _pairs(60, factor=1.0, seed=1)
    interval = ratio_interval(baseline=base, candidate=cand)
    assert interval.includes_one and interval.low < 1.0 < interval.high
    assert interval.pairs == 60 and interval.resamples == 2000 and interval.confidence == 0.95
    assert ratio_interval(baseline=base, candidate=cand) == interval  # seeded: same samples, same interval


def test_ratio_interval_excludes_one_for_a_clear_two_fold_difference() -> None:
    from core.measure.latency import ratio_interval

    base, cand = _pairs(60, factor=2.0, seed=2)
    interval = ratio_interval(baseline=base, candidate=cand)
    assert not interval.includes_one
    assert 1.5 < interval.low <= interval.ratio <= interval.high < 2.5


def test_ratio_interval_rejects_unpaired_samples() -> None:
    from core.measure.latency import ratio_interval

    with pytest.raises(ValueError, match="same, non-zero number"):
        ratio_interval(baseline=[1.0, 2.0], candidate=[1.0])


def test_harness_records_the_interval_and_retimes_a_wide_spread() -> None:
    calls = {"n": 0}

    def steady(x: torch.Tensor) -> None:
        time.sleep(0.002)

    def first_pass_stalls(x: torch.Tensor) -> None:
        calls["n"] += 1  # warm-up 1 + 10 timed: every 3rd call of the first pass stalls, the second pass is steady
        # 50 ms stalls: a busy machine stretches a 2 ms sleep to ~15 ms, and the stalls must still stand out
        time.sleep(0.05 if calls["n"] <= 11 and calls["n"] % 3 == 0 else 0.002)

    settings = LatencySettings(threads=1, batch_sizes=(1,), warmup=1, min_repeats=10, max_repeats=10, seconds_per_batch_size=0.01)
    result = measure_interleaved(runners={"baseline": steady, "candidate": first_pass_stalls},
                                 make_input=lambda b: torch.zeros(b, 3), settings=settings)
    entry = result["batches"]["1"]
    assert entry["spread"]["remeasured"] is True
    assert entry["spread"]["first_attempt"]["candidate"]["p90_ms"] > 1.5 * entry["spread"]["first_attempt"]["candidate"]["p50_ms"]
    ci = entry["ratio_ci"]["candidate"]
    assert ci["pairs"] == 10 and ci["low"] <= ci["ratio"] <= ci["high"]
