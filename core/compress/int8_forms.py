"""The fastest way to run a PyTorch int8 model on this CPU: quantized engine × graph form, timed once and cached.

A converted torch.ao int8 model can run on three x86 engines (``x86``, ``onednn``, ``fbgemm``; the engine in force at
conversion decides how the weights are packed) and in two graph forms (the FX ``GraphModule`` with Python dispatch,
or traced + frozen TorchScript with the packed weights folded in). Which of the six is fastest depends on the CPU's
int8 instructions (AVX2 only, VNNI, AMX) and on the model, and the gap reaches 15–30 %, so this module times the
candidates against each other (warm-up, fixed threads, interleaved turns, median) and keeps the winner on disk per
machine and model. Conversion itself is passed in (``convert``), so this module knows nothing about FX: a move of the
method to another quantization API touches only the method's own module.

The choice depends on the graph and the tensor shapes, not on the weight values: the cache key is the CPU model and
flags, the torch version, the thread count, a structural fingerprint of the prepared model (graph code, module types,
parameter and buffer shapes), the example input shape and the spec's options.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import hashlib
import json
import os
import platform
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from core.compress.context import CompressionError
from core.formatting import fmt_ms, fmt_ratio
from core.measure.latency import LatencySettings, measure_interleaved, quantized_engine
from core.measure.machine import cpu_model
from core.measure.quality import snr_db
from core.paths import cache_dir
from core.progress import Progress, as_progress

ENGINES = ("x86", "onednn", "fbgemm")
GRAPH_FORMS = ("graph_module", "frozen_torchscript")
AUTO = "auto"
CACHE_FOLDER = "int8_choice"
# 2: torch_static runs Conv(+BN)+ReLU6 as one fused kernel (a different graph: choices made before do not carry over)
CACHE_VERSION = 2
# A form whose outputs drift further than this from the reference form's is broken (e.g. saturating int8 products),
# not merely rounded differently: engines that agree differ by one quantization step here and there (> 30 dB).
MIN_AGREEMENT_SNR_DB = 20.0

_GRAPH_LABELS = {"graph_module": "FX GraphModule", "frozen_torchscript": "traced + frozen TorchScript"}
# What each engine's int8 kernels need from an x86-64 CPU (fbgemm and x86 dispatch to fbgemm on CPUs without VNNI;
# oneDNN's int8 primitives run from SSE4.1 up).
_ENGINE_NEEDS = {"x86": ("avx2",), "fbgemm": ("avx2",), "onednn": ("sse4_1",)}
_X86_MACHINES = ("x86_64", "amd64", "i686", "i386")
_FEATURE_FLAGS = ("sse4_1", "avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")


class Int8FormError(CompressionError):
    """An int8 form that cannot run here (engine missing from this PyTorch build or needing instructions this CPU
    lacks), or no candidate form that works."""


# --------------------------------------------------------------------------- what this CPU can run


@dataclass(frozen=True)
class CpuInt8Features:
    """The CPU facts that decide which int8 engines run and how fast."""

    model: str
    machine: str  # platform.machine(): x86_64, arm64, …
    flags: tuple[str, ...]  # the subset of _FEATURE_FLAGS present
    known: bool  # False when the flags could not be read (no /proc/cpuinfo); then only torch's own view is used

    @property
    def vnni(self) -> bool:
        return "avx512_vnni" in self.flags or "avx_vnni" in self.flags

    @property
    def amx(self) -> bool:
        return "amx_int8" in self.flags

    @property
    def is_x86(self) -> bool:
        return self.machine.lower() in _X86_MACHINES

    def to_dict(self) -> dict:
        return {"model": self.model, "machine": self.machine, "flags": list(self.flags), "vnni": self.vnni, "amx": self.amx}


@lru_cache(maxsize=1)
def cpu_int8_features() -> CpuInt8Features:
    """This machine's CPU: model name and the int8-relevant flags from /proc/cpuinfo (torch's capability elsewhere)."""
    machine = platform.machine() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return CpuInt8Features(
                    model=cpu_model(), machine=machine, flags=tuple(f for f in _FEATURE_FLAGS if f in present), known=True
                )
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()  # "AVX2", "AVX512", "DEFAULT", …
    flags = ("sse4_1", "avx2") if capability.startswith("AVX") and machine.lower() in _X86_MACHINES else ()
    if capability == "AVX512":
        flags += ("avx512f",)
    return CpuInt8Features(model=cpu_model(), machine=machine, flags=flags, known=False)


def engine_unavailable_reason(engine: str, *, features: CpuInt8Features | None = None) -> str | None:
    """Why `engine` cannot run int8 kernels here (None: it can). `features` defaults to this machine's CPU."""
    if engine not in ENGINES:
        return f"'{engine}' is not an int8 engine this studio times; choose one of {', '.join(ENGINES)} or 'auto'"
    supported = torch.backends.quantized.supported_engines
    if engine not in supported:
        return f"the {engine} int8 engine is not in this PyTorch build (it has: {', '.join(supported)})"
    features = features or cpu_int8_features()
    if not features.is_x86:
        return f"the {engine} int8 engine needs an x86-64 CPU; this one is {features.machine} ({features.model})"
    missing = [flag for flag in _ENGINE_NEEDS[engine] if flag not in features.flags]
    if missing:
        return (
            f"the {engine} int8 engine needs {', '.join(f.upper() for f in missing)}, which this CPU ({features.model}) "
            "does not have"
        )
    return None


