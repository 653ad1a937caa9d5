"""Lineage: origins travel with a job, bad ones are refused, and the map hangs experiments under their origin."""

from __future__ import annotations

import pytest

from core.explore.charts import lineage_figure, lineage_frame
from core.jobs import DataRef, JobQueue, ModelRef
from core.jobs.origins import MANUAL, OriginError, read_origin, read_origins
from core.tables import experiments_frame, origin_label

CNN, DATA = ModelRef(kind="sample", name="fashion_cnn"), DataRef(kind="bundled")


def test_an_origin_is_stored_with_the_job_and_a_job_without_one_is_manual(home) -> None:
    queue = JobQueue(home=home)
    origin = {"kind": "search", "id": "within 1 pts, size", "parent_experiment_id": 4, "label": "search: x"}
    tagged = queue.submit(model=CNN, data=DATA, spec={"method": "palettize"}, origin=origin)
    plain = queue.submit(model=CNN, data=DATA, spec={"method": "palettize"})
    assert read_origin(db_path=queue.db_path, job_id=tagged) == origin
    assert read_origin(db_path=queue.db_path, job_id=plain) == MANUAL
    assert read_origins(db_path=queue.db_path, job_ids=[tagged, plain]) == {tagged: origin}


@pytest.mark.parametrize(("origin", "field"), [({"kind": "magic"}, "origin.kind"),
                                               ({"kind": "sweep", "colour": 1}, "origin: unknown key"),
                                               ({"kind": "sweep", "parent_experiment_id": "7"}, "origin.parent")])
def test_a_bad_origin_is_refused_before_anything_is_queued(home, origin, field) -> None:
    queue = JobQueue(home=home)
    with pytest.raises(OriginError, match=f"^{field}"):
        queue.submit(model=CNN, data=DATA, spec={"method": "palettize"}, origin=origin)
    assert queue.counts()["queued"] == 0


def test_the_map_and_the_compare_filter_read_the_origin() -> None:
    records = [
        {"id": 1, "method": "palettize", "spec_summary": "palettize 2-bit", "origin": None},
        {"id": 2, "method": "palettize", "spec_summary": "palettize 4-bit",
         "origin": {"kind": "sweep", "id": 3, "label": "sweep #3: weight-only exploration"}},
        {"id": 3, "method": "palettize", "spec_summary": "palettize 2-bit + 1 override",
         "origin": {"kind": "search", "id": "within 1 pts, size", "parent_experiment_id": 2, "label": "search: w"}},
    ]
    assert [origin_label(r) for r in records] == ["manual", "sweep #3: weight-only exploration", "search: w"]
    assert list(experiments_frame(records)["origin"]) == ["manual", "sweep #3: weight-only exploration", "search: w"]
    lineage = lineage_frame(records)
    tree = lineage_figure(lineage).data[0]
    parents = dict(zip(tree.ids, tree.parents, strict=True))
    assert parents["exp:1"] == "origin:manual"
    assert parents["exp:2"] == "origin:sweep #3: weight-only exploration"
    assert parents["exp:3"] == "exp:2"  # a refinement hangs under the experiment it refines
    assert parents["origin:manual"] == "root"
    # readable and explained: one unit per experiment (a group's box = its number of experiments, said in the
    # title), short two-line labels at a readable size (labels that do not fit are hidden, not shrunk)
    values = dict(zip(tree.ids, tree.values, strict=True))
    assert [values[f"exp:{i}"] for i in (1, 2, 3)] == [1, 1, 1] and values["origin:manual"] == 0
    figure = lineage_figure(lineage)
    assert figure.data[0].marker.colors[0] == "#e9ecf1"  # the model's box is light: its dark label stays readable
    assert "Each box is one experiment" in figure.layout.title.text
    assert figure.layout.uniformtext.minsize >= 12 and figure.layout.uniformtext.mode == "hide"
    labels = dict(zip(tree.ids, tree.labels, strict=True))
    assert labels["exp:3"] == "#3<br>palettize 2-bit + 1 override"
    long = lineage_figure(lineage_frame([{**records[0], "spec_summary": "palettize 4-bit per-grouped-channel " * 3}]))
    assert len(long.data[0].labels[-1].split("<br>")[1]) <= 28
