"""Honest speed-up wording: one place that says how much faster a compressed model runs, and against what.

A latency ratio on its own overstates what int8 buys: "1.29× faster" than PyTorch fp32 eager hides that other fp32
runtimes on the same CPU may already be as fast, and that int8 gains depend on the CPU's int8 instructions. So every
speed-up shown (result card, Compare, report, CLI) is worded here as

1. the ratio against PyTorch fp32 eager (what the studio measured, same process, interleaved);
2. when the benchmark has run on this machine (``python -m bench.int8_peers`` writes
   ``cache_dir()/bench/int8_peers.json``), the fastest fp32 runtime it measured here;
3. for int8 results on an x86 CPU without VNNI / AMX, a note that int8 gains are small on this CPU and what CPUs with
   VNNI typically reach, with the source.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.formatting import as_number, fmt_ms, fmt_ratio
from core.paths import cache_dir

if TYPE_CHECKING:  # the latency harness imports torch and coremltools: only when a sentence needs it
    from core.measure.latency import RatioInterval

BENCH_FOLDER = "bench"
BENCH_RESULTS_FILE = "int8_peers.json"
BENCH_RESULTS_VERSION = 1
# Ratios within this band of 1.0 are "as fast as": interleaved medians on a shared CPU wobble by a few percent.
TIE_BAND = 0.03

VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
AMX_FLAGS = ("amx_int8",)
# OpenVINO's published performance benchmarks, resnet-18 int8 throughput over fp32 on Intel CPUs.
VNNI_REFERENCE = {
    "model": "resnet-18",
    "avx2_speedup": 1.9,
    "vnni_speedup": 3.7,
    "source": "OpenVINO's published performance benchmarks, int8 vs fp32",
}


@dataclass(frozen=True)
class SpeedupWording:
    """The lines to show next to a speed-up, most important first."""

    ratio: float | None  # PyTorch fp32 eager latency ÷ candidate latency (> 1: the candidate is faster)
    headline: str
    fastest_fp32: str | None = None  # the benchmark's fastest fp32 runtime on this machine, when it has run
    cpu_note: str | None = None  # int8 on a CPU without VNNI / AMX

    @property
    def lines(self) -> list[str]:
        return [line for line in (self.headline, self.fastest_fp32, self.cpu_note) if line]

    def text(self) -> str:
        return " ".join(self.lines)

    def to_dict(self) -> dict:
        return {
            "ratio": self.ratio, "headline": self.headline, "fastest_fp32": self.fastest_fp32, "cpu_note": self.cpu_note,
        }


# --------------------------------------------------------------------------- the benchmark's results on disk


def bench_results_path(*, cache_root: Path | None = None) -> Path:
    return (Path(cache_root) if cache_root is not None else cache_dir()) / BENCH_FOLDER / BENCH_RESULTS_FILE


def write_bench_results(
    *,
    cpu: str,
    cpu_flags: Sequence[str],
    torch_version: str,
    threads: int,
    models: Mapping[str, Mapping],
    cache_root: Path | None = None,
) -> Path:
    """Store the benchmark's latencies for this machine.

    `models`: ``{name: {"architecture", "input_shape": [C, H, W], "source", "runtimes": [{"name", "kind": "fp32" |
    "int8", "p50_ms", "product": bool}, …]}}``.
    """
    for name, entry in models.items():
        for runtime in entry.get("runtimes", []):
            if runtime.get("kind") not in ("fp32", "int8") or as_number(runtime.get("p50_ms")) is None:
                raise ValueError(f"benchmark result for {name} / {runtime.get('name')}: need kind fp32|int8 and a p50_ms.")
    payload = {
        "version": BENCH_RESULTS_VERSION,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_flags": list(cpu_flags),
        "torch": torch_version,
        "threads": threads,
        "models": {name: dict(entry) for name, entry in models.items()},
    }
    path = bench_results_path(cache_root=cache_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)
    return path


def load_bench_results(*, cpu: str | None = None, cache_root: Path | None = None) -> dict | None:
    """The benchmark's stored results, if there are any (and, when `cpu` is given, only if measured on that CPU)."""
    try:
        data = json.loads(bench_results_path(cache_root=cache_root).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != BENCH_RESULTS_VERSION or not isinstance(data.get("models"), dict):
        return None
    if cpu is not None and data.get("cpu") != cpu:
        return None  # another machine's numbers say nothing about this one
    return data


def _fastest(runtimes: Sequence[Mapping], kind: str) -> Mapping | None:
    rows = [r for r in runtimes if r.get("kind") == kind and as_number(r.get("p50_ms")) is not None]
    return min(rows, key=lambda r: float(r["p50_ms"])) if rows else None


def _eager(runtimes: Sequence[Mapping]) -> Mapping | None:
    return next((r for r in runtimes if r.get("kind") == "fp32" and "eager" in str(r.get("name", "")).lower()), None)


def _matching_model(bench: Mapping, *, architecture: str | None, input_shape: Sequence[int] | None) -> tuple[str, Mapping] | None:
    if not architecture:
        return None
    shape = [int(v) for v in input_shape] if input_shape else None
    for name, entry in bench["models"].items():
        if entry.get("architecture") == architecture and (shape is None or list(entry.get("input_shape") or []) == shape):
            return name, entry
    return None


# --------------------------------------------------------------------------- a latency ratio and how sure it is


@dataclass(frozen=True)
class LatencyChange:
    """A candidate's latency against its interleaved baseline, in words a person can act on."""

    short: str  # a metric's delta: "no measurable difference (±6 %)", "+22 % (95 % CI +10 % to +35 %)"
    sentence: str  # the same with what it rests on
    measurable: bool  # the interval excludes 1.0: the difference is real, not timing noise


def _signed_pct(ratio: float) -> str:
    return f"{(ratio - 1.0) * 100:+.0f} %"


def _noise_pct(interval: RatioInterval) -> str:
    """'±6 %': how far from 1.0 an interval that includes 1.0 reaches."""
    return f"±{max(abs(interval.low - 1.0), abs(interval.high - 1.0)) * 100:.0f} %"


def latency_change(interval: RatioInterval, *, by_construction: bool = False) -> LatencyChange:
    """Words for candidate ÷ baseline latency with its bootstrap interval. An interval that includes 1.0 is "no
    measurable difference (±x %)", never the point estimate's "+22 %"; `by_construction`: the candidate runs the
    baseline's exact operations, so that is what the screen says first."""
    basis = (f"{interval.confidence:.0%} interval from {interval.pairs} interleaved baseline/compressed pairs, "
             f"bootstrap of {interval.resamples:,} resamples")
    if interval.includes_one:
        short = f"no measurable difference ({_noise_pct(interval)})"
        lead = "Same computation as the baseline: " if by_construction else ""
        return LatencyChange(short, f"{lead}{short} ({basis}).", measurable=False)
    ci = f"{interval.confidence:.0%} CI {_signed_pct(interval.low)} to {_signed_pct(interval.high)}"
    short = f"{_signed_pct(interval.ratio)} ({ci})"
    if interval.ratio > 1.0:
        words = f"{fmt_ratio(interval.ratio)} slower than the baseline ({fmt_ratio(interval.low)}–{fmt_ratio(interval.high)})"
    else:
        words = (f"{fmt_ratio(1.0 / interval.ratio)} faster than the baseline "
                 f"({fmt_ratio(1.0 / interval.high)}–{fmt_ratio(1.0 / interval.low)})")
    if by_construction:  # same operations yet a real difference: the machine, not the model
        words += "; it runs the baseline's exact operations, so other work on this machine caused the difference"
        # short enough for a metric's delta at 1100 px; the sentence (its help) says whose load
        short = f"same computation ({_signed_pct(interval.ratio)} load)"
    return LatencyChange(short, f"{words} ({basis}).", measurable=True)


def record_latency_change(record: Mapping) -> LatencyChange | None:
    """The latency change of an experiment record, from the interval its measurement stored (None: not timed, or
    timed before intervals were recorded)."""
    latency = record.get("latency") if isinstance(record.get("latency"), Mapping) else None
    from core.measure.latency import recorded_interval

    interval = recorded_interval(dict(latency)) if latency else None
    if interval is None:
        return None
    return latency_change(interval, by_construction=latency.get("mode") == "confirmation")


SPREAD_LIMIT = 1.5  # p90 ÷ p50 above this: other work interrupted the timing (core.measure.latency's max_spread)


def spread_note(latency: Mapping | None, *, runner: str = "baseline") -> str | None:
    """When a measurement's p90 ran far above its p50: that it was timed again, and whether it was still too wide
    (a busy machine), with the numbers. None when the spread was within the limit."""
    batches = (latency or {}).get("batches") or {}
    if not batches:
        return None
    batch, entry = next(iter(batches.items()))
    spread, stats = entry.get("spread") or {}, entry.get(runner) or {}
    p50, p90 = as_number(stats.get("p50_ms")), as_number(stats.get("p90_ms"))
    if p50 is None or p90 is None or p50 <= 0:
        return None
    limit = spread.get("limit", SPREAD_LIMIT)
    now = f"p50 {fmt_ms(p50, 3)}, p90 {fmt_ms(p90, 3)}"
    busy = (f"Taken on a busy machine: at batch {batch} the p90 is {p90 / p50:.1f}× the p50 ({now}{{was}}). Other "
            "work slowed some calls; the median is the steadier number.")
    if not spread.get("remeasured"):
        # Measurements from before re-timing existed carry no spread entry: judge their numbers directly.
        return busy.format(was="") if not spread and p90 > limit * p50 else None
    first = (spread.get("first_attempt") or {}).get(runner) or {}
    was = f"; first try p50 {fmt_ms(first.get('p50_ms'), 3)}, p90 {fmt_ms(first.get('p90_ms'), 3)}" if first else ""
    if spread.get("busy"):
        if p90 <= limit * p50:  # the second try was steady but its median moved: the load changed between tries
            return (f"Taken on a busy machine: timed twice at batch {batch}, the medians disagree ({was.lstrip('; ')}; "
                    f"second try {now}). Other work changed the speed between the tries; compare ratios, which "
                    "are timed interleaved, rather than these absolute times.")
        return busy.format(was=f", after timing twice{was}")
    return f"Timed twice at batch {batch}: the first try spread too widely (p90 over {limit:g}× p50{was}); kept the second ({now})."


# --------------------------------------------------------------------------- the wording


EAGER = "PyTorch fp32 eager"


def _headline(ratio: float | None, candidate_ms: float | None, eager_ms: float | None, baseline: str = EAGER,
              interval: RatioInterval | None = None) -> str:
    if ratio is None:
        return f"No speed-up measured (latency was not timed against {baseline})."
    times = f"({fmt_ms(candidate_ms)} vs {fmt_ms(eager_ms)}, batch 1, same process, interleaved)"
    if interval is not None:
        if interval.includes_one:
            return f"No measurable difference from {baseline} ({_noise_pct(interval)}) {times}."
        direction = "faster" if interval.ratio < 1.0 else "slower"
        factor = 1.0 / interval.ratio if interval.ratio < 1.0 else interval.ratio
        ends = sorted(1.0 / v if interval.ratio < 1.0 else v for v in (interval.low, interval.high))
        return (f"{fmt_ratio(factor)} {direction} than {baseline} ({interval.confidence:.0%} interval "
                f"{fmt_ratio(ends[0])}–{fmt_ratio(ends[1])}) {times}.")
    if abs(ratio - 1.0) <= TIE_BAND:
        return f"As fast as {baseline} within {TIE_BAND:.0%} {times}."
    if ratio > 1.0:
        return f"{fmt_ratio(ratio)} faster than {baseline} {times}."
    return f"{fmt_ratio(1.0 / ratio)} slower than {baseline} {times}."


def _fastest_fp32_line(
    *, bench: Mapping | None, architecture: str | None, input_shape: Sequence[int] | None, candidate_ms: float | None
) -> str | None:
    if not bench:
        return None
    when = str(bench.get("created_at", ""))[:10]
    where = f"measured on this machine by the benchmark ({when}, {bench.get('threads')} threads, batch 1)"
    match = _matching_model(bench, architecture=architecture, input_shape=input_shape)
    if match is not None:
        name, entry = match
        fastest = _fastest(entry.get("runtimes", []), "fp32")
        if fastest is None:
            return None
        fast_ms = float(fastest["p50_ms"])
        line = f"Fastest fp32 runtime for {name} {where}: {fastest['name']}, {fmt_ms(fast_ms)}"
        if candidate_ms:
            ratio = fast_ms / candidate_ms
            if abs(ratio - 1.0) <= TIE_BAND:
                line += " — as fast as this model"
            elif ratio > 1.0:
                line += f" — this model is {fmt_ratio(ratio)} faster than it"
            else:
                line += f" — {fmt_ratio(1.0 / ratio)} faster than this model"
        return line + "."
    # No benchmark of this architecture: say how far fp32 runtimes alone got past PyTorch eager on this machine.
    gains = []
    for name, entry in bench["models"].items():
        runtimes = entry.get("runtimes", [])
        fastest, eager = _fastest(runtimes, "fp32"), _eager(runtimes)
        if fastest is not None and eager is not None and float(fastest["p50_ms"]) > 0:
            gains.append((float(eager["p50_ms"]) / float(fastest["p50_ms"]), name, fastest["name"]))
    if not gains:
        return None
    low, high = min(gains), max(gains)
    span = fmt_ratio(high[0]) if abs(high[0] - low[0]) < 0.01 else f"{fmt_ratio(low[0])}–{fmt_ratio(high[0])}"
    return (
        f"Without any compression, the fastest fp32 runtime {where} ran {span} faster than PyTorch fp32 eager "
        f"({', '.join(sorted({g[1] for g in gains}))}; fastest on {high[1]}: {high[2]})."
    )


def cpu_int8_note(*, cpu: str | None, cpu_flags: Sequence[str] | None) -> str | None:
    """For an x86 CPU without VNNI / AMX (known from its AVX flags): int8 gains are small here, and why."""
    flags = set(cpu_flags or ())
    if not flags or not any(f.startswith("avx") for f in flags):
        return None  # flags unknown (not Linux) or not an x86 CPU: nothing honest to add
    if flags & set(VNNI_FLAGS + AMX_FLAGS):
        return None
    ref = VNNI_REFERENCE
    return (
        f"This CPU ({cpu or 'unknown model'}) has no VNNI or AMX int8 instructions, so int8 gains are small on it: "
        f"its int8 kernels multiply in several AVX2 steps. CPUs with VNNI typically reach about twice the gain — "
        f"{ref['model']} int8 runs {fmt_ratio(ref['avx2_speedup'], 1)} faster than fp32 on an AVX2 desktop CPU vs "
        f"{fmt_ratio(ref['vnni_speedup'], 1)} with VNNI (source: {ref['source']})."
    )


def speedup_wording(
    *,
    candidate_ms: float | None,
    eager_fp32_ms: float | None,
    int8: bool,
    architecture: str | None = None,
    input_shape: Sequence[int] | None = None,
    cpu: str | None = None,
    cpu_flags: Sequence[str] | None = None,
    bench: Mapping | None = None,
    baseline: str = EAGER,
    interval: RatioInterval | None = None,
) -> SpeedupWording:
    """The wording for one speed-up. `bench`: the benchmark's results for this machine (``load_bench_results``);
    `cpu_flags` as in the record's machine description (only int8 results get the CPU note); `baseline` names what
    `eager_fp32_ms` timed (an uploaded TorchScript model's baseline is TorchScript, not eager); `interval`: the
    candidate ÷ baseline bootstrap interval, which turns a difference inside the noise into "no measurable
    difference"."""
    candidate, eager = as_number(candidate_ms), as_number(eager_fp32_ms)
    ratio = eager / candidate if candidate and eager else None
    return SpeedupWording(
        ratio=ratio,
        headline=_headline(ratio, candidate, eager, baseline, interval),
        fastest_fp32=_fastest_fp32_line(bench=bench, architecture=architecture, input_shape=input_shape, candidate_ms=candidate),
        cpu_note=cpu_int8_note(cpu=cpu, cpu_flags=cpu_flags) if int8 else None,
    )


def wording_for_record(record: Mapping, *, cache_root: Path | None = None) -> SpeedupWording:
    """The wording for an experiment record (its batch-1 medians, model, machine and whether it runs int8 kernels)."""
    from core.measure.latency import recorded_interval

    machine = record.get("machine") or {}
    cpu = machine.get("cpu")
    shape = record.get("input_shape")
    return speedup_wording(
        candidate_ms=record.get("latency_ms_p50"),
        eager_fp32_ms=record.get("baseline_latency_ms_p50"),
        int8=bool(record.get("runs_int8_kernels")),
        architecture=record.get("architecture"),
        input_shape=shape,
        cpu=cpu,
        cpu_flags=machine.get("cpu_features"),
        bench=load_bench_results(cpu=cpu, cache_root=cache_root) if cpu else None,
        baseline="PyTorch fp32 (TorchScript)" if str(record.get("model", "")).startswith("torchscript:") else EAGER,
        interval=recorded_interval(record.get("latency")) if isinstance(record.get("latency"), Mapping) else None,
    )


def speedup_text(records: Mapping | Sequence[Mapping], *, cache_root: Path | None = None) -> str | None:
    """The speed-up wording every surface shows (result card, Compare, HTML report, CLI), as one paragraph.

    One record: its wording. Several (Compare, the report): the wording of the fastest one against its own
    baseline, named by id and spec. None when no record had its latency measured.
    """
    many = not isinstance(records, Mapping)
    timed = [r for r in ([records] if not many else records) if as_number(r.get("latency_ms_p50")) is not None]
    timed = [r for r in timed if as_number(r.get("baseline_latency_ms_p50"))]
    # Weights that run decompressed (palettize, prune, weight-only quantization, W8A8 simulated) run the baseline's
    # computation on this CPU: any measured "speed-up" of theirs is noise, never a claim.
    timed = [r for r in timed if r.get("runs_int8_kernels")]
    if not timed:
        return None
    record = min(timed, key=lambda r: float(r["latency_ms_p50"]) / float(r["baseline_latency_ms_p50"]))
    text = wording_for_record(record, cache_root=cache_root).text()
    if many:
        label = " ".join(str(part) for part in (f"#{record['id']}" if record.get("id") is not None else None,
                                                 record.get("spec_summary")) if part)
        text = f"Fastest here{f' ({label})' if label else ''}: {text}"
    return text
