"""A loaded model must return class scores: one row of `num_classes` numbers per input image."""

from __future__ import annotations

import torch
from torch import nn

from core.models.errors import ModelLoadError


def describe_output(output: object) -> str:
    """What a forward returned, in words: 'a torch.float32 tensor shaped 2×1000', 'a tuple of 2 values'."""
    if isinstance(output, torch.Tensor):
        return f"a {output.dtype} tensor shaped {'×'.join(map(str, output.shape)) or 'scalar'}"
    if isinstance(output, tuple | list):
        return f"a {type(output).__name__} of {len(output)} values"
    return f"a {type(output).__name__}"


@torch.no_grad()
def check_class_scores(*, module: nn.Module, input_shape: tuple[int, ...], num_classes: int, label: str) -> None:
    """Run two seeded inputs through `module` (eval mode); refuse unless it returns a 2×num_classes float tensor."""
    x = torch.randn((2, *input_shape), generator=torch.Generator().manual_seed(0))
    try:
        output = module(x)
    except Exception as exc:  # the architecture's own forward failed on its stated input
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{label} failed on a 2×{'×'.join(map(str, input_shape))} input ({first}).") from None
    if not (isinstance(output, torch.Tensor) and output.is_floating_point()
            and tuple(output.shape) == (2, num_classes)):
        raise ModelLoadError(
            f"{label} does not return class scores: for 2 images it returned {describe_output(output)}, not 2×{num_classes}. "
            "Use a classification model whose forward returns one row of scores per image."
        )
