"""Upload fields of the Model page: the browser streams the file to disk (core.uploads), never into memory.

Under ``streamlit run app.py`` the upload route of core.uploads is mounted, and a field is a small component
that sends the chosen file with XMLHttpRequest (progress bar, size cap checked before sending) and hands the
page the saved file's id, which the page exchanges for its path through the session's ticket. Where the route
is not served (AppTest, Streamlit hosted another way) the field falls back to ``st.file_uploader``, whose
files Streamlit keeps in memory: ``server.maxUploadSize`` (.streamlit/config.toml) caps those at 200 MB.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.formatting import fmt_bytes
from core.uploads import NAME_HEADER, TOKEN_HEADER, UPLOAD_PATH, claim, issue_ticket, max_upload_bytes, route_mounted
from pages._ui.storage import StoredUpload, store

TICKETS_KEY = "uploads.tickets"  # session_state: widget key → upload token of this session


_CSS = """
.su-root { font-family: inherit; font-size: 0.875rem; }
.su-label { display: block; margin-bottom: 0.25rem; }
.su-drop { border: 1px dashed rgba(49, 51, 63, 0.35); border-radius: 0.5rem; padding: 0.75rem;
           background: var(--st-secondary-background-color, #f0f2f6); }
.su-drop.su-over { border-color: var(--st-primary-color, #3b5bdb); }
.su-hint { display: block; opacity: 0.7; margin-top: 0.25rem; }
.su-bar { width: 100%; margin-top: 0.5rem; }
.su-status { margin-top: 0.25rem; }
.su-error { color: #c92a2a; }
"""

# Idempotent: Streamlit calls this on every rerun with fresh data; the field (and an upload in flight) stays.
_JS = """
function fmt(bytes) {
  for (const [unit, scale] of [["GB", 1e9], ["MB", 1e6], ["kB", 1e3]]) {
    if (bytes >= scale) return (bytes / scale).toFixed(2) + " " + unit;
  }
  return bytes + " B";
}

function send(root, file) {
  const d = root.studioData;
  const status = root.querySelector(".su-status");
  const bar = root.querySelector(".su-bar");
  const say = (text, error) => { status.textContent = text; status.classList.toggle("su-error", !!error); };
  const name = file.name.toLowerCase();
  if (!d.suffixes.some((s) => name.endsWith(s))) {
    say(file.name + " is not one of the accepted file types (" + d.suffixes.join(", ") + ").", true);
    return;
  }
  if (file.size > d.maxBytes) {
    say(file.name + " is " + fmt(file.size) + ", over the upload cap of " + fmt(d.maxBytes) + "; " + d.capHint, true);
    return;
  }
  const xhr = new XMLHttpRequest();
  xhr.open("POST", window.location.origin + d.url);
  xhr.setRequestHeader(d.tokenHeader, d.token);
  xhr.setRequestHeader(d.nameHeader, encodeURIComponent(file.name));
  bar.hidden = false; bar.value = 0;
  root.querySelector("input").disabled = true;
  say("Uploading " + file.name + " (" + fmt(file.size) + ")…");
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) {
      bar.value = e.loaded / e.total;
      say("Uploading " + file.name + ": " + fmt(e.loaded) + " of " + fmt(e.total));
    }
  };
  const done = () => { root.querySelector("input").disabled = false; };
  xhr.onload = () => {
    done();
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (err) { body = {}; }
    if (xhr.status === 200 && body.id) {
      bar.value = 1;
      say("Uploaded " + body.name + " (" + fmt(body.size) + "), saved on the server.");
      root.studioSet("upload", { id: body.id, name: body.name, size: body.size });
    } else {
      bar.hidden = true;
      say(body.error || ("The upload failed (HTTP " + xhr.status + "); try again."), true);
    }
  };
  xhr.onerror = () => { done(); bar.hidden = true; say("The upload failed: the connection to the server was lost; try again.", true); };
  xhr.send(file);
}

export default function (component) {
  const { data, setStateValue, parentElement } = component;
  let root = parentElement.querySelector(".su-root");
  if (!root) {
    root = document.createElement("div");
    root.className = "su-root";
    root.innerHTML = '<label class="su-label"></label><div class="su-drop"><input type="file" class="su-input">' +
      '<span class="su-hint"></span><progress class="su-bar" max="1" value="0" hidden></progress>' +
      '<div class="su-status" role="status"></div></div>';
    parentElement.appendChild(root);
    const input = root.querySelector("input");
    const drop = root.querySelector(".su-drop");
    input.addEventListener("change", () => { if (input.files.length) send(root, input.files[0]); });
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("su-over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("su-over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault(); drop.classList.remove("su-over");
      if (e.dataTransfer.files.length && !input.disabled) send(root, e.dataTransfer.files[0]);
    });
  }
  root.studioData = data;
  root.studioSet = setStateValue;
  root.querySelector(".su-label").textContent = data.label;
  root.querySelector("input").accept = data.suffixes.join(",");
  root.querySelector(".su-input").setAttribute("aria-label", data.label);
  root.querySelector(".su-hint").textContent = data.hint;
}
"""

_renderer: Any = None


def _component() -> Any:
    global _renderer
    if _renderer is None:  # registered once per process: a second registration under one name only warns
        _renderer = st.components.v2.component("studio.streamed_upload", html="", css=_CSS, js=_JS)
    return _renderer


def _ticket(key: str, suffixes: tuple[str, ...], max_bytes: int) -> str:
    tickets = st.session_state.setdefault(TICKETS_KEY, {})
    if key not in tickets:
        s = store()
        tickets[key] = issue_ticket(
            home=s.home, folder=s.uploads_dir(st.session_state["session_id"]), suffixes=suffixes, max_bytes=max_bytes
        )
    return tickets[key]


def upload_field(label: str, *, type: list[str], key: str, help: str | None = None) -> Any:
    """A file field: a StoredUpload (streamed to disk) or, without the route, Streamlit's UploadedFile; or None.

    Either result goes to pages._ui.storage.save_upload, which returns (path, content hash).
    """
    if not route_mounted():  # Streamlit's uploader keeps the file in memory: capped by server.maxUploadSize
        note = "Uploaded through Streamlit's own uploader, which holds the file in the server's memory (up to 200 MB)."
        return st.file_uploader(label, type=type, key=key, help=f"{help} {note}" if help else note)
    suffixes = tuple(f".{t.lower().lstrip('.')}" for t in type)
    cap = max_upload_bytes()
    token = _ticket(key, suffixes, cap)
    hint = (
        f"{', '.join(suffixes)} · up to {fmt_bytes(cap)} · streamed to the server's disk, not held in memory. "
        "Choose a file or drop it here."
    )
    data = {
        "label": label,
        "suffixes": list(suffixes),
        "maxBytes": cap,
        "hint": hint,
        "url": UPLOAD_PATH,
        "token": token,
        "tokenHeader": TOKEN_HEADER,
        "nameHeader": NAME_HEADER,
        "capHint": "the server's COMPRESSION_STUDIO_MAX_UPLOAD setting raises it.",
    }
    result = _component()(key=key, data=data, default={"upload": None}, on_upload_change=lambda: None, height="content")
    if help:
        st.caption(help)
    value = getattr(result, "upload", None)
    if not isinstance(value, dict) or not isinstance(value.get("id"), str):
        return None
    received = claim(token=token, upload_id=value["id"])
    if received is None:
        st.warning(
            f"{value.get('name', 'The uploaded file')} is no longer on the server (removed to free disk "
            "space); upload it again.",
            icon=":material/warning:",
        )
        return None
    return StoredUpload(name=received.name, path=received.path, digest=received.digest, size=received.size)
