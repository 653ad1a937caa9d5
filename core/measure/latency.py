"""Latency harness: fixed threads, warm-up, interleaved A B A B repeats until the median is stable, p50 / p90.

Interleaving the baseline and the candidate in one process means a noisy neighbour slows both alike, so the
*ratio* survives a busy machine even when absolute times drift.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from core.progress import Progress, as_progress

Runner = Callable[[torch.Tensor], object]


@dataclass(frozen=True)
class LatencySettings:
    """How latency is measured; stored in the record so every number says how it was taken."""

    threads: int = 2
    batch_sizes: tuple[int, ...] = (1, 32)
    warmup: int = 3
    min_repeats: int = 10
    max_repeats: int = 300
    seconds_per_batch_size: float = 2.0  # time budget for all models together at one batch size
    stability: float = 0.03  # the medians of the two halves of the repeats must agree this closely
    # Calls per turn before switching runner. 1 = strict A B A B. With k > 1 each turn runs k calls and drops the
    # first (it absorbs the switch: cold caches, another runtime's thread pool still spinning), so A A A B B B …
    calls_per_turn: int = 1
    # p90 more than this many times p50 means other work interrupted the timing: the batch size is timed once more
    # and, if it is still that wide, the result says it was taken on a busy machine (with both numbers).
    max_spread: float = 1.5

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1; got {self.threads}.")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch sizes must be positive; got {self.batch_sizes}.")
        if self.min_repeats < 3 or self.max_repeats < self.min_repeats:
            raise ValueError("need 3 ≤ min_repeats ≤ max_repeats.")
        if self.calls_per_turn < 1:
            raise ValueError(f"calls_per_turn must be at least 1; got {self.calls_per_turn}.")
        if self.max_spread <= 1.0:
            raise ValueError(f"max_spread must be above 1 (p90 ÷ p50); got {self.max_spread}.")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["batch_sizes"] = list(self.batch_sizes)
        return d


@dataclass(frozen=True)
class LatencyStats:
    p50_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    repeats: int

    @classmethod
    def from_seconds(cls, samples: list[float]) -> LatencyStats:
        ms = [s * 1000.0 for s in samples]
        return cls(
            p50_ms=percentile(ms, 50),
            p90_ms=percentile(ms, 90),
            mean_ms=statistics.fmean(ms),
            min_ms=min(ms),
            max_ms=max(ms),
            repeats=len(ms),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), q in [0, 100]."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@contextlib.contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """Run with exactly `threads` intra-op threads, restoring the previous setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def quantized_engine(name: str | None) -> Iterator[None]:
    """Select the int8 kernel library (x86 / fbgemm / qnnpack / onednn) a quantized model was converted for."""
    previous = torch.backends.quantized.engine
    if name and name in torch.backends.quantized.supported_engines and name != previous:
        torch.backends.quantized.engine = name
    try:
        yield
    finally:
        if torch.backends.quantized.engine != previous:
            torch.backends.quantized.engine = previous


def _time_call(run: Runner, inputs: torch.Tensor) -> float:
    start = time.perf_counter()
    run(inputs)
    return time.perf_counter() - start


def _halves_agree(samples: list[float], tolerance: float) -> bool:
    half = len(samples) // 2
    if half < 3:
        return False
    first, second = statistics.median(samples[:half]), statistics.median(samples[half:])
    return abs(first - second) <= tolerance * max(first, second)


def _sample_round(runners: dict[str, Runner], names: list[str], inputs: torch.Tensor, calls_per_turn: int,
                  samples: dict[str, list[float]]) -> None:
    """One turn of each runner (A B A B …); with k calls per turn the first absorbs the switch and is not kept."""
    for name in names:
        if calls_per_turn == 1:
            samples[name].append(_time_call(runners[name], inputs))
            continue
        _time_call(runners[name], inputs)
        for _ in range(calls_per_turn - 1):
            samples[name].append(_time_call(runners[name], inputs))


