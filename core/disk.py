"""Disk use of the data folder, part by part, and least-recently-used clean-up under size caps.

Every part is a folder from core.paths. Recomputable parts (baseline caches, CLI run folders, uploads, staging
folders) have a size cap: when a part grows past it, its least recently used entries (direct children: one
cache file, one upload, one run folder) are removed until it fits again. "Recently used" is the entry's
modification time; cache readers call `touch` on a hit so a cache entry in use stays. Saved experiments and
the experiment database are never removed here (the Compare page deletes experiments).

Entries modified within `grace_s` (default 10 minutes) are never removed: they may belong to a run in progress
or a job still waiting for its upload.

Every cap can be set by an environment variable, ``COMPRESSION_STUDIO_CAP_<PART>`` (e.g.
``COMPRESSION_STUDIO_CAP_UPLOADS=20GB``); `current_caps()` reads them, and every function here that takes
``caps`` uses it when none is given.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from core.paths import (
    cache_dir,
    cli_runs_dir,
    experiments_dir,
    job_logs_dir,
    staging_dir,
    studio_home,
    uploads_dir,
)

GB = 1_000_000_000
DEFAULT_GRACE_S = 600.0


@dataclass(frozen=True)
class DiskCaps:
    """Size caps in bytes per clean-able part; least recently used entries go first once a part is over its cap."""

    baseline_eval: int = 1 * GB  # baseline logits (.npz), recomputed in seconds to minutes
    baseline_mlpackage: int = 2 * GB  # fp16 baseline packages, one per model weights
    other_cache: int = 1 * GB  # int8 form choices
    uploads: int = 10 * GB  # uploaded models, weights, datasets (all sessions together)
    cli_runs: int = 5 * GB  # artifacts of `core.cli run --no-save`
    staging: int = 10 * GB  # runs in progress; only stale entries are ever removed
    job_logs: int = 200_000_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"DiskCaps.{f.name} must be a positive number of bytes, got {value!r}")

    @classmethod
    def from_dict(cls, data: dict) -> DiskCaps:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DiskCaps field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


DEFAULT_CAPS = DiskCaps()
CAP_ENV_PREFIX = "COMPRESSION_STUDIO_CAP_"
_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1_000,
    "MB": 1_000_000,
    "GB": GB,
    "TB": 1_000 * GB,
    "KIB": 1 << 10,
    "MIB": 1 << 20,
    "GIB": 1 << 30,
    "TIB": 1 << 40,
}


def parse_size(text: str, *, setting: str) -> int:
    """'20GB', '500 MB', '1.5GiB' or a plain number of bytes → bytes; a ValueError names `setting` otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"{setting}={text!r} is not a size; write e.g. 20GB, 500MB or a number of bytes.")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"{setting}={text!r} must be more than 0 bytes.")
    return value


def caps_env_names() -> dict[str, str]:
    """Cap field → the environment variable that sets it (``uploads`` → ``COMPRESSION_STUDIO_CAP_UPLOADS``)."""
    return {f.name: CAP_ENV_PREFIX + f.name.upper() for f in fields(DiskCaps)}


def current_caps(*, environ: Mapping[str, str] | None = None) -> DiskCaps:
    """The default caps, each replaced by its ``COMPRESSION_STUDIO_CAP_<PART>`` variable when that is set.

    A malformed value raises a ValueError naming the variable and an example, rather than silently falling
    back to the default (a typo must not leave the disk unbounded or empty a cache at every run).
    """
    env = os.environ if environ is None else environ
    values = DEFAULT_CAPS.to_dict()
    for name, variable in caps_env_names().items():
        if env.get(variable, "").strip():
            values[name] = parse_size(env[variable], setting=variable)
    return DiskCaps(**values)


@dataclass(frozen=True)
class DiskPart:
    """One folder of the data folder: what it holds and whether (and up to what size) it is cleaned up."""

    key: str
    label: str
    path: Path
    what: str
    cap_bytes: int | None  # None: never removed here (saved experiments)
    excludes: tuple[str, ...] = ()  # child names that belong to another part


@dataclass(frozen=True)
class PartUsage:
    key: str
    label: str
    path: Path
    what: str
    bytes: int
    entries: int
    cap_bytes: int | None

    @property
    def cleanable(self) -> bool:
        return self.cap_bytes is not None


