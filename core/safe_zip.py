"""Capped, traversal-safe extraction of uploaded zip files (ImageFolder datasets, zipped .mlpackage folders).

Every limit is checked against the zip's central directory BEFORE anything is written, and again while
writing (a forged header cannot make an entry expand past its declared size or the total cap). Entries are
copied by hand rather than with ``ZipFile.extractall`` so that no path escapes the target folder and no
symbolic link is created. On any failure the target folder is emptied again: nothing half-extracted stays behind.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.formatting import fmt_bytes

_CHUNK = 1 << 20
_SKIPPED_PREFIXES = ("__MACOSX/",)  # Finder's resource-fork shadow folder: never part of the content


class UnsafeZipError(ValueError):
    """A zip was refused (too big, too many entries, unsafe paths, corrupt); the message says why and what to do."""


@dataclass(frozen=True)
class ZipLimits:
    """Caps applied before and during extraction."""

    max_total_bytes: int = 2_000_000_000  # uncompressed, all entries together
    max_entries: int = 50_000
    max_depth: int = 16  # path components of one entry (a/b/c.png has depth 3)

    def __post_init__(self) -> None:
        for name in ("max_total_bytes", "max_entries", "max_depth"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"ZipLimits.{name} must be positive, got {getattr(self, name)}")


DEFAULT_LIMITS = ZipLimits()


@dataclass(frozen=True)
class ZipSummary:
    """What a zip declares, after it passed every check."""

    entries: int  # files (folders not counted)
    total_bytes: int  # declared uncompressed size of all files
    max_depth: int


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)  # 3 = Unix


def _safe_parts(name: str, archive: str) -> tuple[str, ...]:
    if "\\" in name:  # a Windows separator would become part of a file name here, or a traversal elsewhere
        name = name.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and ":" in path.parts[0]) or ".." in path.parts:
        raise UnsafeZipError(f"{archive} contains an unsafe path ({name}); re-create the zip from the folder itself.")
    return tuple(p for p in path.parts if p not in ("", "."))


def _members(zf: zipfile.ZipFile, archive: str) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    return [
        (info, _safe_parts(info.filename, archive))
        for info in zf.infolist()
        if not info.filename.startswith(_SKIPPED_PREFIXES)
    ]


def check_zip(archive: Path, *, limits: ZipLimits = DEFAULT_LIMITS) -> ZipSummary:
    """Read the central directory only and refuse the zip if any limit or safety rule is broken."""
    archive = Path(archive)
    try:
        with zipfile.ZipFile(archive) as zf:
            return _check(zf, archive.name, limits)
    except zipfile.BadZipFile as exc:
        raise UnsafeZipError(f"{archive.name} is not a valid zip file ({exc}); re-create it.") from None
    except OSError as exc:
        raise UnsafeZipError(f"{archive.name} could not be read ({exc}).") from None


def _check(zf: zipfile.ZipFile, name: str, limits: ZipLimits) -> ZipSummary:
    infos = zf.infolist()
    if len(infos) > limits.max_entries:  # before looking at any entry: 100,000 names are cheap to count
        raise UnsafeZipError(
            f"{name} holds {len(infos):,} entries; at most {limits.max_entries:,} are accepted. "
            "Upload fewer files (for a dataset, a sample of each class is enough to evaluate)."
        )
    total = 0
    depth = 0
    files = 0
    for info, parts in _members(zf, name):
        if _is_symlink(info):
            raise UnsafeZipError(f"{name} contains a symbolic link ({info.filename}); zip the real files instead.")
        if info.flag_bits & 0x1:
            raise UnsafeZipError(f"{name} is encrypted ({info.filename}); upload an unencrypted zip.")
        depth = max(depth, len(parts))
        if len(parts) > limits.max_depth:
            raise UnsafeZipError(
                f"{name} nests folders {len(parts)} levels deep ({info.filename}); at most {limits.max_depth} are accepted."
            )
        if info.is_dir():
            continue
        files += 1
        total += info.file_size
        if total > limits.max_total_bytes:
            raise UnsafeZipError(
                f"{name} would expand to more than {fmt_bytes(limits.max_total_bytes)} "
                f"(it declares at least {fmt_bytes(total)} uncompressed from a {fmt_bytes(_archive_size(zf))} file); "
                "refused before extracting anything. Upload a smaller zip."
            )
    return ZipSummary(entries=files, total_bytes=total, max_depth=depth)


def _archive_size(zf: zipfile.ZipFile) -> int:
    try:
        return Path(zf.filename or "").stat().st_size
    except OSError:
        return 0


def extract_zip(archive: Path, *, into: Path, limits: ZipLimits = DEFAULT_LIMITS) -> ZipSummary:
    """Check `archive`, then extract it into the folder `into` (created if missing; must be empty).

    The caller owns `into` and removes it when done. Raises UnsafeZipError (a ValueError) with a message for
    the user; after a failure `into` is left empty (and removed if this call created it).
    """
    archive, into = Path(archive), Path(into)
    created = not into.exists()
    if not created and (not into.is_dir() or any(into.iterdir())):
        raise UnsafeZipError(f"cannot extract {archive.name}: {into} is not an empty folder.")
    try:
        with zipfile.ZipFile(archive) as zf:
            summary = _check(zf, archive.name, limits)
            into.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(into).free
            if summary.total_bytes > free:
                raise UnsafeZipError(
                    f"{archive.name} needs {fmt_bytes(summary.total_bytes)} but only {fmt_bytes(free)} of disk is free; "
                    "free some space (Model page → free disk space) and try again."
                )
            _write_members(zf, archive.name, into.resolve(), limits)
    except Exception as exc:
        _empty(into, remove=created)
        if isinstance(exc, UnsafeZipError):
            raise
        if isinstance(exc, zipfile.BadZipFile | EOFError | zipfile.LargeZipFile | NotImplementedError):
            raise UnsafeZipError(f"{archive.name} is not a valid zip file ({exc}); re-create it.") from None
        if isinstance(exc, OSError):
            raise UnsafeZipError(f"{archive.name} could not be extracted ({exc}).") from None
        raise
    return summary


def _write_members(zf: zipfile.ZipFile, name: str, root: Path, limits: ZipLimits) -> None:
    written_total = 0
    for info, parts in _members(zf, name):
        if not parts:
            continue
        target = root.joinpath(*parts)
        if root not in target.parents:  # belt and braces after _safe_parts
            raise UnsafeZipError(f"{name} contains an unsafe path ({info.filename}); re-create the zip.")
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with zf.open(info) as src, open(target, "wb") as dst:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                written_total += len(chunk)
                if written > info.file_size or written_total > limits.max_total_bytes:
                    raise UnsafeZipError(
                        f"{name} expands beyond what it declares ({info.filename} is larger than its header says); "
                        "it looks like a zip bomb and was refused. Re-create the zip from the original files."
                    )
                dst.write(chunk)


def _empty(folder: Path, *, remove: bool) -> None:
    if not folder.is_dir():
        return
    if remove:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
