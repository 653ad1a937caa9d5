"""Reading a state_dict without executing anything: safetensors, or ``torch.load(weights_only=True)``."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from core.models.errors import ModelLoadError


def require_nonempty_file(path: Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path.name} is empty (0 bytes); upload the file again.")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read weights without executing anything: safetensors, or torch.load(weights_only=True)."""
    path = Path(path)
    require_nonempty_file(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{path.name} is not a valid safetensors file ({exc}); it may be truncated.") from None
        return _finite(state, path.name)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else ""
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise ModelLoadError(
                f"{path.name} contains Python objects or code, not just tensors, and was refused for safety "
                f"({msg[:160]}). Save a plain state_dict (torch.save(model.state_dict())) or use safetensors."
            ) from None
        raise ModelLoadError(f"{path.name} is not a PyTorch weights file ({msg[:160]}).") from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(
            f"{path.name} is corrupt or truncated, or not a file written by torch.save "
            f"({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}). Upload it again, or save a "
            "plain state_dict (torch.save(model.state_dict(), path)) or a .safetensors file."
        ) from None
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path.name} does not hold a state_dict (a mapping of parameter names to tensors).")
    return _finite({k.removeprefix("module."): v for k, v in obj.items()}, path.name)


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """'name (k NaN, j inf)' for every floating tensor holding NaN or ±inf values."""
    found = []
    for key, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            nan = int(torch.isnan(tensor).sum())
            inf = int(torch.isinf(tensor).sum())
            if nan or inf:
                found.append(f"{key} ({', '.join(p for p in (f'{nan:,} NaN' if nan else '', f'{inf:,} inf' if inf else '') if p)})")
    return found


def _finite(state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    bad = nonfinite_tensors(state)
    if bad:
        raise ModelLoadError(
            f"{name} has NaN or infinite values in {len(bad)} tensor(s): {', '.join(bad[:5])}{' …' if len(bad) > 5 else ''}. "
            "The weights are corrupt or training diverged; use weights saved from a healthy checkpoint."
        )
    return state
