"""The one-page story on real experiments: the choice, its words, its charts, and its PDF / PNG / HTML export."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.formatting import as_number
from core.store import ExperimentStore
from core.story import (
    PAGE_HEIGHT,
    PAGE_WIDTH,
    accuracy_words,
    build_story,
    latency_words,
    size_words,
    story_choice,
    story_flipped,
    story_html,
)
from core.story_export import StoryExportError, chromium_path, export_story
from tests.pages.conftest import run_real_experiment


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    home = tmp_path_factory.mktemp("story_home")
    run_real_experiment(home, {"method": "palettize", "n_bits": 4})
    run_real_experiment(home, {"method": "palettize", "n_bits": 2})
    return ExperimentStore(home).list()


def _drop(record: dict) -> float:
    return (record["baseline_accuracy_top1"] - record["accuracy_top1"]) * 100


def test_the_default_story_is_the_smallest_within_the_budget(records: list[dict]) -> None:
    four, two = records
    wide = story_choice(records, budget_pts=100.0)
    assert wide is not None and wide["id"] == two["id"]  # 2-bit is the smaller file
    tight = story_choice(records, budget_pts=max(_drop(four), 0.0) + 0.01)
    expected = two if _drop(two) <= max(_drop(four), 0.0) + 0.01 else four
    assert tight is not None and tight["id"] == expected["id"]
    assert story_choice(records, budget_pts=min(_drop(four), _drop(two)) - 0.5) is None


def test_the_sentence_says_what_the_record_measured(records: list[dict]) -> None:
    record = records[0]
    story = build_story(record=record, records=records, budget_pts=5.0)
    ratio = f"{record['compression_ratio_fp16']:.1f}× smaller"
    delta = round((record["accuracy_top1"] - record["baseline_accuracy_top1"]) * 100, 1)
    points = "accuracy unchanged" if delta == 0 else f"{'+' if delta > 0 else '−'}{abs(delta):.1f} points"
    assert story.sentence.startswith("4-bit palettization, data-free: " + ratio + ", " + points)
    assert f"on {record['eval_images']:,} test images" in story.sentence
    assert "CPU latency unchanged here" in story.sentence  # palettized weights run decompressed on the CPU
    assert "not promised" in story.sentence
    assert "n_bits: 4" in story.library_config and "PostTrainingPalettizer" in story.library_config


def test_plain_words_for_sizes_and_int8_speed(records: list[dict]) -> None:
    assert size_words(3.87) == "3.9× smaller" and size_words(0.5) == "2.0× larger"
    timed = {**records[0], "runs_int8_kernels": True, "latency_ms_p50": 1.0, "baseline_latency_ms_p50": 1.5}
    assert latency_words(timed).startswith("1.5× faster on this CPU")
    random_weights = {**records[0], "accuracy_meaningful": False, "agreement_top1": 0.9}
    assert accuracy_words(random_weights) == f"90.0 % of predictions agree with the uncompressed model on {records[0]['eval_images']:,} test images"
    same = {**timed, "latency_ms_p50": 1.49}
    assert latency_words(same).startswith("CPU latency unchanged here")


def test_the_budget_fact_says_whether_the_story_is_inside_it(records: list[dict]) -> None:
    two = records[1]
    inside = build_story(record=two, records=records, budget_pts=_drop(two) + 0.5)
    outside = build_story(record=two, records=records, budget_pts=max(_drop(two) - 0.5, 0.0))
    assert dict(inside.facts)["Budget"].endswith("this result is within it")
    if _drop(two) > 0.5:
        assert dict(outside.facts)["Budget"].endswith("this result is outside it")
        annotations = [a["text"] for a in outside.scatter.to_dict()["layout"]["annotations"]]
        assert f"<b>this result: #{two['id']}</b>" in annotations  # not the chart's own pick: named on the chart


def test_the_charts_mark_the_story_and_the_budget(records: list[dict]) -> None:
    four = records[0]
    story = build_story(record=four, records=records, budget_pts=2.0)
    scatter = story.scatter.to_dict()
    assert any(s.get("type") == "line" for s in scatter["layout"]["shapes"])  # the budget line
    sizes = [size for trace in scatter["data"] if trace.get("name") == "Palettize" for size in trace["marker"]["size"]]
    assert max(sizes) > min(sizes)  # the story's point is drawn larger than the other experiment's
    bars = story.sizes.to_dict()["data"]
    before = sum(sum(b["x"]) for b in bars if b["y"][0].startswith("before"))
    after = sum(sum(b["x"]) for b in bars if b["y"][0].startswith("after"))
    assert before == pytest.approx(four["size_fp16_bytes"] / 1e6)
    assert after == pytest.approx(sum(four["size_breakdown"].values()) / 1e6)
    assert after < before / 3


def _flipped(record: dict):
    from core.dataset_choice import flipped_image_position
    from pages._ui.loading import dataset_for_record, thumbnail

    source = dataset_for_record(record, current=None)
    assert source is not None, "the evaluation images must be on this machine for this test"
    position = lambda index: flipped_image_position(record, dataset=source, index=index)  # noqa: E731
    return story_flipped(record, image_of=lambda index: thumbnail(source, position(index))), source


def test_flipped_images_come_first_newly_wrong_with_the_compare_captions(records: list[dict]) -> None:
    two = records[1]  # 2-bit palettization changes many predictions
    flipped, _ = _flipped(two)
    assert 0 < len(flipped) <= 6
    kinds = [f.kind for f in flipped]
    assert kinds == sorted(kinds, key=["broken", "fixed", "still wrong"].index)
    assert all(re.match(r"^(✓→✗|✗→✓|✗→✗) .+ → .+ \(true: .+\)$", f.caption) for f in flipped)
    assert all(Image.open(io.BytesIO(f.png)).size == (112, 112) for f in flipped)


def _pdf_pages(data: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", data))


def test_export_makes_a_one_page_pdf_and_a_slide_sized_png(records: list[dict], tmp_path: Path) -> None:
    if not chromium_path().is_file():
        pytest.skip(f"Chromium not found at {chromium_path()}")
    two = records[1]
    flipped, _ = _flipped(two)
    story = build_story(record=two, records=records, budget_pts=20.0, flipped=flipped)
    files = export_story(story=story, out_dir=tmp_path)
    pdf = files.pdf.read_bytes()
    assert pdf.startswith(b"%PDF") and _pdf_pages(pdf) == 1
    box = re.search(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", pdf)
    assert box and float(box.group(1)) > float(box.group(2))  # landscape
    png = Image.open(files.png)
    assert png.size == (PAGE_WIDTH, PAGE_HEIGHT)
    pixels = np.asarray(png.convert("L"), dtype=np.float64)
    assert pixels.std() > 20  # text, charts and images, not a blank page
    charts_area = pixels[250:700, :]  # the two charts: drawn, not empty boxes
    assert (charts_area < 200).mean() > 0.02
    html = files.html.read_text()
    assert html == story_html(story)
    # self-contained: plotly.js is inlined, and the export's browser was refused every request beyond the file
    assert "window.PlotlyConfig" in html and len(html) > 3_000_000
    assert html.count("<figure><img") == len(flipped)


def test_export_without_a_browser_says_what_to_do(records: list[dict], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHROMIUM_PATH", str(tmp_path / "no-such-browser"))
    story = build_story(record=records[0], records=records, budget_pts=5.0)
    with pytest.raises(StoryExportError, match=r"Chromium not found at .*no-such-browser.*CHROMIUM_PATH"):
        export_story(story=story, out_dir=tmp_path)


def test_a_record_without_an_id_is_refused(records: list[dict]) -> None:
    unsaved = {k: v for k, v in records[0].items() if k != "id"}
    with pytest.raises(ValueError, match="saved experiment"):
        build_story(record=unsaved, records=records, budget_pts=5.0)
    assert as_number(records[0]["compression_ratio_fp16"]) > 3
