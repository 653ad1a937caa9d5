"""The fast-loop benchmark: where the time of one experiment goes, phase by phase, in a warm job worker.

    .venv/bin/python -m bench.loop_bench            # the three loop targets of issue 9
    .venv/bin/python -m bench.loop_bench --quick    # the fashion_resnet 2,000-image case only

Each case is submitted to a fresh queue and run by the job runner in this process twice (cold, then warm:
model loaded, baseline logits and fp16 baseline package cached), exactly as a warm worker runs it. Phase times
come from timers wrapped around the steps of ``core.experiment.run_experiment`` (measurement only: the wrappers
call the original functions); end to end is the job's claim → done wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from core.formatting import fmt_seconds

PHASES = ("load", "compress", "baseline", "export", "fp16_baseline", "evaluate", "latency", "memory", "weights", "save")


@dataclass(frozen=True)
class Case:
    name: str
    model: dict
    data: dict
    spec: dict
    options: dict
    target_seconds: float


CASES = (
    Case("fashion_resnet palettize 4-bit, 2,000 images", {"kind": "sample", "name": "fashion_resnet"},
         {"kind": "full"}, {"method": "palettize", "n_bits": 4}, {"eval_limit": 2000}, 10.0),
    Case("fashion_resnet palettize 4-bit, 10,000 images", {"kind": "sample", "name": "fashion_resnet"},
         {"kind": "full"}, {"method": "palettize", "n_bits": 4}, {}, 20.0),
    Case("torchvision resnet18 torch_static x86", {"kind": "torchvision", "name": "resnet18"}, {"kind": "auto"},
         {"method": "torch_static", "workflow": "calibration", "backend": "x86"}, {}, 25.0),
)


class PhaseTimer:
    """Accumulates wall time per phase while installed around core.experiment's steps."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)

    def wrap(self, phase: str, func: Callable) -> Callable:
        @functools.wraps(func)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start

        return timed

    @contextlib.contextmanager
    def installed(self) -> Iterator[PhaseTimer]:
        import core.experiment as experiment
        import core.jobs.runner as runner
        from core.store import ExperimentStore

        targets = [
            (experiment, "_compress", "compress"),
            (experiment, "baseline_evaluation", "baseline"),
            (experiment, "_export", "export"),
            (experiment, "fp16_baseline_size", "fp16_baseline"),
            (experiment, "_evaluate_candidate", "evaluate"),
            (experiment, "measure_interleaved", "latency"),
            (experiment, "coreml_latency", "latency"),
            (experiment, "peak_inference_memory_bytes", "memory"),
            (experiment, "_save_weights", "weights"),
            (runner, "load_model_ref", "load"),
            (runner, "load_data_ref", "load"),
            (ExperimentStore, "add", "save"),
        ]
        originals = []
        for owner, name, phase in targets:
            original = getattr(owner, name)
            originals.append((owner, name, original))
            setattr(owner, name, self.wrap(phase, original))
        try:
            yield self
        finally:
            for owner, name, original in originals:
                setattr(owner, name, original)


def run_case(case: Case, *, home: Path, cache: object) -> tuple[float, dict[str, float], dict, dict]:
    """One job of `case` through the job runner in this process; (end-to-end s, phases, job row, record)."""
    from core.jobs.queue import JobQueue
    from core.jobs.refs import DataRef, ModelRef
    from core.jobs.runner import run_claimed_job
    from core.store import ExperimentStore

    queue = JobQueue(home=home)
    job_id = queue.submit(model=ModelRef.from_dict(case.model), data=DataRef.from_dict(case.data), spec=case.spec,
                          options=case.options)
    job = queue.claim(job_id=job_id)
    timer = PhaseTimer()
    start = time.perf_counter()
    with timer.installed():
        run_claimed_job(queue=queue, job=job, cache=cache)
    total = time.perf_counter() - start
    done = queue.get(job_id=job_id)
    if done.state != "done":
        raise SystemExit(f"{case.name}: job {done.state}: {done.error}")
    record = ExperimentStore(home).get(done.experiment_id)
    return total, timer.seconds, done.phase_seconds or {}, record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the fashion_resnet 2,000-image case")
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    args = parser.parse_args(argv)

    from core.jobs.runner import WarmCache
    from core.progress import quiet_libraries

    quiet_libraries()
    cases = CASES[:1] if args.quick else CASES
    results = []
    with tempfile.TemporaryDirectory(prefix="loop_bench_") as tmp:
        os.environ.setdefault("COMPRESSION_STUDIO_TIMING_LOCK", str(Path(tmp) / "timing.lock"))
        cache = WarmCache()
        for case in cases:
            home = Path(tmp) / case.name.split()[0]
            cold, cold_phases, _, _ = run_case(case, home=home, cache=cache)
            warm, phases, job_phases, record = run_case(case, home=home, cache=cache)
            results.append({"case": case.name, "target_s": case.target_seconds, "cold_s": cold, "warm_s": warm,
                            "phases_warm": phases, "phases_cold": cold_phases, "job_phase_seconds": job_phases,
                            "eval_images": record.get("eval_images"), "timing_exclusive": record.get("timing_exclusive"),
                            "latency_ratio": record.get("latency_ratio")})
            _print_case(results[-1])
    print("\nLoop targets (warm worker, end to end):")
    for r in results:
        verdict = "met" if r["warm_s"] <= r["target_s"] else "MISSED"
        print(f"  {r['case']:<48} target ≤ {r['target_s']:>4.0f} s   measured {r['warm_s']:6.1f} s "
              f"(cold {r['cold_s']:.1f} s)   {verdict}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _print_case(result: dict) -> None:
    print(f"\n{result['case']} ({result['eval_images']:,} images; timing exclusive: {result['timing_exclusive']})")
    warm, cold = result["phases_warm"], result["phases_cold"]
    print(f"  {'phase':<15}{'cold':>10}{'warm':>10}")
    for phase in PHASES:
        print(f"  {phase:<15}{fmt_seconds(cold[phase]):>10}{fmt_seconds(warm[phase]):>10}")
    other_cold = result["cold_s"] - sum(cold.values())
    other_warm = result["warm_s"] - sum(warm.values())
    print(f"  {'other':<15}{fmt_seconds(other_cold):>10}{fmt_seconds(other_warm):>10}")
    print(f"  {'end to end':<15}{fmt_seconds(result['cold_s']):>10}{fmt_seconds(result['warm_s']):>10}")


if __name__ == "__main__":
    raise SystemExit(main())
