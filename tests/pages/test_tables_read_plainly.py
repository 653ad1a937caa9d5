"""Every table a page shows reads plainly: headers are words (no raw field names with underscores) and no cell reads
"None" or "nan". Checked on what the user sees: each column's label from its column config, only shown columns."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pages.conftest import assert_clean, shown_table, table_problems, unreadable_cells

PAGES = ("pages/0_Home.py", "pages/1_Model.py", "pages/2_Compress.py", "pages/3_Compare.py", "pages/4_Layers.py",
         "pages/5_Learn.py", "pages/6_Explore.py")


@pytest.fixture(scope="module")
def studio_home(experiments_home: tuple[Path, list[int]]) -> Path:
    return experiments_home[0]


@pytest.fixture(autouse=True)
def _private_jobs(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COMPRESSION_STUDIO_TIMING_LOCK", str(tmp_path / "timing.lock"))
    monkeypatch.setenv("COMPRESSION_STUDIO_WORKER_IDLE", "15")


@pytest.mark.parametrize("page", PAGES)
def test_no_table_header_is_a_field_name_and_no_cell_reads_none(app, page: str) -> None:
    at = app(page=page)
    assert_clean(at)
    tables = len(at.dataframe)
    problems = table_problems(at, page)
    assert not problems, "\n".join(problems)
    if page in ("pages/1_Model.py", "pages/3_Compare.py", "pages/4_Layers.py", "pages/6_Explore.py"):
        assert tables >= 1, f"{page} showed no table to check"


def test_compare_side_by_side_and_flipped_list_read_plainly(app) -> None:
    from core.store import ExperimentStore
    from core.tables import diff_table, flipped_table

    at = app(page="pages/3_Compare.py")
    diff = next(e for e in at.dataframe if "what" in e.value.columns)
    headers, frame = shown_table(diff)
    assert unreadable_cells(frame) == [] and not [h for h in headers if "_" in h]
    records = ExperimentStore(_home()).list()
    assert unreadable_cells(diff_table(records[0], records[1])) == []
    flipped = flipped_table(records[1])
    assert not [c for c in flipped.columns if "_" in str(c)] and unreadable_cells(flipped) == []


def _home() -> Path:
    import os

    return Path(os.environ["COMPRESSION_STUDIO_HOME"])
