"""A Plotly chart that redraws in place: the Learn lessons' charts, so a slider move re-renders in ≤ 0.3 s.

``st.plotly_chart`` mounts a new chart element for every new figure (the figure is part of its element id) and, once
mounted, draws it a second time (its theme effect hands Plotly a re-themed copy): ~80 ms per chart and move on two
cores, most of a lesson's budget. This element keeps one chart per key and passes each new figure to
``Plotly.react``, which updates the drawing it already has: one draw, no new element.

Plotly.js is the copy that ships inside the plotly Python package, served by a route next to Streamlit
(``script_routes()``, mounted by app.py) and cached by the browser; charts take the page's font like Streamlit's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go
import streamlit as st

SCRIPT_PATH = "/_studio/plotly.min.js"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
COMPONENT_NAME = "compression_studio.live_chart"

# One chart box per element; Plotly.js is loaded once per page. A failed load leaves a sentence in the box (and is
# retried on the next draw) instead of an empty space.
_JS = r"""
function loadPlotly() {
  if (!window.__studioPlotly) {
    window.__studioPlotly = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "__SRC__";
      script.onload = () => resolve(window.Plotly);
      script.onerror = () => {
        window.__studioPlotly = null;
        reject(new Error("the chart library (__SRC__) could not be loaded"));
      };
      document.head.appendChild(script);
    });
  }
  return window.__studioPlotly;
}

export default function (component) {
  const { data, parentElement } = component;
  let box = parentElement.querySelector(".studio-live-chart");
  if (!box) {
    box = document.createElement("div");
    box.className = "studio-live-chart";
    box.style.width = "100%";
    parentElement.appendChild(box);
  }
  const figure = JSON.parse(data.figure);
  const layout = figure.layout || {};
  layout.autosize = true;
  // as Streamlit's theme does: axes make room for their tick labels and titles (the figures keep small margins)
  for (const name of ["xaxis", "yaxis", ...Object.keys(layout).filter((k) => /^[xy]axis\d+$/.test(k))]) {
    layout[name] = Object.assign({ automargin: true }, layout[name] || {});
  }
  layout.modebar = Object.assign({ bgcolor: "rgba(255,255,255,0.8)", color: "#9aa0a6", activecolor: "#3b5bdb" }, layout.modebar || {});
  layout.font = Object.assign({ family: getComputedStyle(document.body).fontFamily }, layout.font || {});
  box.style.minHeight = (layout.height || 450) + "px";
  const config = Object.assign({ responsive: true, displaylogo: false }, data.config || {});
  loadPlotly()
    .then((Plotly) => Plotly.react(box, figure.data || [], layout, config))
    .catch((error) => { box.textContent = "This chart could not be drawn: " + error.message + ". Reload the page."; });
  // on unmount (a lesson switch) release Plotly's resize listener; while the element lives the box stays in place
  return () => setTimeout(() => { if (!box.isConnected && window.Plotly) window.Plotly.purge(box); }, 0);
}
""".replace("__SRC__", SCRIPT_PATH)

_COMPONENT = st.components.v2.component(COMPONENT_NAME, js=_JS, isolate_styles=False)


def live_chart(figure: go.Figure, *, key: str, config: dict[str, Any] | None = None) -> None:
    """Draw `figure` in the chart kept under `key` (the same key on the next run updates that chart in place)."""
    _COMPONENT(data={"figure": figure.to_json(), "config": config or {}}, key=key)


def script_routes() -> list:
    """The Starlette route that serves Plotly.js to these charts (``st.App(..., routes=...)`` in app.py)."""
    from starlette.responses import FileResponse
    from starlette.routing import Route

    async def plotly_js(_request: Any) -> FileResponse:
        return FileResponse(PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    return [Route(SCRIPT_PATH, plotly_js, methods=["GET"])]
