"""Which compression methods and workflows apply to a loaded model, and one reason for each that does not.

The engine (``compress._check_inputs``), the explore tools, the Model page's model card and the CLI all ask here,
so a refusal reads the same everywhere. Python models (``form`` "module") take every method. Graph forms — a
torch.export program, a TorchScript file, an ONNX file — are lifted to real Conv2d / Linear layers
(core.models.graph_forms); what then runs on them was measured on lifted graphs and is recorded in the tables
below, so a method that starts working on a form is switched on in one place.
"""

from __future__ import annotations

import pandas as pd
from torch import nn

from core.compress.registry import METHODS, PIPELINE
from core.models.sources import LoadedModel
from core.specs import AnySpec, PipelineSpec

GRAPH_FIX = "export it with torch.export (.pt2), or upload a state_dict for a listed architecture"
PT2E_PENDING = "(PT2E path pending)"

# Methods that cannot run on a lifted graph of a form, with the reason. Measured on lifted graphs (the Fashion-MNIST
# samples, resnet18, mobilenet_v3_small as .pt2): every method ran, with outputs equal to the Python model's for the
# weight-only methods and torch_dynamic and within 0.4 % top-1 agreement for W8A8 and torch_static (FX), so no
# method is refused today. A method a form cannot run goes here, e.g. {"torch_static": f"… {PT2E_PENDING}"}.
GRAPH_METHOD_REFUSALS: dict[str, dict[str, str]] = {"exported": {}, "torchscript": {}, "onnx": {}}

# Fine-tuning (DKM, QAT, gradual pruning) on lifted graphs gave outputs identical to the Python model's (BatchNorm
# and Dropout are lifted to modules too, so train() / eval() behave the same). Where such a call stays in the graph,
# it is fixed in inference mode and fine-tuning is refused with this reason.
_FROZEN_TRAINING = (
    "{n} BatchNorm / Dropout call(s) of this graph (first: {first}) stay fixed in inference mode, so fine-tuning "
    "(DKM, QAT, gradual pruning) would not train the model as it was trained; use the data-free or calibration "
    "workflow, or upload a state_dict for a listed architecture"
)

FORM_WORDS = {"module": "Python model", "torchscript": "TorchScript file", "exported": "torch.export program",
              "onnx": "ONNX model"}


def graph_unavailable_reason(*, model: LoadedModel) -> str | None:
    """Why no method can run on this model at all (a graph that could not be lifted), else None."""
    if model.is_torchscript:
        error = model.manifest.get("graph_error") or "it could not be converted to a graph of real layers"
        return (f"this TorchScript file stays a TorchScript module — {error} — so coremltools.optimize.torch and "
                f"torch.ao cannot find its Conv/Linear layers; {GRAPH_FIX}")
    if model.form != "module" and not any(isinstance(m, nn.Conv2d | nn.Linear) for m in model.module.modules()):
        unlifted = model.manifest.get("lifting", {}).get("unlifted") or []
        why = f" (first: {unlifted[0]['node']}: {unlifted[0]['reason']})" if unlifted else ""
        return f"none of this {FORM_WORDS.get(model.form, model.form)}'s convolution / linear calls could be lifted to layers{why}"
    return None


def _sliced_reason(model: LoadedModel) -> str | None:
    """Why torch.fx-traced flows cannot run on a program evaluated in slices of its baked batch size."""
    from core.models.graph_forms import FixedBatchGraph

    if not isinstance(model.module, FixedBatchGraph):
        return None
    return (f"this program has its export batch size ({model.module.batch}) baked into its reshapes, so it runs in "
            "slices of that size, which torch.fx cannot trace; re-export it with a dynamic batch: torch.export.export("
            "model, (x,), dynamic_shapes=({0: torch.export.Dim('batch')},))")


# Methods (and workflows) that trace the model with torch.fx: W8A8 and torch_static; QAT / DKM fine-tuning.
_FX_TRACED = ("quantize_activations", "torch_static")


