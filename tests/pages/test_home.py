"""Home page: the sample model is loaded on the first visit and the next step is one click."""

from __future__ import annotations

from tests.pages.conftest import assert_clean


def test_first_visit_lands_on_home_with_the_sample_loaded(app) -> None:
    at = app()
    assert_clean(at)
    assert at.title[0].value == "Compression Studio"
    assert any("fashion_cnn (sample)" in m.value for m in at.markdown)
    assert [m.label for m in at.metric][:3] == ["Parameters", "Size as fp32", "Size as fp16"]
    assert at.metric[0].value == "0.87 M"
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "fashion_cnn (sample)" in sidebar and "Fashion-MNIST" in sidebar and "Experiments:** 0" in sidebar

    at.button(key="home.start").click().run()
    assert_clean(at)
    assert at.title[0].value == "Compress"
