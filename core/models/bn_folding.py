"""Conv + BatchNorm pairs of a model and the conv weight with its BatchNorm folded in: what a fused int8 / QAT conv
stores. Model structure, below both the compression engine (core.compress) and the measurements (core.measure)."""

from __future__ import annotations

import torch
from torch import nn

from core.library_internals import BatchNormBase


def conv_bn_pairs(module: nn.Module) -> dict[str, str]:
    """conv layer name → the BatchNorm that directly follows it (what FX fusion folds into the conv)."""
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception:  # an untraceable model simply has no known pairs
        return {}
    modules = dict(module.named_modules())
    pairs: dict[str, str] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), BatchNormBase):
            continue
        source = node.args[0] if node.args else None
        if (
            isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and len(source.users) == 1
            and isinstance(modules.get(source.target), nn.Conv1d | nn.Conv2d | nn.Conv3d)
        ):
            pairs[str(source.target)] = str(node.target)
    return pairs


def folded_weight(original: nn.Module, conv_name: str, bn_name: str) -> torch.Tensor:
    """The conv weight with its BatchNorm folded in — what a fused int8/QAT conv actually stores."""
    conv = original.get_submodule(conv_name)
    bn = original.get_submodule(bn_name)
    weight, _ = torch.nn.utils.fusion.fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
    return weight.detach().float().cpu()
