"""The model zoo: architectures × routes × methods, each cell a real `core.cli run` in its own process.

    python -m bench.zoo                      # the full matrix (hours on 2 cores)
    python -m bench.zoo --quick              # a smaller matrix that covers every family, route and method
    python -m bench.zoo --archs torchvision:resnet18 --routes module exported --methods pal4
    python -m bench.zoo --report a.csv b.csv   # the tables and targets of runs already written (e.g. two halves)

Each cell is one `python -m core.cli run --no-save --no-latency` child process, so a crash, a hang or a memory
blow-up of one cell is seen as such (exit status, traceback on stderr, time limit) and cannot take the others
down; its peak memory is the child's maximum resident set (``wait4``). The graph-form files (TorchScript, a
``torch.export`` .pt2 program, ONNX) are written once per architecture, from the same random-weights model the
module route loads, so every route compresses the same weights.

Outcomes: ``ok`` (exit 0, or 1 when the run completed but its artifact's weights mismatch), ``refused`` (exit 2
with a one-line reason), ``crash`` (any other exit, a traceback, or the time limit). The weight-only methods are expected to apply on every route and W8A8 / PyTorch int8 wherever a
graph can be captured, so a refusal there counts as a failure; only a TorchScript file, or a graph whose shapes
are computed from tensor values (the refusal names the node), may refuse those two. Targets (printed with met /
not met): no crash; at least 95 % of the cells where the method applies (= not refused) are ok; every artifact within 5 % of its theoretical
size or the difference named in the record; ``artifact_weights_match`` true wherever an artifact was written.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from bench.tables import format_table, write_csv
from core.formatting import fmt_bytes
from core.measure.machine import cpu_flags, cpu_model

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# At least 20 architectures across families; the timm ones use timm's own definitions.
ARCHITECTURES: tuple[str, ...] = (
    "torchvision:resnet18",
    "torchvision:resnet50",
    "torchvision:mobilenet_v2",
    "torchvision:mobilenet_v3_large",
    "torchvision:efficientnet_b0",
    "torchvision:regnet_y_400mf",
    "torchvision:shufflenet_v2_x1_0",
    "torchvision:densenet121",
    "torchvision:convnext_tiny",
    "torchvision:vit_b_16",
    "torchvision:swin_t",
    "torchvision:squeezenet1_1",
    "torchvision:googlenet",
    "torchvision:inception_v3",
    "torchvision:mnasnet1_0",
    "torchvision:resnext50_32x4d",
    "timm:resnet10t",
    "timm:mobilenetv3_small_100",
    "timm:efficientnet_b0",
    "timm:convnext_atto",
    "timm:deit_tiny_patch16_224",
    "timm:regnetx_002",
)
QUICK_ARCHITECTURES: tuple[str, ...] = (
    "torchvision:resnet18",
    "torchvision:mobilenet_v3_large",
    "torchvision:efficientnet_b0",
    "torchvision:shufflenet_v2_x1_0",
    "timm:convnext_atto",
    "timm:deit_tiny_patch16_224",
)
ROUTES: tuple[str, ...] = ("module", "torchscript", "exported", "onnx")
METHODS: dict[str, dict] = {
    "pal4": {"method": "palettize", "n_bits": 4},
    "int8w": {"method": "quantize_weights", "dtype": "int8"},
    "prune50": {"method": "prune", "target_sparsity": 0.5},
    "w8a8": {"method": "quantize_activations", "calibration_samples": 32},
    "int8": {"method": "torch_static", "calibration_samples": 32},
}
METHOD_LABELS = {
    "pal4": "palettize 4-bit",
    "int8w": "int8 weights",
    "prune50": "prune 50 %",
    "w8a8": "W8A8",
    "int8": "PyTorch int8",
}
OK, REFUSED, CRASH = "ok", "refused", "crash"
EXIT_TARGET_MISSED = 1  # the CLI's status for a run that completed with artifact_weights_match false
# Where a method is expected to apply: the weight-only methods on every route; activation quantization (W8A8,
# PyTorch int8) wherever a capturable graph exists — a TorchScript file may be refused it with a reason. A refusal
# in an expected cell counts against the target; an ok outside it counts as applicable too.
GRAPH_ONLY_REFUSABLE = {("torchscript", "w8a8"), ("torchscript", "int8")}
# An ONNX / converted graph whose shapes are computed from tensor values (ShuffleNet's channel shuffle, a ViT's patch
# grid exported with a dynamic batch) cannot be captured: the refusal names the node, and the cell is not applicable.
UNCAPTURABLE_GRAPH = "computes shapes from tensor values"
SIZE_TOLERANCE = 0.05
TARGET_OK_SHARE = 0.95


@dataclass(frozen=True)
class Cell:
    arch: str
    route: str
    method: str


# --------------------------------------------------------------------------- graph-form files


def write_route_files(arch: str, workdir: Path) -> dict[str, str]:
    """route → model source id for `arch`; the graph forms are written from the module route's model.

    A form that cannot be written (an architecture torch.jit.trace / torch.export / the ONNX exporter cannot
    capture) maps to an error string starting with "!" — the bench reports it as that route's outcome."""
    import torch

    from core.models.sources import load_model

    sources = {"module": arch}
    model = load_model(arch)
    module = model.module.eval()
    example = torch.randn(2, *model.input_shape, generator=torch.Generator().manual_seed(0))
    stem = arch.replace(":", "_")
    writers = {
        "torchscript": (workdir / f"{stem}.pt", lambda p: torch.jit.save(torch.jit.trace(module, example, check_trace=False), str(p))),
        "exported": (workdir / f"{stem}.pt2", lambda p: torch.export.save(
            torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},)), str(p))),
        "onnx": (workdir / f"{stem}.onnx", lambda p: torch.onnx.export(
            module, (example,), str(p), input_names=["input"], output_names=["logits"], opset_version=17, dynamo=False,
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})),
    }
    prefixes = {"torchscript": "torchscript", "exported": "export", "onnx": "onnx"}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    for route, (path, write) in writers.items():
        # The ONNX exporter has no symbolic for MultiheadAttention's fused inference kernel (a ViT exported under
        # no_grad fails), so that file is written as a user would have to; the TorchScript file keeps the fused call.
        torch.backends.mha.set_fastpath_enabled(fastpath and route != "onnx")
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                write(path)
            sources[route] = f"{prefixes[route]}:{path}"
        except Exception as exc:  # the form itself could not be written: that route's cells say so
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            sources[route] = f"!could not write the {route} file: {first}"
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
    return sources


