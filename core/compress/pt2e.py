"""Activation quantization (W8A8, PyTorch static int8) for models that arrive as graphs (torch.export programs,
lifted ONNX / TorchScript graphs) and for modules FX symbolic tracing cannot follow.

PyTorch's answer to this is PT2E (``prepare_pt2e`` / ``convert_pt2e`` on a ``torch.export`` capture, with a
``Quantizer``: coremltools' ``CoreMLQuantizer`` for W8A8, ``X86InductorQuantizer`` / ``XNNPACKQuantizer`` for CPU
int8). In this environment none of it can run: torch 2.10+ moved PT2E to the separate torchao package
(``torch.ao.quantization.quantize_pt2e`` and ``torch.ao.quantization.quantizer`` are gone from torch 2.14), and
coremltools 9.0's ``CoreMLQuantizer`` still imports the old torch module, so it fails even though its file ships.
``pt2e_unavailable_reason`` says exactly what is missing (the record's notes carry it).

What runs instead is the FX engine on a *module-level* view of the captured graph (``module_level_graph``): an
ATen-level ``fx.GraphModule`` (what ``torch.export.export(...).module()`` returns) has its conv / linear /
batch_norm calls turned into real ``nn.Conv*`` / ``nn.Linear`` / ``nn.BatchNorm*`` modules named after their
parameters, its activations and pools into nn modules, and the remaining elementwise ATen calls (add, mul,
flatten, cat, …) into the torch functions and operators FX quantization's patterns know. coremltools' LinearQuantizer and torch.ao's ``prepare_fx`` then fuse Conv+BN(+ReLU)
and quantize residual adds exactly as they do for the original Python module; an ATen op without such a mapping
stays a float op (FX leaves it unquantized, which is correct, only slower for int8).

The PT2E representation can be had without torchao (torch.ao's ``_convert_to_reference_decomposed_fx`` writes the
same quantized_decomposed Q/DQ ops) but does not pay off here. Measured on fashion_resnet, batch 1, 2 threads, on a
shared, loaded 2-core CPU (interleaved medians): inductor with freezing compiles it in 37–104 s, lowers no conv to
int8 (its qconv patterns match X86InductorQuantizer's graphs, not these) and runs it in 74 ms, against 34 ms fp32
eager, 24 ms fp32 inductor and 6.3 ms for FX int8 in eager mode; its ``torch.export.save`` file is fp32-sized
(9.8 MB vs 9.6 MB fp32 state_dict), and the FX int8 module cannot be re-exported (packed weights are opaque
TorchScript objects). So int8 stays FX ``convert_fx`` with a TorchScript artifact, W8A8 the .mlpackage from ct.convert
of the traced reference-quantized model (a torch.export of it fails: "quantized nyi in meta tensors").
"""

from __future__ import annotations

import importlib
import math
import operator
import re
import types
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from core.compress.context import CompressionContext, CompressionError
from core.library_internals import COREML_QUANTIZER_MODULE, AtenOpOverload, quantization_fx_graph

aten = torch.ops.aten

# Where prepare_pt2e / convert_pt2e lived (torch ≤ 2.9) and live (torchao, for torch ≥ 2.10): probed, not used.
_PT2E_MODULES = ("torch.ao.quantization.quantize_pt2e", "torchao.quantization.pt2e.quantize_pt2e")


@dataclass(frozen=True)
class EngineChoice:
    """What the FX quantizer is given instead of the module, and the note that says so."""

    module: nn.Module
    note: str  # one sentence for the record: which engine ran and why


# --------------------------------------------------------------------------- PT2E availability


def _import_error(module_name: str) -> str | None:
    """The exact import failure of `module_name` (None: it imports)."""
    try:
        importlib.import_module(module_name)
    except Exception as exc:  # ModuleNotFoundError, or an ImportError raised inside the module
        return f"{type(exc).__name__}: {exc}"
    return None


def pt2e_unavailable_reason() -> str | None:
    """Why PT2E (prepare_pt2e / convert_pt2e with CoreMLQuantizer) cannot run here; None when it can."""
    failures = [(name, _import_error(name)) for name in _PT2E_MODULES]
    if all(error for _name, error in failures):
        tried = "; ".join(f"{name} → {error}" for name, error in failures)
        return (
            f"PT2E is not available in torch {torch.__version__} without the torchao package ({tried}); "
            "quantized with the FX engine instead"
        )
    error = _import_error(COREML_QUANTIZER_MODULE)
    if error:
        return f"coremltools' CoreMLQuantizer does not import ({error}); quantized with the FX engine instead"
    return None


