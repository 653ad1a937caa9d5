"""The running app in a real browser: a `streamlit run app.py` server, Debian's Chromium, and the Learn page's
controls driven through Playwright page objects — shared by the browser tests (tests/e2e) and the browser
benchmarks (bench/learn_rerender.py, bench/learn_screenshots.py), which may not import each other.

It imports neither streamlit nor playwright: the server is a child process, and the callers hand in their pages.
"""

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

from core.paths import PROJECT_ROOT

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


# --------------------------------------------------------------------------- the Learn page

# perf_counter() of every message the page sent on Streamlit's websocket: the first one after a key press is the
# rerun request, so (that time - press) is what the browser waits before asking (the slider's own debounce).
SENT: list[float] = []
RECEIVED: list[float] = []  # the same for messages from the server: the first after the request is its first answer
MOVE_TIMEOUT_MS = 30_000

# The page has drawn a move: new numbers or chart titles (`b`: the text before; a title as Plotly drew it in the
# chart's SVG, not the figure object it was handed), no script run in progress or
# requested, no element left over from the previous run (data-stale), and the status widget not saying Running.
# Polled every animation frame, so it reads textContent: innerText would force a layout of the page in every frame
# and the measurement would add work the user's browser never does.
_MOVE_DONE = (
    "b => { const m = Array.from(document.querySelectorAll('[data-testid=\"stMetricValue\"]'))"
    ".map(e => e.textContent).join('|') + '#' + Array.from(document.querySelectorAll('.js-plotly-plot'))"
    ".map(p => { const t = p.querySelector('.gtitle'); return t ? t.textContent : ''; }).join('|') + '#'"
    " + Array.from(document.querySelectorAll('[data-testid=\"stButton\"] button')).map(b => b.textContent).join('|');"
    " if (m === b) return false;"
    " if (window.__firstChange === null) window.__firstChange = performance.now();"
    " const app = document.querySelector('[data-testid=\"stApp\"]');"
    " const state = app && app.getAttribute('data-test-script-state');"
    " if (state === 'running' || state === 'rerunRequested') return false;"
    " if (document.querySelector('[data-stale=\"true\"]')) return false;"
    " const s = document.querySelector('[data-testid=\"stStatusWidget\"]');"
    " if (s && s.textContent.includes('Running')) return false;"
    " window.__moveDoneAt = performance.now(); return true; }"
)
# Streamlit mounts a new chart element for a new figure and then draws it a second time (its theme effect re-sets
# the figure), so new numbers on the page do not yet mean the charts are finished: every change inside a Plotly
# chart is stamped, and a move ends with the last of them (see _settled_after).
_WATCH_CHARTS = (
    "() => { if (window.__chartWatch) return; window.__chartWatch = true; window.__lastChartChange = 0;"
    " new MutationObserver(records => { for (const r of records) {"
    " const node = r.target.nodeType === 1 ? r.target : r.target.parentElement;"
    " if (node && node.closest && node.closest('.js-plotly-plot, [data-testid=\"stPlotlyChart\"]')) {"
    " window.__lastChartChange = performance.now(); return; } } })"
    ".observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true}); }"
)
CHARTS_QUIET_MS = 300  # no chart changed for this long: the charts are finished


def wait_idle(page, timeout: float = 120_000) -> None:
    """Until Streamlit's status widget no longer says it is running."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=timeout,
    )


def metrics_text(page) -> str:
    """What a slider move changes: the lesson's metric values, its charts' titles and its buttons' labels."""
    return page.evaluate(
        "() => Array.from(document.querySelectorAll('[data-testid=\"stMetricValue\"]')).map(e => e.textContent).join('|')"
        " + '#' + Array.from(document.querySelectorAll('.js-plotly-plot'))"
        ".map(p => { const t = p.querySelector('.gtitle'); return t ? t.textContent : ''; }).join('|')"
        " + '#' + Array.from(document.querySelectorAll('[data-testid=\"stButton\"] button')).map(b => b.textContent).join('|')"
    )


def slider_thumb(page, label: str):
    return page.locator('[data-testid="stSlider"]').filter(has_text=label).get_by_role("slider").first


def open_learn(page, url: str, *, layer_prefix: str | None = None) -> None:
    page.goto(f"{url}/Learn")
    page.get_by_role("heading", name="Learn", exact=True).wait_for(timeout=180_000)
    page.locator(".js-plotly-plot .main-svg").locator("visible=true").first.wait_for(timeout=180_000)
    wait_idle(page)
    if layer_prefix:
        select_layer(page, layer_prefix)


def select_layer(page, prefix: str) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Weights to learn on").click()
    page.get_by_role("option").filter(has_text=prefix).first.click()
    wait_idle(page)
    page.wait_for_timeout(300)


# The script run has finished and nothing of the previous run is left (the status widget says "Running" only after
# a delay, so a lesson whose first run computes for a while could otherwise look finished while it is not).
RUN_FINISHED = (
    "() => { const app = document.querySelector('[data-testid=\"stApp\"]');"
    " const state = app && app.getAttribute('data-test-script-state');"
    " return state !== 'running' && state !== 'rerunRequested' && !document.querySelector('[data-stale=\"true\"]'); }"
)


def choose_lesson(page, title: str) -> None:
    page.locator('[data-testid="stRadio"]').filter(has_text="Lesson").get_by_text(title, exact=True).first.click()
    page.wait_for_function(
        "t => Array.from(document.querySelectorAll('h3')).some(h => h.innerText.includes(t))",
        arg=title,
        timeout=180_000,
    )
    page.locator(".js-plotly-plot .main-svg").locator("visible=true").first.wait_for(timeout=180_000)
    wait_idle(page, 180_000)
    page.wait_for_function(RUN_FINISHED, timeout=180_000, polling=100)
    page.wait_for_timeout(300)


