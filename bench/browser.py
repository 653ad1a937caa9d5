"""A real `streamlit run app.py` server and Debian's Chromium: shared by the browser tests and the browser benchmarks."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]
HEALTHY_WITHIN_S = 90


class ServerError(RuntimeError):
    """The server exited or never became healthy; the message ends with the tail of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(*, model: str, home: Path, log_path: Path, threads: int = 2) -> Iterator[str]:
    """`streamlit run app.py` on a free port with its own data folder; yields the URL once healthy, stops it after."""
    port = free_port()
    env = dict(os.environ, COMPRESSION_STUDIO_HOME=str(home), COMPRESSION_STUDIO_DEFAULT_MODEL=model,
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + HEALTHY_WITHIN_S
            while time.time() < deadline:
                with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
                if process.poll() is not None:
                    raise ServerError("streamlit exited early:\n" + log_path.read_text(errors="replace")[-3000:])
                time.sleep(0.5)
            else:
                raise ServerError(f"streamlit did not become healthy in {HEALTHY_WITHIN_S} s:\n"
                                  + log_path.read_text(errors="replace")[-3000:])
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