# --------------------------------------------------------------------------- ATen graph → module-level graph

# ATen activations and pools as the nn modules both quantizers' fusion patterns know best (coremltools' LinearQuantizer
# fuses Conv+BN+act only with F.relu or an activation *module*; torch.ao fuses nn.ReLU and keeps shared-qparams pools):
# overload → factory of the module from the call's constant arguments after the input.
_MODULES: dict = {
    aten.relu.default: lambda: nn.ReLU(), aten.relu_.default: lambda: nn.ReLU(),
    aten.relu6.default: lambda: nn.ReLU6(), aten.relu6_.default: lambda: nn.ReLU6(),
    aten.hardtanh.default: lambda low=-1.0, high=1.0: _hardtanh(low, high),
    aten.hardtanh_.default: lambda low=-1.0, high=1.0: _hardtanh(low, high),
    aten.hardswish.default: lambda: nn.Hardswish(), aten.hardswish_.default: lambda: nn.Hardswish(),
    aten.hardsigmoid.default: lambda: nn.Hardsigmoid(), aten.sigmoid.default: lambda: nn.Sigmoid(),
    aten.silu.default: lambda: nn.SiLU(), aten.silu_.default: lambda: nn.SiLU(),
    aten.max_pool2d.default: lambda kernel, stride=(), padding=0, dilation=1, ceil_mode=False: nn.MaxPool2d(
        kernel, stride or kernel, padding, dilation, ceil_mode=ceil_mode),
    aten.avg_pool2d.default: lambda kernel, stride=(), padding=0, ceil_mode=False, count_include_pad=True, divisor=None: (
        nn.AvgPool2d(kernel, stride or kernel, padding, ceil_mode, count_include_pad, divisor)),
    aten.adaptive_avg_pool2d.default: lambda size: nn.AdaptiveAvgPool2d(size),
}
# ATen overloads whose positional (and keyword) arguments the torch-level function takes unchanged.
_FUNCTIONS: dict = {
    aten.gelu.default: F.gelu, aten.flatten.using_ints: torch.flatten, aten.mean.dim: torch.mean,
    aten.cat.default: torch.cat, aten.view.default: torch.reshape, aten.reshape.default: torch.reshape,
    aten.clamp.default: torch.clamp, aten.dropout.default: F.dropout,  # dropout in training mode
}


def _hardtanh(low: float, high: float) -> nn.Module:
    """ReLU6 may export as hardtanh(0, 6); as nn.ReLU6 it fuses into the conv before it like the original module."""
    return nn.ReLU6() if (low, high) == (0.0, 6.0) else nn.Hardtanh(low, high)


# Binary ATen ops that are Python operators when they carry no `alpha`.
_OPERATORS: dict = {
    aten.add.Tensor: operator.add, aten.add_.Tensor: operator.add, aten.mul.Tensor: operator.mul,
    aten.mul_.Tensor: operator.mul,
}
_CONVS = {aten.conv1d.default: nn.Conv1d, aten.conv2d.default: nn.Conv2d, aten.conv3d.default: nn.Conv3d}
_BATCH_NORMS = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


def is_aten_graph(module: nn.Module) -> bool:
    """A GraphModule that calls ATen operators (a torch.export capture, or a graph lifted from one)."""
    if not isinstance(module, fx.GraphModule):
        return False
    return any(isinstance(node.target, AtenOpOverload) for node in module.graph.nodes)


def _fetch(root: nn.Module, node) -> torch.Tensor | None:
    """The tensor a get_attr node reads (None for a missing optional argument)."""
    if node is None:
        return None
    if not (isinstance(node, fx.Node) and node.op == "get_attr"):
        raise _NotLiftable
    return _attr(root, str(node.target))


def _attr(root: nn.Module, target: str):
    owner, _, name = target.rpartition(".")
    return getattr(root.get_submodule(owner), name)


class _NotLiftable(Exception):
    """A weighted ATen call whose weight is computed in the graph (kept as the ATen call)."""


def _rank(node) -> int | None:
    value = node.meta.get("val") if isinstance(node, fx.Node) else None
    return value.dim() if isinstance(value, torch.Tensor) else None


