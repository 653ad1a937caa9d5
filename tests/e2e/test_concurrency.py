"""Three browser sessions submit runs at the same moment: each run is a job in a worker process, so no session's
page shows another's library noise, and every record is complete, its own and timed exclusively.

Before runs were jobs, a run in one tab made another tab's page show "ERROR: External init callback must run in
same thread as registerClient" and the latency of two runs timed at once was silently wrong.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, require_chromium, streamlit_server, wait_idle

pytestmark = pytest.mark.browser

# tab of the Compress page → (the run button's widget key, the spec that tab's defaults give)
RUNS = {
    "Palettize": ("run.palettize", {"method": "palettize", "n_bits": 4}),
    "Quantize weights": ("run.quantize_weights", {"method": "quantize_weights", "dtype": "int8"}),
    "Prune": ("run.prune", {"method": "prune", "target_sparsity": 0.5}),
}
LIBRARY_ERROR_TEXT = ("External init callback", "registerClient", "Traceback", "StreamlitAPIException",
                      "Error running app")


def _assert_clean(page, where: str) -> None:
    text = page.inner_text("body")
    for needle in LIBRARY_ERROR_TEXT:
        assert needle not in text, f"{where}: '{needle}' shown on the page"
    assert page.locator('[data-testid="stException"]').count() == 0, f"{where}: an exception box is shown"


def test_three_sessions_submitting_at_once_get_three_complete_records(tmp_path: Path, monkeypatch) -> None:
    from playwright.sync_api import expect, sync_playwright

    require_chromium()
    home = tmp_path / "studio"
    home.mkdir()
    # The server's workers share a timing lock of their own: other test runs on this machine don't hold it up.
    monkeypatch.setenv("COMPRESSION_STUDIO_TIMING_LOCK", str(tmp_path / "timing.lock"))
    monkeypatch.setenv("COMPRESSION_STUDIO_WORKER_IDLE", "10")
    expect.set_options(timeout=60_000)
    t0 = time.monotonic()
    with streamlit_server(home, log_name="streamlit_server_concurrency.log") as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            pages = {}
            for tab in RUNS:  # three browser contexts = three independent sessions (own cookies, own state)
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                page.set_default_timeout(60_000)
                page.goto(url)
                expect(page.get_by_role("heading", name="Compression Studio")).to_be_visible()
                wait_idle(page)
                page.get_by_role("link", name="Compress").first.click()
                expect(page.get_by_role("heading", name="Compress", exact=True)).to_be_visible()
                wait_idle(page)
                page.locator('[data-testid="stSelectbox"]').filter(has_text="Evaluation images").click()
                page.get_by_role("option", name="500 images (fastest)").click()
                wait_idle(page)
                page.get_by_role("tab", name=tab, exact=True).click()
                pages[tab] = page

            started = time.monotonic()
            print(f"set-up (server, three sessions) {started - t0:.0f} s")
            for tab, (key, _) in RUNS.items():  # the three clicks within a fraction of a second
                pages[tab].locator(f".st-key-{key.replace('.', '-')} button").filter(visible=True).click()
            for tab, page in pages.items():  # each session shows its own job's progress, and the shared queue
                expect(page.get_by_role("button", name="Cancel run")).to_be_visible()
                _assert_clean(page, f"{tab} while running")
            pages["Prune"].screenshot(path=str(ARTIFACTS / "concurrency_running.png"))
            for tab, page in pages.items():
                expect(page.get_by_text("Saved as experiment")).to_be_visible(timeout=240_000)
                wait_idle(page)
                _assert_clean(page, f"{tab} with its result")
            elapsed = time.monotonic() - started
            pages["Palettize"].screenshot(path=str(ARTIFACTS / "concurrency_result.png"))
            reloaded = pages["Palettize"]  # a reload is a new session: the URL (?job=N) brings the result back
            reloaded.reload()
            expect(reloaded.get_by_text("Saved as experiment")).to_be_visible()
            expect(reloaded.get_by_text("4-bit palettization, data-free").first).to_be_visible()
            _assert_clean(reloaded, "Palettize after a reload")
        finally:
            browser.close()

    from core.jobs import JobQueue
    from core.store import ExperimentStore

    records = ExperimentStore(home).list()
    assert len(records) == 3, f"{len(records)} records after {elapsed:.0f} s"
    by_method = {r["method"]: r for r in records}
    assert set(by_method) == {spec["method"] for _, spec in RUNS.values()}
    for _, spec in RUNS.values():
        record = by_method[spec["method"]]
        assert all(record["spec"][k] == v for k, v in spec.items()), record["spec"]  # its own spec
        assert record["model"] == "sample:fashion_cnn" and record["eval_images"] == 500
        assert record["accuracy_top1"] is not None and record["latency_ms_p50"] > 0 and record["artifact_path"]
        assert record["timing_exclusive"] is True  # latency timed while no other job computed
    jobs = JobQueue(home=home).list()
    print(f"runs {elapsed:.0f} s")
    for j in jobs:
        print(j.id, j.label, f"wait {j.started_at - j.created_at:.1f} run {j.finished_at - j.started_at:.1f}",
              {k: round(v, 1) for k, v in (j.phase_seconds or {}).items() if v is not None})
    assert sorted(j.state for j in jobs) == ["done"] * 3
    assert sorted(j.experiment_id for j in jobs) == sorted(r["id"] for r in records)
    log = (home / "streamlit.log").read_text(errors="replace")
    assert "External init callback" not in log and "Traceback" not in log