def _time_one_batch(
    *, runners: dict[str, Runner], inputs: torch.Tensor, settings: LatencySettings, sub: Progress, batch: int
) -> tuple[dict[str, list[float]], bool]:
    """Interleaved samples of every runner at one batch size (seconds, pair i of every runner from the same round)
    and whether the halves agreed."""
    names = list(runners)
    per_call = dict.fromkeys(names, 0.0)
    for _ in range(settings.warmup):
        for name in names:
            per_call[name] = _time_call(runners[name], inputs)
    round_seconds = max(sum(per_call.values()), 1e-6) * settings.calls_per_turn
    per_round = max(settings.calls_per_turn - 1, 1)
    planned = int(min(max(settings.min_repeats, per_round * settings.seconds_per_batch_size / round_seconds), settings.max_repeats))
    samples: dict[str, list[float]] = {name: [] for name in names}
    started = time.perf_counter()
    target = planned
    shown = 0.0  # the bar never moves backwards when more rounds are added
    hard_limit = 3 * settings.seconds_per_batch_size  # a stalled machine must not stall the run
    while True:
        while len(samples[names[0]]) < target:
            _sample_round(runners, names, inputs, settings.calls_per_turn, samples)
            done = len(samples[names[0]])
            shown = max(shown, min(done / target, 1.0))
            sub.update(shown, f"Latency: batch {batch}, {done}/{target} timed calls each")
            if done >= settings.min_repeats and time.perf_counter() - started > hard_limit:
                break
        stable = all(_halves_agree(samples[n], settings.stability) for n in names)
        out_of_budget = time.perf_counter() - started > hard_limit
        if stable or target >= settings.max_repeats or out_of_budget:
            return samples, stable
        target = min(target + max(planned // 2, settings.min_repeats), settings.max_repeats)


def _median_shift(first_p50_ms: float, second: list[float]) -> float:
    """How many times the larger of two tries' medians is the smaller (1.0: the same)."""
    second_ms = percentile(second, 50) * 1000.0
    low, high = sorted((first_p50_ms, second_ms))
    return high / low if low > 0 else 1.0


# A p90 within this much of the p50 is timer and scheduler jitter, not a busy machine, however large the ratio.
SPREAD_FLOOR_SECONDS = 1e-4


def _widest_spread(samples: dict[str, list[float]]) -> float:
    """The largest p90 ÷ p50 over the runners (1.0 when a median is zero or the gap is below the jitter floor)."""
    spreads = []
    for values in samples.values():
        p50, p90 = percentile(values, 50), percentile(values, 90)
        spreads.append(p90 / p50 if p50 > 0 and p90 - p50 > SPREAD_FLOOR_SECONDS else 1.0)
    return max(spreads)


def measure_interleaved(
    *,
    runners: dict[str, Runner],
    make_input: Callable[[int], torch.Tensor],
    settings: LatencySettings | None = None,
    progress: Progress | None = None,
) -> dict:
    """Time every runner at every batch size, interleaved (A B A B …), under a fixed thread count.

    Returns ``{"threads", "settings", "batches": {"<batch>": {"<name>": LatencyStats dict, …, "stable": bool,
    "spread": {...}, "ratio_ci": {...}}}}``. Repeats: at least `min_repeats`, enough to fill the time budget, and
    more (up to `max_repeats`) while the medians of the first and second half still disagree by more than
    `stability`. A batch size whose p90 runs more than `max_spread` × its p50 is timed once more; ``spread`` says
    so, with the first attempt's numbers, and ``busy`` when the second was just as wide. With a ``baseline`` runner,
    ``ratio_ci`` holds every other runner's median ratio to it with a bootstrap interval over the interleaved pairs.
    """
    settings = settings or LatencySettings()
    progress = as_progress(progress)
    out: dict = {"threads": settings.threads, "settings": settings.to_dict(), "order": "interleaved", "batches": {}}
    with fixed_threads(settings.threads), torch.inference_mode():
        for b_index, batch in enumerate(settings.batch_sizes):
            inputs = make_input(batch)
            sub = progress.sub(b_index / len(settings.batch_sizes), (b_index + 1) / len(settings.batch_sizes))
            sub.update(0.0, f"Latency: warming up (batch {batch})")
            samples, stable = _time_one_batch(runners=runners, inputs=inputs, settings=settings, sub=sub, batch=batch)
            first_spread = _widest_spread(samples)
            spread: dict = {"p90_over_p50": first_spread, "limit": settings.max_spread, "remeasured": False, "busy": False}
            if first_spread > settings.max_spread:
                sub.update(0.0, f"Latency: batch {batch} spread widely (p90 {first_spread:.1f}× p50), timing again")
                first = {name: LatencyStats.from_seconds(values).to_dict() for name, values in samples.items()}
                samples, stable = _time_one_batch(runners=runners, inputs=inputs, settings=settings, sub=sub, batch=batch)
                spread.update(p90_over_p50=_widest_spread(samples), remeasured=True, first_attempt=first)
                # Still wide, or a median that moved by more than the limit between the tries: the load changed
                # under the measurement, so neither try is the machine's steady speed.
                moved = max(_median_shift(first[name]["p50_ms"], values) for name, values in samples.items())
                spread["busy"] = spread["p90_over_p50"] > settings.max_spread or moved > settings.max_spread
            entry: dict = {name: LatencyStats.from_seconds(values).to_dict() for name, values in samples.items()}
            entry["stable"] = stable
            entry["spread"] = spread
            if "baseline" in samples and len(samples) > 1:
                entry["ratio_ci"] = {
                    name: ratio_interval(baseline=samples["baseline"], candidate=values).to_dict()
                    for name, values in samples.items() if name != "baseline"
                }
            out["batches"][str(batch)] = entry
    return out


# --------------------------------------------------------------------------- how sure a ratio is

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class RatioInterval:
    """candidate median ÷ baseline median with a bootstrap confidence interval over the interleaved pairs."""

    ratio: float
    low: float
    high: float
    confidence: float
    resamples: int
    pairs: int

    @property
    def includes_one(self) -> bool:
        return self.low <= 1.0 <= self.high

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RatioInterval:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"ratio interval: unknown key(s) {', '.join(sorted(unknown))}.")
        return cls(**data)


def ratio_interval(
    *,
    baseline: list[float],
    candidate: list[float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> RatioInterval:
    """Percentile bootstrap of median(candidate) ÷ median(baseline), resampling whole A/B pairs (pair i was timed in
    the same round, so a slow moment of the machine stays in both halves of its pair). Seeded: the same samples
    always give the same interval."""
    import numpy as np

    if len(baseline) != len(candidate) or not baseline:
        raise ValueError(f"need the same, non-zero number of baseline and candidate samples; got {len(baseline)} and {len(candidate)}.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1; got {confidence}.")
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100; got {resamples}.")
    base, cand = np.asarray(baseline, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    picks = np.random.default_rng(seed).integers(0, len(base), size=(resamples, len(base)))
    base_medians = np.median(base[picks], axis=1)
    ratios = np.median(cand[picks], axis=1) / np.where(base_medians > 0, base_medians, np.nan)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.nanpercentile(ratios, [tail, 100 - tail])
    point = float(np.median(cand) / np.median(base)) if np.median(base) > 0 else float("nan")
    return RatioInterval(ratio=point, low=float(low), high=float(high), confidence=confidence, resamples=resamples,
                         pairs=len(base))


def recorded_interval(latency: dict | None, *, batch: int | str | None = None, candidate: str = "candidate") -> RatioInterval | None:
    """The ratio interval a latency measurement stored (the first batch size unless `batch` is given); None for
    measurements made before intervals were recorded, or without a baseline runner."""
    batches = (latency or {}).get("batches") or {}
    if not batches:
        return None
    entry = batches.get(str(batch)) if batch is not None else next(iter(batches.values()))
    data = ((entry or {}).get("ratio_ci") or {}).get(candidate)
    return RatioInterval.from_dict(data) if data else None


def latency_ratio(result: dict, *, candidate: str = "candidate", baseline: str = "baseline", batch: int = 1) -> float | None:
    """candidate p50 ÷ baseline p50 at one batch size (< 1: the candidate is faster)."""
    entry = result.get("batches", {}).get(str(batch))
    if not entry or candidate not in entry or baseline not in entry:
        return None
    base = entry[baseline]["p50_ms"]
    return entry[candidate]["p50_ms"] / base if base > 0 else None


# --------------------------------------------------------------------------- Core ML (macOS only)


def coreml_latency(*, package: Path, input_shape: tuple[int, ...], settings: LatencySettings | None = None) -> dict:
    """Time an .mlpackage through Core ML (CPU only and all compute units). Only macOS can run predictions."""
    if platform.system() != "Darwin":
        return {"measurable": False, "note": "Core ML latency not measurable on Linux: Core ML predictions need macOS."}
    settings = settings or LatencySettings()
    try:
        import coremltools as ct
        import numpy as np

        results: dict = {"measurable": True}
        for label, units in (("cpu_only", ct.ComputeUnit.CPU_ONLY), ("all", ct.ComputeUnit.ALL)):
            model = ct.models.MLModel(str(package), compute_units=units)
            input_name = model.get_spec().description.input[0].name
            feed = {input_name: np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32)}
            samples = []
            for _ in range(settings.warmup):
                model.predict(feed)
            for _ in range(settings.min_repeats * 3):
                start = time.perf_counter()
                model.predict(feed)
                samples.append(time.perf_counter() - start)
            results[label] = LatencyStats.from_seconds(samples).to_dict()
        return results
    except Exception as exc:
        return {"measurable": False, "note": f"Core ML prediction failed: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"}


# --------------------------------------------------------------------------- answers known by construction

CONFIRMATION_REPEATS = 6  # interleaved calls per runner and batch size: two halves of 3, so `stable` still means something
CONFIRMATION_TOLERANCE = 0.25  # a confirmation ratio further than this from 1 is not a confirmation: time in full


def confirmation_settings(settings: LatencySettings) -> LatencySettings:
    """A short A/B run for a candidate whose latency equals the baseline's by construction: the same batch sizes
    and threads, one warm-up call and `CONFIRMATION_REPEATS` timed calls each, instead of the full repeat count."""
    return dataclasses.replace(
        settings,
        warmup=1,
        min_repeats=CONFIRMATION_REPEATS,
        max_repeats=CONFIRMATION_REPEATS,
        seconds_per_batch_size=min(settings.seconds_per_batch_size, 0.5),
    )


def confirmation_holds(latency: dict, *, tolerance: float = CONFIRMATION_TOLERANCE) -> bool:
    """Every batch size's candidate ÷ baseline time within `tolerance` of 1 (same speed, as construction says),
    by the medians or by the fastest calls (interference from other processes only ever adds time, so the
    fastest of a few interleaved calls compares equal work even on a busy machine)."""
    for entry in latency.get("batches", {}).values():
        base, cand = entry["baseline"], entry["candidate"]
        close = [
            base[key] > 0 and abs(cand[key] / base[key] - 1.0) <= tolerance
            for key in ("p50_ms", "min_ms")
            if key in base and key in cand
        ]
        if not any(close):
            return False
    return True


def _tensor_signature(module: torch.nn.Module) -> dict[str, tuple]:
    """Shape, dtype and kind of every parameter and buffer the forward pass can read. coremltools' ``_COREML_/…``
    metadata buffers (LUTs, scales, compression type) describe the stored form and are never read by forward."""
    from core.library_internals import METADATA_PREFIX  # imports coremltools: only when comparing modules

    signature: dict[str, tuple] = {}
    tensors = [*module.named_parameters(), *module.named_buffers()]
    for name, tensor in tensors:
        if METADATA_PREFIX in name:
            continue
        signature[name] = (tuple(tensor.shape), tensor.dtype, tensor.layout, tensor.is_quantized)
    return signature


def same_computation(*, baseline: torch.nn.Module, candidate: torch.nn.Module) -> str | None:
    """None when `candidate` runs exactly the baseline's operations on tensors of the same shapes and dtypes (only
    the weight *values* differ: palettized, weight-quantized or pruned weights stored decompressed), so its CPU
    latency and peak memory equal the baseline's by construction. Otherwise the reason, in words."""
    from torch.nn.utils import parametrize

    if isinstance(candidate, torch.jit.ScriptModule) or isinstance(baseline, torch.jit.ScriptModule):
        return "a TorchScript graph"
    if type(candidate) is not type(baseline):
        return f"a different module ({type(candidate).__name__}, not {type(baseline).__name__})"
    base_tree = [(name, type(m)) for name, m in baseline.named_modules()]
    cand_tree = [(name, type(m)) for name, m in candidate.named_modules()]
    if base_tree != cand_tree:
        return "a different module tree (layers replaced, fused or added)"
    for (name, base), (_, cand) in zip(baseline.named_modules(), candidate.named_modules(), strict=True):
        hooks = [len(getattr(m, attr, {})) for m in (base, cand) for attr in ("_forward_hooks", "_forward_pre_hooks")]
        if hooks[:2] != hooks[2:]:
            return f"forward hooks on {name or 'the model'}"
        if parametrize.is_parametrized(cand) and not parametrize.is_parametrized(base):
            return f"a parametrization on {name or 'the model'} (weights recomputed on every call)"
    if _tensor_signature(baseline) != _tensor_signature(candidate):
        return "different parameter or buffer shapes / dtypes"
    return None
