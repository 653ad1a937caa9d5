"""Learn: short lessons with sliders on a layer of the loaded model; every number comes from the real libraries.

The page picks the lesson and the weights; each lesson lives in pages/_ui/learn_<topic>.py as an st.fragment,
so moving one of its sliders reruns only that lesson (see pages/_ui/learn_common.py for why and what is cached).
"""

from __future__ import annotations

import streamlit as st

from core.learn.lessons import LESSONS
from core.learn.tensors import TOY_NAME, largest_layer, layer_choices
from pages._ui import (
    learn_activations,
    learn_bytes,
    learn_finetune,
    learn_granularity,
    learn_palettize,
    learn_prune,
    learn_scale,
)
from pages._ui.learn_common import PREFIX, TOY, LessonContext, keep_valid
from pages._ui.shell import page_context

LESSON_PAGES = {
    "scale": learn_scale.render,
    "granularity": learn_granularity.render,
    "palettize": learn_palettize.render,
    "prune": learn_prune.render,
    "activations": learn_activations.render,
    "finetune": learn_finetune.render,
    "bytes": learn_bytes.render,
}

model, dataset = page_context()
st.title("Learn", anchor=False)
st.caption(
    "How compression works, on the weights of the model you loaded. Every number on this page is "
    "computed by coremltools or torch.ao — the same code the Compress page runs."
)
if model is None:
    st.stop()

choices = tuple(layer_choices(model.module))
by_name = {c.name: c for c in choices}
titles = {item.key: item.title for item in LESSONS}
keep_valid("lesson", list(titles), LESSONS[0].key)
head = st.columns([3, 2], vertical_alignment="bottom")
lesson_key = head[0].radio("Lesson", list(titles), format_func=titles.get, key=PREFIX + "lesson", horizontal=True)
tensor_options = [c.name for c in choices] + [TOY]
keep_valid("layer", tensor_options, largest_layer(list(choices)))
layer = head[1].selectbox(
    "Weights to learn on",
    tensor_options,
    key=PREFIX + "layer",
    format_func=lambda n: TOY_NAME if n == TOY else by_name[n].label,
    help="A layer of the loaded model (the largest by default), or a tiny hand-made tensor whose every value you can see.",
)
context = LessonContext(
    model=model,
    dataset=dataset,
    model_key=f"{model.source_id}#{id(model.module)}",
    choices=choices,
    layer=layer,
    by_name=by_name,
)
st.divider()
with st.container(key=f"learn-lesson-{lesson_key}"):  # a new container per lesson: nothing of the last one lingers
    LESSON_PAGES[lesson_key](context)
