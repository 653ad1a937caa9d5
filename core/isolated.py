"""Run one heavy call in a fresh child process and wait for its answer, forwarding its progress.

The Streamlit process never compresses, exports or fine-tunes itself (coremltools conversion breaks inside threads
of one process, and libraries change process-wide state: stdout, loggers, threads, the quantized engine). The job
queue does this for experiments; `run_isolated` does it for an interactive step that a page waits for (the Learn
page's whole-model export and fine-tuning run): the call runs in a spawned child, the caller blocks until it ends,
and a child that dies (killed, out of memory, a crash inside a library) becomes an `IsolatedError` naming that.

`target` must be importable at module level (it is sent by reference) and take a ``progress`` keyword; its keyword
arguments and its result are pickled between the two processes of this program only — nothing read from a file.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from core.progress import Progress, as_progress

T = TypeVar("T")


class IsolatedError(RuntimeError):
    """The child process failed or stopped; the message says why in one line."""


def _child(target: Callable[..., Any], kwargs: Mapping[str, Any], messages: Any) -> None:
    def report(fraction: float, text: str) -> None:
        messages.put(("progress", float(fraction), str(text)))

    try:
        result = target(**kwargs, progress=report)
    except ValueError as exc:  # the library refusing a setting: the caller shows it as a message
        messages.put(("refused", str(exc)))
    except BaseException as exc:
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        messages.put(("error", f"{type(exc).__name__}: {text}"))
    else:
        messages.put(("result", result))


def run_isolated(
    target: Callable[..., T], /, *, kwargs: Mapping[str, Any], progress: Progress | None = None, poll_s: float = 0.2,
) -> T:
    """``target(**kwargs, progress=…)`` in a spawned child process; its result, or its ValueError re-raised here.

    Raises IsolatedError when the child raised anything else or stopped without an answer.
    """
    progress = as_progress(progress)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state inherited from this process
    messages = context.Queue()
    child = context.Process(target=_child, args=(target, dict(kwargs), messages), daemon=True)
    child.start()
    try:
        while True:
            try:
                kind, *payload = messages.get(timeout=poll_s)
            except queue_module.Empty:
                if not child.is_alive():
                    try:  # its last message may have arrived just before it exited
                        kind, *payload = messages.get(timeout=1.0)
                    except queue_module.Empty:
                        raise IsolatedError(
                            f"the child process stopped (exit code {child.exitcode}) before it finished; "
                            "it may have run out of memory — try a smaller model or setting."
                        ) from None
                else:
                    continue
            if kind == "progress":
                progress.update(*payload)
            elif kind == "result":
                return payload[0]
            elif kind == "refused":
                raise ValueError(payload[0])
            else:
                raise IsolatedError(payload[0])
    finally:
        if child.is_alive():
            child.terminate()
        child.join(timeout=10)
        messages.close()
