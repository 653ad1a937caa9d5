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

from core.app_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    MOVE_TIMEOUT_MS,
    PROJECT_ROOT,
    RECEIVED,
    SENT,
    choose_lesson,
    choose_radio,
    keys_with_room,
    open_learn,
    run_if_offered,
    serve,
    slider_thumb,
    timed_move,
    wait_idle,
)

TARGET_S = 0.3
RESULTS = PROJECT_ROOT / "bench" / "results"

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