# --------------------------------------------------------------------------- one cell


def run_cell(cell: Cell, source: str, *, workdir: Path, timeout_s: float, eval_limit: int) -> dict:
    """Run one cell in a child process; outcome, seconds, peak memory and the record's size / match fields."""
    row = {"arch": cell.arch, "route": cell.route, "method": cell.method}
    if source.startswith("!"):
        return {**row, "outcome": REFUSED, "reason": source[1:], "seconds": 0.0}
    out = workdir / f"{cell.arch.replace(':', '_')}_{cell.route}_{cell.method}.json"
    cmd = [
        sys.executable, "-m", "core.cli", "run", "--model", source, "--spec", json.dumps(METHODS[cell.method]),
        "--no-save", "--no-latency", "--quiet", "--eval-limit", str(eval_limit), "--json", str(out),
    ]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                 env={**os.environ, "PYTHONWARNINGS": "ignore"})
        status, peak_kb = _wait(child, timeout_s)
        stderr.seek(0)
        err = stderr.read().decode(errors="replace")
    row.update(seconds=round(time.perf_counter() - started, 1), peak_memory_bytes=peak_kb * 1024)
    if status is None:
        return {**row, "outcome": CRASH, "reason": f"time limit {timeout_s:.0f} s"}
    if status in (0, EXIT_TARGET_MISSED) and out.is_file():  # 1: ran, but the artifact's weights mismatch
        return {**row, "outcome": OK, **_record_fields(json.loads(out.read_text()))}
    last = next((line for line in reversed(err.strip().splitlines()) if line.strip()), f"exit status {status}")
    if status == 2 and "Traceback" not in err:
        return {**row, "outcome": REFUSED, "reason": last.strip()[:400]}
    return {**row, "outcome": CRASH, "reason": f"exit status {status}: {last.strip()[:300]}"}


def _wait(child: subprocess.Popen, timeout_s: float) -> tuple[int | None, int]:
    """(exit status or None on timeout, peak resident KB of the child with every process it started).

    The child's own maximum comes from ``wait4``; k-means and the loaders may start worker processes, so the sum
    over the process tree is sampled every 0.2 s too and the larger of the two is the peak."""
    deadline = time.monotonic() + timeout_s
    peak_tree_kb = 0
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            return child.returncode, max(int(usage.ru_maxrss), peak_tree_kb)
        if time.monotonic() > deadline:
            child.kill()
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = -9
            return None, max(int(usage.ru_maxrss), peak_tree_kb)
        peak_tree_kb = max(peak_tree_kb, _tree_rss_kb(child.pid))
        time.sleep(0.2)


