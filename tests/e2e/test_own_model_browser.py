"""A user's own model and images, end to end in a real browser: Debian's Chromium against `streamlit run app.py`.

A `torch.export` program (.pt2, dynamic batch) of a trained Fashion-MNIST classifier and an ImageFolder .zip of
real Fashion-MNIST images are streamed through the Model page's upload fields; a 4-bit palettization of the
lifted model runs on Compress; the experiment shows on Compare (table: "artifact = evaluated" = yes; scatter) and
its compressed layer's histogram on Layers. A screenshot of each step goes to test-artifacts/own_model_*.png.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from tests.e2e.conftest import ARTIFACTS, assert_no_exception, rerun, trace_names, wait_idle
from tests.e2e.conftest import full_page_screenshot as _screenshot

pytestmark = pytest.mark.browser

PROGRAM_NAME = "fashion_classifier.pt2"
FOLDER_NAME = "fashion_own_images"
IMAGES_PER_CLASS = 20
RUN_TIMEOUT_MS = 600_000  # a loaded 2-core machine: export, evaluation and latency of a run take minutes

# st.dataframe draws on a canvas; glide data grid keeps an accessible <table role="grid"> of the cells in view.
# This scrolls every grid to its right end (so the last columns are in view) and returns {header: cell} per row
# of the grid that has `header`, matching cells to headers by aria-colindex.
GRID_ROWS_JS = """
header => {
  document.querySelectorAll('[data-testid="stDataFrame"] .dvn-scroller').forEach(s => { s.scrollLeft = s.scrollWidth; });
  const table = [...document.querySelectorAll('[data-testid="stDataFrame"] table[role="grid"]')]
    .find(t => [...t.querySelectorAll('th')].some(h => h.textContent.trim() === header));
  if (!table) return null;
  const key = (cell, i) => cell.getAttribute('aria-colindex') || String(i);
  const heads = Object.fromEntries([...table.querySelectorAll('thead th')].map((h, i) => [key(h, i), h.textContent.trim()]));
  return [...table.querySelectorAll('tbody tr')].map(r => Object.fromEntries(
    [...r.querySelectorAll('td')].map((td, i) => [heads[key(td, i)], td.textContent.trim()])));
}
"""


def _build_program(folder: Path) -> Path:
    """The sample architecture with its bundled trained weights, exported with a dynamic batch dimension."""
    import torch
    from safetensors.torch import load_file

    from core.models.architectures import SAMPLE_ARCHITECTURES
    from core.models.sources import SAMPLE_MODELS_DIR

    module = SAMPLE_ARCHITECTURES["fashion_cnn"]()
    module.load_state_dict(load_file(SAMPLE_MODELS_DIR / "fashion_cnn.safetensors"))
    module.eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(module, (torch.zeros(2, 1, 28, 28),), dynamic_shapes=({0: batch},))
    path = folder / PROGRAM_NAME
    torch.export.save(program, path)
    return path


def _build_image_zip(folder: Path) -> Path:
    """IMAGES_PER_CLASS real Fashion-MNIST test images per class as PNGs in `<root>/<k>_<class>/`.

    core.data labels ImageFolder classes by their sorted folder names, so the index prefix keeps the model's
    output order (the plain names would sort "Ankle boot" first).
    """
    import numpy as np
    from PIL import Image

    from core.data import BUNDLED_SUBSET, FASHION_MNIST_CLASSES

    root = folder / FOLDER_NAME
    with np.load(BUNDLED_SUBSET) as npz:
        images, labels = npz["test_images"], npz["test_labels"]
    for index, name in enumerate(FASHION_MNIST_CLASSES):
        class_dir = root / f"{index}_{re.sub(r'[^A-Za-z0-9]+', '_', name)}"
        class_dir.mkdir(parents=True)
        for n, i in enumerate(np.flatnonzero(labels == index)[:IMAGES_PER_CLASS]):
            Image.fromarray(images[i], mode="L").save(class_dir / f"{n:03d}.png")
    archive = folder / f"{FOLDER_NAME}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(root.rglob("*.png")):
            zf.write(file, file.relative_to(folder).as_posix())
    return archive


def _lifted_layer_names(program: Path) -> set[str]:
    from core.compress.layers import weight_layers
    from core.models.sources import load_model

    return set(weight_layers(load_model(f"export:{program}").module))


def _upload(page, label: str, file: Path) -> None:
    """Stream `file` through the page's upload field labelled `label` (inside a component's shadow root)."""
    field = page.locator(f'input.su-input[aria-label="{label}"]')
    field.wait_for(state="attached", timeout=60_000)
    field.set_input_files(str(file))
    page.get_by_text(f"Uploaded {file.name}").wait_for(timeout=120_000)
    wait_idle(page)


def _load_program(page, server: str, program: Path) -> None:
    from playwright.sync_api import expect

    page.goto(f"{server}/Model")
    expect(page.get_by_role("heading", name="Model", exact=True)).to_be_visible(timeout=180_000)
    wait_idle(page, 300_000)
    with rerun(page):  # the run that draws the upload field
        page.get_by_text("Upload torch.export (.pt2)", exact=True).click()
    _upload(page, "torch.export program (.pt2)", program)
    page.get_by_role("button", name="Load program").click()
    page.locator('[data-testid="stToast"]', has_text="Loaded").first.wait_for(timeout=300_000)
    wait_idle(page, 300_000)
    expect(page.get_by_role("heading", name=f"Exported {PROGRAM_NAME}")).to_be_visible()
    assert_no_exception(page, "Model page after loading the .pt2")
    _screenshot(page, "own_model_1_program_loaded.png")


def _use_images(page, archive: Path) -> None:
    from playwright.sync_api import expect

    with rerun(page):
        page.get_by_text("Your images: an ImageFolder .zip", exact=True).click()
    _upload(page, "ImageFolder .zip", archive)
    page.get_by_role("button", name="Use this data").click()
    wait_idle(page, 300_000)
    expect(page.get_by_text(f"ImageFolder {FOLDER_NAME} — 160 eval / 40 train images").first).to_be_visible(timeout=300_000)
    # The baseline of this model on these images (a worker job): its caption names the images it was measured on.
    caption = page.get_by_text(re.compile(rf"Baseline [\d.]+ % on 160 ImageFolder {FOLDER_NAME} test images"))
    expect(caption).to_be_visible(timeout=RUN_TIMEOUT_MS)
    wait_idle(page, 300_000)
    accuracy = float(re.search(r"Baseline ([\d.]+) %", caption.inner_text()).group(1))
    assert 80.0 <= accuracy <= 100.0, f"the trained classifier scores {accuracy} % on real Fashion-MNIST images"
    assert_no_exception(page, "Model page with the ImageFolder")
    _screenshot(page, "own_model_2_baseline.png")


def _palettize(page) -> None:
    from playwright.sync_api import expect

    page.get_by_role("link", name="Compress").first.click()
    expect(page.get_by_role("heading", name="Compress", exact=True)).to_be_visible()
    wait_idle(page)
    expect(page.get_by_text(f"Exported {PROGRAM_NAME}").first).to_be_visible()
    page.get_by_role("button", name="Run compression").first.click()
    expect(page.get_by_text("Saved as experiment")).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(page.get_by_text("4-bit palettization").first).to_be_visible()
    wait_idle(page)
    expect(page.get_by_text("Artifact = evaluated weights").first).to_be_visible()
    assert page.get_by_text("weights differ from the weights that were evaluated").count() == 0
    # the lifted model was an FX graph before compression: data-free palettization did not rewrite it
    assert page.get_by_text("left a rewritten graph").count() == 0
    assert_no_exception(page, "Compress result")
    _screenshot(page, "own_model_3_result.png")


def _compare(page) -> None:
    from playwright.sync_api import expect

    page.get_by_role("button", name="See it in Compare").click()
    expect(page.get_by_role("heading", name="Compare", exact=True)).to_be_visible()
    page.wait_for_selector(".js-plotly-plot .scatterlayer .point", timeout=120_000)
    wait_idle(page)
    assert "Palettize" in trace_names(page, 0), trace_names(page, 0)
    page.set_viewport_size({"width": 2200, "height": 1000})  # every column of the experiments table in view
    wait_idle(page)
    page.wait_for_function(f"() => ({GRID_ROWS_JS})('artifact = evaluated') !== null", timeout=60_000)
    rows = page.evaluate(GRID_ROWS_JS, "artifact = evaluated")
    assert len(rows) == 1, rows  # the one experiment of this fresh server (baselines are not rows)
    assert rows[0]["artifact = evaluated"] == "yes", rows[0]
    assert "4-bit palettization" in rows[0].get("setting", "4-bit palettization"), rows[0]
    assert_no_exception(page, "Compare")
    _screenshot(page, "own_model_4_compare.png")
    page.set_viewport_size({"width": 1440, "height": 1000})


def _selectbox_text(page, label: str) -> str:
    """What a selectbox shows: its label and the chosen option (kept in its input's value)."""
    box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True))
    inputs = box.locator("input")
    return box.inner_text() + " " + (inputs.first.input_value() if inputs.count() else "")


