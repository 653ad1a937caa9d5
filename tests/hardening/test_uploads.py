"""Streamed uploads (core.uploads): straight to disk through a real uvicorn server, capped, ticket-only, atomic."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import uploads
from core.paths import PROJECT_ROOT, uploads_dir
from core.uploads import NAME_HEADER, TOKEN_HEADER, UPLOAD_PATH, claim, issue_ticket, max_upload_bytes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The upload route on a real uvicorn server in a thread; yields its port."""
    import uvicorn
    from starlette.applications import Starlette

    # upload_routes() marks the route as served in this process; AppTests later in the run must not see that.
    monkeypatch.setattr(uploads, "_ROUTE_MOUNTED", False)
    port = _free_port()
    srv = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=uploads.upload_routes()), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        assert time.time() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield port
    srv.should_exit = True
    thread.join(timeout=10)
    uploads.forget_all_tickets()


def _post(
    port: int, *, token: str, name: str, body: bytes | Iterator[bytes], chunked: bool = False, length: int | None = None
) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {TOKEN_HEADER: token, NAME_HEADER: name}
    if length is not None:
        headers["Content-Length"] = str(length)
    conn.request("POST", UPLOAD_PATH, body=body, headers=headers, encode_chunked=chunked)
    reply = conn.getresponse()
    payload = json.loads(reply.read() or b"{}")
    conn.close()
    return reply.status, payload


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_an_upload_lands_on_disk_under_its_hash_and_is_claimed_only_with_its_ticket(server, tmp_path) -> None:
    folder = uploads_dir(tmp_path) / "session-a"
    token = issue_ticket(home=tmp_path, folder=folder, suffixes=(".pt", ".safetensors"))
    content = bytes(range(256)) * 20_000  # 5 MB: several write chunks
    status, reply = _post(server, token=token, name="my%20weights.pt", body=content)
    assert status == 200, reply
    assert reply["name"] == "my_weights.pt" and reply["size"] == len(content)
    received = claim(token=token, upload_id=reply["id"])
    digest = hashlib.sha256(content).hexdigest()[:16]
    assert received is not None and received.digest == digest
    assert received.path == folder / digest / "my_weights.pt" and received.path.read_bytes() == content
    assert _leftovers(folder) == [received.path]  # no .part file stays behind
    other = issue_ticket(home=tmp_path, folder=uploads_dir(tmp_path) / "session-b", suffixes=(".pt",))
    assert claim(token=other, upload_id=reply["id"]) is None  # another session cannot pick it up
    uploads.revoke_ticket(token=token)
    assert _post(server, token=token, name="w.pt", body=b"x")[0] == 403


def test_refusals_say_why_and_leave_nothing_on_disk(server, tmp_path) -> None:
    folder = uploads_dir(tmp_path) / "s"
    token = issue_ticket(home=tmp_path, folder=folder, suffixes=(".zip",), max_bytes=1_000_000)

    status, reply = _post(server, token="forged", name="a.zip", body=b"PK")
    assert status == 403 and "expired" in reply["error"]

    status, reply = _post(server, token=token, name="model.pt", body=b"x" * 10)
    assert status == 415 and "accepted file types (.zip)" in reply["error"]

    # Declared too big: refused before a byte is read.
    status, reply = _post(server, token=token, name="big.zip", body=b"x" * 2_000_000)
    assert status == 413 and "upload cap of 1.00 MB" in reply["error"] and uploads.MAX_UPLOAD_ENV in reply["error"]

    # No length declared (chunked): refused while streaming, once the cap is passed.
    chunks = (b"y" * 65_536 for _ in range(40))  # 2.6 MB
    status, reply = _post(server, token=token, name="big.zip", body=chunks, chunked=True)
    assert status == 413 and "larger than the upload cap" in reply["error"]
    assert _leftovers(folder) == []

    # A body shorter than its declared length (the connection dropped) is never renamed into place.
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    conn.putrequest("POST", UPLOAD_PATH)
    for header, value in ((TOKEN_HEADER, token), (NAME_HEADER, "cut.zip"), ("Content-Length", "500000")):
        conn.putheader(header, value)
    conn.endheaders()
    conn.send(b"z" * 1000)
    conn.close()
    # The ticket stays usable after each refusal; the cut-off upload left nothing behind.
    status, reply = _post(server, token=token, name="ok.zip", body=b"PK\x05\x06" + b"\x00" * 18)
    assert status == 200, reply
    ok = claim(token=token, upload_id=reply["id"])
    deadline = time.time() + 10
    while len(_leftovers(folder)) > 1 and time.time() < deadline:  # the server notices the dropped connection
        time.sleep(0.1)
    assert ok is not None and _leftovers(folder) == [ok.path]