@dataclass(frozen=True)
class Int8Form:
    """One way to run the int8 model: the quantized engine its weights are packed for, and the graph form."""

    engine: str
    graph: str

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise Int8FormError(f"engine must be one of {', '.join(ENGINES)}; got {self.engine!r}.")
        if self.graph not in GRAPH_FORMS:
            raise Int8FormError(f"graph must be one of {', '.join(GRAPH_FORMS)}; got {self.graph!r}.")

    @property
    def key(self) -> str:
        return f"{self.engine}/{self.graph}"

    @property
    def label(self) -> str:
        return f"{self.engine} engine, {_GRAPH_LABELS[self.graph]}"

    @classmethod
    def from_key(cls, key: str) -> Int8Form:
        engine, _, graph = key.partition("/")
        return cls(engine=engine, graph=graph)


# The form torch_static always used before forms were timed: what "faster by" is measured against.
DEFAULT_FORM = Int8Form(engine="x86", graph="graph_module")


def candidate_forms(
    *, engine: str = AUTO, graph: str = AUTO, features: CpuInt8Features | None = None
) -> tuple[Int8Form, ...]:
    """The forms to consider: every engine that runs here × every graph form, narrowed by a forced engine or graph.

    A forced engine this CPU or PyTorch build cannot run raises Int8FormError naming the reason and the alternatives.
    """
    if graph != AUTO and graph not in GRAPH_FORMS:
        raise Int8FormError(f"graph form must be 'auto' or one of {', '.join(GRAPH_FORMS)}; got {graph!r}.")
    usable = [e for e in ENGINES if engine_unavailable_reason(e, features=features) is None]
    if engine != AUTO:
        reason = engine_unavailable_reason(engine, features=features)
        if reason is not None:
            alternatives = f"engine='auto' or one of: {', '.join(usable)}" if usable else "torch_dynamic or a Core ML method"
            raise Int8FormError(f"cannot force the int8 engine: {reason}. Use {alternatives}.")
        usable = [engine]
    if not usable:
        reasons = "; ".join(str(engine_unavailable_reason(e, features=features)) for e in ENGINES)
        raise Int8FormError(f"no int8 engine runs on this machine ({reasons}).")
    graphs = GRAPH_FORMS if graph == AUTO else (graph,)
    return tuple(Int8Form(engine=e, graph=g) for e in usable for g in graphs)


# --------------------------------------------------------------------------- building a form


