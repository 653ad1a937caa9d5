"""Disk use of the data folder: usage per part, least-recently-used clean-up under caps, "free disk space"."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from core.disk import DiskCaps, disk_usage, enforce_cap_of_folder, enforce_caps, free_disk_space, touch, usage_rows
from core.paths import cache_dir, cli_runs_dir, experiments_dir, staging_dir, uploads_dir
from core.store import ExperimentStore


def _file(path: Path, size: int, *, age_s: float = 3600.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    old = time.time() - age_s
    os.utime(path, (old, old))
    return path


def _age(path: Path, age_s: float) -> None:
    old = time.time() - age_s
    for p in [path, *path.rglob("*")]:
        os.utime(p, (old, old))


def test_usage_names_every_part_from_core_paths(tmp_path):
    _file(cache_dir(tmp_path) / "baseline_eval" / "a.npz", 1000)
    _file(cache_dir(tmp_path) / "baseline_mlpackage" / "m.mlpackage" / "Data" / "w.bin", 3000)
    _file(uploads_dir(tmp_path) / "session1" / "x.pt", 500)
    _file(cli_runs_dir(tmp_path) / "20250101_palettize" / "model.pt", 700)
    _file(experiments_dir(tmp_path) / "000001" / "model.pt", 900)
    usage = {u.key: u for u in disk_usage(home=tmp_path)}
    assert usage["baseline_eval"].bytes == 1000 and usage["baseline_eval"].entries == 1
    assert usage["baseline_mlpackage"].bytes == 3000
    assert usage["uploads"].bytes == 500 and usage["cli_runs"].bytes == 700
    assert usage["experiments"].bytes == 900 and usage["experiments"].cap_bytes is None  # never cleaned here
    assert usage["other_cache"].bytes == 0  # the two baseline caches are not counted twice
    rows = usage_rows(list(usage.values()))
    assert {r["part"] for r in rows} >= {"Saved experiments", "Uploads", "Baseline logits cache"}
    assert all(r["folder"].startswith(str(tmp_path)) for r in rows)  # every part lives under the one home


def test_cap_removes_least_recently_used_first_and_touch_keeps_an_entry(tmp_path):
    folder = cache_dir(tmp_path) / "baseline_eval"
    oldest = _file(folder / "oldest.npz", 400, age_s=3000)
    middle = _file(folder / "middle.npz", 400, age_s=2000)
    newest = _file(folder / "newest.npz", 400, age_s=1000)
    touch(oldest)  # a cache hit: now the most recently used
    cleanup = enforce_caps(home=tmp_path, caps=DiskCaps(baseline_eval=900), parts=["baseline_eval"], grace_s=0)
    assert cleanup.removed_entries == 1 and cleanup.removed_bytes == 400
    assert not middle.exists() and oldest.exists() and newest.exists()


def test_entries_in_use_and_kept_paths_survive(tmp_path):
    folder = uploads_dir(tmp_path)
    mine = _file(folder / "me" / "model.pt", 1000, age_s=7200)
    _age(folder / "me", 7200)
    fresh = _file(folder / "other" / "data.zip", 1000, age_s=5)  # uploaded seconds ago: maybe still in use
    stale = _file(folder / "gone" / "old.pt", 1000, age_s=7200)
    _age(folder / "gone", 7200)
    cleanup = free_disk_space(home=tmp_path, parts=["uploads"], keep=[folder / "me"])
    assert mine.exists() and fresh.exists() and not stale.exists()
    assert cleanup.kept_in_use == 2 and cleanup.by_part == {"uploads": 1000}


def test_free_disk_space_keeps_saved_experiments_and_fresh_staging(tmp_path):
    store = ExperimentStore(tmp_path)
    record_id = store.add({"model": "m", "method": "palettize"})
    saved = _file(store.experiment_dir(record_id) / "model.pt", 1234)
    cached = _file(cache_dir(tmp_path) / "baseline_mlpackage" / "a.mlpackage" / "w.bin", 5000)
    _age(cache_dir(tmp_path) / "baseline_mlpackage" / "a.mlpackage", 3600)
    run = _file(cli_runs_dir(tmp_path) / "run1" / "model.pt", 2000)
    _age(cli_runs_dir(tmp_path) / "run1", 3600)
    running = _file(staging_dir(tmp_path) / "run_abc" / "model.pt", 100, age_s=1800)  # 30 min: a long run
    cleanup = store.free_disk_space()
    assert saved.exists() and running.exists()
    assert not cached.exists() and not run.exists()
    assert cleanup.removed_bytes == 7000
    assert store.get(record_id)["id"] == record_id  # nothing saved is lost


def test_a_cache_folder_outside_the_home_is_capped_too(tmp_path):
    outside = tmp_path / "elsewhere" / "baseline_eval"
    for i in range(5):
        _file(outside / f"{i}.npz", 300, age_s=5000 - i * 100)
    cleanup = enforce_cap_of_folder(outside, part="baseline_eval", caps=DiskCaps(baseline_eval=700), grace_s=0)
    assert cleanup.removed_entries == 3 and sorted(p.name for p in outside.iterdir()) == ["3.npz", "4.npz"]
    with pytest.raises(ValueError, match="unknown disk part"):
        enforce_cap_of_folder(outside, part="nope")


def test_caps_are_validated_and_unknown_parts_refused(tmp_path):
    with pytest.raises(ValueError, match=r"DiskCaps\.uploads must be a positive number"):
        DiskCaps(uploads=0)
    with pytest.raises(ValueError, match="unknown DiskCaps field"):
        DiskCaps.from_dict({"uploadz": 1})
    assert DiskCaps.from_dict(DiskCaps().to_dict()) == DiskCaps()
    with pytest.raises(ValueError, match="unknown or protected disk part"):
        free_disk_space(home=tmp_path, parts=["experiments"])


def test_caps_follow_their_environment_variables(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.disk import DEFAULT_CAPS, caps_env_names, current_caps, parse_size

    for variable in caps_env_names().values():
        monkeypatch.delenv(variable, raising=False)
    assert current_caps() == DEFAULT_CAPS
    assert caps_env_names()["uploads"] == "COMPRESSION_STUDIO_CAP_UPLOADS"
    monkeypatch.setenv("COMPRESSION_STUDIO_CAP_UPLOADS", "20GB")
    monkeypatch.setenv("COMPRESSION_STUDIO_CAP_BASELINE_EVAL", "1.5 GiB")
    monkeypatch.setenv("COMPRESSION_STUDIO_CAP_JOB_LOGS", "")  # empty: the default
    caps = current_caps()
    assert caps.uploads == 20_000_000_000 and caps.baseline_eval == int(1.5 * (1 << 30))
    assert caps.job_logs == DEFAULT_CAPS.job_logs and caps.cli_runs == DEFAULT_CAPS.cli_runs
    assert parse_size("500MB", setting="x") == 500_000_000 and parse_size("1234", setting="x") == 1234
    assert {u.key: u.cap_bytes for u in disk_usage(home=tmp_path)}["uploads"] == 20_000_000_000

    for bad, why in (("lots", "is not a size"), ("5 parsecs", "is not a size"), ("0MB", "must be more than 0")):
        monkeypatch.setenv("COMPRESSION_STUDIO_CAP_UPLOADS", bad)
        with pytest.raises(ValueError, match=f"COMPRESSION_STUDIO_CAP_UPLOADS='{bad}' {why}"):
            current_caps()


def test_clean_up_uses_the_environment_caps(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """enforce_caps without explicit caps reads the variables: a small uploads cap removes the older session."""
    folder = uploads_dir(tmp_path)
    _file(folder / "old" / "a.pt", 600)
    _file(folder / "new" / "b.pt", 600)
    _age(folder / "old", 3600)
    _age(folder / "new", 1800)
    monkeypatch.setenv("COMPRESSION_STUDIO_CAP_UPLOADS", "1000")
    cleanup = enforce_caps(home=tmp_path, parts=["uploads"], grace_s=0)
    assert cleanup.removed_entries == 1 and not (folder / "old").exists() and (folder / "new" / "b.pt").exists()
    monkeypatch.setenv("COMPRESSION_STUDIO_CAP_BASELINE_EVAL", "500")
    outside = tmp_path / "elsewhere"
    _file(outside / "x.npz", 400, age_s=3600)
    _file(outside / "y.npz", 400, age_s=1800)
    assert enforce_cap_of_folder(outside, part="baseline_eval", grace_s=0).removed_entries == 1
