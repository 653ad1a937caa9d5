"""Lift a graph-form model (an fx.GraphModule from torch.export, TorchScript or ONNX) to real Conv2d / Linear layers.

coremltools.optimize.torch and torch.ao find the layers they compress by Python module type, and Core ML export
reads the ``_COREML_`` metadata buffers those layers carry. A graph calls convolution / linear as functions on
weight tensors it holds as attributes, so none of that applies — until each such call whose weight (and bias) is
a stored tensor becomes a ``call_module`` to an ``nn.Conv2d`` / ``nn.Linear`` holding those same tensors,
registered at the original module path (``layer1.0.conv1``), so layer names match the nn.Module route.

A call that cannot be lifted (a computed or shared weight, a transposed or non-2-D convolution) stays a
function call and is listed in the report with the reason; its weights are then not compressible.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

_aten = torch.ops.aten
_CONV_OPS = (_aten.conv2d.default, _aten.conv2d.padding, _aten.convolution.default, _aten._convolution.default)
_LINEAR_OPS = (_aten.linear.default, torch.nn.functional.linear)
_PENDING = "__lifted_layer_"
_MATMUL_OPS = (torch.matmul, operator.matmul, _aten.matmul.default, _aten.mm.default)


@dataclass(frozen=True)
class UnliftedCall:
    """A weight-bearing call that stays a function call: its node, what it computes and why it was not lifted."""

    node: str
    op: str
    reason: str

    def to_dict(self) -> dict:
        return {"node": self.node, "op": self.op, "reason": self.reason}


@dataclass
class LiftReport:
    """What lifting did: layer path → "Conv2d" / "Linear", and the calls left as they were."""

    lifted: dict[str, str] = field(default_factory=dict)
    unlifted: list[UnliftedCall] = field(default_factory=list)
    # BatchNorm2d / Dropout lifted alongside, so train() / eval() and conv-BN fusion behave as on the Python model
    companions: dict[str, str] = field(default_factory=dict)
    # BatchNorm / Dropout calls left in the graph: fixed in inference mode, so training would not behave as usual
    frozen: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"lifted": dict(self.lifted), "unlifted": [u.to_dict() for u in self.unlifted],
                "companions": dict(self.companions), "frozen": list(self.frozen)}

    def summary(self) -> str:
        text = f"{len(self.lifted)} layer(s) lifted to nn.Conv2d / nn.Linear"
        if self.unlifted:
            first = self.unlifted[0]
            text += (f"; {len(self.unlifted)} weight-bearing call(s) left as graph functions and not compressible "
                     f"(first: {first.node} = {first.op}: {first.reason})")
        return text


def lift_graph_module(graph_module: fx.GraphModule) -> tuple[fx.GraphModule, LiftReport]:
    """A new plain fx.GraphModule in which every liftable conv / linear call is a call to a real layer.

    The input is not modified (the graph is copied; the new layers share the input's weight tensors). Guard
    nodes that ``ExportedProgram.module()`` inserts (``_guards_fn``, which pin the example's batch size) are
    dropped, and so are the ``train`` / ``eval`` overrides it installs: the result is an ordinary GraphModule.
    """
    graph = copy.deepcopy(graph_module.graph)
    attrs = _GraphAttrs(graph_module)
    report = LiftReport()
    _unfuse_self_attention(graph)
    _drop_aliases(graph)
    pending: list[tuple[fx.Node, str, nn.Module]] = []
    for node in list(graph.nodes):
        if node.op == "call_module" and str(node.target).startswith("_guards_fn"):
            graph.erase_node(node)
            continue
        kind = _kind_of(node, graph_module)
        if kind is None:
            continue
        layer, reason = _layer_for(node, kind, attrs)
        if layer is None:
            if reason:
                report.unlifted.append(UnliftedCall(node=node.name, op=str(node.target), reason=reason))
            continue
        weight_target = _weight_target(node, kind)
        with graph.inserting_before(node):
            replacement = graph.call_module(f"{_PENDING}{len(pending)}", args=(node.args[0],))
        replacement.meta = dict(node.meta)
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)
        pending.append((replacement, weight_target, layer))
    report.unlifted.extend(_other_weight_calls(graph, attrs, reported={u.node for u in report.unlifted}))
    report.frozen = [n.name for n in graph.nodes if n.op == "call_function" and _is_mode_dependent(n)]
    for node in reversed(graph.nodes):  # the replaced weights' get_attr nodes go, so their paths are free
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    attrs.track(graph)
    for replacement, weight_target, layer in pending:
        replacement.target = attrs.claim_path(weight_target, layer)
        kind_map = report.lifted if isinstance(layer, nn.Conv2d | nn.Linear) else report.companions
        kind_map[str(replacement.target)] = type(layer).__name__
    lifted = fx.GraphModule(attrs.root_for(graph), graph, class_name="LiftedGraph")
    lifted.graph.eliminate_dead_code()
    lifted.delete_all_unused_submodules()
    lifted.recompile()
    return lifted.eval(), report  # the graph was exported for inference: BatchNorm / Dropout start in eval mode


def _drop_aliases(graph: fx.Graph) -> None:
    """``aten.alias`` (a torch.export capture of Swin's window slicing holds them) is the identity on values, and
    coremltools has no converter for it: each one is replaced by its input."""
    aliases = {_aten.alias.default, getattr(_aten, "alias_copy", _aten.alias).default}
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in aliases:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)


# --------------------------------------------------------------------------- fused attention
# nn.MultiheadAttention traced in inference mode (a torchvision ViT saved with torch.jit.trace under no_grad) runs
# its fast path: one aten._native_multi_head_attention call that takes the projection weights as arguments. Neither
# coremltools' converter (no such op) nor the compression libraries (no Linear to find) can use it, so a
# self-attention call is rewritten into what it computes: a linear q/k/v projection, scaled dot-product attention
# over the heads, a linear output projection. The two linears are then lifted like any other.


def self_attention_heads(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Attention of the packed (batch, tokens, 3·embed) q/k/v projection, split into `num_heads` heads."""
    query, key, value = qkv.chunk(3, dim=-1)
    batch, tokens, embed = query.shape

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(batch, tokens, num_heads, embed // num_heads).transpose(1, 2)

    attended = nn.functional.scaled_dot_product_attention(heads(query), heads(key), heads(value))
    return attended.transpose(1, 2).reshape(batch, tokens, embed)


def _unfuse_self_attention(graph: fx.Graph) -> None:
    """Rewrite each fused self-attention call (no mask, attention weights unused) in place; any other stays."""
    fused = getattr(_aten, "_native_multi_head_attention", None)
    for node in list(graph.nodes):
        if fused is None or node.op != "call_function" or node.target != fused.default:
            continue
        args = _call_args(node)
        query = args["query"]
        uses = list(node.users)
        if not (query is args["key"] is args["value"]) or args.get("mask") is not None or not all(
            u.op == "call_function" and u.target is operator.getitem and (u.args[1] == 0 or not u.users) for u in uses
        ):
            continue
        with graph.inserting_before(node):
            qkv = graph.call_function(_aten.linear.default, (query, args["qkv_weight"], args["qkv_bias"]))
            attended = graph.call_function(self_attention_heads, (qkv, int(args["num_head"])))
            output = graph.call_function(_aten.linear.default, (attended, args["proj_weight"], args["proj_bias"]))
        for use in uses:
            if use.args[1] == 0:
                use.replace_all_uses_with(output)
            graph.erase_node(use)
        graph.erase_node(node)


class _GraphAttrs:
    """The tensors and submodules the graph refers to, and the new layers' paths."""

    def __init__(self, graph_module: fx.GraphModule) -> None:
        self.source = graph_module
        self.layers: dict[str, nn.Module] = {}
        self._live_targets: tuple[str, ...] = ()

    def tensor(self, node: Any) -> torch.Tensor | None:
        if not (isinstance(node, fx.Node) and node.op == "get_attr"):
            return None
        value = _get_attr(self.source, str(node.target))
        return value if isinstance(value, torch.Tensor) else None

    def claim_path(self, weight_target: str, layer: nn.Module) -> str:
        """Where the layer goes: the module that held `weight` (``a.conv1.weight`` → ``a.conv1``), or
        ``<parent>.<name>`` for a weight called ``<name>_weight`` (MultiheadAttention's ``in_proj_weight`` →
        ``<parent>.in_proj``); a suffix keeps it from colliding with anything else the graph uses."""
        parent, _, leaf = weight_target.rpartition(".")
        if leaf == "weight" and parent:
            base = parent
        else:
            stem = leaf[: -len("_weight")] if leaf.endswith("_weight") and leaf != "_weight" else f"{leaf}_layer"
            base = f"{parent}.{stem}" if parent else stem
        path, n = base, 1
        while path in self.layers or self._taken(path):
            n += 1
            path = f"{base}_{n}"
        self.layers[path] = layer
        return path

    def _taken(self, path: str) -> bool:
        """Whether `path` is a module or tensor the graph still refers to (other than what this layer replaces)."""
        prefix = path + "."
        return any(
            target == path or target.startswith(prefix) or path.startswith(target + ".")
            for target in self._live_targets
        )

    def track(self, graph: fx.Graph) -> None:
        self._live_targets = tuple(
            str(n.target) for n in graph.nodes
            if n.op in ("get_attr", "call_module") and not str(n.target).startswith(_PENDING)
        )

    def root_for(self, graph: fx.Graph) -> dict[str, Any]:
        root: dict[str, Any] = dict(self.layers)
        for node in graph.nodes:
            if node.op in ("get_attr", "call_module") and str(node.target) not in root:
                root[str(node.target)] = _get_attr(self.source, str(node.target))
        return root


def _is_mode_dependent(node: fx.Node) -> bool:
    name = str(node.target)
    return "batch_norm" in name or "dropout" in name


_WEIGHT_OP_WORDS = ("conv", "linear", "mm", "matmul", "einsum", "attention")


def _other_weight_calls(graph: fx.Graph, attrs: _GraphAttrs, *, reported: set[str]) -> list[UnliftedCall]:
    """Calls of operators that are not lifted at all (a transposed convolution, addmm, fused attention…) that use a
    stored weight matrix: listed, so their weights are reported as not compressible rather than skipped silently."""
    found: list[UnliftedCall] = []
    for node in graph.nodes:
        tensor = attrs.tensor(node)
        if tensor is None or tensor.ndim < 2 or not tensor.is_floating_point():
            continue
        for user in node.users:
            op = str(user.target)
            if user.op != "call_function" or user.name in reported or not any(w in op for w in _WEIGHT_OP_WORDS):
                continue
            reported.add(user.name)
            what = "a transposed convolution" if "transpose" in op else "an operator that is not lifted"
            found.append(UnliftedCall(node=user.name, op=op,
                                      reason=f"{what} (only 2-D convolution and linear calls become layers)"))
    return found


def _get_attr(module: nn.Module, target: str) -> Any:
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _kind_of(node: fx.Node, graph_module: fx.GraphModule) -> str | None:
    if node.op == "call_module":  # onnx2torch's MatMul is a module calling torch.matmul on (x, stored weight)
        target = str(node.target)
        return "matmul" if type(_get_attr(graph_module, target)).__name__ == "OnnxMatMul" else None
    if node.op != "call_function":
        return None
    if node.target == _aten.batch_norm.default:
        return "batch_norm"
    if node.target in (_aten.dropout.default, _aten.dropout_.default):
        return "dropout"
    if node.target in _CONV_OPS:
        return "conv"
    if node.target in _LINEAR_OPS:
        return "linear"
    if node.target in _MATMUL_OPS:
        return "matmul"
    return None


def _call_args(node: fx.Node) -> dict[str, Any]:
    """The call's arguments by schema name, defaults filled in (aten ops); F.linear's by position."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        names = ("input", "weight", "bias")
        values = {name: None for name in names}
        values.update(zip(names, node.args, strict=False))
        values.update(node.kwargs)
        return values
    values = {}
    for i, argument in enumerate(schema.arguments):
        if i < len(node.args):
            values[argument.name] = node.args[i]
        elif argument.name in node.kwargs:
            values[argument.name] = node.kwargs[argument.name]
        elif argument.has_default_value():
            values[argument.name] = argument.default_value
    return values


def _weight_target(node: fx.Node, kind: str) -> str:
    """The stored tensor whose module path names the new layer (``<path>.weight`` → ``<path>``)."""
    if node.op == "call_module":
        return f"{node.target}.weight"
    if kind == "matmul":
        return str(node.args[1].target)
    args = _call_args(node)
    if kind == "dropout":  # no tensor: the module path export recorded for the call, else the node's name
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        path = stack[-1][0] if stack and isinstance(stack[-1], tuple) and stack[-1][0] else node.name
        return f"{path}.weight"
    if kind == "batch_norm":
        return f"{str(args['running_mean'].target).rpartition('.')[0]}.weight"
    return str(args["weight"].target)


def _pair(value: Any) -> tuple[int, int] | str:
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return (value, value)
    values = [int(v) for v in value]
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _layer_for(node: fx.Node, kind: str, attrs: _GraphAttrs) -> tuple[nn.Module | None, str | None]:
    """The layer replacing this call, or (None, the reason it stays a function call)."""
    if kind == "matmul":
        return _matmul_layer(node, attrs)
    if kind == "batch_norm":
        return _batch_norm_layer(node, attrs), None
    if kind == "dropout":
        args = _call_args(node)
        inplace = node.target == _aten.dropout_.default
        return (nn.Dropout(float(args["p"]), inplace=inplace), None) if not args.get("train") else (None, None)
    args = _call_args(node)
    weight_node, bias_node = args.get("weight"), args.get("bias")
    weight = attrs.tensor(weight_node)
    if weight is None:
        return None, "its weight is computed in the graph, not a stored tensor"
    if len(weight_node.users) > 1:
        return None, f"its weight {weight_node.target} is shared by {len(weight_node.users)} calls"
    bias = attrs.tensor(bias_node) if bias_node is not None else None
    if bias_node is not None and (bias is None or len(bias_node.users) > 1):
        return None, "its bias is computed in the graph or shared"
    if not weight.is_floating_point():
        return None, f"its weight is {weight.dtype}, not floating point"
    if kind == "linear":
        if weight.ndim != 2:
            return None, f"a linear weight shaped {tuple(weight.shape)} (expected 2-D)"
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    else:
        if args.get("transposed", False):
            return None, "a transposed convolution (only Conv2d is lifted)"
        if weight.ndim != 4:
            return None, f"a {weight.ndim - 2}-D convolution (only Conv2d is lifted)"
        groups = int(args.get("groups", 1))
        padding = _pair(args.get("padding", 0))
        layer = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]),
                          stride=_pair(args.get("stride", 1)), padding=padding,
                          dilation=_pair(args.get("dilation", 1)), groups=groups, bias=bias is not None)
    with torch.no_grad():
        layer.weight = _as_parameter(weight)
        if bias is not None:
            layer.bias = _as_parameter(bias)
    return layer, None


def _batch_norm_layer(node: fx.Node, attrs: _GraphAttrs) -> nn.Module | None:
    """``aten.batch_norm`` in inference mode on stored statistics → ``nn.BatchNorm2d`` (None: left as it is)."""
    args = _call_args(node)
    stats = [attrs.tensor(args.get(k)) for k in ("running_mean", "running_var")]
    affine = [attrs.tensor(args.get(k)) if args.get(k) is not None else None for k in ("weight", "bias")]
    stored = [args.get(k) for k in ("running_mean", "running_var", "weight", "bias") if args.get(k) is not None]
    if args.get("training") or any(t is None for t in stats) or any(len(n.users) > 1 for n in stored):
        return None
    if (args.get("weight") is None) != (args.get("bias") is None) or any(
        a is None for a, k in zip(affine, ("weight", "bias"), strict=True) if args.get(k) is not None
    ):
        return None
    val = node.args[0].meta.get("val") if isinstance(node.args[0], fx.Node) else None
    if val is not None and getattr(val, "ndim", 4) != 4:
        return None
    layer = nn.BatchNorm2d(stats[0].shape[0], eps=float(args["eps"]), momentum=float(args["momentum"]),
                           affine=args.get("weight") is not None)
    layer.running_mean, layer.running_var = stats[0], stats[1]
    if layer.affine:
        layer.weight, layer.bias = _as_parameter(affine[0]), _as_parameter(affine[1])
    return layer.eval()


def _matmul_layer(node: fx.Node, attrs: _GraphAttrs) -> tuple[nn.Module | None, str | None]:
    """``x @ W`` with a stored 2-D W (ONNX MatMul with a constant) is ``Linear`` with weight ``Wᵀ``."""
    if len(node.args) != 2:
        return None, None
    weight_node = node.args[1]
    weight = attrs.tensor(weight_node)
    if weight is None:
        return None, None  # activation × activation (attention scores): no weight to compress
    if weight.ndim != 2 or not weight.is_floating_point():
        return None, f"a matmul with a stored {weight.ndim}-D {weight.dtype} operand (only 2-D float is lifted)"
    if len(weight_node.users) > 1:
        return None, f"its weight {weight_node.target} is shared by {len(weight_node.users)} calls"
    layer = nn.Linear(weight.shape[0], weight.shape[1], bias=False)
    layer.weight = nn.Parameter(weight.detach().t().contiguous())
    return layer, None


def _as_parameter(tensor: torch.Tensor) -> nn.Parameter:
    return tensor if isinstance(tensor, nn.Parameter) else nn.Parameter(tensor.detach())
