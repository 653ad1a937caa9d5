"""Story: one saved result on one page for stakeholders — a sentence, two charts, flipped images, the recipe — and
its export as a one-page PDF, a PNG for slides and the self-contained HTML."""

from __future__ import annotations

import tempfile

import plotly.graph_objects as go
import streamlit as st

from core.dataset_choice import flipped_image_position
from core.report import build_report
from core.story import Story, build_story, story_choice, story_flipped, story_html
from core.story_export import StoryExportError, export_story
from core.tables import experiment_label
from pages._ui.loading import dataset_for_record, thumbnail
from pages._ui.shell import page_context
from pages._ui.storage import records as stored_records
from pages._ui.storage import store

AUTO = 0  # the experiment picker's first option: the smallest within the budget (follows the slider)
EXPORT_KEY = "story.export"
CHART_CONFIG = {"displaylogo": False, "displayModeBar": False}  # a projector page: no toolbar over the titles  # session_state: (record id, budget) → the exported files' bytes


def stretched(figure: go.Figure) -> go.Figure:
    """The story's fixed-size page figure, sized by the page's column instead."""
    return go.Figure(figure).update_layout(width=None)


def render_story(story: Story) -> None:
    st.markdown(f"### {story.sentence}")
    st.markdown("   ·   ".join(f"{label} **{value}**" for label, value in story.facts))
    left, right = st.columns(2)
    left.plotly_chart(stretched(story.scatter), key="story.scatter", config=CHART_CONFIG)
    right.plotly_chart(stretched(story.sizes), key="story.sizes", config=CHART_CONFIG)
    left, right = st.columns([5, 4])
    with left:
        st.markdown("**Predictions it changed** (✓→✗ newly wrong, ✗→✓ newly right)")
        if story.flipped:
            grid = st.columns(len(story.flipped))
            for column, item in zip(grid, story.flipped, strict=True):
                column.image(item.png, caption=item.caption, width="stretch")
        else:
            st.caption("No changed prediction to show (none changed, or the evaluation images are not on this machine).")
    with right:
        st.markdown("**Recipe** (the coremltools config of this run)")
        st.code(story.library_config, language="yaml", wrap_lines=True)
    st.caption(story.data_note)


def render_exports(story: Story, budget: float, records: list[dict]) -> None:
    key = (story.record["id"], budget)
    made = st.session_state.get(EXPORT_KEY)
    columns = st.columns(5)
    columns[0].download_button("HTML story", story_html(story), file_name=f"story_{key[0]}.html", mime="text/html",
                               on_click="ignore", icon=":material/html:", key="story.html",
                               help="This page as one self-contained file; opens offline.")
    columns[4].download_button("HTML report", lambda: build_report(records=records, budget_pts=budget),
                               file_name="compression_report.html", mime="text/html", on_click="ignore",
                               icon=":material/summarize:", key="story.report",
                               help="The Compare page's report of every experiment of this model (self-contained).")
    if columns[1].button("Make PDF and PNG", icon=":material/picture_as_pdf:", key="story.make",
                         help="Headless Chromium prints this page: one landscape PDF page and a 1600 × 900 PNG."):
        with st.spinner("Printing the story with headless Chromium…"), tempfile.TemporaryDirectory() as folder:
            try:
                files = export_story(story=story, out_dir=folder)
                made = {"key": key, "pdf": files.pdf.read_bytes(), "png": files.png.read_bytes()}
                st.session_state[EXPORT_KEY] = made
            except StoryExportError as exc:
                st.error(str(exc), icon=":material/error:")
    if made and made["key"] == key:
        columns[2].download_button("Story PDF", made["pdf"], file_name=f"story_{key[0]}.pdf", mime="application/pdf",
                                   on_click="ignore", icon=":material/picture_as_pdf:", key="story.pdf")
        columns[3].download_button("Story PNG", made["png"], file_name=f"story_{key[0]}.png", mime="image/png",
                                   on_click="ignore", icon=":material/image:", key="story.png")


model, dataset = page_context()
st.title("Story", anchor=False)
st.caption("One result on one page, for a projector or a slide: what it buys, what it costs, how to reproduce it.")

models = store().models()
if not models:
    st.info("No experiments yet. Run one on the Compress page and tell its story here.", icon=":material/info:")
    st.page_link("pages/2_Compress.py", label="Go to Compress", icon=":material/compress:")
    st.stop()

model_ids = [m["model"] for m in models]
if st.session_state.get("cfg.story.model") not in model_ids:
    st.session_state["cfg.story.model"] = model.source_id if model is not None and model.source_id in model_ids else model_ids[0]
top = st.columns([2, 2, 3], vertical_alignment="bottom")
chosen_model = top[0].selectbox("Model", model_ids, key="cfg.story.model",
                                format_func={m["model"]: m["model_label"] for m in models}.get)
st.session_state.setdefault("cfg.story.budget", 1.0)
budget = top[1].slider("Accuracy budget: at most this many points below the baseline", 0.0, 20.0, step=0.5,
                       key="cfg.story.budget", format="%.1f pts")
records = stored_records(model=chosen_model)
by_id = {int(r["id"]): r for r in records}
best = story_choice(records, budget_pts=budget)
options = [AUTO, *sorted(by_id, reverse=True)]
if st.session_state.get("cfg.story.experiment") not in options:
    st.session_state["cfg.story.experiment"] = AUTO
auto_label = f"Smallest within the budget: {experiment_label(best)}" if best else "Smallest within the budget: none"
picked = top[2].selectbox("The story is about", options, key="cfg.story.experiment",
                          format_func=lambda i: auto_label if i == AUTO else experiment_label(by_id[i]))
record = best if picked == AUTO else by_id[picked]
if record is None:
    st.info(f"No experiment is within {budget:g} points of its baseline: raise the budget or pick an experiment.",
            icon=":material/info:")
    st.stop()

source = dataset_for_record(record, current=dataset)
# a record's flipped indices are dataset positions (older records: positions among the evaluated sample)
flipped = story_flipped(
    record, image_of=lambda index: thumbnail(source, flipped_image_position(record, dataset=source, index=index))
) if source is not None else ()
story = build_story(record=record, records=records, budget_pts=budget, flipped=flipped)
render_story(story)
st.divider()
render_exports(story, budget, records)