@dataclass(frozen=True)
class Cleanup:
    """What a clean-up removed."""

    removed_bytes: int
    removed_entries: int
    by_part: dict[str, int]  # bytes removed per part key
    kept_in_use: int  # entries left alone because they were used within the grace period or asked to be kept


def disk_parts(*, home: Path | None = None, caps: DiskCaps | None = None) -> list[DiskPart]:
    """Every part of the data folder, from core.paths; `caps` defaults to `current_caps()`."""
    caps = caps or current_caps()
    home = Path(home) if home is not None else studio_home()
    cache = cache_dir(home)
    return [
        DiskPart(
            "experiments",
            "Saved experiments",
            experiments_dir(home),
            "compressed models and weights of every saved experiment (delete them on the Compare page)",
            None,
        ),
        DiskPart(
            "baseline_eval",
            "Baseline logits cache",
            cache / "baseline_eval",
            "outputs of uncompressed models on evaluation sets; recomputed when needed",
            caps.baseline_eval,
        ),
        DiskPart(
            "baseline_mlpackage",
            "fp16 baseline packages",
            cache / "baseline_mlpackage",
            "uncompressed Core ML exports every size ratio is measured against; re-exported when needed",
            caps.baseline_mlpackage,
        ),
        DiskPart(
            "other_cache",
            "Other caches",
            cache,
            "int8 form choices and similar; re-measured when needed",
            caps.other_cache,
            excludes=("baseline_eval", "baseline_mlpackage", "bench"),
        ),
        DiskPart(
            "bench",
            "Benchmark results",
            cache / "bench",
            "results of `python -m bench.run_bench` the speed-up wording relies on (kept)",
            None,
        ),
        DiskPart(
            "uploads",
            "Uploads",
            uploads_dir(home),
            "models, weights and datasets uploaded in the dashboard (upload again to reuse)",
            caps.uploads,
        ),
        DiskPart(
            "cli_runs",
            "CLI runs not saved",
            cli_runs_dir(home),
            "artifacts of `python -m core.cli run --no-save`",
            caps.cli_runs,
        ),
        DiskPart(
            "staging",
            "Runs in progress",
            staging_dir(home),
            "staging folders of running experiments; left-overs of crashed runs",
            caps.staging,
        ),
        DiskPart("job_logs", "Job logs", job_logs_dir(home), "worker logs of queued runs", caps.job_logs),
    ]


def _size(path: Path) -> int:
    try:
        if path.is_symlink() or path.is_file():
            return path.lstat().st_size
        total = 0
        for root, _dirs, files in os.walk(path):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(root, name)).st_size
        return total
    except OSError:
        return 0


def _last_used(path: Path) -> float:
    """The newest modification time of an entry (a folder counts as used when anything inside changed)."""
    try:
        newest = path.lstat().st_mtime
    except OSError:
        return 0.0
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest


def _entries(part: DiskPart) -> list[Path]:
    if not part.path.is_dir():
        return []
    return [p for p in part.path.iterdir() if p.name not in part.excludes]


def disk_usage(*, home: Path | None = None, caps: DiskCaps | None = None) -> list[PartUsage]:
    """Bytes and entry count of every part (nothing is removed)."""
    usage = []
    for part in disk_parts(home=home, caps=caps):
        entries = _entries(part)
        usage.append(
            PartUsage(
                part.key, part.label, part.path, part.what, sum(_size(e) for e in entries), len(entries), part.cap_bytes
            )
        )
    return usage


