"""Streamed uploads: a file sent by the browser goes straight to disk in chunks, never whole into memory.

Streamlit's own uploader keeps every uploaded file in the server's memory until the session ends, so a 1 GB
checkpoint costs 1 GB of RAM per upload. Here an HTTP route (`upload_routes`, mounted next to Streamlit by
``app.py``) reads the request body chunk by chunk into a hidden ``.part`` file in the session's uploads folder,
hashing it on the way, and renames it into place only when every byte arrived and every cap held.

Only a holder of a ticket can upload: the page issues one per session and widget (`issue_ticket`, a random
token kept in server memory that names the session's folder, the accepted file types and the size cap) and the
browser sends it in a header, which a page on another site cannot do without a CORS pre-flight this route never
answers. Nothing received is ever parsed or unpickled here; the Model page validates the saved file as before.

Caps: ``COMPRESSION_STUDIO_MAX_UPLOAD`` (default 4GB) per file, checked against the declared length before
reading and again while reading; the free disk space; afterwards the uploads of all sessions are brought back
under their cap (core.disk, least recently used first; this session's folder stays).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.disk import enforce_caps, parse_size, touch
from core.formatting import fmt_bytes

UPLOAD_PATH = "/api/studio/upload"  # outside Streamlit's reserved /_stcore/, /media/, /component/, /static/
TOKEN_HEADER = "X-Studio-Upload-Token"
NAME_HEADER = "X-Studio-Upload-Name"  # percent-encoded by the browser (encodeURIComponent)
MAX_UPLOAD_ENV = "COMPRESSION_STUDIO_MAX_UPLOAD"
DEFAULT_MAX_UPLOAD_BYTES = 4_000_000_000
WRITE_CHUNK = 1 << 20  # bytes gathered before one write (and one hop to a worker thread)
TICKET_IDLE_S = 24 * 3600.0  # a ticket not used for this long is forgotten
STALE_PART_S = 3600.0  # a .part file untouched for this long belongs to no upload in progress


class UploadRefused(ValueError):
    """An upload was refused; `status` is the HTTP status, the message says why and what to do."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def max_upload_bytes(*, environ: Mapping[str, str] | None = None) -> int:
    """The per-file cap: ``$COMPRESSION_STUDIO_MAX_UPLOAD`` (e.g. 10GB) or 4 GB."""
    env = os.environ if environ is None else environ
    text = env.get(MAX_UPLOAD_ENV, "").strip()
    return parse_size(text, setting=MAX_UPLOAD_ENV) if text else DEFAULT_MAX_UPLOAD_BYTES


@dataclass(frozen=True)
class ReceivedUpload:
    """One file that arrived completely: where it lies, its content hash (16 hex digits) and size."""

    upload_id: str
    name: str
    path: Path
    digest: str
    size: int


@dataclass
class _Ticket:
    home: Path
    folder: Path
    suffixes: tuple[str, ...]
    max_bytes: int
    last_used: float
    received: dict[str, ReceivedUpload] = field(default_factory=dict)


_LOCK = threading.Lock()
_TICKETS: dict[str, _Ticket] = {}
_ROUTE_MOUNTED = False


def route_mounted() -> bool:
    """Whether this process serves the upload route (``streamlit run app.py``); not under AppTest or other hosts."""
    return _ROUTE_MOUNTED


def issue_ticket(*, home: Path, folder: Path, suffixes: tuple[str, ...], max_bytes: int | None = None) -> str:
    """A new random token allowing uploads of files ending in `suffixes` into `folder` (inside `home`'s uploads)."""
    if not suffixes or any(not s.startswith(".") for s in suffixes):
        raise ValueError(f"suffixes must be file endings such as '.pt', got {suffixes!r}")
    cap = max_upload_bytes() if max_bytes is None else int(max_bytes)
    if cap <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes!r}")
    token = secrets.token_urlsafe(32)
    now = time.time()
    _remove_stale_parts(Path(folder), now=now)
    with _LOCK:
        for stale in [t for t, ticket in _TICKETS.items() if now - ticket.last_used > TICKET_IDLE_S]:
            del _TICKETS[stale]
        _TICKETS[token] = _Ticket(Path(home), Path(folder), tuple(s.lower() for s in suffixes), cap, now)
    return token


def _remove_stale_parts(folder: Path, *, now: float) -> None:
    """Left-overs of uploads cut off by a server crash: a live upload writes to its .part file every few seconds."""
    if not folder.is_dir():
        return
    for part in folder.glob(".*.part"):
        try:
            if now - part.stat().st_mtime > STALE_PART_S:
                part.unlink()
        except OSError:
            continue


def revoke_ticket(*, token: str) -> None:
    """Forget a ticket: later uploads with it are refused."""
    with _LOCK:
        _TICKETS.pop(token, None)


def claim(*, token: str, upload_id: str) -> ReceivedUpload | None:
    """The upload `upload_id` received with `token`, or None (unknown, other session's, or removed since)."""
    with _LOCK:
        ticket = _TICKETS.get(token)
        received = ticket.received.get(upload_id) if ticket is not None else None
    if received is None or not received.path.is_file():
        return None
    touch(received.path)
    return received


