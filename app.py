"""Compression Studio — the Streamlit entry point: the router first, then the session's model and the page.

Run with ``streamlit run app.py`` (or ``make run``). The menu is ``pages/_ui/menu.MENU``; what pages compute
comes from ``core``.

``streamlit run`` finds the ``app = st.App(...)`` below and serves it: Streamlit plus a route that streams
uploads to disk (core.uploads) and one that serves Plotly.js to the Learn page's live charts
(pages/_ui/live_chart.py). That import runs the else-branch; each page view (and AppTest) runs this file
as ``__main__``: the router and the page.
"""

from __future__ import annotations

if __name__ == "__main__":
    from pages._ui import menu

    # First, before torch and coremltools are imported: the final menu is on screen from the first paint.
    page = menu.route()

    import streamlit as st

    # A cold start imports torch and coremltools and loads the model (seconds): say so in the main area instead of
    # leaving it blank. The spinner appears only when this takes over half a second, so warm reruns never flash it.
    with st.spinner(menu.STARTING_TEXT, show_time=True):
        import core.compress  # noqa: F401 — every method registers its spec and handler (stored records name them)
        from pages._ui import shell  # deliberately after routing (slow imports)

        context = shell.prepare()
    shell.run(page, context=context)
else:
    import streamlit as st

    from core.uploads import upload_routes
    from pages._ui.live_chart import script_routes

    app = st.App(__file__, routes=upload_routes() + script_routes())