def _frozen_torchscript(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # quantized ops read their scale as a Python float: a constant of the trace, which is what freezing wants
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.freeze(torch.jit.trace(module, example, check_trace=False).eval())


def build_form(
    *, prepared: nn.Module, convert: Callable[[nn.Module], nn.Module], form: Int8Form, example: torch.Tensor
) -> nn.Module:
    """The int8 model in `form`: `convert` (e.g. convert_fx) runs on a copy of the calibrated `prepared` model with
    the form's engine selected, so the weights are packed for that engine; run the result under the same engine."""
    with quantized_engine(form.engine):
        converted = convert(copy.deepcopy(prepared)).eval()
        if form.graph == "graph_module":
            return converted
        traced = _frozen_torchscript(converted, example)
        require_any_batch(traced, example)
        return traced


def require_any_batch(module: nn.Module, example: torch.Tensor) -> None:
    """A trace can fix the batch size (a reshape or expand of a graph-form model that read it as a constant); such a
    form would fail on the evaluation batches, so it is refused here and the form race leaves it out, saying why."""
    other = example[:1].expand(example.shape[0] + 1, *example.shape[1:]).contiguous()
    try:
        with torch.no_grad():
            module(other)
    except Exception as exc:
        raise Int8FormError(f"its trace fixes the batch size at {example.shape[0]} ({_first_line(exc)})") from None


def already_converted(module: nn.Module) -> nn.Module:
    """The `convert` for a model that is already int8: the copy build_form makes under the form's engine re-packs
    the weights for that engine (torch's packed-weight objects re-pack when unpickled), so nothing is left to do."""
    return module


def bound_runner(module: nn.Module, engine: str) -> Callable[[torch.Tensor], object]:
    """Call `module` with its engine selected (ops without packed weights dispatch on the global engine)."""

    def run(inputs: torch.Tensor) -> object:
        torch.backends.quantized.engine = engine
        return module(inputs)

    return run


# --------------------------------------------------------------------------- the cache key


def model_fingerprint(module: nn.Module, *, example: torch.Tensor) -> str:
    """A structural fingerprint: graph code, module types, parameter/buffer names, shapes and dtypes, input shape.

    Weight values are left out on purpose: they do not change which int8 form is fastest.
    """
    digest = hashlib.sha256()
    code = getattr(module, "code", None)
    digest.update((code if isinstance(code, str) else repr(module)).encode())
    for name, sub in module.named_modules():
        digest.update(f"{name}:{type(sub).__module__}.{type(sub).__qualname__};".encode())
    for kind, tensors in (("p", module.named_parameters()), ("b", module.named_buffers())):
        for name, tensor in tensors:
            digest.update(f"{kind}:{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
    digest.update(f"input:{tuple(example.shape)}:{example.dtype}".encode())
    return digest.hexdigest()[:20]


def cache_key(
    *,
    fingerprint: str,
    candidates: tuple[Int8Form, ...],
    threads: int,
    spec: Mapping | None = None,
    features: CpuInt8Features | None = None,
) -> dict:
    """Everything the winner depends on. Two calls with the same key get the same answer from the cache."""
    features = features or cpu_int8_features()
    return {
        "version": CACHE_VERSION,
        "cpu": features.model,
        "cpu_flags": list(features.flags),
        "torch": torch.__version__,
        "threads": threads,
        "model": fingerprint,
        "candidates": [form.key for form in candidates],
        "spec": json.loads(json.dumps(dict(spec or {}), sort_keys=True, default=str)),
    }


def cache_file(key: Mapping, *, cache_root: Path | None = None) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return (Path(cache_root) if cache_root is not None else cache_dir()) / CACHE_FOLDER / f"{name}.json"


# --------------------------------------------------------------------------- the choice


@dataclass(frozen=True)
class FormTiming:
    """One row of the measured table: a form's median and p90 latency, or why it was not timed."""

    form: Int8Form
    p50_ms: float | None = None
    p90_ms: float | None = None
    repeats: int = 0
    error: str | None = None

    def to_dict(self) -> dict:
        return {
            "form": self.form.key, "label": self.form.label, "p50_ms": self.p50_ms, "p90_ms": self.p90_ms,
            "repeats": self.repeats, "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> FormTiming:
        return cls(
            form=Int8Form.from_key(data["form"]), p50_ms=data.get("p50_ms"), p90_ms=data.get("p90_ms"),
            repeats=int(data.get("repeats") or 0), error=data.get("error"),
        )


@dataclass(frozen=True)
class FormChoice:
    """The winning form, its runnable module, and the table it won on."""

    winner: Int8Form
    module: nn.Module = field(repr=False)
    timings: tuple[FormTiming, ...]
    from_cache: bool
    forced: bool  # a single candidate (engine and graph forced): nothing was timed
    threads: int
    measured_at: str | None
    cache_path: Path | None
    key: dict = field(repr=False)
    # False when the two halves of the repeats disagreed (a busy machine): the choice may then be off by that noise
    stable: bool | None = None

    def timing_of(self, form: Int8Form) -> FormTiming | None:
        return next((t for t in self.timings if t.form == form), None)

    @property
    def winner_ms(self) -> float | None:
        timing = self.timing_of(self.winner)
        return timing.p50_ms if timing else None

    @property
    def speedup_vs_default(self) -> float | None:
        """How many times faster the winner is than the former default (x86 engine, FX GraphModule)."""
        default = self.timing_of(DEFAULT_FORM)
        if default is None or default.p50_ms is None or not self.winner_ms:
            return None
        return default.p50_ms / self.winner_ms

    @property
    def margin_over_runner_up(self) -> float | None:
        """The runner-up's latency ÷ the winner's (1.0: a tie within noise)."""
        others = sorted(t.p50_ms for t in self.timings if t.p50_ms is not None and t.form != self.winner)
        if not others or not self.winner_ms:
            return None
        return others[0] / self.winner_ms

    def summary(self) -> str:
        if self.forced:
            return f"int8 form forced by the spec: {self.winner.label} (not timed against the others)."
        timed = sum(1 for t in self.timings if t.p50_ms is not None)
        text = f"fastest of {timed} int8 forms on this CPU: {self.winner.label}, {fmt_ms(self.winner_ms)}"
        if self.winner != DEFAULT_FORM and self.speedup_vs_default is not None:
            text += f", {fmt_ratio(self.speedup_vs_default)} faster than {DEFAULT_FORM.label}"
        if self.margin_over_runner_up is not None:
            text += f" (runner-up {fmt_ratio(self.margin_over_runner_up)} slower)"
        when = f"timed {self.measured_at}" if self.measured_at else "timed"
        text += f"; {when} with {self.threads} threads, batch 1, median of interleaved turns"
        if self.stable is False:
            text += " (the machine was busy: medians moved between halves of the repeats, so a close call may be noise)"
        return text + (", reused from the cache." if self.from_cache else ".")

    def to_dict(self) -> dict:
        """For the experiment record: which form won, by how much, and the table."""
        return {
            "winner": self.winner.key,
            "engine": self.winner.engine,
            "graph": self.winner.graph,
            "label": self.winner.label,
            "winner_ms": self.winner_ms,
            "default_form": DEFAULT_FORM.key,
            "speedup_vs_default": self.speedup_vs_default,
            "margin_over_runner_up": self.margin_over_runner_up,
            "from_cache": self.from_cache,
            "forced": self.forced,
            "threads": self.threads,
            "measured_at": self.measured_at,
            "stable": self.stable,
            "cpu": self.key.get("cpu"),
            "cpu_flags": self.key.get("cpu_flags"),
            "timings": [t.to_dict() for t in self.timings],
            "summary": self.summary(),
        }


def default_form_settings(threads: int) -> LatencySettings:
    """Enough repeats for a stable median, little enough time that a compression is not held up for long."""
    return LatencySettings(
        threads=threads, batch_sizes=(1,), warmup=2, min_repeats=6, max_repeats=60, seconds_per_batch_size=2.0,
        stability=0.05, calls_per_turn=3,
    )


def _read_cache(path: Path, key: Mapping) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # missing or unreadable: time again
    if not isinstance(data, dict) or data.get("key") != json.loads(json.dumps(key, sort_keys=True)):
        return None
    try:
        Int8Form.from_key(data["winner"])
        [FormTiming.from_dict(t) for t in data.get("timings", [])]
    except (KeyError, TypeError, ValueError):
        return None
    return data


def _write_cache(path: Path, payload: Mapping) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    tmp.replace(path)  # atomic: a concurrent reader sees the old file or the new one, never half of one


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def choose_int8_form(
    *,
    prepared: nn.Module,
    convert: Callable[[nn.Module], nn.Module],
    example: torch.Tensor,
    engine: str = AUTO,
    graph: str = AUTO,
    spec: Mapping | None = None,
    threads: int | None = None,
    settings: LatencySettings | None = None,
    cache_root: Path | None = None,
    use_cache: bool = True,
    features: CpuInt8Features | None = None,
    progress: Progress | None = None,
    timing_guard: Callable[[], AbstractContextManager] | None = None,
    leave_out: Mapping[str, str] | None = None,
) -> FormChoice:
    """The fastest int8 form of a calibrated (prepared) model on this machine, with the measured table.

    `convert` turns a copy of `prepared` into the int8 model (e.g. ``convert_fx``; ``already_converted`` when
    `prepared` is already int8); `example` is a batch-1 input. `engine` / `graph` force one engine or graph form
    ("auto": time them all); `features` describes the CPU (default: this machine's). `threads` (default: up to 2)
    is ignored when `settings` is given. The first call for a machine, model and spec times every candidate
    (interleaved, fixed threads, median) and writes the choice to ``cache_dir()/int8_choice/``; later calls with the
    same key convert only the winner. Forms that fail to build or whose outputs drift from the reference form are
    listed with the reason and never win. `timing_guard` (a job's machine-wide timing lock) is held only while the
    candidates are timed, so other jobs' compute never skews the race. `leave_out` maps engines the model must not
    run on to the reason (e.g. a kernel that would saturate on its inputs): their forms are neither built nor timed,
    and the table lists them with that reason.
    """
    progress = as_progress(progress)
    settings = settings or default_form_settings(threads or max(1, min(2, os.cpu_count() or 1)))
    threads = settings.threads
    candidates = candidate_forms(engine=engine, graph=graph, features=features)
    left_out = tuple(
        FormTiming(form=form, error=f"left out: {leave_out[form.engine]}") for form in candidates
        if form.engine in (leave_out or {})
    )
    candidates = tuple(form for form in candidates if form.engine not in (leave_out or {}))
    if not candidates:
        raise Int8FormError("no int8 form is left: " + "; ".join(t.error or "" for t in left_out))
    if len(candidates) == 1 and not left_out:  # forced by the caller: nothing to time or to explain
        form = candidates[0]
        progress.update(1.0, f"int8 form: {form.label} (forced)")
        return FormChoice(
            winner=form, module=build_form(prepared=prepared, convert=convert, form=form, example=example),
            timings=(), from_cache=False, forced=True, threads=threads, measured_at=None, cache_path=None, key={},
        )
    key = cache_key(
        fingerprint=model_fingerprint(prepared, example=example), candidates=candidates, threads=threads, spec=spec,
        features=features,
    )
    path = cache_file(key, cache_root=cache_root)
    cached = _read_cache(path, key) if use_cache else None
    module = None
    if cached is not None:
        form = Int8Form.from_key(cached["winner"])
        progress.update(0.5, f"int8 form: {form.label} (chosen earlier on this machine)")
        try:
            module = build_form(prepared=prepared, convert=convert, form=form, example=example)
        except Exception:  # the cached winner no longer builds for this model: time the candidates again
            cached = None
    if cached is not None and module is not None:
        progress.update(1.0, f"int8 form: {form.label}")
        return FormChoice(
            winner=form, module=module, timings=tuple(FormTiming.from_dict(t) for t in cached.get("timings", [])),
            from_cache=True, forced=False, threads=threads, measured_at=cached.get("measured_at"), cache_path=path, key=key,
            stable=cached.get("stable"),
        )
    choice = _time_candidates(
        prepared=prepared, convert=convert, example=example, candidates=candidates, threads=threads,
        settings=settings, progress=progress, key=key, cache_path=path, timing_guard=timing_guard, left_out=left_out,
    )
    if use_cache:
        _write_cache(path, {
            "key": key, "winner": choice.winner.key, "measured_at": choice.measured_at, "stable": choice.stable,
            "timings": [t.to_dict() for t in choice.timings],
        })
    return choice


def _time_candidates(
    *,
    prepared: nn.Module,
    convert: Callable[[nn.Module], nn.Module],
    example: torch.Tensor,
    candidates: tuple[Int8Form, ...],
    threads: int,
    settings: LatencySettings,
    progress: Progress,
    key: dict,
    cache_path: Path,
    timing_guard: Callable[[], AbstractContextManager] | None = None,
    left_out: tuple[FormTiming, ...] = (),
) -> FormChoice:
    built: dict[Int8Form, nn.Module] = {}
    failed: dict[Int8Form, str] = {}
    build_progress = progress.sub(0.0, 0.4)
    for index, form in enumerate(candidates):
        build_progress.update(index / len(candidates), f"building int8 form {form.label}")
        try:
            built[form] = build_form(prepared=prepared, convert=convert, form=form, example=example)
        except Exception as exc:  # a form the model cannot take (untraceable forward, engine refusing an op)
            failed[form] = f"could not be built: {_first_line(exc)}"
    _drop_drifting_forms(built=built, failed=failed, example=example)
    if not built:
        reasons = "; ".join(f"{form.key}: {why}" for form, why in failed.items())
        raise Int8FormError(f"no int8 form of this model runs here ({reasons}).")
    progress.update(0.4, f"timing {len(built)} int8 forms ({threads} threads, batch 1)")
    stats: dict = {}
    stable = None
    if len(built) > 1:
        runners = {form.key: bound_runner(module, form.engine) for form, module in built.items()}
        previous = torch.backends.quantized.engine
        try:
            with timing_guard() if timing_guard is not None else contextlib.nullcontext():
                latency = measure_interleaved(
                    runners=runners,
                    make_input=lambda batch: example[:1].expand(batch, *example.shape[1:]).contiguous(),
                    settings=settings, progress=progress.sub(0.4, 1.0),
                )
        finally:
            torch.backends.quantized.engine = previous
        stats = latency["batches"]["1"]
        stable = bool(stats.get("stable"))
    timings = []
    for form in candidates:
        if form in failed:
            timings.append(FormTiming(form=form, error=failed[form]))
        elif form.key in stats:
            row = stats[form.key]
            timings.append(FormTiming(form=form, p50_ms=row["p50_ms"], p90_ms=row["p90_ms"], repeats=row["repeats"]))
        else:  # the only form left: nothing to race against
            timings.append(FormTiming(form=form))
    timings += left_out
    timed = [t for t in timings if t.p50_ms is not None]
    winner = min(timed, key=lambda t: t.p50_ms).form if timed else next(iter(built))
    progress.update(1.0, f"int8 form: {winner.label}")
    return FormChoice(
        winner=winner, module=built[winner], timings=tuple(timings), from_cache=False, forced=False, threads=threads,
        measured_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), cache_path=cache_path, key=key,
        stable=stable,
    )


def _drop_drifting_forms(*, built: dict[Int8Form, nn.Module], failed: dict[Int8Form, str], example: torch.Tensor) -> None:
    """Forms must compute what the reference form computes (the former default when it built, else the first)."""
    outputs: dict[Int8Form, torch.Tensor] = {}
    for form, module in list(built.items()):
        try:
            with quantized_engine(form.engine), torch.inference_mode():
                out = module(example)
            if isinstance(out, torch.Tensor):  # other outputs (tuples, dicts) are not compared
                outputs[form] = out.detach().float()
        except Exception as exc:
            failed[form] = f"failed to run: {_first_line(exc)}"
            del built[form]
    if not outputs:
        return
    reference_form = DEFAULT_FORM if DEFAULT_FORM in outputs else next(iter(outputs))
    reference = outputs[reference_form]
    for form, out in outputs.items():
        if form == reference_form or out.shape != reference.shape:
            if out.shape != reference.shape:
                failed[form] = f"output shape {tuple(out.shape)} differs from {reference_form.key}'s"
                del built[form]
            continue
        snr = snr_db(reference=reference, candidate=out)
        if not snr >= MIN_AGREEMENT_SNR_DB:  # NaN and -inf (an all-zero reference) fail too
            failed[form] = f"outputs drift from {reference_form.key}'s (SNR {snr:.1f} dB < {MIN_AGREEMENT_SNR_DB:.0f} dB)"
            del built[form]


# --------------------------------------------------------------------------- the spec's choice, as one option


FORM_CHOICES = (AUTO, *(f"{engine}/{graph}" for engine in ENGINES for graph in GRAPH_FORMS))


def form_fields(choice: str) -> dict[str, str]:
    """A form choice ("auto" or "engine/graph") as the spec's engine and graph fields."""
    if choice == AUTO:
        return {"engine": AUTO, "graph": AUTO}
    form = Int8Form.from_key(choice)
    return {"engine": form.engine, "graph": form.graph}
