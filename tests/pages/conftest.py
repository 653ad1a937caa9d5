"""AppTest fixtures: the real app on the real sample model, with a private data folder."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.models.sources import SAMPLE_MODELS_DIR
from pages._ui.live_chart import COMPONENT_NAME

PROJECT_ROOT = Path(__file__).resolve().parents[2]
APP = str(PROJECT_ROOT / "app.py")
SAMPLE = "sample:fashion_cnn"


@pytest.fixture(scope="session")
def sample_model() -> str:
    assert (SAMPLE_MODELS_DIR / "fashion_cnn.safetensors").is_file(), "sample weights missing from sample_models/"
    return SAMPLE


@pytest.fixture(scope="module")
def studio_home(tmp_path_factory: pytest.TempPathFactory, sample_model: str) -> Path:
    """An empty data folder (modules that need experiments override this fixture)."""
    return tmp_path_factory.mktemp("studio_home")


@pytest.fixture(scope="session")
def experiments_home(tmp_path_factory: pytest.TempPathFactory, sample_model: str) -> tuple[Path, list[int]]:
    """A data folder holding two real experiments on fashion_cnn: 4-bit palettization and 50 % pruning."""
    home = tmp_path_factory.mktemp("studio_home_with_experiments")
    ids = [
        run_real_experiment(home, {"method": "palettize", "n_bits": 4}),
        run_real_experiment(home, {"method": "prune", "target_sparsity": 0.5}),
    ]
    return home, ids


@pytest.fixture
def app(studio_home: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., AppTest]:
    """A fresh browser session (AppTest) that has run the app once, optionally switched to a page."""
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(studio_home))
    monkeypatch.setenv("COMPRESSION_STUDIO_DEFAULT_MODEL", SAMPLE)
    monkeypatch.setenv("COMPRESSION_STUDIO_OFFLINE", "1")

    def make(*, page: str | None = None, timeout: float = 240) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=timeout)
        at.run()
        if page is not None:
            at.switch_page(page).run()
        return at

    return make


def assert_clean(at: AppTest) -> None:
    """No exception element and no error message on the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def plotly_specs(at: AppTest) -> list[str]:
    """The JSON of every Plotly chart on the page, in order: st.plotly_chart's, then the live charts' (a page uses
    one kind; pages/_ui/live_chart.py)."""
    live = [
        json.loads(node.proto.json)["figure"]
        for node in at.get("bidi_component")
        if node.proto.component_name == COMPONENT_NAME
    ]
    return [node.proto.spec for node in at.get("plotly_chart")] + live


def run_real_experiment(home: Path, spec_dict: dict) -> int:
    """One real experiment (engine + measurement) saved in the store at `home`, as the Compress page does it."""
    from core.experiment_options import ExperimentOptions
    from core.models.sources import load_model
    from core.runs import run_and_save
    from core.specs import spec_from_dict
    from core.store import ExperimentStore

    saved = run_and_save(store=ExperimentStore(home), model=load_model(SAMPLE), spec=spec_from_dict(spec_dict),
                         dataset=None, options=ExperimentOptions(eval_limit=500, cache_dir=home / "cache"))
    return int(saved["id"])


# --------------------------------------------------------------------------- tables as a person sees them


def shown_table(element) -> tuple[list[str], pd.DataFrame]:
    """(the headers a person sees, the shown columns' values) of one st.dataframe element."""
    frame: pd.DataFrame = element.value
    config = json.loads(element.proto.columns or "{}")
    order = list(element.proto.column_order)
    headers, shown = [], []
    for column in frame.columns:
        settings = config.get(str(column)) or {}
        if settings.get("hidden") or (order and str(column) not in order):
            continue
        headers.append(str(settings.get("label") or column))
        shown.append(column)
    return headers, frame[shown]


def unreadable_cells(frame: pd.DataFrame) -> list[str]:
    """Cells that show as "None" / "nan" on screen: missing values and those words as text."""
    bad = []
    for column in frame.columns:
        for value in frame[column]:
            missing = value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA
            if missing or str(value).strip().lower() in ("none", "nan", "<na>"):
                bad.append(f"{column}: {value!r}")
    return bad


def table_problems(at: AppTest, page: str) -> list[str]:
    problems = []
    for element in at.dataframe:
        headers, frame = shown_table(element)
        name = element.key or ", ".join(headers[:3])
        problems += [f"{page} [{name}]: header {h!r}" for h in headers if "_" in h]
        problems += [f"{page} [{name}]: cell {c}" for c in unreadable_cells(frame)[:3]]
    return problems