def safe_name(name: str) -> str:
    """The user's file name reduced to safe characters (messages still name the file they chose)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(name.replace("\\", "/")).name)[-120:].lstrip(".") or "upload"


def _take(token: str) -> _Ticket:
    with _LOCK:
        ticket = _TICKETS.get(token)
        if ticket is None:
            raise UploadRefused("This upload link has expired; reload the page and upload again.", status=403)
        ticket.last_used = time.time()
        return ticket


async def receive(*, token: str, name: str, declared_bytes: int | None, chunks: AsyncIterator[bytes]) -> ReceivedUpload:
    """Write `chunks` to the ticket's folder (hashing, capped), then rename into ``<hash>/<name>``.

    Raises UploadRefused with a message for the user; nothing partial stays on disk after a refusal or a
    broken connection.
    """
    import anyio.to_thread

    ticket = _take(token)
    clean = safe_name(name)
    if not clean.lower().endswith(ticket.suffixes):
        raise UploadRefused(
            f"{clean} is not one of the accepted file types ({', '.join(ticket.suffixes)}).", status=415
        )
    too_big = (
        f"{clean} is larger than the upload cap of {fmt_bytes(ticket.max_bytes)}; raise it with "
        f"{MAX_UPLOAD_ENV} (e.g. {MAX_UPLOAD_ENV}=10GB) or load a smaller file."
    )
    if declared_bytes is not None and declared_bytes > ticket.max_bytes:
        raise UploadRefused(too_big, status=413)
    ticket.folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(ticket.folder).free
    if declared_bytes is not None and declared_bytes > free:
        raise UploadRefused(
            f"{clean} needs {fmt_bytes(declared_bytes)} but only {fmt_bytes(free)} of disk is "
            "free; free some space (Model page → Disk space) and try again.",
            status=507,
        )
    tmp = ticket.folder / f".{uuid.uuid4().hex}.part"
    digest = hashlib.sha256()
    size = 0
    pending: list[bytes] = []
    pending_bytes = 0

    def write(out, parts: list[bytes]) -> None:
        for part in parts:
            digest.update(part)
            out.write(part)

    try:
        with open(tmp, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > ticket.max_bytes:
                    raise UploadRefused(too_big, status=413)
                pending.append(chunk)
                pending_bytes += len(chunk)
                if pending_bytes >= WRITE_CHUNK:  # disk writes off the event loop, ~1 MB at a time
                    parts, pending, pending_bytes = pending, [], 0
                    await anyio.to_thread.run_sync(write, out, parts)
            await anyio.to_thread.run_sync(write, out, pending)
        if declared_bytes is not None and size != declared_bytes:
            raise UploadRefused(
                f"{clean} arrived incomplete ({fmt_bytes(size)} of {fmt_bytes(declared_bytes)}); upload it again.",
                status=400,
            )
        short = digest.hexdigest()[:16]
        path = ticket.folder / short / clean
        if path.exists():  # the same content under the same name: keep the first copy
            touch(path)
        else:
            path.parent.mkdir(exist_ok=True)
            tmp.replace(path)  # atomic: a reader sees the whole file or none
    finally:
        tmp.unlink(missing_ok=True)
    received = ReceivedUpload(upload_id=uuid.uuid4().hex, name=clean, path=path, digest=short, size=size)
    with _LOCK:
        ticket.received[received.upload_id] = received
    await anyio.to_thread.run_sync(lambda: enforce_caps(home=ticket.home, parts=["uploads"], keep=[ticket.folder]))
    return received


async def _endpoint(request):  # Starlette is imported only where the route is mounted
    from urllib.parse import unquote

    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse

    token = request.headers.get(TOKEN_HEADER, "")
    length = request.headers.get("content-length")
    try:
        declared = int(length) if length is not None else None
        if declared is not None and declared < 0:
            raise ValueError(length)
    except ValueError:
        return JSONResponse({"error": "The request's Content-Length is not a number."}, status_code=400)
    try:
        received = await receive(
            token=token,
            name=unquote(request.headers.get(NAME_HEADER, "")),
            declared_bytes=declared,
            chunks=request.stream(),
        )
    except UploadRefused as exc:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
    except ClientDisconnect:
        return JSONResponse({"error": "The upload was interrupted; upload the file again."}, status_code=400)
    except OSError as exc:
        return JSONResponse(
            {"error": f"The file could not be written ({exc.strerror or exc}); check the disk."}, status_code=507
        )
    return JSONResponse({"id": received.upload_id, "name": received.name, "size": received.size})


def upload_routes() -> list:
    """The Starlette route to mount next to Streamlit (``st.App(..., routes=upload_routes())`` in app.py)."""
    from starlette.routing import Route

    global _ROUTE_MOUNTED
    _ROUTE_MOUNTED = True
    return [Route(UPLOAD_PATH, _endpoint, methods=["POST"])]


def forget_all_tickets() -> None:
    """Drop every ticket (tests; a restarted server starts with none anyway)."""
    with _LOCK:
        _TICKETS.clear()
