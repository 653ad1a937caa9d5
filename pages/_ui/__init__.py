"""What the pages share, one module per concern. This package file imports nothing, so that app.py can draw the
menu (``menu``) before the modules that import torch and coremltools load.

- ``menu``: the page list, the sidebar menu and the router (imports only streamlit)
- ``session``: per-session defaults, persistent widget values, what app.py loaded for this run
- ``errors``: failures as friendly messages (``attempt``)
- ``storage``: the cached experiment store, cached record lists, uploads saved to disk (``StoredUpload``)
- ``loading``: cached models, datasets and baselines
- ``run_client``: a compression run as a job (core.jobs): submit, poll, cancel (``submit_run``)
- ``queue_panel``: the sidebar's job queue (running job, queued count, cancel) on every page
- ``widgets``: the evaluation-size selector and the sidebar panel
- ``result_card``: a run's result card and an experiment's downloads
- ``shell``: what app.py runs after routing, and ``page_context`` (this run's model + dataset) every page calls
"""
