"""Capped, traversal-safe zip extraction (core.safe_zip): real zip files, including hostile ones."""

from __future__ import annotations

import struct
import time
import zipfile
from pathlib import Path

import pytest

from core.safe_zip import DEFAULT_LIMITS, UnsafeZipError, ZipLimits, check_zip, extract_zip


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _patch_declared_size(path: Path, size: int) -> None:
    """Rewrite the uncompressed size in the local header and the central directory (what a crafted zip does)."""
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, data.find(b"PK\x03\x04") + 22, size)
    struct.pack_into("<I", data, data.find(b"PK\x01\x02") + 24, size)
    path.write_bytes(data)


def test_extracts_a_normal_zip_into_the_given_folder(tmp_path):
    archive = _zip(tmp_path / "ok.zip", {"ds/a/1.png": b"x" * 10, "ds/b/2.png": b"y" * 5, "__MACOSX/ds/._1.png": b"z"})
    into = tmp_path / "out"
    summary = extract_zip(archive, into=into)
    assert (summary.entries, summary.total_bytes, summary.max_depth) == (2, 15, 3)
    assert sorted(str(p.relative_to(into)) for p in into.rglob("*") if p.is_file()) == ["ds/a/1.png", "ds/b/2.png"]
    with pytest.raises(UnsafeZipError, match="is not an empty folder"):
        extract_zip(archive, into=into)


def test_zip_bomb_declared_size_is_refused_before_extracting(tmp_path):
    archive = _zip(tmp_path / "bomb.zip", {"ds/a/huge.bin": bytes(1_000_000)})
    _patch_declared_size(archive, 3_000_000_000)  # a 1 kB file that says it expands to 3 GB
    assert archive.stat().st_size < 5_000
    into = tmp_path / "out"
    with pytest.raises(UnsafeZipError, match=r"would expand to more than 2.00 GB .* refused before extracting anything"):
        extract_zip(archive, into=into)
    assert not into.exists()


def test_real_zip_bomb_over_the_cap_is_refused(tmp_path):
    archive = _zip(tmp_path / "bomb.zip", {f"ds/{i}.bin": bytes(5_000_000) for i in range(4)})  # 20 MB in ~20 kB
    with pytest.raises(UnsafeZipError, match=r"would expand to more than 10.00 MB"):
        check_zip(archive, limits=ZipLimits(max_total_bytes=10_000_000))


def test_entry_larger_than_its_header_says_is_stopped_and_nothing_stays(tmp_path):
    archive = _zip(tmp_path / "liar.zip", {"ds/a/ok.txt": b"fine", "ds/b/big.bin": bytes(10_000_000)})
    data = bytearray(archive.read_bytes())  # patch the second entry's sizes: it claims 1,000 bytes
    local = data.find(b"PK\x03\x04", 1)
    central = data.find(b"PK\x01\x02", data.find(b"PK\x01\x02") + 1)
    struct.pack_into("<I", data, local + 22, 1_000)
    struct.pack_into("<I", data, central + 24, 1_000)
    archive.write_bytes(data)
    into = tmp_path / "out"
    into.mkdir()
    with pytest.raises(UnsafeZipError, match=r"liar.zip (expands beyond what it declares|is not a valid zip file)"):
        extract_zip(archive, into=into)
    assert into.is_dir() and list(into.iterdir()) == []  # emptied, but the caller's folder is kept


def test_hundred_thousand_entries_are_refused_before_extracting(tmp_path):
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for k in range(100_000):
            zf.writestr(f"ds/c{k % 10}/{k}.png", b"")
    into = tmp_path / "out"
    started = time.perf_counter()
    with pytest.raises(UnsafeZipError, match=r"holds 100,000 entries; at most 50,000 are accepted"):
        extract_zip(archive, into=into)
    assert time.perf_counter() - started < 10 and not into.exists()
    assert DEFAULT_LIMITS.max_entries == 50_000


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/escape.txt", "ds/../../escape.txt", "ds\\..\\..\\escape.txt", "C:/escape.txt"])
def test_path_traversal_is_refused(tmp_path, name):
    archive = _zip(tmp_path / "evil.zip", {"ds/a/ok.txt": b"ok", name: b"pwned"})
    into = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeZipError, match=r"contains an unsafe path"):
        extract_zip(archive, into=into)
    assert not list(tmp_path.rglob("escape.txt")) and not into.exists()


def test_symlinks_deep_nesting_and_non_zips_are_refused(tmp_path):
    link = zipfile.ZipInfo("ds/a/link.png")
    link.create_system = 3
    link.external_attr = (0o120777 << 16)  # a Unix symlink pointing outside
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(UnsafeZipError, match=r"symbolic link \(ds/a/link.png\)"):
        extract_zip(archive, into=tmp_path / "out")

    deep = _zip(tmp_path / "deep.zip", {"/".join(["d"] * 20) + "/x.png": b"x"})
    with pytest.raises(UnsafeZipError, match=r"nests folders 21 levels deep .* at most 16"):
        check_zip(deep)

    not_zip = tmp_path / "fake.zip"
    not_zip.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(UnsafeZipError, match="not a valid zip file"):
        extract_zip(not_zip, into=tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_limits_are_validated():
    with pytest.raises(ValueError, match=r"ZipLimits\.max_entries must be positive"):
        ZipLimits(max_entries=0)