def keys_with_room(page, label: str, keys: list[str]) -> list[str]:
    """`keys`, mirrored when the slider starts at the end they would first push against (a lesson's default can be
    its largest value on one model and not on another)."""
    slider = page.locator('[data-testid="stSlider"]').filter(has_text=label).first
    ends = slider.get_by_test_id("stSliderTickBar").get_by_test_id("stMarkdownContainer")  # the first and last value
    if ends.count() < 2:
        return keys
    low, high = ends.first.text_content(), ends.last.text_content()
    now = slider.get_by_test_id("stSliderThumbValue").first.text_content()
    if (keys[0] == "ArrowRight" and now == high) or (keys[0] == "ArrowLeft" and now == low):
        return [{"ArrowRight": "ArrowLeft", "ArrowLeft": "ArrowRight"}[k] for k in keys]
    return keys


RUN_BUTTONS = ("Fine-tune ", "Compress, export and read back")


def run_if_offered(page, *, timeout: float = 600_000) -> float | None:
    """Click a lesson's run button (fine-tuning, export) when it is shown; seconds until the run has finished
    (its button gives way to the result)."""
    for prefix in RUN_BUTTONS:
        button = page.get_by_role("button").filter(has_text=prefix)
        if button.count():
            started = time.perf_counter()
            button.first.click()
            page.wait_for_function(
                "p => { const busy = document.querySelector('[data-testid=\"stStatusWidget\"]');"
                " if (busy && busy.innerText.includes('Running')) return false;"
                " const shown = Array.from(document.querySelectorAll('[data-testid=\"stButton\"] button'))"
                ".some(b => b.innerText.includes(p));"
                " return !shown; }",
                arg=prefix,
                timeout=timeout,
                polling=250,
            )
            wait_idle(page, timeout)
            return time.perf_counter() - started
    return None


def why_not_done(page, before: str) -> str:
    """Which part of _MOVE_DONE still fails (printed when a move times out)."""
    return page.evaluate(
        "b => { const app = document.querySelector('[data-testid=\"stApp\"]');"
        " const s = document.querySelector('[data-testid=\"stStatusWidget\"]');"
        " const stale = Array.from(document.querySelectorAll('[data-stale=\"true\"]'));"
        " return 'script state ' + (app && app.getAttribute('data-test-script-state'))"
        " + ', stale elements ' + stale.length + ' ' + JSON.stringify(stale.slice(0, 3).map(e => e.innerText.slice(0, 60)))"
        " + ', status ' + JSON.stringify(s ? s.innerText.slice(0, 40) : null); }",
        before,
    ) + (", numbers/titles unchanged" if metrics_text(page) == before else ", numbers/titles changed")


def timed_move(
    page, label: str, key: str, *, timeout: float = 180_000, split: list | None = None, sent: list | None = None,
    answered: list | None = None,
) -> float:
    """Press `key` on a slider; seconds until the page shows new numbers or charts and the run has finished
    (see _MOVE_DONE); a PlaywrightTimeout after `timeout` ms (the caller records it as a timeout).
    `split` gets the seconds (browser clock) until new numbers or titles first showed, before the run had finished;
    `sent` the seconds until the browser sent its rerun request to the server (see SENT), `answered` until the
    server's first message after that request arrived (RECEIVED)."""
    # settle first (outside the timed window): a press while a late message of the previous run is still
    # arriving can be overwritten by it, and the move then shows nothing new
    # and until the numbers and titles hold still (a chart still mounting would otherwise end the move at once)
    wait_idle(page)
    before = metrics_text(page)
    for _ in range(20):
        page.wait_for_timeout(150)
        now, before = before, metrics_text(page)
        if now == before:
            break
    thumb = slider_thumb(page, label)
    thumb.focus()
    value = thumb.get_attribute("aria-valuetext")
    page.evaluate(_WATCH_CHARTS)
    page.evaluate("() => { window.__firstChange = null; window.__moveDoneAt = null; window.__moveStart = performance.now(); }")
    started = time.perf_counter()
    thumb.press(key)
    try:
        page.wait_for_function(_MOVE_DONE, arg=before, timeout=timeout, polling="raf")
    except Exception:
        now = slider_thumb(page, label).get_attribute("aria-valuetext")
        print(
            f"  move not done: {why_not_done(page, before)}; slider {value} → {now}; shown: {before[:160]!r}",
            flush=True,
        )
        raise
    seconds = time.perf_counter() - started + _settled_after(page)
    if split is not None:
        split.append(page.evaluate("() => (window.__firstChange - window.__moveStart) / 1000"))
    if sent is not None:
        after = [t for t in SENT if t >= started]
        if after:
            sent.append(after[0] - started)
            if answered is not None:
                replies = [t for t in RECEIVED if t >= after[0]]
                if replies:
                    answered.append(replies[0] - started)
    return seconds


def _settled_after(page) -> float:
    """Seconds from the moment the page showed the move (_MOVE_DONE) until its charts last changed, once they have
    been still for CHARTS_QUIET_MS (0 when they were already finished)."""
    page.wait_for_function(
        f"() => performance.now() - Math.max(window.__lastChartChange, window.__moveDoneAt) > {CHARTS_QUIET_MS}",
        polling=50,
        timeout=60_000,
    )
    return page.evaluate("() => Math.max(0, window.__lastChartChange - window.__moveDoneAt) / 1000")


def choose_radio(page, group: str, option: str) -> None:
    page.locator('[data-testid="stRadio"]').filter(has_text=group).get_by_text(option, exact=True).first.click()
    wait_idle(page, 180_000)
    page.wait_for_timeout(300)
