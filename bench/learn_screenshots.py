"""Learn page: one PNG per lesson, taken in a real browser, for reviewing the layout.

``python -m bench.learn_screenshots`` starts ``streamlit run app.py`` on a model (default: the sample
``fashion_resnet``), opens the Learn page in Debian's Chromium on a layer (default: its largest, 590k weights),
walks the seven lessons, presses the run buttons of lessons 6 and 7 (fine-tuning, whole-model export) and saves
``test-artifacts/learn/learn_<n>_<lesson>.png`` (git-ignored). Prints the files and how long each lesson took.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from core.app_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PROJECT_ROOT,
    choose_lesson,
    open_learn,
    run_if_offered,
    serve,
    slider_thumb,
    wait_idle,
)

OUT = PROJECT_ROOT / "test-artifacts" / "learn"
LESSONS = (
    ("1 · Scale and zero-point", "learn_1_scale.png"),
    ("2 · Granularity: how many scales", "learn_2_granularity.png"),
    ("3 · Palettization: a look-up table", "learn_3_palettize.png"),
    ("4 · Pruning and sparsity", "learn_4_prune.png"),
    ("5 · Activations and calibration", "learn_5_activations.png"),
    ("6 · Fake quantization and fine-tuning", "learn_6_finetune.png"),
    ("7 · Where the bytes go", "learn_7_bytes.png"),
)


def _fewer_steps(page, presses: int) -> None:
    thumb = slider_thumb(page, "Fine-tuning steps")
    thumb.focus()
    for _ in range(presses):
        thumb.press("ArrowLeft")
        wait_idle(page, 180_000)


def take(url: str, *, layer: str, page_factory, finetune_presses: int) -> list[tuple[Path, float]]:
    page = page_factory()
    open_learn(page, url, layer_prefix=layer + " ")
    saved = []
    for title, name in LESSONS:
        started = time.perf_counter()
        choose_lesson(page, title)
        if title.startswith("6 "):
            _fewer_steps(page, finetune_presses)
        run_if_offered(page)
        # the lesson's last element: once it is drawn, no element of the previous lesson is left over
        page.get_by_role("button").filter(has_text="Open Compress with this setting").first.wait_for(timeout=600_000)
        wait_idle(page, 600_000)
        page.wait_for_timeout(1500)  # let Plotly finish drawing
        path = OUT / name
        page.screenshot(path=str(path), full_page=True)
        saved.append((path, time.perf_counter() - started))
        print(f"  {title:40} {saved[-1][1]:6.1f} s  {path.relative_to(PROJECT_ROOT)}", flush=True)
    page.close()
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sample:fashion_resnet")
    parser.add_argument("--layer", default="layer3.conv2", help="the layer the lessons start on")
    parser.add_argument("--finetune-steps-down", type=int, default=1,
                        help="slider presses below the default 40 fine-tuning steps (1: 20 steps)")
    args = parser.parse_args(argv)
    if not CHROMIUM.is_file():
        print(f"Chromium not found at {CHROMIUM}; install Debian's chromium package.", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve(model=args.model, home=Path(tmp), log_path=Path(tmp) / "streamlit.log") as url,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            saved = take(url, layer=args.layer, finetune_presses=args.finetune_steps_down,
                         page_factory=lambda: browser.new_page(viewport={"width": 1440, "height": 1500}))
        finally:
            browser.close()
    print(f"\n{len(saved)} screenshots of the Learn page ({args.model}, layer {args.layer}) in "
          f"{OUT.relative_to(PROJECT_ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
