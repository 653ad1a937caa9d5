"""What the CPU latency of a compressed model means, in words (shared by the method descriptors)."""

from __future__ import annotations

import torch


def transformed_graph(result) -> bool:
    """True when the library returned a rewritten FX graph (QAT / W8A8: BatchNorm folded, quantize ops inserted)
    rather than the original module with new weight values.

    Being an FX graph is not enough: a model lifted from a .pt2 / ONNX / TorchScript file is one before any
    compression, and a data-free method hands back that same graph with new weights.
    """
    from torch.ao.quantization import FakeQuantizeBase
    from torch.ao.quantization.observer import ObserverBase

    module = getattr(result, "module", None)
    if not isinstance(module, torch.fx.GraphModule):
        return False
    # fake-quantizers / observers, or torch.ao's fused and QAT layers (ConvBn2d: BatchNorm folded while training)
    if any(isinstance(sub, (FakeQuantizeBase, ObserverBase)) or type(sub).__module__.startswith("torch.ao.nn.")
           for sub in module.modules()):
        return True
    return any("quantize" in str(node.target) for node in module.graph.nodes if node.op in ("call_function", "call_method"))


def recomputes_weights(result) -> bool:
    """True when a layer still carries a parametrization (its weight is recomputed from a mask or fake-quantizer on
    every call), so the forward pass is not the baseline's."""
    from torch.nn.utils import parametrize

    module = getattr(result, "module", None)
    return isinstance(module, torch.nn.Module) and any(parametrize.is_parametrized(m) for m in module.modules())


def weight_only(*, spec, result, timed_artifact: bool) -> str:
    """Palettized / weight-quantized / pruned weights: stored compressed, run decompressed in PyTorch."""
    if transformed_graph(result):
        return (
            f"{spec.summary()} left a rewritten graph (quantization-aware training traces the model into an FX graph "
            "with weight fake-quantization), so it is not the baseline's graph: the CPU ratio "
            "measures that graph with decompressed float weights, not a compressed-weight speed-up, which only "
            "shows on Apple hardware running the .mlpackage."
        )
    if recomputes_weights(result):
        return (
            f"{spec.summary()} left layers that recompute their weights on every call (a parametrization from "
            "training), so the CPU ratio includes that extra work; the stored compressed weights only pay off on "
            "Apple hardware running the .mlpackage."
        )
    return (
        "pruned / palettized / weight-quantized weights run decompressed in PyTorch on the CPU, so CPU latency "
        "matches the baseline by construction; their speed-up only shows on Apple hardware running the .mlpackage."
    )