def method_availability(*, model: LoadedModel) -> dict[str, str | None]:
    """Every method (and "pipeline") → None when it applies to `model`, else the reason it does not."""
    blocked = graph_unavailable_reason(model=model)
    sliced = _sliced_reason(model)
    refusals = {**GRAPH_METHOD_REFUSALS.get(model.form, {}), **dict.fromkeys(_FX_TRACED if sliced else (), sliced)}
    result: dict[str, str | None] = {}
    for method in [*METHODS, PIPELINE]:
        result[method] = blocked or refusals.get(method)
    return result


def workflow_availability(*, model: LoadedModel) -> dict[str, str | None]:
    """Each workflow (data_free / calibration / fine_tune) → None when it can run on `model`, else the reason."""
    blocked = graph_unavailable_reason(model=model)
    frozen = model.manifest.get("lifting", {}).get("frozen") or []
    fine_tune = _FROZEN_TRAINING.format(n=len(frozen), first=frozen[0]) if frozen else _sliced_reason(model)
    return {"data_free": blocked, "calibration": blocked, "fine_tune": blocked or fine_tune}


def spec_refusal(*, model: LoadedModel, spec: AnySpec) -> str | None:
    """One line saying why `spec` cannot run on `model`, or None when it can."""
    steps = spec.steps if isinstance(spec, PipelineSpec) else (spec,)
    methods = method_availability(model=model)
    workflows = workflow_availability(model=model)
    for step in steps:
        reason = methods.get(step.method)
        if reason:
            return f"{step.method} cannot run on this {FORM_WORDS.get(model.form, model.form)}: {reason}."
        reason = workflows.get(step.workflow)
        if reason:
            return f"{step.method} ({step.workflow}) cannot run on this {FORM_WORDS.get(model.form, model.form)}: {reason}."
    return None


def unlifted_notes(*, model: LoadedModel) -> list[str]:
    """One note per weight-bearing graph call that stayed a function call (so its weights stay uncompressed)."""
    unlifted = model.manifest.get("lifting", {}).get("unlifted") or []
    return [f"not compressed: graph call {u['node']} ({u['op']}) stays a function call — {u['reason']}" for u in unlifted]


def applicability_table(*, model: LoadedModel) -> pd.DataFrame:
    """The model card's table: one row per method and per workflow — applies or not, and why not."""
    from core.compress.registry import method_label

    rows = [{"Method or workflow": method_label(m), "Applies": "yes" if r is None else "no", "Why not": r or ""}
            for m, r in method_availability(model=model).items()]
    rows += [{"Method or workflow": f"{w.replace('_', '-')} workflow", "Applies": "yes" if r is None else "no",
              "Why not": r or ""} for w, r in workflow_availability(model=model).items()]
    return pd.DataFrame(rows, columns=["Method or workflow", "Applies", "Why not"])


def lifting_summary(*, model: LoadedModel) -> str | None:
    """How a graph form became layers, in one line (None for Python models)."""
    if model.form == "module":
        return None
    if model.is_torchscript:
        return f"Kept as TorchScript: {model.manifest.get('graph_error', 'not converted')}."
    lifting = model.manifest.get("lifting", {})
    lifted, unlifted = lifting.get("lifted") or {}, lifting.get("unlifted") or []
    how = ("converted by onnx2torch (Conv → Conv2d, Gemm → Linear)" if model.form == "onnx"
           else f"{len(lifted)} convolution / linear call(s) lifted to real layers")
    text = f"{FORM_WORDS.get(model.form, model.form)}: {how}"
    if unlifted:
        first = unlifted[0]
        text += (f"; {len(unlifted)} weight-bearing call(s) stay graph functions and are not compressed "
                 f"(first: {first['node']}: {first['reason']})")
    if model.manifest.get("batch"):
        text += f"; exported with a fixed batch of {model.manifest['batch']}"
    return text + "."
