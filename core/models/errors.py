"""The one error every model route raises: the message names the problem and what to do."""

from __future__ import annotations


class ModelLoadError(ValueError):
    """A model or weights file could not be loaded; the message names the problem and what to do."""


def unknown_name(*, what: str, name: str, known: list[str] | tuple[str, ...], hint: str) -> ModelLoadError:
    """'unknown <what> 'x'; did you mean a, b, c? <hint>' with the closest known names (difflib)."""
    import difflib

    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    suggestion = f" Did you mean {', '.join(close)}?" if close else ""
    return ModelLoadError(f"unknown {what} '{name}'.{suggestion} {hint}")