def _layers(page, lifted: set[str]) -> None:
    from playwright.sync_api import expect

    page.get_by_role("link", name="Layers").first.click()
    expect(page.get_by_role("heading", name="Weight histogram")).to_be_visible()
    page.wait_for_selector(".js-plotly-plot .barlayer .point", timeout=120_000)
    wait_idle(page)
    experiment = _selectbox_text(page, "Experiment")
    assert PROGRAM_NAME in experiment, experiment
    chosen = _selectbox_text(page, "Layer")
    shown = re.search(r"(\S+) \((compressed|not compressed)\)", chosen)
    assert shown and shown.group(1) in lifted and shown.group(2) == "compressed", (chosen, sorted(lifted))
    names = trace_names(page, 0)
    assert {"original", "compressed"} <= set(names), names
    assert any(n and n.startswith("LUT centroids") for n in names), names
    assert_no_exception(page, "Layers")
    _screenshot(page, "own_model_5_layers.png")


def test_own_pt2_and_image_folder_palettized_in_the_browser(server: str, browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("own_model_*.png"):
        old.unlink()
    expect.set_options(timeout=60_000)
    program = _build_program(tmp_path)
    archive = _build_image_zip(tmp_path)
    lifted = _lifted_layer_names(program)
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.set_default_timeout(60_000)
    try:
        _load_program(page, server, program)
        _use_images(page, archive)
        _palettize(page)
        _compare(page)
        _layers(page, lifted)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "own_model_failure.png"), full_page=True)
        raise
    finally:
        page.close()
