"""The AppTest fixtures of tests/pages (a fresh app session on the sample model, a private data folder), and the
bad files the hardening tests share."""

import struct
import zipfile
from pathlib import Path

from tests.pages.conftest import app, sample_model, studio_home  # noqa: F401  (fixtures)


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def zip_bomb(path: Path) -> Path:
    """A ~1 kB zip whose one image declares 3 GB uncompressed (the header a crafted bomb carries)."""
    write_zip(path, {"pets/cat/huge.png": bytes(1_000_000), "pets/dog/1.png": b"x"})
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, data.find(b"PK\x03\x04") + 22, 3_000_000_000)
    struct.pack_into("<I", data, data.find(b"PK\x01\x02") + 24, 3_000_000_000)
    path.write_bytes(data)
    return path