def _lift_conv(root: nn.Module, node: fx.Node) -> nn.Module:
    args = list(node.args) + [None] * (7 - len(node.args))
    _x, weight_node, bias_node, stride, padding, dilation, groups = args[:7]
    weight, bias = _fetch(root, weight_node), _fetch(root, bias_node)
    kind = _CONVS[node.target]
    conv = kind(
        weight.shape[1] * (groups or 1), weight.shape[0], tuple(weight.shape[2:]), stride=stride or 1,
        padding=padding if padding is not None else 0, dilation=dilation or 1, groups=groups or 1,
        bias=bias is not None, device="meta",
    )
    conv.weight = _as_parameter(weight)
    conv.bias = None if bias is None else _as_parameter(bias)
    return conv


def _lift_linear(root: nn.Module, node: fx.Node) -> nn.Module:
    weight = _fetch(root, node.args[1])
    bias = _fetch(root, node.args[2] if len(node.args) > 2 else None)
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    linear.weight = _as_parameter(weight)
    linear.bias = None if bias is None else _as_parameter(bias)
    return linear


def _lift_batch_norm(root: nn.Module, node: fx.Node) -> nn.Module:
    _x, weight_node, bias_node, mean_node, var_node, training, momentum, eps = node.args[:8]
    kind = _BATCH_NORMS.get(_rank(node.args[0]) or 0)
    if kind is None or training:
        raise _NotLiftable
    mean, var = _fetch(root, mean_node), _fetch(root, var_node)
    weight, bias = _fetch(root, weight_node), _fetch(root, bias_node)
    norm = kind(mean.numel(), eps=eps, momentum=momentum, affine=weight is not None)
    norm.running_mean, norm.running_var = mean, var
    if weight is not None:
        norm.weight, norm.bias = _as_parameter(weight), _as_parameter(bias)
    return norm


def _as_parameter(tensor: torch.Tensor) -> nn.Parameter:
    return tensor if isinstance(tensor, nn.Parameter) else nn.Parameter(tensor, requires_grad=False)


_LIFTERS: dict = {
    **dict.fromkeys(_CONVS, _lift_conv), aten.linear.default: _lift_linear, aten.batch_norm.default: _lift_batch_norm,
}


def module_level_graph(graph_module: fx.GraphModule, *, input_shape: tuple[int, ...] | None = None) -> fx.GraphModule:
    """A GraphModule computing the same function with Conv / Linear / BatchNorm as modules (named after their
    parameters: ``conv1.weight`` → module ``conv1``) and elementwise ATen calls as torch functions. The input is
    not modified; the new modules share its parameter tensors. Input guards of a torch.export capture are
    dropped (they re-check the example's shapes; the studio feeds the model's declared input shape), and sizes of
    non-batch input dimensions become that shape's (`input_shape`, without the batch) where the graph left them
    symbolic, so shape arithmetic is constant."""
    graph = fx.Graph()
    root: dict[str, object] = {}
    env: dict[fx.Node, fx.Node] = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_module" and node.target.startswith("_guards"):
            continue
        if node.op == "output":
            graph.output(_single_output(fx.map_arg(node.args[0], env.__getitem__)))
            break
        if _eval_dropout(node):  # identity; FX would observe its output again as a separate tensor
            env[node] = env[node.args[0]]
            continue
        if (size := _fixed_size(node, input_shape)) is not None:  # FX quantization would observe shape arithmetic as tensors
            env[node] = size
            continue
        lifted = _lifted_module(graph_module, node)
        if lifted is None and (lifted := _activation_module(node)) is not None:  # not a child's name either
            lifted = (_unique(lifted[0], {**dict(graph_module.named_children()), **root}), lifted[1])
        if lifted is not None:
            name, module = lifted
            name = _unique(name, root)
            root[name] = module
            env[node] = graph.call_module(name, (env[node.args[0]],))
            continue
        env[node] = graph.node_copy(node, env.__getitem__)
        _to_torch_level(env[node])
        if node.op in ("get_attr", "call_module"):
            root[str(node.target)] = _attr(graph_module, str(node.target))
    for node in [n for n in graph.nodes if n.op == "get_attr" and not n.users]:  # weights now held by modules
        graph.erase_node(node)
    used = {str(n.target) for n in graph.nodes if n.op in ("get_attr", "call_module")}
    arithmetic_only = {str(n.target) for n in graph.nodes if n.op == "get_attr" and n.users and all(
        _is_arithmetic(user) for user in n.users)}
    kept = {name: _at_least_1d(value) if name in arithmetic_only else value for name, value in root.items() if name in used}
    lifted_graph = fx.GraphModule(kept, graph)
    return lifted_graph.eval()  # the captured graph computed BatchNorm with running statistics


