"""The live chart element (pages/_ui/live_chart.py): the route serving Plotly.js, and the figure each chart carries.

That a real browser draws these charts and redraws them in place is checked by tests/e2e/test_learn_browser.py
and timed by ``python -m bench.learn_rerender``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import plotly.graph_objects as go
from streamlit.testing.v1 import AppTest

from pages._ui.live_chart import COMPONENT_NAME, PLOTLY_JS, SCRIPT_PATH, script_routes

APP_SCRIPT = '''
import plotly.graph_objects as go
import streamlit as st
from pages._ui.live_chart import live_chart

bits = st.select_slider("Bits", [2, 4, 8], 4, key="bits")
live_chart(go.Figure(go.Bar(x=[1, 2], y=[bits, 2 * bits], name="levels")), key="chart", config={"displayModeBar": False})
'''


def test_route_serves_the_plotly_js_of_the_python_package() -> None:
    (route,) = script_routes()
    assert route.path == SCRIPT_PATH and "GET" in route.methods
    response = asyncio.run(route.endpoint(None))
    assert Path(response.path) == PLOTLY_JS and PLOTLY_JS.stat().st_size > 1_000_000
    assert response.media_type == "text/javascript"
    assert PLOTLY_JS.read_bytes()[:400].decode(errors="replace").lower().count("plotly.js") >= 1


def test_each_run_sends_the_new_figure_under_the_same_key(tmp_path: Path) -> None:
    script = tmp_path / "live_app.py"
    script.write_text(APP_SCRIPT)
    at = AppTest.from_file(str(script), default_timeout=60).run()
    assert not at.exception

    def shown() -> tuple[str, dict, dict]:
        (node,) = [n for n in at.get("bidi_component") if n.proto.component_name == COMPONENT_NAME]
        data = json.loads(node.proto.json)
        return node.proto.id, json.loads(data["figure"]), data["config"]

    first_id, figure, config = shown()
    assert go.Figure(figure).data[0].y == (4, 8) and config == {"displayModeBar": False}
    at.select_slider(key="bits").set_value(8).run()
    second_id, figure, _ = shown()
    assert go.Figure(figure).data[0].y == (8, 16)
    assert second_id == first_id  # same element: the browser updates its chart instead of mounting a new one
