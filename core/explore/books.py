"""One table family of the store's SQLite file (sweeps, searches), kept next to the job queue it refers to."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from core.jobs.queue import JobQueue


class StoreBook:
    """Opens the store's SQLite file of data folder `home` and creates the subclass's tables (``SCHEMA``)."""

    SCHEMA: ClassVar[str] = ""

    def __init__(self, *, home: Path | str | None = None) -> None:
        self.queue = JobQueue(home=home)
        self.home = self.queue.home
        with self._connection() as conn:
            conn.executescript(self.SCHEMA)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        # autocommit + a generous busy timeout: workers, pages and the CLI write to the same file
        conn = sqlite3.connect(self.queue.db_path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            yield conn
        finally:
            conn.close()
