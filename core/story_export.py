"""The Story as files that drop into slides: the self-contained HTML, a one-page landscape PDF and a PNG.

Headless Chromium (Debian's ``chromium``, driven by Playwright with ``executable_path``) prints the HTML page of
``core.story.story_html``. It runs in a child process (``python -m core.story_export``) with a time limit, so the
Streamlit process never hosts a browser and a stuck one is killed; a missing browser or a failure is a one-line
``StoryExportError`` naming what to do.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the child process imports only what printing needs (no torch, no plotly)
    from core.story import Story

CHROMIUM_ARGS = ("--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", "--disable-sync")
EXPORT_TIMEOUT_S = 120.0
CHART_SELECTOR = ".js-plotly-plot .main-svg"


class StoryExportError(RuntimeError):
    """The export could not be made (no browser, a browser failure, the time limit); the message says what to do."""


@dataclass(frozen=True)
class StoryFiles:
    html: Path
    pdf: Path
    png: Path


def chromium_path() -> Path:
    """Debian's Chromium, or the browser ``CHROMIUM_PATH`` names (the browser tests find it the same way)."""
    return Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))


def export_story(*, story: Story, out_dir: Path | str, timeout_s: float = EXPORT_TIMEOUT_S) -> StoryFiles:
    """Write ``story.html``, ``story.pdf`` (one landscape page) and ``story.png`` (1600 × 900) into ``out_dir``."""
    from core.story import PAGE_HEIGHT, PAGE_WIDTH, story_html

    browser = chromium_path()
    if not browser.is_file():
        raise StoryExportError(
            f"Chromium not found at {browser}: install Debian's chromium (apt-get install chromium) or set "
            "CHROMIUM_PATH; the HTML story downloads without it."
        )
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"story_{story.record.get('id')}"
    files = StoryFiles(html=folder / f"{stem}.html", pdf=folder / f"{stem}.pdf", png=folder / f"{stem}.png")
    files.html.write_text(story_html(story), encoding="utf-8")
    command = [sys.executable, "-m", "core.story_export", str(files.html), str(files.pdf), str(files.png),
               f"--size={PAGE_WIDTH}x{PAGE_HEIGHT}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              env={**os.environ, "CHROMIUM_PATH": str(browser)}, check=False)
    except subprocess.TimeoutExpired as exc:
        raise StoryExportError(f"printing the story took longer than {timeout_s:.0f} s and was stopped; try again "
                               "when the machine is less busy, or download the HTML story.") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise StoryExportError(f"Chromium could not print the story: {last}")
    for path in (files.pdf, files.png):
        if not path.is_file() or path.stat().st_size == 0:
            raise StoryExportError(f"Chromium finished without writing {path.name}; download the HTML story instead.")
    return files


def render(*, html_path: Path, pdf_path: Path, png_path: Path, width: int, height: int,
           timeout_ms: float = 60_000) -> None:
    """In the child process: open the page at its own size, wait for every chart, then screenshot and print it."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium_path()), args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
            page.set_default_timeout(timeout_ms)
            # offline by construction: the page may load nothing beyond itself (plotly.js and images are inlined)
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:"))
                       else route.abort())
            page.goto(html_path.resolve().as_uri(), wait_until="load")
            charts = page.evaluate("() => document.querySelectorAll('.js-plotly-plot').length")
            page.wait_for_function(f"n => document.querySelectorAll('{CHART_SELECTOR}').length >= n", arg=charts)
            page.evaluate("() => document.fonts.ready")
            page.screenshot(path=str(png_path), clip={"x": 0, "y": 0, "width": width, "height": height})
            page.emulate_media(media="screen")  # print what the screen shows, not a print stylesheet's reflow
            page.pdf(path=str(pdf_path), width=f"{width}px", height=f"{height}px", print_background=True,
                     prefer_css_page_size=True, page_ranges="1")
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a story HTML page to a one-page PDF and a PNG.")
    parser.add_argument("html", type=Path)
    parser.add_argument("pdf", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--size", default="1600x900", help="page width x height in CSS pixels")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    try:
        render(html_path=args.html, pdf_path=args.pdf, png_path=args.png, width=width, height=height)
    except Exception as exc:  # the parent shows the last line of stderr
        print(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
