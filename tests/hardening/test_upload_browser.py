"""A weights file streamed from a real browser to `streamlit run app.py`, then loaded on the Model page.

The upload field is the streamed one (core.uploads route + pages/_ui/uploads component), not Streamlit's
in-memory uploader: the file appears in the session's uploads folder and the model loads from it.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import ARTIFACTS, assert_no_exception, browser, rerun, server, wait_idle  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def test_weights_streamed_from_the_browser_load_on_the_model_page(server, browser, tmp_path) -> None:  # noqa: F811
    import torch

    from core.models.sources import load_model

    weights = tmp_path / "fashion cnn weights.pt"
    torch.save(load_model("sample:fashion_cnn").module.state_dict(), weights)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{server}/Model")
        wait_idle(page)
        choice = page.get_by_text("Upload weights", exact=True)
        choice.wait_for(timeout=300_000)  # below the baseline, which a loaded machine measures slowly
        with rerun(page):  # the run that draws the upload field
            choice.click()
        field = page.locator("input.su-input")  # inside the component's shadow root (Playwright pierces it)
        field.wait_for(state="attached", timeout=60_000)
        assert page.locator("st-file-uploader, [data-testid='stFileUploader']").count() == 0
        field.set_input_files(str(weights))
        page.get_by_text("Uploaded fashion_cnn_weights.pt").wait_for(timeout=60_000)
        wait_idle(page)
        page.get_by_role("button", name="Load weights").click()
        # The toast of _apply_model: the weights were read back from the streamed file and the model switched.
        page.locator('[data-testid="stToast"]', has_text="Loaded").first.wait_for(timeout=180_000)
        wait_idle(page)
        assert_no_exception(page, "Model page after a streamed upload")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "streamed_upload.png"), full_page=True)
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "streamed_upload_failure.png"), full_page=True)
        raise
    finally:
        page.close()


def test_a_bad_file_streamed_from_the_browser_gets_a_clear_message(server, browser, tmp_path) -> None:  # noqa: F811
    """Not a checkpoint at all (text named .pt): the user reads what is wrong, no traceback, the page goes on."""
    bad = tmp_path / "garbage.pt"
    bad.write_text("this is not a PyTorch checkpoint\n" * 100)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{server}/Model")
        wait_idle(page)
        choice = page.get_by_text("Upload weights", exact=True)
        choice.wait_for(timeout=300_000)
        with rerun(page):  # the run that draws the upload field
            choice.click()
        field = page.locator("input.su-input")
        field.wait_for(state="attached", timeout=60_000)
        field.set_input_files(str(bad))
        page.get_by_text("Uploaded garbage.pt").wait_for(timeout=60_000)
        wait_idle(page)
        page.get_by_role("button", name="Load weights").click()
        alert = page.locator('[data-testid="stAlert"]', has_text="garbage.pt").first
        alert.wait_for(timeout=180_000)
        # Read it as it appears: a later rerun (the sidebar's baseline job ending) draws the page without it.
        message = alert.inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "streamed_upload_bad_file.png"), full_page=True)
        assert "corrupt or truncated" in message and "Upload it again" in message, message
        wait_idle(page)
        assert_no_exception(page, "Model page after a bad streamed upload")
        print("message shown:", message)
    finally:
        page.close()
