"""The fast-loop benchmark: where the time of one experiment goes, phase by phase, against the targets.

    .venv/bin/python -m bench.loop_bench              # the three loop targets + a warm job in a real worker process
    .venv/bin/python -m bench.loop_bench --quick      # the fashion_resnet 2,000-image case only
    .venv/bin/python -m bench.loop_bench --no-worker  # skip the worker-process case
    .venv/bin/python -m bench.loop_bench --only resnet18 --no-worker   # the cases whose name contains "resnet18"

Each case is submitted to a fresh queue (its own data folder: nothing cached from earlier runs) and run by the job
runner in this process twice: cold (baseline logits, fp16 baseline package and int8 form computed) and warm
(model loaded, those cached), exactly as a warm worker runs a queue of jobs on one model. The target is judged on
the warm run. Each case's folder is also the studio home while it runs, so caches kept under the home rather than
the job's options (the int8 form choice) start empty too: the cold run times the int8 forms, the warm one reuses
the choice (printed under the case). The worker case submits two jobs to a real ``python -m core.jobs.worker`` process and reads the
second job's claim → done time off the queue.

Phase times are the record's own ``phase_seconds`` (``core.experiment`` clocks every step; the Core ML export runs
on a helper thread beside the evaluation, so "export" overlaps "baseline" / "evaluate" and "export_wait" is what
the run actually waited for it) plus the job's load and save. "other" is end to end minus the sequential phases.

Exit status: 0 when every target is met or a miss is ruled out by this machine (printed as "not met on this CPU:
reason": too few cores, cores busy with other work, no int8 instructions); 1 when a target is missed otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from core.formatting import fmt_seconds

# Sequential phases (they add up to end to end, with "other"); export and fp16_baseline overlap the evaluation
# when the export runs on the helper thread, so they are shown but not summed.
SEQUENTIAL = ("load", "compress", "baseline", "evaluate", "export_wait", "latency", "memory", "weights", "save")
OVERLAPPED = ("export", "fp16_baseline")
MIN_CORES = 2  # below this the targets are out of reach by hardware
BRIEF_FLAGS = ("avx2", "avx512f", "avx512_vnni", "amx_tile")


@dataclass(frozen=True)
class Case:
    name: str
    model: dict
    data: dict
    spec: dict
    options: dict
    target_seconds: float
    needs_int8: bool = False  # int8 kernels: their speed depends on AVX-512 VNNI / AMX


CASES = (
    Case("fashion_resnet palettize 4-bit, 2,000 images", {"kind": "sample", "name": "fashion_resnet"},
         {"kind": "full"}, {"method": "palettize", "n_bits": 4}, {"eval_limit": 2000}, 10.0),
    Case("fashion_resnet palettize 4-bit, 10,000 images", {"kind": "sample", "name": "fashion_resnet"},
         {"kind": "full"}, {"method": "palettize", "n_bits": 4}, {}, 20.0),
    Case("torchvision resnet18 torch_static x86", {"kind": "torchvision", "name": "resnet18"}, {"kind": "auto"},
         {"method": "torch_static", "workflow": "calibration", "backend": "x86"}, {}, 25.0, needs_int8=True),
)


@dataclass
class Measurement:
    """One job of a case: end to end, its phases, the CPU time this process got and how busy the machine was."""

    seconds: float
    phases: dict[str, float]
    cpu_seconds: float | None
    load: float  # the machine's 1-minute load average, the larger of start and end
    record: dict = field(default_factory=dict)

    @property
    def other(self) -> float:
        return self.seconds - sum(self.phases.get(p, 0.0) for p in SEQUENTIAL)


def cpu_features() -> list[str]:
    """The instruction-set flags that decide CPU inference speed (the brief's list plus what core.measure reports)."""
    from core.measure.machine import cpu_flags

    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return sorted({f for f in BRIEF_FLAGS if f in flags} | set(cpu_flags()))


def load_average() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


@contextmanager
def record_phases() -> Iterator[list[dict]]:
    """Collect each run's ``phase_seconds`` as run_experiment returned it (before a job runner adds its own)."""
    import core.runs as runs

    seen: list[dict] = []
    original = runs.run_experiment

    def clocked(**kwargs):
        record = original(**kwargs)
        seen.append(dict(record.get("phase_seconds") or {}))
        return record

    runs.run_experiment = clocked
    try:
        yield seen
    finally:
        runs.run_experiment = original


def run_case(case: Case, *, home: Path, cache: object) -> Measurement:
    """One job of `case` through the job runner in this process (with `home` as the studio home meanwhile)."""
    from core.jobs.queue import JobQueue
    from core.jobs.refs import DataRef, ModelRef
    from core.jobs.runner import run_claimed_job
    from core.store import ExperimentStore

    queue = JobQueue(home=home)
    job_id = queue.submit(model=ModelRef.from_dict(case.model), data=DataRef.from_dict(case.data), spec=case.spec,
                          options=case.options)
    job = queue.claim(job_id=job_id)
    load_before = load_average()
    cpu_before = time.process_time()
    start = time.perf_counter()
    previous_home = os.environ.get("COMPRESSION_STUDIO_HOME")
    os.environ["COMPRESSION_STUDIO_HOME"] = str(home)  # core.paths.cache_dir() users (int8 form choice) start empty
    try:
        with record_phases() as seen:
            run_claimed_job(queue=queue, job=job, cache=cache)
    finally:
        if previous_home is None:
            os.environ.pop("COMPRESSION_STUDIO_HOME", None)
        else:
            os.environ["COMPRESSION_STUDIO_HOME"] = previous_home
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu_before
    done = queue.get(job_id=job_id)
    if done.state != "done":
        raise SystemExit(f"{case.name}: job {done.state}: {done.error}")
    job_phases = done.phase_seconds or {}
    phases = {**(seen[-1] if seen else {}), **{k: float(job_phases.get(k) or 0.0) for k in ("load", "save")}}
    record = ExperimentStore(home).get(done.experiment_id)
    return Measurement(seconds=total, phases=phases, cpu_seconds=cpu, load=max(load_before, load_average()),
                       record=record)


def run_worker_case(case: Case, *, home: Path) -> tuple[Measurement, Measurement]:
    """Two jobs of `case` through a real worker process (cold, then warm); end to end = claim → done of each job."""
    from core.jobs.queue import JobQueue
    from core.jobs.refs import DataRef, ModelRef

    queue = JobQueue(home=home)
    ids = [queue.submit(model=ModelRef.from_dict(case.model), data=DataRef.from_dict(case.data), spec=case.spec,
                        options=case.options) for _ in range(2)]
    load_before = load_average()
    worker = subprocess.Popen(
        [sys.executable, "-m", "core.jobs.worker", "--home", str(home), "--max-jobs", "2", "--idle-timeout", "5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[1],
    )
    try:
        jobs = queue.wait(job_ids=ids, timeout=900)
    finally:
        if worker.poll() is None:
            worker.terminate()
        worker.wait(timeout=30)
    results = []
    for job in jobs:
        if job.state != "done":
            raise SystemExit(f"{case.name} (worker): job {job.state}: {job.error}")
        phases = {k: float(v) for k, v in (job.phase_seconds or {}).items() if isinstance(v, int | float)}
        results.append(Measurement(seconds=float(job.finished_at - job.started_at), phases=phases, cpu_seconds=None,
                                   load=max(load_before, load_average())))
    return results[0], results[1]


def verdict(case: Case, warm: Measurement, *, cores: int, features: list[str], threads: int) -> tuple[str, bool]:
    """("met" | "not met on this CPU: …" | "not met: …", whether the miss counts against the exit status)."""
    if warm.seconds <= case.target_seconds:
        return "met", False
    if cores < MIN_CORES:
        return f"not met on this CPU: {cores} core(s); the targets assume at least {MIN_CORES}", False
    busy = warm.load - threads  # the load other processes put on the machine (the run's own threads taken out)
    if busy > 0.5 * cores:
        got = f"; this run got {warm.cpu_seconds:.1f} CPU-s in {warm.seconds:.1f} s" if warm.cpu_seconds else ""
        return (f"not met on this CPU: the {cores} cores were busy with other work (load average {warm.load:.1f}"
                f"{got})"), False
    if case.needs_int8 and not {"avx512_vnni", "amx_tile", "amx_int8"} & set(features):
        return "not met on this CPU: no AVX-512 VNNI or AMX, so int8 kernels run without their fast path", False
    slowest = sorted(((warm.phases.get(p, 0.0), p) for p in SEQUENTIAL), reverse=True)[:2]
    return "not met: " + ", ".join(f"{p} {fmt_seconds(s)}" for s, p in slowest), True


def _print_case(name: str, cold: Measurement, warm: Measurement) -> None:
    record = warm.record
    extra = ""
    if record:
        mode = (record.get("latency") or {}).get("mode")
        extra = (f"; {record.get('eval_images'):,} images; latency {mode or 'not measured'}; "
                 f"timing exclusive: {record.get('timing_exclusive')}")
    print(f"\n{name}{extra}")
    print(f"  {'phase':<16}{'cold':>12}{'warm':>12}")
    for phase in (*SEQUENTIAL, "other"):
        c = cold.other if phase == "other" else cold.phases.get(phase, 0.0)
        w = warm.other if phase == "other" else warm.phases.get(phase, 0.0)
        print(f"  {phase:<16}{fmt_seconds(c):>12}{fmt_seconds(w):>12}")
    for phase in OVERLAPPED:
        print(f"  {'(' + phase + ')':<16}{fmt_seconds(cold.phases.get(phase, 0.0)):>12}"
              f"{fmt_seconds(warm.phases.get(phase, 0.0)):>12}   beside the evaluation (helper thread; int8 TorchScript inline)")
    print(f"  {'end to end':<16}{fmt_seconds(cold.seconds):>12}{fmt_seconds(warm.seconds):>12}")
    for label, run in (("cold", cold), ("warm", warm)):
        form = (run.record or {}).get("int8_form")
        if form:
            how = "reused from the cache" if form.get("from_cache") else ("forced" if form.get("forced") else
                                                                           "timed in this run (inside compress)")
            print(f"  int8 form ({label}): {form.get('label')}, {how}")
        latency = (run.record or {}).get("latency") or {}
        if latency.get("batches"):
            print(f"  latency ({label}): batch sizes {', '.join(map(str, latency['batches']))}; "
                  f"mode {latency.get('mode')}")
    if warm.cpu_seconds is not None:
        print(f"  {'CPU-s (process)':<16}{cold.cpu_seconds:>12.1f}{warm.cpu_seconds:>12.1f}"
              f"   load average {cold.load:.1f} / {warm.load:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the fashion_resnet 2,000-image case")
    parser.add_argument("--no-worker", action="store_true", help="skip the case through a real worker process")
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    parser.add_argument("--only", default=None, help="only the cases whose name contains this text (e.g. resnet18)")
    args = parser.parse_args(argv)

    import torch

    from core.jobs.runner import WarmCache
    from core.measure.machine import cpu_model
    from core.progress import quiet_libraries

    quiet_libraries()
    cores, features, threads = os.cpu_count() or 1, cpu_features(), torch.get_num_threads()
    print(f"CPU: {cpu_model()}; {cores} cores; torch threads {threads}; features: {', '.join(features) or 'none'}")
    cases = CASES[:1] if args.quick else CASES
    if args.only:
        cases = tuple(case for case in cases if args.only.lower() in case.name.lower())
        if not cases:
            parser.error(f"no case name contains {args.only!r}; cases: {'; '.join(c.name for c in CASES)}")
    rows, results, missed = [], [], False
    with tempfile.TemporaryDirectory(prefix="loop_bench_") as tmp:
        os.environ.setdefault("COMPRESSION_STUDIO_TIMING_LOCK", str(Path(tmp) / "timing.lock"))
        cache = WarmCache()
        runs: list[tuple[Case, str, Measurement, Measurement]] = []
        for index, case in enumerate(cases):
            home = Path(tmp) / f"case{index}"
            cold = run_case(case, home=home, cache=cache)
            warm = run_case(case, home=home, cache=cache)
            runs.append((case, case.name, cold, warm))
            _print_case(case.name, cold, warm)
        if not args.no_worker:
            case = CASES[0]
            cold, warm = run_worker_case(case, home=Path(tmp) / "worker")
            name = f"{case.name}, warm worker process"
            runs.append((case, name, cold, warm))
            _print_case(name, cold, warm)
        for case, name, cold, warm in runs:
            text, counts = verdict(case, warm, cores=cores, features=features, threads=threads)
            missed |= counts
            rows.append((name, case.target_seconds, warm.seconds, cold.seconds, text))
            results.append({"case": name, "target_s": case.target_seconds, "warm_s": warm.seconds,
                            "cold_s": cold.seconds, "verdict": text, "phases_warm": warm.phases,
                            "phases_cold": cold.phases, "cpu_s_warm": warm.cpu_seconds, "load_warm": warm.load})
    print("\nLoop targets (end to end of the warm run):")
    print(f"  {'case':<62}{'target':>9}{'measured':>12}{'cold':>12}  verdict")
    for name, target, measured, cold_s, text in rows:
        print(f"  {name:<62}{'≤ ' + fmt_seconds(target):>9}{fmt_seconds(measured):>12}{fmt_seconds(cold_s):>12}  {text}")
    if args.json:
        args.json.write_text(json.dumps({"cpu_features": features, "cores": cores, "results": results}, indent=2))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