_ARITHMETIC = ("add", "sub", "rsub", "mul", "div", "true_divide", "pow")


def _is_arithmetic(node: fx.Node) -> bool:
    """An elementwise add / sub / mul / div / pow call (torch-level or ATen), whose operand may broadcast."""
    name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
    return node.op in ("call_function", "call_method") and name in _ARITHMETIC


def _at_least_1d(value: object) -> object:
    """A scalar float constant that only feeds arithmetic (an ONNX graph's GELU holds √2, 1 and 0.5 as 0-d
    initializers) as a 1-element vector: W8A8 quantizes the inputs of add / mul / div, constants included, and Core
    ML's converter cannot store a quantized 0-d constant ("Parameter 'data' needs to have at least rank 1").
    Broadcasting gives the same values; a constant other ops read (``fill_``'s value: Swin's mask) stays 0-d."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and value.is_floating_point():
        return value.reshape(1)
    return value


def _lifted_module(graph_module: fx.GraphModule, node: fx.Node) -> tuple[str, nn.Module] | None:
    """(module name, new module) for a conv / linear / batch_norm call on stored weights, else None."""
    lifter = _LIFTERS.get(node.target) if node.op == "call_function" else None
    if lifter is None or node.kwargs:
        return None
    try:
        module = lifter(graph_module, node)
    except _NotLiftable:
        return None
    weight_node = node.args[3] if node.target == aten.batch_norm.default and node.args[1] is None else node.args[1]
    return str(weight_node.target).rpartition(".")[0] or str(weight_node.target), module


def _fixed_size(node: fx.Node, input_shape: tuple[int, ...] | None) -> int | None:
    """The value of a ``sym_size`` of a non-batch dimension (the studio feeds the declared input shape), else None."""
    if node.op != "call_function" or node.target != aten.sym_size.int or len(node.args) != 2 or node.args[1] == 0:
        return None
    source, dim = node.args
    value = source.meta.get("val") if isinstance(source, fx.Node) else None
    size = value.shape[dim] if isinstance(value, torch.Tensor) else None
    if not isinstance(size, int) and input_shape and isinstance(source, fx.Node) and source.op == "placeholder":
        size = input_shape[dim - 1] if 0 < dim <= len(input_shape) else None
    return size if isinstance(size, int) else None


def _eval_dropout(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target == aten.dropout.default and len(node.args) > 2 and not node.args[2]


def _activation_module(node: fx.Node) -> tuple[str, nn.Module] | None:
    """(name, module) for an activation / pool call with constant arguments, else None."""
    factory = _MODULES.get(node.target) if node.op == "call_function" else None
    if factory is None or node.kwargs or len(node.all_input_nodes) != 1:
        return None  # an argument other than the input is computed in the graph
    return node.name, factory(*node.args[1:])


def _unique(name: str, taken: dict) -> str:
    """A weight used by two calls (shared layers) gets one module per call: conv, conv_1, …"""
    candidate, index = name, 0
    while candidate in taken:
        index += 1
        candidate = f"{name}_{index}"
    return candidate


# Shape arithmetic (a view's size: batch × channels …) as ``math.prod``, which FX tracing keeps as one call (it
# auto-wraps the math module); as ``operator.mul`` FX quantization would put an activation observer on the int.
_SCALAR_OPERATORS = {operator.mul: math.prod}


def _scalar_args(node: fx.Node) -> bool:
    """A call on shape values: its result, or an argument's, is a SymInt / int rather than a tensor."""
    values = [node.meta.get("val")] + [a.meta.get("val") for a in node.args if isinstance(a, fx.Node)]
    return any(isinstance(v, int | torch.SymInt) for v in values) or any(
        isinstance(a, fx.Node) and a.op == "call_function" and a.target in _SIZE_OPS for a in node.args)


_SIZE_OPS = {aten.sym_size.int, aten._local_scalar_dense.default, math.prod}


