"""Learn page: how long a slider move takes to re-render, measured in a real browser.

``python -m bench.learn_rerender`` starts ``streamlit run app.py`` on the sample ``fashion_resnet`` (2 threads),
opens the Learn page in Debian's Chromium (Playwright), picks the largest layer (590k weights) and moves each
lesson's main slider with the keyboard. A move counts from the key press until the page shows the new numbers
and charts (the metric values or a chart title changed), the app says its script run finished (stApp's
``data-test-script-state``, set as soon as the run state changes; the status widget's "Running" appears only after
a delay, so it alone could end a move before the fragment had drawn), no element is still marked stale and
the charts have finished drawing (the last change inside any chart, once all have been still for 0.3 s). The first
move of a new setting runs the computation (k-means in lesson 3, calibration in lesson 5: cold); lessons 6 and 7
first press their run button at both settings (fine-tuning, whole-model export: reported separately); moving
back and forth is then served from the cache (warm). Prints a table per lesson with the target and whether it is
met, and writes it as CSV under bench/results/. Target: ≤ 0.3 s per warm move (slower reads as a stuck slider).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.browser import CHROMIUM, CHROMIUM_ARGS, PROJECT_ROOT, serve

TARGET_S = 0.3
# perf_counter() of every message the page sent on Streamlit's websocket: the first one after a key press is the
# rerun request, so (that time - press) is what the browser waits before asking (the slider's own debounce).
SENT: list[float] = []
RECEIVED: list[float] = []  # the same for messages from the server: the first after the request is its first answer
MOVE_TIMEOUT_MS = 30_000
RESULTS = PROJECT_ROOT / "bench" / "results"

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


MOVES = (
    # lesson title, slider label, keys to press in turn (a round trip, so every setting is visited twice)
    ("1 · Scale and zero-point", "Bits", ["ArrowRight", "ArrowRight", "ArrowLeft", "ArrowLeft"]),
    ("2 · Granularity: how many scales", "Bits", ["ArrowRight", "ArrowLeft"]),
    ("3 · Palettization: a look-up table", "Bits per index", ["ArrowLeft", "ArrowRight"]),
    ("4 · Pruning and sparsity", "Target sparsity", ["ArrowRight", "ArrowRight", "ArrowLeft", "ArrowLeft"]),
    ("5 · Activations and calibration", "Calibration images (N)", ["ArrowRight", "ArrowLeft"]),
    ("6 · Fake quantization and fine-tuning", "Bits", ["ArrowRight", "ArrowLeft"]),
    ("7 · Where the bytes go", "Integer type", ["ArrowLeft", "ArrowRight"]),
)


def _short_finetune(page) -> None:
    """Lesson 6: 10 fine-tuning steps (the slider's smallest), so the two runs the moves need take seconds."""
    thumb = slider_thumb(page, "Fine-tuning steps")
    thumb.focus()
    for _ in range(3):
        thumb.press("ArrowLeft")
        wait_idle(page, 180_000)
    page.wait_for_timeout(300)


def _integer_weights(page) -> None:
    """Lesson 7: integer weights (no whole-model k-means; the export is the slow part)."""
    choose_radio(page, "Compress the whole model by", "integer weights")


SETUP = {"6 · Fake quantization and fine-tuning": _short_finetune, "7 · Where the bytes go": _integer_weights}


def choose_radio(page, group: str, option: str) -> None:
    page.locator('[data-testid="stRadio"]').filter(has_text=group).get_by_text(option, exact=True).first.click()
    wait_idle(page, 180_000)
    page.wait_for_timeout(300)


def prepare_runs(page, label: str, keys: list[str]) -> list[float]:
    """Visit every setting of a round trip once and press its run button where the lesson has one (cold)."""
    seconds = []
    first = run_if_offered(page)
    if first is not None:
        seconds.append(first)
    for key in keys[: len(keys) // 2]:
        slider_thumb(page, label).focus()
        slider_thumb(page, label).press(key)
        wait_idle(page, 180_000)
        page.wait_for_timeout(300)
        took = run_if_offered(page)
        if took is not None:
            seconds.append(took)
    for key in keys[len(keys) // 2 :]:
        slider_thumb(page, label).focus()
        slider_thumb(page, label).press(key)
        wait_idle(page, 180_000)
        page.wait_for_timeout(300)
    return seconds


def measure(
    url: str, *, layer_prefix: str, rounds: int, page_factory, shots: Path = RESULTS, lessons: str = ""
) -> list[dict]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    """Every move of MOVES, `rounds` times: the first visit of a setting is cold, the later ones warm."""
    page = page_factory()
    open_learn(page, url, layer_prefix=layer_prefix)
    rows = []
    for lesson, label, keys in MOVES:
        if lessons and lesson[0] not in lessons:
            continue
        choose_lesson(page, lesson)
        if lesson in SETUP:
            SETUP[lesson](page)
        keys = keys_with_room(page, label, keys)
        runs = prepare_runs(page, label, keys)
        if runs:
            print(f"  {lesson[:28]:28} run button(s): {', '.join(f'{s:.1f} s' for s in runs)} (cold, first time)")
        timings: list[tuple[str, float]] = []
        timeouts = 0
        shown: list[float] = []  # warm moves: until new numbers first showed
        requested: list[float] = []  # warm moves: until the browser sent the rerun request
        answered: list[float] = []  # warm moves: until the server's first answer arrived
        for round_index in range(rounds):
            for index, key in enumerate(keys):
                # the first round's outward half visits settings not computed yet (cold), unless prepare_runs did
                cold = round_index == 0 and index < len(keys) // 2 and not runs
                try:
                    seconds = timed_move(page, label, key, timeout=MOVE_TIMEOUT_MS, split=None if cold else shown,
                                         sent=None if cold else requested, answered=None if cold else answered)
                except PlaywrightTimeout:  # no visible change: counted as a miss, the walk goes on
                    page.screenshot(path=str(shots / f"learn_timeout_{lesson[0]}_{round_index}_{key}.png"))
                    print(
                        f"  {lesson[:28]:28} {label:16} {key:10} no change within {MOVE_TIMEOUT_MS / 1000:.0f} s",
                        flush=True,
                    )
                    wait_idle(page, 180_000)
                    seconds = MOVE_TIMEOUT_MS / 1000
                    timeouts += 1
                print(f"  {lesson[:28]:28} {label:16} {key:10} {seconds:7.3f} s{' (cold)' if cold else ''}", flush=True)
                timings.append(("cold" if cold else "warm", seconds))
        warm = [s for kind, s in timings if kind == "warm"]
        rows.append(
            {
                "lesson": lesson,
                "slider": label,
                "moves": len(timings),
                "first_move_s": round(timings[0][1], 3),
                "warm_median_s": round(statistics.median(warm), 3) if warm else None,
                "warm_max_s": round(max(warm), 3) if warm else None,
                "warm_median_shown_s": round(statistics.median(shown), 3) if shown else None,
                "warm_median_request_sent_s": round(statistics.median(requested), 3) if requested else None,
                "warm_median_first_answer_s": round(statistics.median(answered), 3) if answered else None,
                "timeouts": timeouts,
                "meets_target": bool(warm) and max(warm) <= TARGET_S and not timeouts,
            }
        )
    page.close()
    return rows


def print_table(rows: list[dict], *, model: str, layer: str) -> None:
    print(
        f"\nLearn page re-render after a slider move — {model}, layer {layer}, real Chromium, "
        f"{os.cpu_count()} CPU cores, target ≤ {TARGET_S} s (warm)"
    )
    header = (
        f"{'lesson':38} {'slider':22} {'moves':>5} {'first (s)':>10} {'warm median (s)':>16} {'warm max (s)':>13} "
        f"{'target (s)':>10} {'timeouts':>8} {'request sent (s)':>16} {'first answer (s)':>16} "
        f"{'numbers shown (s)':>17}  met?"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['lesson']:38} {r['slider']:22} {r['moves']:>5} {r['first_move_s']:>10.3f} "
            f"{r['warm_median_s']:>16.3f} {r['warm_max_s']:>13.3f} {TARGET_S:>10.1f} {r['timeouts']:>8} "
            f"{r['warm_median_request_sent_s'] or 0:>16.3f} {r['warm_median_first_answer_s'] or 0:>16.3f} "
            f"{r['warm_median_shown_s'] or 0:>17.3f}  "
            f"{'met' if r['meets_target'] else 'not met'}"
        )


def _recording_page(browser):
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    def watch(ws) -> None:
        ws.on("framesent", lambda _payload: SENT.append(time.perf_counter()))
        ws.on("framereceived", lambda _payload: RECEIVED.append(time.perf_counter()))

    page.on("websocket", watch)
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sample:fashion_resnet")
    parser.add_argument("--layer", default="layer3.conv2", help="layer name (fashion_resnet's 590k-weight conv)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lessons", default="", help="only these lessons, by number (e.g. 145)")
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "learn_rerender.csv",
        help="CSV to write (give a path under /tmp for runs on a loaded machine)",
    )
    args = parser.parse_args(argv)
    if not CHROMIUM.is_file():
        print(f"Chromium not found at {CHROMIUM}; install Debian's chromium package.", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve(model=args.model, home=Path(tmp), log_path=Path(tmp) / "streamlit.log") as url,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            rows = measure(
                url,
                layer_prefix=args.layer + " ",
                rounds=args.rounds,
                page_factory=lambda: _recording_page(browser),
                shots=args.out.parent,
                lessons=args.lessons,
            )
        finally:
            browser.close()
    print_table(rows, model=args.model, layer=args.layer)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwritten: {out}")
    return 0 if all(r["meets_target"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
