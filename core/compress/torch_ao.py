"""PyTorch's own int8 paths (torch.ao), the shared part: the quantized engine, the FX API and the per-layer report.

Unlike the coremltools methods these produce modules that run on real int8 CPU kernels (fbgemm / x86 / onednn /
qnnpack), so their PyTorch latency is meaningful. Their artifact is TorchScript, not an .mlpackage.
The methods themselves are ``torch_dynamic`` and ``torch_static``.

torch.ao's quantization API is deprecated upstream ("torch.ao.quantization is deprecated and will be removed in
2.10", printed on first use; the successor is torchao's PT2E flow). Every torch.ao quantization call the studio makes
goes through this module, so moving to PT2E touches this file only. PT2E stays out for now: measured on this
project's CPUs it was not faster (see FX_DEPRECATION_NOTE and bench/int8_peers.py, which times it when torchao is
installed).
Also measured and left out (bench/int8_peers.py, TRIED): preparing with torch.ao's oneDNN backend config, which
fuses Conv+BN+add+ReLU into one quantized::conv2d_add_relu kernel (with a channels_last input: ~7 % on resnet18,
nothing on mobilenet_v2) but runs only under the onednn engine and needs a calibration of its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn import intrinsic as nni
from torch.ao.nn import quantized as nnq
from torch.ao.nn.intrinsic import qat as nniqat
from torch.ao.nn.quantized import dynamic as nnqd
from torch.ao.quantization import (
    FakeQuantizeBase,
    FixedQParamsFakeQuantize,
    FixedQParamsObserver,
    ObserverBase,
    QConfig,
    default_dynamic_qconfig,
    default_per_channel_weight_observer,
    default_weight_fake_quant,
    default_weight_observer,
    disable_observer,
    float16_dynamic_qconfig,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
    quantize_dynamic,
)
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx

from core.compress.context import CompressionContext, CompressionError
from core.compress.layers import LayerPlan, conv_bn_pairs, folded_weight, locate, sparsity, weight_of, weight_snr_db
from core.compress.result import LayerReport
from core.library_internals import quantization_fx_graph

QUANTIZED_TYPES = (nnq.Conv1d, nnq.Conv2d, nnq.Conv3d, nnq.Linear, nnqd.Linear)
__all__ = [
    "FX_DEPRECATION_NOTE", "QUANTIZED_TYPES", "RELU6_OUTPUT_SCALE", "default_dynamic_qconfig", "float16_dynamic_qconfig",
    "fx_convert", "fx_disable_observers", "fx_freeze_bn_stats", "fx_prepare", "fx_relu6_fused", "quantize_dynamic",
    "set_engine", "torch_reports",
]

FX_DEPRECATION_NOTE = (
    "torch.ao FX quantization is deprecated upstream (torch.ao.quantization is announced for removal; its successor "
    "is torchao PT2E). The studio keeps FX because PT2E (X86InductorQuantizer + torch.compile with inductor freezing, "
    "torchao 0.18) was not faster where measured: resnet18, batch 1, 2 threads, 73–75 ms vs 74 ms fp32 eager on an "
    "AVX2 CPU (no gain); on an AMX Xeon, same process, interleaved, its int8 lowering worked (conv+add+relu fused) "
    "yet it ran 1.3–1.7× slower than FX int8 in its fastest form on resnet18 and 1.4–1.5× on mobilenet_v2, and "
    "without freezing nothing is lowered to int8 (fp32 speed). All FX calls live in core/compress/torch_ao.py, so the "
    "move touches one file."
)


def set_engine(backend: str) -> None:
    if backend not in torch.backends.quantized.supported_engines:
        raise CompressionError(
            f"the {backend} quantized engine is not available in this PyTorch build "
            f"(available: {', '.join(torch.backends.quantized.supported_engines)})."
        )
    torch.backends.quantized.engine = backend


# --------------------------------------------------------------------------- the FX API (deprecated upstream)


def fx_qconfig_mapping(*, backend: str, qat: bool, per_channel: bool, skip_layers: list[str]):
    """The backend's default (QAT) qconfig mapping with the weight observer chosen explicitly (per output channel
    or one scale per tensor) and the skipped layers left in float."""
    mapping = get_default_qat_qconfig_mapping(backend) if qat else get_default_qconfig_mapping(backend)
    default = mapping.global_qconfig
    if not qat:
        weight = default_per_channel_weight_observer if per_channel else default_weight_observer
        mapping.set_global(QConfig(activation=default.activation, weight=weight))
    elif not per_channel:
        mapping.set_global(QConfig(activation=default.activation, weight=default_weight_fake_quant))
    for name in skip_layers:
        mapping.set_module_name(name, None)
    return mapping


def fx_prepare(
    module: nn.Module,
    *,
    qat: bool,
    backend: str,
    per_channel: bool,
    skip_layers: list[str],
    example_inputs: tuple,
    fuse_relu6: bool = False,
) -> torch.fx.GraphModule:
    """prepare_fx (observers) or prepare_qat_fx (fake quantization for training) on `module` (which FX copies).

    `fuse_relu6`: every ReLU6 / hardtanh(0, 6) right after a quantized Conv(+BN) runs inside the fused
    Conv(+BN)+ReLU kernel, its output quantized with the fixed parameters that make the kernel's clamp the ReLU6
    (fx_relu6_fused lists those convs; the model is prepared as before when FX does not fuse every one of them)."""
    mapping = fx_qconfig_mapping(backend=backend, qat=qat, per_channel=per_channel, skip_layers=skip_layers)
    prepare = prepare_qat_fx if qat else prepare_fx
    module = module.train() if qat else module.eval()
    if fuse_relu6:
        traced, convs = _relu6_as_fusable_relu(module, skip_layers=skip_layers)
        if traced is not None:
            prepared = prepare(traced, mapping, example_inputs=example_inputs)
            if _fix_relu6_outputs(prepared, convs):
                return prepared
    return prepare(module, mapping, example_inputs=example_inputs)


def fx_convert(prepared: nn.Module) -> torch.fx.GraphModule:
    """convert_fx: observers → real int8 modules, weights packed for the quantized engine in force."""
    fused = fx_relu6_fused(prepared)
    converted = convert_fx(prepared)
    if fused:
        converted.meta[_RELU6_META] = fused  # convert_fx does not carry the prepared model's meta over
    return converted


def fx_freeze_bn_stats(prepared: nn.Module) -> None:
    prepared.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)


def fx_disable_observers(prepared: nn.Module) -> None:
    prepared.apply(disable_observer)


# --------------------------------------------------------------------------- ReLU6 folded into the convolution
#
# torch.ao's FX backend configs fuse Conv(+BN)+ReLU into one int8 kernel (quantized::conv2d_relu) but have no
# Conv+ReLU6 pattern: ReLU6 / hardtanh(0, 6) shares its input's quantization parameters and runs as an int8 kernel of
# its own (mobilenet_v2: 35 of them). In the quantized domain the two clamps can be had for free: a fused Conv+ReLU
# whose output is quantized to quint8 with scale 6/255 and zero point 0 clamps below at 0 (ReLU) and above at
# 255 × 6/255 = 6 (the requantization's saturation), so Conv→ReLU6 is computed exactly by the fused kernel. The
# fixed output parameters replace the observed ones: a fake-quantize with those parameters, so the prepared model
# clamps at 6 during calibration and QAT training too. (torchvision's quantizable mobilenet instead swaps ReLU6 for
# ReLU, which changes the model's function.) The fused output then spans the full quint8 range: the caller decides
# which engines may take that as input (core.compress.torch_static.relu6_fusion_blocker).

RELU6_OUTPUT_SCALE = 6.0 / 255.0  # quint8 0..255 spans [0, 6] exactly
_CONV_BN = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}
_FUSED_RELU_TYPES = (
    nni.ConvReLU1d, nni.ConvReLU2d, nni.ConvReLU3d,
    nniqat.ConvReLU1d, nniqat.ConvReLU2d, nniqat.ConvReLU3d,
    nniqat.ConvBnReLU1d, nniqat.ConvBnReLU2d, nniqat.ConvBnReLU3d,
)
_RELU6_META = "studio_relu6_fused_into"


def _clamp_bounds(node: torch.fx.Node, modules: dict[str, nn.Module]) -> tuple[float, float] | None:
    """(low, high) when `node` is ReLU6 or hardtanh as a module or a function, else None."""
    if node.op == "call_module":
        module = modules.get(str(node.target))
        if type(module) in (nn.ReLU6, nn.Hardtanh):
            return float(module.min_val), float(module.max_val)
        return None
    if node.op != "call_function":
        return None
    if node.target is F.relu6:
        return 0.0, 6.0
    if node.target in (F.hardtanh, F.hardtanh_):
        values = dict(zip(("input", "min_val", "max_val"), node.args, strict=False))
        values.update(node.kwargs)
        low, high = values.get("min_val", -1.0), values.get("max_val", 1.0)
        if isinstance(low, int | float) and isinstance(high, int | float):
            return float(low), float(high)
    return None


def _conv_before(node: torch.fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """The conv whose output (directly or through its BatchNorm) is `node`'s only input, where FX fuses a ReLU."""
    source = node.args[0] if node.args else None
    if not isinstance(source, torch.fx.Node) or source.op != "call_module" or len(source.users) != 1:
        return None
    first = modules.get(str(source.target))
    if type(first) in _CONV_BN:
        return str(source.target)
    bn_input = source.args[0] if source.args else None
    if (
        isinstance(bn_input, torch.fx.Node) and bn_input.op == "call_module" and len(bn_input.users) == 1
        and type(modules.get(str(bn_input.target))) in _CONV_BN
        and type(first) is _CONV_BN[type(modules[str(bn_input.target)])]
    ):
        return str(bn_input.target)
    return None