def _tree_rss_kb(root: int) -> int:
    """Resident KB of `root` and its descendants (Linux /proc; 0 where it cannot be read)."""
    total, todo = 0, [root]
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    while todo:
        pid = todo.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page_kb
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


def _record_fields(record: dict) -> dict:
    artifact, theory = record.get("size_bytes"), record.get("theoretical_size_bytes")
    check = record.get("size_check") or {}
    return {
        "size_bytes": artifact,
        "theoretical_size_bytes": theory,
        "artifact_over_theory": round(artifact / theory, 3) if artifact and theory else None,
        "size_note": check.get("note") if isinstance(check, dict) else None,
        "artifact_weights_match": record.get("artifact_weights_match"),
        "artifact_kind": record.get("artifact_kind"),
    }


# --------------------------------------------------------------------------- the matrix


def run_matrix(*, archs: list[str], routes: list[str], methods: list[str], timeout_s: float, eval_limit: int,
               workdir: Path, progress: bool = True, partial_csv: Path | None = None) -> list[dict]:
    """Every cell in order; with `partial_csv`, the rows so far are written after each cell (a long run that is
    stopped keeps what it measured)."""
    from tqdm import tqdm

    rows: list[dict] = []
    bar = tqdm(total=len(archs) * len(routes) * len(methods), disable=not progress, unit="cell", dynamic_ncols=True)
    for arch in archs:
        bar.set_description(f"{arch}: writing graph forms")
        try:
            sources = write_route_files(arch, workdir)
        except Exception as exc:  # the architecture itself does not load: every cell of it says so
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            sources = dict.fromkeys(ROUTES, f"!{arch} did not load: {first}")
        for route in routes:
            for method in methods:
                bar.set_description(f"{arch} · {route} · {METHOD_LABELS[method]}")
                rows.append(run_cell(Cell(arch, route, method), sources[route], workdir=workdir, timeout_s=timeout_s,
                                     eval_limit=eval_limit))
                if partial_csv is not None:
                    write_csv(partial_csv, rows)
                bar.update(1)
    bar.close()
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """The targets, each with its measured value and met / not met."""
    crashes = [r for r in rows if r["outcome"] == CRASH]
    applicable = [r for r in rows if r["outcome"] != REFUSED or not _refusable(r)]
    ok = [r for r in applicable if r["outcome"] == OK]
    sized = [r for r in ok if r.get("artifact_over_theory") is not None]
    off_size = [r for r in sized if abs(r["artifact_over_theory"] - 1) > SIZE_TOLERANCE and not r.get("size_note")]
    matched = [r for r in ok if r.get("artifact_weights_match") is not None]
    mismatched = [r for r in matched if not r["artifact_weights_match"]]
    share = len(ok) / len(applicable) if applicable else 1.0
    return [
        {"target": "no crash or traceback", "measured": f"{len(crashes)} of {len(rows)} cells", "met": not crashes},
        {"target": f"≥ {TARGET_OK_SHARE:.0%} of applicable cells ok", "measured": f"{len(ok)} of {len(applicable)} ({share:.1%})",
         "met": share >= TARGET_OK_SHARE},
        {"target": "artifact within 5 % of theory (or named)", "measured": f"{len(off_size)} of {len(sized)} off, unexplained",
         "met": not off_size},
        {"target": "artifact_weights_match true", "measured": f"{len(mismatched)} of {len(matched)} mismatched",
         "met": not mismatched and bool(matched)},
    ]


def _refusable(row: dict) -> bool:
    """A refusal the method's reach allows: activation quantization of a TorchScript file or of a graph that
    cannot be captured (its reason names the node)."""
    if (row["route"], row["method"]) in GRAPH_ONLY_REFUSABLE:
        return True
    return row["method"] in ("w8a8", "int8") and UNCAPTURABLE_GRAPH in (row.get("reason") or "")


