"""Program files (TorchScript, torch.export .pt2): load and probe them in a separate process with limits.

``torch.jit.load`` runs code from the file (a scripted ``__setstate__`` runs on load) and probing the input
shape runs ``forward``; ``torch.export.load`` unpickles parts of a .pt2 (weights flagged ``use_pickle`` and
custom-object constants go through ``torch.load(weights_only=False)`` / ``pickle.loads``). Loading and a first
forward happen in a child process (``python -m core.models.torchscript_probe``)
whose address space is capped with ``RLIMIT_AS`` and which is killed after a time limit; only a file that
passed there is loaded into the app's own process. This stops files that loop forever or allocate huge
amounts of memory by accident or on purpose (the memory cap needs Linux; elsewhere only the time limit
applies); it is not a full sandbox (the child can still read files, and the file runs again in the app),
which is why program uploads (TorchScript and .pt2 alike) can be turned off (``COMPRESSION_STUDIO_ALLOW_TORCHSCRIPT``)
and are off by default when the dashboard listens beyond localhost.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.formatting import fmt_bytes
from core.models.errors import ModelLoadError
from core.models.output_check import describe_output
from core.models.state_dicts import nonfinite_tensors

ALLOW_ENV = "COMPRESSION_STUDIO_ALLOW_TORCHSCRIPT"
PROBE_SHAPES: tuple[tuple[int, int, int], ...] = ((1, 28, 28), (3, 224, 224), (3, 32, 32), (1, 32, 32))
_PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_TRUST = "A TorchScript file is a program: upload only files you trust, or the weights as a .safetensors state_dict."


def torchscript_uploads_allowed(server_address: str | None) -> bool:
    """Whether TorchScript files may be loaded.

    ``COMPRESSION_STUDIO_ALLOW_TORCHSCRIPT`` decides when set (1/true/yes/on or 0/false/no/off; anything else
    counts as off). Unset: allowed for library and CLI use (``server_address=None``) and for a dashboard that
    listens on localhost only; off when it listens beyond (any other address, or "" / "0.0.0.0" / "::" = all
    interfaces). A page passes ``st.get_option("server.address") or "0.0.0.0"`` (Streamlit's unset address
    means every interface).
    """
    value = os.environ.get(ALLOW_ENV, "").strip().lower()
    if value:
        return value in _TRUE
    return server_address is None or _is_loopback(server_address)


def torchscript_disabled_message() -> str:
    value = os.environ.get(ALLOW_ENV, "").strip()
    if value and value.lower() not in _TRUE:
        why = f"{ALLOW_ENV}={value}"
    else:
        why = "the dashboard is reachable from other machines"
    return (
        f"TorchScript uploads are turned off ({why}): a TorchScript file is a program that runs on this server. "
        f"Upload the weights as a state_dict (.safetensors or .pt) for a listed architecture, or set {ALLOW_ENV}=1 "
        "if everyone who can reach this dashboard is trusted."
    )


def _is_loopback(address: str) -> bool:
    address = address.strip().strip("[]")
    if address.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # another host name, or "": listening beyond this machine


@dataclass(frozen=True)
class ProbeLimits:
    """Limits for the child process. `memory_bytes` is address space beyond what importing torch takes."""

    timeout_s: float = 90.0
    memory_bytes: int = 4_000_000_000

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"ProbeLimits.timeout_s must be positive, got {self.timeout_s}")
        if self.memory_bytes <= 0:
            raise ValueError(f"ProbeLimits.memory_bytes must be positive, got {self.memory_bytes}")


@dataclass(frozen=True)
class ProbeResult:
    input_shape: tuple[int, int, int]
    num_classes: int
    batch: int | None = None  # a torch.export program's fixed batch size; None: any batch


PROGRAM_KINDS = ("torchscript", "exported")


def inspect_module(module: nn.Module, name: str) -> ProbeResult:
    """Check a loaded TorchScript module: finite weights, one known input shape, an N×classes score output."""
    bad = nonfinite_tensors(module.state_dict())
    if bad:
        raise ModelLoadError(
            f"{name} has NaN or infinite values in {len(bad)} tensor(s): {', '.join(bad[:5])}{' …' if len(bad) > 5 else ''}. "
            "The weights are corrupt or training diverged; export the model from a healthy checkpoint."
        )
    module.eval()
    outputs: list[str] = []
    for shape in PROBE_SHAPES:
        try:
            with torch.inference_mode():
                out = module(torch.zeros(2, *shape))
        except Exception:
            continue
        if _is_scores(out, 2):
            return ProbeResult(input_shape=shape, num_classes=int(out.shape[1]))
        outputs.append(f"given 2 images of {'×'.join(map(str, shape))} it returned {describe_output(out)}")
    if outputs:
        raise ModelLoadError(_not_scores(name, outputs[0], more=len(outputs) > 1))
    raise ModelLoadError(
        f"{name} did not accept any known input ({', '.join('×'.join(map(str, s)) for s in PROBE_SHAPES)}, batch of 2); "
        "export a model that takes an N×C×H×W image batch."
    )


def _is_scores(out: object, batch: int) -> bool:
    return (isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[0] == batch and out.shape[1] >= 2
            and out.is_floating_point())


def _not_scores(name: str, what: str, *, more: bool = False) -> str:
    return (
        f"{name} does not return class scores: {what}{' (other input sizes: likewise)' if more else ''}. "
        "This app compresses classifiers whose forward returns one row of scores per image (N×classes); "
        "export the model with its classification head."
    )


def exported_input_shape(program: torch.export.ExportedProgram, name: str) -> tuple[tuple[int, int, int], int | None]:
    """(C, H, W) of the program's one image input, and its batch size when fixed (None: a dynamic batch)."""
    user_inputs = list(program.graph_signature.user_inputs)
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    values = [placeholders[i].meta.get("val") for i in user_inputs if i in placeholders]
    if len(values) != 1 or not isinstance(values[0], torch.Tensor) or values[0].ndim != 4:
        described = ", ".join(f"{tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__ for v in values)
        raise ModelLoadError(
            f"{name} takes {len(values)} input(s) ({described or 'none'}); this app needs a program with one "
            "N×C×H×W image input. Export the model with a single image batch as its example input."
        )
    dims = tuple(values[0].shape)
    if not all(isinstance(d, int) for d in dims[1:]):
        raise ModelLoadError(
            f"{name} has a dynamic image size ({'×'.join(map(str, dims[1:]))}); export it with a fixed C×H×W "
            "(only the batch dimension may be dynamic)."
        )
    batch = dims[0] if isinstance(dims[0], int) else None
    return (int(dims[1]), int(dims[2]), int(dims[3])), batch


def inspect_program(program: object, name: str) -> ProbeResult:
    """Check a loaded torch.export program: one N×C×H×W image input (its spec says the shape exactly), finite
    weights, an N×classes score output."""
    if not isinstance(program, torch.export.ExportedProgram):
        raise ModelLoadError(f"{name} is not a torch.export program (it holds a {type(program).__name__}).")
    shape, batch = exported_input_shape(program, name)
    bad = nonfinite_tensors(dict(program.state_dict))
    if bad:
        raise ModelLoadError(
            f"{name} has NaN or infinite values in {len(bad)} tensor(s): {', '.join(bad[:5])}{' …' if len(bad) > 5 else ''}. "
            "The weights are corrupt or training diverged; export the model from a healthy checkpoint."
        )
    n = batch or 2
    with torch.inference_mode():
        out = program.module()(torch.zeros(n, *shape))
    problem = scores_problem(out, batch=n, shape=shape, name=name)
    if problem:
        raise ModelLoadError(problem)
    return ProbeResult(input_shape=shape, num_classes=int(out.shape[1]), batch=batch)


def scores_problem(out: object, *, batch: int, shape: tuple[int, ...], name: str) -> str | None:
    """None when `out` is an N×classes score tensor for a batch of `batch` images, else the refusal."""
    if _is_scores(out, batch):
        return None
    return _not_scores(name, f"given {batch} image(s) of {'×'.join(map(str, shape))} it returned {describe_output(out)}")


def probe_torchscript(path: Path, *, limits: ProbeLimits | None = None) -> ProbeResult:
    """Load and probe a TorchScript file in a child process under `limits`; raise ModelLoadError with a user message."""
    return probe_program(path, kind="torchscript", limits=limits)


def probe_program(path: Path, *, kind: str, limits: ProbeLimits | None = None) -> ProbeResult:
    """Load and probe a program file (`kind` "torchscript" or "exported") in a child process under `limits`."""
    if kind not in PROGRAM_KINDS:
        raise ValueError(f"probe_program: kind must be one of {', '.join(PROGRAM_KINDS)}; got {kind!r}")
    limits = limits or ProbeLimits()
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="cs_ts_probe_") as tmp:
        result_file, log_file = Path(tmp) / "result.json", Path(tmp) / "child.log"
        env = dict(os.environ)
        env.update(
            PYTHONPATH=os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p),
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            MALLOC_ARENA_MAX="2",  # glibc reserves 64 MB of address space per thread arena otherwise
            CUDA_VISIBLE_DEVICES="",
        )
        cmd = [sys.executable, "-m", "core.models.torchscript_probe", str(path.resolve()), str(result_file), str(limits.memory_bytes), kind]
        with open(log_file, "wb") as log:
            child = subprocess.Popen(
                cmd, cwd=_PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
            try:
                returncode = child.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                _kill(child)
                raise ModelLoadError(
                    f"{path.name} did not finish loading within {limits.timeout_s:.0f} s and was stopped: it may loop "
                    f"forever on load or in forward. {_TRUST}"
                ) from None
        result = _read_result(result_file)
        log_tail = log_file.read_text(errors="replace")[-2000:]
    if result.get("ok"):
        shape = tuple(int(v) for v in result["input_shape"])
        batch = result.get("batch")
        return ProbeResult(input_shape=(shape[0], shape[1], shape[2]), num_classes=int(result["num_classes"]),
                           batch=int(batch) if batch else None)
    if result.get("kind") == "memory" or (returncode != 0 and _looks_like_memory(log_tail)):
        raise ModelLoadError(
            f"{path.name} tried to use more than {fmt_bytes(limits.memory_bytes)} of memory while loading and was "
            f"stopped. {_TRUST}"
        )
    if result.get("error"):
        raise ModelLoadError(str(result["error"]))
    how = f"signal {signal.Signals(-returncode).name}" if returncode < 0 else f"exit status {returncode}"
    last = next((line for line in reversed(log_tail.splitlines()) if line.strip()), "")
    raise ModelLoadError(
        f"loading {path.name} crashed the loader process ({how}{'; ' + last[:200] if last else ''}). {_TRUST}"
    )


def _kill(child: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)  # the child leads its own session: nothing it started survives
    child.wait()


def _read_result(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _looks_like_memory(text: str) -> bool:
    return any(s in text for s in ("MemoryError", "bad_alloc", "can't allocate memory", "Cannot allocate memory"))


# --------------------------------------------------------------------------- child process


def _vm_size_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _limit_memory(extra_bytes: int) -> None:
    """Cap the address space at what torch already maps plus `extra_bytes` (Linux). Where the current size cannot
    be read (no /proc, e.g. macOS, which does not enforce RLIMIT_AS anyway) only the time limit applies."""
    baseline = _vm_size_bytes()
    if not baseline:
        return
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (baseline + extra_bytes, baseline + extra_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash must not leave a multi-GB core file
    except (ImportError, ValueError, OSError):
        return


def _load_and_inspect(model_path: str, kind: str, name: str) -> ProbeResult:
    if kind == "torchscript":
        return inspect_module(torch.jit.load(model_path, map_location="cpu"), name)
    try:
        program = torch.export.load(model_path)
    except MemoryError:
        raise
    except Exception as exc:
        text = str(exc).strip()
        if _looks_like_memory(text):
            raise MemoryError from None
        first = text.splitlines()[0][:160] if text else type(exc).__name__
        raise ModelLoadError(
            f"{name} is not a torch.export program ({first}). Save one with "
            "torch.export.save(torch.export.export(model, (example,)), 'model.pt2')."
        ) from None
    return inspect_program(program, name)


def _unloadable(name: str, kind: str, first: str) -> str:
    if kind == "exported":
        return (f"{name} failed to load or run as a torch.export program ({first}). Export it again with "
                "torch.export.export on this PyTorch version and save it with torch.export.save.")
    return (f"{name} is not a loadable TorchScript model ({first}). A file saved with torch.save(model) is "
            "a pickle and is refused; export with torch.jit.script/trace + save.")


def _child_main(model_path: str, result_path: str, memory_bytes: int, kind: str = "torchscript") -> int:
    torch.set_num_threads(1)
    _limit_memory(memory_bytes)
    name = Path(model_path).name
    try:
        probe = _load_and_inspect(model_path, kind, name)
        result: dict = {"ok": True, "input_shape": list(probe.input_shape), "num_classes": probe.num_classes,
                        "batch": probe.batch}
    except ModelLoadError as exc:
        result = {"ok": False, "error": str(exc)}
    except MemoryError:
        result = {"ok": False, "kind": "memory"}
    except Exception as exc:
        text = str(exc).strip()
        if _looks_like_memory(text):
            result = {"ok": False, "kind": "memory"}
        else:
            first = text.splitlines()[0][:200] if text else type(exc).__name__
            result = {"ok": False, "error": _unloadable(name, kind, first)}
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:5]))