def test_a_new_ticket_removes_parts_left_by_a_crashed_server(tmp_path) -> None:
    folder = uploads_dir(tmp_path) / "s"
    folder.mkdir(parents=True)
    stale, fresh = folder / ".dead.part", folder / ".live.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    old = time.time() - uploads.STALE_PART_S - 60
    os.utime(stale, (old, old))
    issue_ticket(home=tmp_path, folder=folder, suffixes=(".pt",))
    assert not stale.exists() and fresh.exists()


def test_the_per_file_cap_follows_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(uploads.MAX_UPLOAD_ENV, raising=False)
    assert max_upload_bytes() == uploads.DEFAULT_MAX_UPLOAD_BYTES
    monkeypatch.setenv(uploads.MAX_UPLOAD_ENV, "10GB")
    assert max_upload_bytes() == 10_000_000_000
    monkeypatch.setenv(uploads.MAX_UPLOAD_ENV, "lots")
    with pytest.raises(ValueError, match=f"{uploads.MAX_UPLOAD_ENV}='lots' is not a size"):
        max_upload_bytes()
    with pytest.raises(ValueError, match="suffixes must be file endings"):
        issue_ticket(home=Path("/nonexistent"), folder=Path("/nonexistent/x"), suffixes=("pt",))


def test_uploads_are_kept_under_the_uploads_cap(server, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After an upload, other sessions' old uploads go first once the uploads part is over its (env) cap."""
    old = uploads_dir(tmp_path) / "old-session" / "abc" / "old.pt"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"o" * 3000)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    os.utime(old.parent.parent, (time.time() - 7200, time.time() - 7200))
    os.utime(old.parent, (time.time() - 7200, time.time() - 7200))
    monkeypatch.setenv("COMPRESSION_STUDIO_CAP_UPLOADS", "4000")
    token = issue_ticket(home=tmp_path, folder=uploads_dir(tmp_path) / "me", suffixes=(".pt",))
    status, reply = _post(server, token=token, name="new.pt", body=b"n" * 2000)
    assert status == 200, reply
    assert not old.exists()
    assert claim(token=token, upload_id=reply["id"]) is not None


# A child process: the route on uvicorn, and a client sending a 300 MB file from disk; it prints its peak RSS
# before and after. Streamlit's own uploader would hold all 300 MB in the server's memory.
_MEMORY_SCRIPT = r"""
import hashlib, http.client, json, os, resource, socket, sys, threading, time
from pathlib import Path
import uvicorn
from starlette.applications import Starlette
from core import uploads

home, size = Path(sys.argv[1]), int(sys.argv[2])
source = home / "big.safetensors"
with open(source, "wb") as f:  # sparse: costs no disk and no memory to create
    f.truncate(size)
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
server = uvicorn.Server(uvicorn.Config(Starlette(routes=uploads.upload_routes()), host="127.0.0.1", port=port,
                                       log_level="warning", lifespan="off"))
threading.Thread(target=server.run, daemon=True).start()
while not server.started:
    time.sleep(0.05)
token = uploads.issue_ticket(home=home, folder=home / "uploads" / "s", suffixes=(".safetensors",),
                             max_bytes=size + 1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
with open(source, "rb") as body:
    conn.request("POST", uploads.UPLOAD_PATH, body=body, headers={
        uploads.TOKEN_HEADER: token, uploads.NAME_HEADER: source.name, "Content-Length": str(size)})
    reply = conn.getresponse()
    payload = json.loads(reply.read())
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
received = uploads.claim(token=token, upload_id=payload["id"])
print(json.dumps({"status": reply.status, "before": before, "after": after, "path": str(received.path),
                  "bytes": received.path.stat().st_size, "digest": received.digest}))
"""


@pytest.mark.slow
def test_a_300_mb_upload_goes_to_disk_without_growing_the_server_memory(tmp_path) -> None:
    size = 300_000_000
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path), str(size)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 200 and result["bytes"] == size
    zeros = hashlib.sha256()
    block = bytes(1 << 20)
    for _ in range(size // len(block)):
        zeros.update(block)
    zeros.update(bytes(size % len(block)))
    assert result["digest"] == zeros.hexdigest()[:16]
    growth = result["after"] - result["before"]
    assert growth < 64_000_000, f"peak memory grew by {growth / 1e6:.0f} MB for a {size / 1e6:.0f} MB upload"


@pytest.mark.slow
def test_streamlit_run_serves_app_py_with_the_upload_route(tmp_path) -> None:
    """`streamlit run app.py` discovers the st.App in app.py (so the route is mounted); AppTest still runs the page."""
    from streamlit.web.server.app_discovery import discover_asgi_app

    found = discover_asgi_app(PROJECT_ROOT / "app.py")
    assert found.is_asgi_app and found.import_string == "app:app"
    # Imported the way uvicorn imports it (in a child: the import marks the route as served in that process).
    check = "import app, core.uploads as u, streamlit as st; print(isinstance(app.app, st.App), u.route_mounted())"
    done = subprocess.run(
        [sys.executable, "-c", check],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COMPRESSION_STUDIO_HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "True"]
