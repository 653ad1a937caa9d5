"""Model page in a real browser: one picker over every route, searchable by typing, and a timm model loaded from it
with what its random weights mean said on screen."""

from __future__ import annotations

import re

from tests.e2e.conftest import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    RERUN_TIMEOUT_MS,
    assert_no_exception,
    rerun,
    wait_idle,
)


def test_typing_in_the_picker_finds_torchvision_and_timm_models_and_loads_one(server: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    expect.set_options(timeout=60_000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1200})
            page.set_default_timeout(60_000)
            page.goto(f"{server}/Model")
            expect(page.get_by_role("heading", name="Model", exact=True)).to_be_visible(timeout=180_000)
            # the sample's baseline job reruns the page when it ends: let it, so no click below is lost to it
            expect(page.get_by_text("Top-1 accuracy").first).to_be_visible(timeout=180_000)
            wait_idle(page, RERUN_TIMEOUT_MS)
            picker = page.get_by_role("combobox", name=re.compile(r"^Architecture \([\d,]+; type to search\)")).first
            picker.click()
            page.keyboard.type("vit_b_16")
            expect(page.get_by_role("option", name="torchvision:vit_b_16 — 86.6 M params")).to_be_visible()
            page.keyboard.press("Escape")
            picker.click()
            page.keyboard.type("resnet10t")
            with rerun(page):
                page.get_by_role("option", name="timm:resnet10t", exact=True).click()
            expect(page.get_by_text("5.4 M parameters · input size, mean / std and interpolation from timm's data config")
                   ).to_be_visible()
            page.get_by_role("button", name="Load model").click()
            expect(page.get_by_text("Random weights: accuracy numbers are not meaningful").first).to_be_visible(
                timeout=180_000)
            expect(page.get_by_text("resnet10t (timm, random weights)").first).to_be_visible()
            wait_idle(page)
            assert_no_exception(page, "Model page after loading timm:resnet10t")
            page.screenshot(path=str(ARTIFACTS / "model_picker_timm.png"), full_page=True)
        finally:
            browser.close()