def touch(path: Path) -> None:
    """Mark a cache entry as just used (least-recently-used clean-up keeps it longest)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            entry.unlink()


def _trim(part: DiskPart, *, target_bytes: int, keep: set[Path], grace_s: float, now: float) -> tuple[int, int, int]:
    """Remove least recently used entries of `part` until it holds at most `target_bytes`."""
    entries = [(e, _size(e), _last_used(e)) for e in _entries(part)]
    total = sum(size for _, size, _ in entries)
    removed_bytes = removed = kept = 0
    for entry, size, used in sorted(entries, key=lambda item: item[2]):  # oldest use first
        if total <= target_bytes:
            break
        if entry.resolve() in keep or now - used < grace_s:
            kept += 1
            continue
        _remove(entry)
        total -= size
        removed_bytes += size
        removed += 1
    return removed_bytes, removed, kept


def _run(
    *,
    home: Path | None,
    caps: DiskCaps | None,
    part_keys: Iterable[str] | None,
    keep: Sequence[Path],
    grace_s: float,
    empty: bool,
) -> Cleanup:
    if grace_s < 0:
        raise ValueError(f"grace_s must be non-negative, got {grace_s}")
    parts = [p for p in disk_parts(home=home, caps=caps) if p.cap_bytes is not None]
    if part_keys is not None:
        wanted = set(part_keys)
        unknown = wanted - {p.key for p in parts}
        if unknown:
            raise ValueError(
                f"unknown or protected disk part(s): {', '.join(sorted(unknown))}; "
                f"clean-able: {', '.join(p.key for p in parts)}"
            )
        parts = [p for p in parts if p.key in wanted]
    keep_set = {Path(k).resolve() for k in keep}
    now = time.time()
    by_part: dict[str, int] = {}
    removed_bytes = removed = kept = 0
    for part in parts:
        # The staging folder holds runs in progress: even "free disk space" removes only stale entries there.
        grace = max(grace_s, 6 * 3600.0) if part.key == "staging" else grace_s
        target = 0 if empty else int(part.cap_bytes or 0)
        b, n, k = _trim(part, target_bytes=target, keep=keep_set, grace_s=grace, now=now)
        by_part[part.key] = b
        removed_bytes, removed, kept = removed_bytes + b, removed + n, kept + k
    return Cleanup(removed_bytes=removed_bytes, removed_entries=removed, by_part=by_part, kept_in_use=kept)


def enforce_caps(
    *,
    home: Path | None = None,
    caps: DiskCaps | None = None,
    parts: Iterable[str] | None = None,
    keep: Sequence[Path] = (),
    grace_s: float = DEFAULT_GRACE_S,
) -> Cleanup:
    """Bring every clean-able part (or the given `parts`) under its cap, least recently used entries first."""
    return _run(home=home, caps=caps, part_keys=parts, keep=keep, grace_s=grace_s, empty=False)


def free_disk_space(
    *,
    home: Path | None = None,
    parts: Iterable[str] | None = None,
    keep: Sequence[Path] = (),
    grace_s: float = DEFAULT_GRACE_S,
) -> Cleanup:
    """Empty the clean-able parts (caches, uploads, CLI runs, stale staging folders); saved experiments stay.

    Entries in `keep` (e.g. the current session's uploads) and entries used within `grace_s` stay too.
    """
    return _run(home=home, caps=None, part_keys=parts, keep=keep, grace_s=grace_s, empty=True)


def enforce_cap_of_folder(
    folder: Path,
    *,
    part: str,
    keep: Sequence[Path] = (),
    grace_s: float = DEFAULT_GRACE_S,
    caps: DiskCaps | None = None,
) -> Cleanup:
    """Cap one cache folder that may live outside the data folder (ExperimentOptions.cache_dir): `part` names its cap."""
    cap = getattr(caps or current_caps(), part, None)
    if not isinstance(cap, int):
        raise ValueError(f"unknown disk part {part!r}; known: {', '.join(f.name for f in fields(DiskCaps))}")
    target = DiskPart(part, part, Path(folder), "", cap)
    b, n, k = _trim(target, target_bytes=cap, keep={Path(p).resolve() for p in keep}, grace_s=grace_s, now=time.time())
    return Cleanup(removed_bytes=b, removed_entries=n, by_part={part: b}, kept_in_use=k)


def usage_rows(usage: Sequence[PartUsage]) -> list[dict]:
    """One display row per part: what it holds, its size, entries, cap and whether "free disk space" empties it."""
    from core.formatting import fmt_bytes

    return [
        {
            "part": u.label,
            "size": fmt_bytes(u.bytes),
            "bytes": u.bytes,
            "entries": u.entries,
            "cap": fmt_bytes(u.cap_bytes) if u.cap_bytes is not None else "none (kept)",
            "freed by the button": "yes"
            if u.cleanable and u.key != "staging"
            else ("only left-overs of crashed runs" if u.key == "staging" else "no"),
            "what it holds": u.what,
            "folder": str(u.path),
        }
        for u in usage
    ]


def cleanup_message(cleanup: Cleanup) -> str:
    """One sentence saying what a clean-up did."""
    from core.formatting import fmt_bytes

    kept = f" {cleanup.kept_in_use} item(s) in use were kept." if cleanup.kept_in_use else ""
    if not cleanup.removed_entries:
        return "Nothing to remove." + kept
    return f"Freed {fmt_bytes(cleanup.removed_bytes)} ({cleanup.removed_entries} item(s)).{kept}"