def print_tables(rows: list[dict]) -> None:
    flags = [f for f in cpu_flags() if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")]
    print(f"\nCPU: {cpu_model()} · {os.cpu_count()} cores · features: {', '.join(flags) or 'none of avx2/avx512/amx'}")
    cells = [
        {
            "arch": r["arch"], "route": r["route"], "method": METHOD_LABELS[r["method"]], "outcome": r["outcome"],
            "seconds": f"{r['seconds']:.1f}", "peak": fmt_bytes(r["peak_memory_bytes"]) if r.get("peak_memory_bytes") else "",
            "ratio": f"{r['artifact_over_theory']:.3f}" if r.get("artifact_over_theory") else "",
            "match": {True: "yes", False: "NO", None: ""}[r.get("artifact_weights_match")],
            "reason": (r.get("reason") or "")[:150],
        }
        for r in rows
    ]
    print(format_table(cells, [("arch", "architecture"), ("route", "route"), ("method", "method"), ("outcome", "outcome"),
                               ("seconds", "s"), ("peak", "peak memory"), ("ratio", "artifact ÷ theory"),
                               ("match", "weights match"), ("reason", "reason")], title="Model zoo"))
    targets = [{**t, "met": "met" if t["met"] else "NOT MET"} for t in summarize(rows)]
    print()
    print(format_table(targets, [("target", "target"), ("measured", "measured"), ("met", "")], title="Targets"))


def read_rows(paths: list[Path]) -> list[dict]:
    """Rows written by earlier runs (`--out`), typed back, so several partial runs report as one matrix; where a
    cell appears in more than one file, the later file's row counts (a rerun after a fix)."""
    import csv

    def typed(row: dict) -> dict:
        out = {k: (v if v != "" else None) for k, v in row.items()}
        out["seconds"] = float(out.get("seconds") or 0.0)
        for key in ("peak_memory_bytes", "size_bytes", "theoretical_size_bytes"):
            out[key] = int(out[key]) if out.get(key) else None
        out["artifact_over_theory"] = float(out["artifact_over_theory"]) if out.get("artifact_over_theory") else None
        out["artifact_weights_match"] = {"True": True, "False": False}.get(out.get("artifact_weights_match") or "")
        return out

    cells: dict[tuple[str, str, str], dict] = {}
    for path in paths:  # a cell measured again in a later file replaces its earlier row
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                cells.pop((row["arch"], row["route"], row["method"]), None)
                cells[(row["arch"], row["route"], row["method"])] = typed(row)
    return list(cells.values())


def print_compact(rows: list[dict]) -> None:
    """One line per architecture: per route, one mark per method (✓ ok, R refused, C crash, · not run), then the
    architecture's slowest cell and largest peak memory — the whole matrix on one screen."""
    marks = {OK: "✓", REFUSED: "R", CRASH: "C"}
    cells = {(r["arch"], r["route"], r["method"]): r for r in rows}
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    table = []
    for arch in archs:
        mine = [r for r in rows if r["arch"] == arch]
        line = {"arch": arch}
        for route in ROUTES:
            line[route] = "".join(marks.get(cells.get((arch, route, m), {}).get("outcome"), "·") for m in METHODS)
        line["slowest"] = f"{max(r['seconds'] for r in mine):.0f} s"
        peaks = [r["peak_memory_bytes"] for r in mine if r.get("peak_memory_bytes")]
        line["peak"] = fmt_bytes(max(peaks)) if peaks else ""
        table.append(line)
    legend = " / ".join(METHOD_LABELS[m] for m in METHODS)
    print(format_table(table, [("arch", "architecture"), *[(r, r) for r in ROUTES], ("slowest", "slowest cell"),
                               ("peak", "largest peak")], title=f"Model zoo, compact (each route: {legend})"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.zoo", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{len(QUICK_ARCHITECTURES)} architectures instead of {len(ARCHITECTURES)}")
    parser.add_argument("--archs", nargs="+", help="model source ids (torchvision:…, timm:…)")
    parser.add_argument("--routes", nargs="+", choices=ROUTES, default=list(ROUTES))
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one cell may take (default 900)")
    parser.add_argument("--eval-limit", type=int, default=64, help="evaluation images per cell (default 64)")
    parser.add_argument("--out", default=str(PROJECT_ROOT / "bench" / "results" / "zoo.csv"))
    parser.add_argument("--report", nargs="+", type=Path, metavar="CSV",
                        help="print the tables and targets of CSVs written by earlier runs instead of running cells")
    args = parser.parse_args(argv)
    if args.report:
        rows = read_rows(args.report)
        print_tables(rows)
        print()
        print_compact(rows)
        return 0 if all(t["met"] for t in summarize(rows)) else 1
    archs = args.archs or list(QUICK_ARCHITECTURES if args.quick else ARCHITECTURES)
    with tempfile.TemporaryDirectory(prefix="cs_zoo_") as tmp:
        rows = run_matrix(archs=archs, routes=args.routes, methods=args.methods, timeout_s=args.timeout,
                          eval_limit=args.eval_limit, workdir=Path(tmp), partial_csv=Path(args.out))
    print_tables(rows)
    print(f"\nCSV: {write_csv(Path(args.out), rows)}")
    return 0 if all(t["met"] for t in summarize(rows)) else 1


if __name__ == "__main__":
    sys.exit(main())