def _skipped(name: str, skip_layers: list[str]) -> bool:
    """Left in float by the qconfig mapping: the layer or a module above it is set to None."""
    parts = name.split(".")
    return any(".".join(parts[:i]) in skip_layers for i in range(1, len(parts) + 1))


def _relu6_as_fusable_relu(module: nn.Module, *, skip_layers: list[str]) -> tuple[torch.fx.GraphModule | None, list[str]]:
    """A GraphModule of `module` in which every ReLU6 / hardtanh(0, 6) right after a quantized Conv(+BN) is a ReLU
    (which FX then fuses into the conv), and the names of those convs; (None, []) when there is none. `module`
    itself is not changed: the rewritten graph calls a fresh nn.ReLU per site and shares every other submodule."""
    if any(isinstance(sub, nnq.FloatFunctional) for sub in module.modules()):
        return None, []  # prepare_fx swaps these in place before tracing; leave such models as they are
    graph = quantization_fx_graph(module)
    traced = torch.fx.GraphModule(module, graph)
    modules = dict(traced.named_modules())
    convs: list[str] = []
    for node in list(traced.graph.nodes):
        if _clamp_bounds(node, modules) != (0.0, 6.0):
            continue
        conv = _conv_before(node, modules)
        if conv is None or _skipped(conv, skip_layers) or conv in convs:
            continue
        if node.op == "call_module":
            name = f"relu6_fused_{len(convs)}"
            traced.add_submodule(name, nn.ReLU())
            node.target = name
            node.args, node.kwargs = node.args[:1], {}
        else:
            node.target, node.args, node.kwargs = F.relu, node.args[:1], {}
        convs.append(conv)
    if not convs:
        return None, []
    traced.graph.lint()
    traced.recompile()
    return traced.train(module.training), convs