def _to_torch_level(node: fx.Node) -> None:
    if node.op != "call_function":
        return
    if node.target in _SCALAR_OPERATORS and not node.kwargs and _scalar_args(node):
        node.target, node.args = _SCALAR_OPERATORS[node.target], (tuple(node.args),)
    elif node.target in _FUNCTIONS:
        node.target = _FUNCTIONS[node.target]
    elif node.target in _OPERATORS and not node.kwargs:
        node.target = _OPERATORS[node.target]


def _single_output(value):
    """torch.export flattens outputs into a tuple; a model with one output returns that tensor again."""
    if isinstance(value, list | tuple) and len(value) == 1:
        return value[0]
    return value


# --------------------------------------------------------------------------- which engine quantizes this model


def captured(module: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """`module` captured by torch.export (strict=False, as the PT2E guide captures) as a module-level graph."""
    with torch.no_grad():
        program = torch.export.export(module.eval(), (example,), strict=False)
    return module_level_graph(program.module())


def graph_engine(module: nn.Module, *, context: CompressionContext) -> EngineChoice | None:
    """How a graph-form model is quantized: the FX quantizers on its module-level view (None: a Python module,
    which FX traces as it is). Switches `context.original` to the same view of the untouched input, so per-layer
    reports find its layers (and Conv→BatchNorm pairs) by the same names. A TorchScript file torch's converter
    turned into a graph is quantized like an exported program; one kept as a ScriptModule: CompressionError."""
    if context.model.is_torchscript or isinstance(module, torch.jit.ScriptModule):  # not converted to a graph
        raise CompressionError(
            "activation quantization cannot run on a TorchScript model: its graph cannot be re-captured for "
            "quantization. Export the model with torch.export (.pt2), or upload a state_dict for its architecture."
        )
    if not is_aten_graph(module):
        if context.model.form == "module":
            return None
        untraceable = _untraceable_node(module)
        if untraceable is not None:  # e.g. an ONNX Reshape whose target shape is computed from tensor values
            return _captured_graph(module, context=context, untraceable=untraceable)
        note = f"engine: FX graph mode on the {context.model.form} graph as loaded (its layers are modules already)"
        return EngineChoice(module, note)
    shape = context.model.input_shape
    if is_aten_graph(context.original):  # shares the input's tensors, changes nothing
        context.original = module_level_graph(context.original, input_shape=shape)
    view = module_level_graph(module, input_shape=shape)
    return EngineChoice(view, _graph_note(view, form=context.model.form))


def _untraceable_node(graph_module: nn.Module) -> tuple[str, str, str] | None:
    """(node, its module's class, FX's reason) for the first called module FX symbolic tracing cannot follow (a
    converter module with Python control flow on tensor values), else None when the whole graph traces."""
    try:
        fx.Tracer().trace(graph_module)
        return None
    except Exception as exc:
        if not is_trace_failure(exc):
            raise
        whole = first_line(exc)
    tracer = fx.Tracer()
    for node in graph_module.graph.nodes if isinstance(graph_module, fx.GraphModule) else ():
        if node.op != "call_module":
            continue
        layer = graph_module.get_submodule(str(node.target))
        if tracer.is_leaf_module(layer, str(node.target)):
            continue
        try:
            fx.Tracer().trace(layer)
        except Exception as exc:
            if is_trace_failure(exc):
                return str(node.target), type(layer).__name__, first_line(exc).split(". ")[0]
    return "the graph", type(graph_module).__name__, whole.split(". ")[0]


def _captured_graph(module: nn.Module, *, context: CompressionContext, untraceable: tuple[str, str, str]
                    ) -> EngineChoice:
    """A graph FX cannot trace as loaded, captured by torch.export instead; CompressionError naming the node when
    the capture fails too (shape arithmetic on tensor values that neither can follow)."""
    node, kind, fx_reason = untraceable
    form = context.model.form
    try:
        view = captured(module, context.example_input())
    except Exception as exc:
        stuck = re.search(r"call_module\[target=([^\]]+)\]", str(exc))
        where = f"; the capture stops at {stuck.group(1)}" if stuck and stuck.group(1) != node else ""
        raise CompressionError(
            f"activation quantization cannot run on this {form} graph: its node {node} ({kind}) computes shapes "
            f"from tensor values, which FX graph mode cannot trace ({fx_reason}) and a torch.export capture cannot "
            f"follow either{where}. Load the architecture through the torchvision: / timm: route or upload a "
            "state_dict for it (or a torch.export .pt2); the weight-only methods work on this file."
        ) from None
    return EngineChoice(view, f"FX could not trace the {form} graph at {node} ({kind}: {fx_reason}); "
                              f"{_graph_note(view, form=form)}")


def captured_engine(module: nn.Module, *, context: CompressionContext, fx_error: BaseException | str) -> EngineChoice:
    """After FX could not trace a Python module (`fx_error`, or why its trace would be wrong): torch.export
    captures it and the FX quantizers run on the module-level view of the capture. CompressionError with both
    reasons when the capture fails too."""
    why_not = fx_error if isinstance(fx_error, str) else first_line(fx_error)
    try:
        view = captured(module, context.example_input())
    except Exception as exc:
        raise CompressionError(
            f"this model can be quantized neither by FX graph mode ({why_not}) nor after a torch.export capture "
            f"({first_line(exc)}). Make its forward traceable (no Python control flow on tensor values) or use a "
            "weight-only method."
        ) from None
    return EngineChoice(
        view, f"FX could not trace the Python module ({why_not}); {_graph_note(view, form='module')}"
    )


# Random ops that only a module's training branch runs (torchvision's StochasticDepth calls its fx-wrapped
# ``stochastic_depth(input, p, mode, training)``; others call dropout functions or draw noise themselves).
_RANDOM_CALLS = ("bernoulli", "bernoulli_", "rand", "rand_like", "randn", "randn_like")
_TRAINING_FLAG_CALLS = {"stochastic_depth": 3, "dropout": 2, "alpha_dropout": 2, "feature_alpha_dropout": 2,
                        "dropout1d": 2, "dropout2d": 2, "dropout3d": 2}  # name → position of `training`


def training_branch_randomness(module: nn.Module) -> dict[str, str]:
    """Module path → random op that a training-mode FX trace of `module` bakes into the graph ("" for a path:
    the model's own forward).

    FX graph mode QAT traces the model in training mode and evaluates ``self.training`` while tracing, so a
    module the tracer does not keep as a leaf (StochasticDepth lives in torchvision.ops, not torch.nn) puts its
    training-only random drop into the quantized graph for good: every inference would drop residual branches at
    random. Putting those modules in inference mode before tracing keeps them out."""
    was_training = module.training
    module.train()
    try:
        graph = quantization_fx_graph(module)
    except Exception:  # an untraceable forward is handled where tracing fails
        return {}
    finally:
        module.train(was_training)
    found: dict[str, str] = {}
    for node in graph.nodes:
        if node.op not in ("call_method", "call_function"):
            continue
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        if name in _TRAINING_FLAG_CALLS:
            position = _TRAINING_FLAG_CALLS[name]
            flag = node.kwargs.get("training", node.args[position] if len(node.args) > position else None)
            if flag is not True:
                continue
        elif name not in _RANDOM_CALLS:
            continue
        stack = node.meta.get("nn_module_stack") or {}
        path = next(reversed(stack.values()))[0] if stack else ""
        found.setdefault(path, name)
    return found


def keep_in_inference_mode(module: nn.Module) -> None:
    """`module` (and what it holds) stays in inference mode even when a parent's ``train()`` reaches it — the
    quantizer's prepare puts the whole model in training mode before it traces."""
    module.eval()
    module.train = types.MethodType(lambda self, mode=True: nn.Module.train(self, False), module)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def is_trace_failure(exc: BaseException) -> bool:
    """FX symbolic tracing gave up on a forward (control flow on a traced value, iterating a Proxy, …)."""
    return isinstance(exc, fx.proxy.TraceError) or "symbolically traced" in str(exc) or "Proxy" in str(exc)


def _graph_note(view: fx.GraphModule, *, form: str) -> str:
    left = sorted({str(n.target) for n in view.graph.nodes if isinstance(n.target, AtenOpOverload)})
    kept = f"; ATen ops left as float ops: {', '.join(left)}" if left else ""
    source = "the torch.export capture" if form == "module" else f"the {form} graph"
    pt2e_reason = pt2e_unavailable_reason()
    why = f" ({pt2e_reason})" if pt2e_reason else ""
    return f"engine: FX graph mode on a module-level view of {source}{why}{kept}"
