"""Fitting a user checkpoint to an architecture: the classifier's output count read from the file, and a refusal
that names the first key whose shape differs (both shapes) plus how many keys are missing or unexpected."""

from __future__ import annotations

import torch
from torch import nn

from core.models.errors import ModelLoadError


def classifier_head(module: nn.Module) -> tuple[str, nn.Linear | nn.Conv2d]:
    """The last Linear / Conv2d the module registers: the layer that produces the class scores."""
    heads = [(name, m) for name, m in module.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    if not heads:
        raise ModelLoadError(f"{type(module).__name__} has no Linear or Conv2d layer to produce class scores.")
    return heads[-1]


def head_outputs(module: nn.Module) -> int:
    """How many outputs the classifier head has (out_features / out_channels)."""
    _, head = classifier_head(module)
    return head.out_features if isinstance(head, nn.Linear) else head.out_channels


def checkpoint_num_classes(*, module: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    """The checkpoint's class count when its head differs from the module's only in the output dimension.

    The head's weight in the file is compared with the module's: same input size and kernel, another output count
    → that count. None when the file has no such tensor or it differs in more than the output count (then the
    shape refusal names it).
    """
    name, head = classifier_head(module)
    saved = state.get(f"{name}.weight")
    if saved is None or saved.ndim != head.weight.ndim:
        return None
    if saved.shape[1:] != head.weight.shape[1:] or saved.shape[0] == head.weight.shape[0]:
        return None
    return int(saved.shape[0])


def _dims(shape: torch.Size | tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape) or "scalar"


def state_dict_mismatch(*, module: nn.Module, state: dict[str, torch.Tensor], arch: str) -> str | None:
    """One sentence on why `state` does not fit `module`, or None when every key and shape matches."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or reshaped):
        return None
    parts = []
    if reshaped:
        first = reshaped[0]
        more = f" ({len(reshaped) - 1} more tensor(s) of another shape)" if len(reshaped) > 1 else ""
        parts.append(f"{first}: file {_dims(state[first].shape)}, {arch} expects {_dims(expected[first].shape)}{more}")
    if missing:
        parts.append(f"{len(missing)} key(s) missing from the file (first: {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) in the file (first: {unexpected[0]})")
    return "; ".join(parts)


def apply_state_dict(*, module: nn.Module, state: dict[str, torch.Tensor], arch: str, file_name: str) -> None:
    """Load `state` into `module` strictly, or refuse with the first mismatching key and both shapes."""
    problem = state_dict_mismatch(module=module, state=state, arch=arch)
    if problem is not None:
        raise ModelLoadError(
            f"{file_name} does not fit architecture '{arch}' — {problem}. Pick the architecture the weights were "
            f"saved from, or save them from {arch} (torch.save(model.state_dict(), path))."
        )
    module.load_state_dict(state, strict=True)