def _fixed_relu6_output(*, training: bool) -> nn.Module:
    """A fake-quantize with the fixed parameters, also for calibration: an observer passes its input through, so
    the calibration pass would run the rewritten ReLU without its upper clamp and every later observer would record
    ranges the int8 model never produces; the fake-quantize clamps at 6 (and rounds as the int8 kernel will)."""
    observer = FixedQParamsObserver.with_args(
        scale=RELU6_OUTPUT_SCALE, zero_point=0, dtype=torch.quint8, quant_min=0, quant_max=255
    )
    return FixedQParamsFakeQuantize(observer=observer).train(training)


def _fix_relu6_outputs(prepared: torch.fx.GraphModule, convs: list[str]) -> bool:
    """Give each fused Conv(+BN)+ReLU in `convs` the fixed output quantization 6/255, 0. False (nothing changed)
    unless every one of them was fused by FX and observed in quint8."""
    modules = dict(prepared.named_modules(remove_duplicate=False))
    nodes = {str(n.target): n for n in prepared.graph.nodes if n.op == "call_module"}
    swaps = []
    for conv in convs:
        node = nodes.get(conv)
        if node is None or not isinstance(modules.get(conv), _FUSED_RELU_TYPES) or len(node.users) != 1:
            return False
        (user,) = node.users
        observer = modules.get(str(user.target)) if user.op == "call_module" else None
        if not isinstance(observer, ObserverBase | FakeQuantizeBase) or getattr(observer, "dtype", None) != torch.quint8:
            return False
        swaps.append(observer)
    for observer in swaps:
        fixed = _fixed_relu6_output(training=observer.training)
        for name, sub in list(prepared.named_modules(remove_duplicate=False)):
            if sub is observer:  # every name the observer goes by (FX shares one between an op and its input)
                parent, _, attr = name.rpartition(".")
                setattr(prepared.get_submodule(parent) if parent else prepared, attr, fixed)
    prepared.meta[_RELU6_META] = list(convs)
    return True


