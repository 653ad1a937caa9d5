"""What the CPU latency of a compressed model means, in words (shared by the method descriptors)."""

from __future__ import annotations

import torch


def transformed_graph(result) -> bool:
    """True when the library returned a rewritten FX graph (QAT / W8A8: BatchNorm folded, quantize ops inserted)
    rather than the original module with new weight values."""
    return isinstance(getattr(result, "module", None), torch.fx.GraphModule)


def weight_only(*, spec, result, timed_artifact: bool) -> str:
    """Palettized / weight-quantized / pruned weights: stored compressed, run decompressed in PyTorch."""
    if transformed_graph(result):
        return (
            f"{spec.summary()} left a rewritten graph (LinearQuantizer traces the model into an FX graph with "
            "weight fake-quantization for training), so it is not the baseline's graph: the CPU ratio "
            "measures that graph with decompressed float weights, not a compressed-weight speed-up, which only "
            "shows on Apple hardware running the .mlpackage."
        )
    return (
        "pruned / palettized / weight-quantized weights run decompressed in PyTorch on the CPU, so CPU latency "
        "matches the baseline by construction; their speed-up only shows on Apple hardware running the .mlpackage."
    )