def fx_relu6_fused(prepared: nn.Module) -> list[str]:
    """The convs of a prepared (or converted) FX model whose ReLU6 runs inside the fused int8 kernel."""
    meta = getattr(prepared, "meta", None)
    return list(meta.get(_RELU6_META, [])) if isinstance(meta, dict) else []


# --------------------------------------------------------------------------- report


def torch_reports(
    *, context: CompressionContext, compressed: nn.Module, plans: dict[str, LayerPlan], method: str
) -> tuple[list[LayerReport], dict[str, dict]]:
    original = context.original
    bn_pairs = conv_bn_pairs(original) if method == "torch_static" else {}
    reports: list[LayerReport] = []
    weights: dict[str, dict] = {}
    for name, plan in plans.items():
        before = original.get_submodule(name).weight.detach().float().cpu()
        layer = locate(compressed, name)
        reference = before
        bn_name = bn_pairs.get(name)
        if bn_name is not None:
            reference = folded_weight(original, name, bn_name)
        report = LayerReport(name=name, type=plan.type, shape=plan.shape, params=plan.params, compressed=False)
        tensors: dict = {"original": reference.clone()}
        if layer is not None and isinstance(layer, QUANTIZED_TYPES):
            raw = layer.weight()
            after = weight_of(layer)
            report.compressed = True
            report.method = method
            report.sparsity = sparsity(after)
            report.snr_db = weight_snr_db(reference, after)
            report.extra["module"] = f"{type(layer).__module__}.{type(layer).__name__}"
            if bn_name is not None:
                report.extra["batchnorm_folded"] = bn_name
            if raw.is_quantized:
                report.bits = 8.0
                report.extra["weight_dtype"] = str(raw.dtype).replace("torch.", "")
                report.extra["int_repr_dtype"] = str(raw.int_repr().dtype).replace("torch.", "")
                if raw.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                    scales, zero_points = raw.q_per_channel_scales(), raw.q_per_channel_zero_points()
                    report.granularity = "per_channel"
                else:
                    scales, zero_points = torch.tensor([raw.q_scale()]), torch.tensor([raw.q_zero_point()])
                    report.granularity = "per_tensor"
                report.n_scales, report.n_zero_points = int(scales.numel()), int(zero_points.numel())
                tensors["scale"] = scales.float()
                tensors["zero_point"] = zero_points.float()
            else:  # fp16 dynamic quantization
                report.bits = 16.0
                report.granularity = "fp16"
                report.extra["weight_dtype"] = "float16 (packed; unpacked to float32 for the matmul)"
            tensors["compressed"] = after
        else:
            report.sparsity = sparsity(before)
            report.reason = plan.reason or (
                "left in float by FX quantization (no int8 pattern matched this op)" if layer is not None
                else "not found in the quantized graph"
            )
            tensors = {"original": before.clone(), "compressed": before.clone()}
        reports.append(report)
        weights[name] = tensors
    return reports, weights
