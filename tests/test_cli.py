"""The command line, run as a user runs it: a subprocess, real models, real files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.cli import build_parser, run_status
from core.jobs import DataRef, JobQueue, ModelRef
from core.jobs.runner import Heartbeat

pytestmark = pytest.mark.slow  # every test but the parser's runs `python -m core.cli` in a child process

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, home: Path, timeout: int = 180, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COMPRESSION_STUDIO_HOME": str(home), "PYTHONPATH": str(ROOT),
           # a timing lock of this data folder (other test runs on the machine don't block it); idle workers leave soon
           "COMPRESSION_STUDIO_TIMING_LOCK": str(Path(home) / "timing.lock"), "COMPRESSION_STUDIO_WORKER_IDLE": "5",
           **extra_env}
    for name in ("COMPRESSION_STUDIO_DEBUG", "COMPRESSION_STUDIO_EXECUTOR", "COMPRESSION_STUDIO_RAY_ADDRESS"):
        if name not in extra_env:
            env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_models_lists_source_ids(tmp_path: Path) -> None:
    result = cli("models", home=tmp_path)
    assert result.returncode == 0, result.stderr
    ids = [line.split()[0] for line in result.stdout.splitlines()]
    assert {"sample:fashion_cnn", "sample:fashion_resnet", "torchvision:resnet18", "torchvision:resnet50"} <= set(ids)


def test_models_lists_every_route_and_searches_timm(tmp_path: Path) -> None:
    result = cli("models", home=tmp_path)
    assert result.returncode == 0, result.stderr
    ids = [line.split()[0] for line in result.stdout.splitlines()]
    assert {"torchvision:vit_b_16", "torchvision:efficientnet_b3", "timm:<name>"} <= set(ids) and len(ids) < 100
    result = cli("models", "--search", "mobilenetv3_small_0", home=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["timm:mobilenetv3_small_050", "1.6", "M", "params"]
    assert lines[-1] == "3 architecture(s)"  # mobilenetv3_small_050 / _075 and tf_mobilenetv3_small_075



def test_a_search_that_matches_nothing_is_one_line(capsys) -> None:
    from core.cli import main

    assert main(["models", "--search", "no-such-net"]) == 2
    assert capsys.readouterr().err.strip() == ("error: no architecture matches 'no-such-net'; try a shorter part of "
                                               "the name.")


def test_timm_model_runs_without_saving_and_says_what_its_numbers_mean(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    result = cli("run", "--model", "timm:mobilenetv3_small_050", "--spec", '{"method": "palettize", "n_bits": 4}',
                 "--no-save", "--eval-limit", "8", "--no-latency", "--no-export", "--quiet", "--json", str(out),
                 home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())
    assert record["model"] == "timm:mobilenetv3_small_050" and record["input_shape"] == [3, 224, 224]
    assert record["accuracy_top1"] is None and record["output_snr_db"] > 0  # BatchNorm recalibrated: not ~0 dB
    assert "accuracy         Random weights: accuracy numbers are not meaningful. Size, latency and output SNR" in result.stdout
    assert "(not saved in the experiment store)" in result.stdout


def test_bad_architectures_and_too_large_models_exit_with_one_line(tmp_path: Path) -> None:
    assert_one_line_error(cli("baseline", "--model", "timm:resnet10x", home=tmp_path), "unknown timm model 'resnet10x'",
                          "Did you mean")
    result = cli("baseline", "--model", "torchvision:vit_b_16", home=tmp_path, COMPRESSION_STUDIO_MEMORY_LIMIT="100MB")
    assert result.returncode == 2
    assert_one_line_error(result, "torchvision:vit_b_16 is too large for this machine", "86.6 M parameters")
    result = cli("run", "--model", "timm:resnet10t", "--spec", '{"method": "palettize"}', home=tmp_path,
                 COMPRESSION_STUDIO_MEMORY_LIMIT="2MB")  # a saved run: refused before a job is queued
    assert result.returncode == 2
    assert_one_line_error(result, "timm:resnet10t is too large for this machine")
    assert JobQueue(home=tmp_path).list() == []


def test_bad_model_exits_with_one_line(tmp_path: Path, unconvertible_torchscript: Path) -> None:
    assert_one_line_error(cli("baseline", "--model", "sample:nope", home=tmp_path), "nope")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert_one_line_error(cli("baseline", "--model", f"torchscript:{empty}", home=tmp_path), "empty")
    scripted = unconvertible_torchscript
    result = cli("run", "--model", f"torchscript:{scripted}", "--spec", '{"method": "palettize"}', home=tmp_path)
    assert_one_line_error(result, "palettize cannot run on this TorchScript file", "prim::Loop", "torch.export")
    wrong = tmp_path / "model.pt2"
    wrong.write_bytes(b"not a program")
    assert_one_line_error(cli("methods", "--model", f"export:{wrong}", home=tmp_path), "not a torch.export program")


def test_bad_spec_exits_with_one_line(tmp_path: Path) -> None:
    result = cli("run", "--model", "sample:fashion_cnn", "--spec", '{"method": "palettize", "n_bits": 5}', home=tmp_path)
    assert_one_line_error(result, "n_bits")
    result = cli("run", "--model", "sample:fashion_cnn", "--spec", "{not: [valid", home=tmp_path)
    assert_one_line_error(result, "spec")
    result = cli("run", "--model", "sample:fashion_cnn", "--spec-file", str(tmp_path / "missing.yaml"), home=tmp_path)
    assert_one_line_error(result, "missing.yaml")


def test_baseline_writes_json_fields(tmp_path: Path) -> None:
    out = tmp_path / "baseline.json"
    result = cli(
        "baseline", "--model", "sample:fashion_cnn", "--eval-limit", "300", "--json", str(out),
        "--threads", "1", "--batch-sizes", "1", "--quiet", home=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())
    assert record["model"] == "sample:fashion_cnn" and record["params"] == 870_826
    assert record["eval_images"] == 300 and 0.85 < record["accuracy_top1"] <= record["accuracy_top5"] <= 1.0
    assert "fashion" in record["dataset_source"].lower() or "bundled" in record["dataset_source"]
    assert record["size_fp32_bytes"] > record["size_fp16_bytes"] > 0
    assert record["latency_ms_p50"] > 0 and record["threads"] == 1 and record["machine"]["torch"]
    assert "top-1" in result.stdout


def test_run_writes_record_and_artifacts(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    spec = tmp_path / "spec.yaml"
    spec.write_text("method: torch_static\ncalibration_samples: 64\n")
    result = cli(
        "run", "--model", "sample:fashion_cnn", "--spec-file", str(spec), "--eval-limit", "200", "--json", str(out),
        "--threads", "1", "--batch-sizes", "1", home=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())
    assert record["method"] == "torch_static" and record["artifact_kind"] == "torchscript"
    assert Path(record["artifact_path"]).is_file() and record["size_bytes"] == Path(record["artifact_path"]).stat().st_size
    assert abs(record["accuracy_top1"] - record["baseline_accuracy_top1"]) < 0.03
    assert record["layers"] and record["compress_seconds"] > 0
    # the saved TorchScript's int8 weights, unpacked, are the evaluated ones; the CLI says so
    assert record["artifact_weights_match"] is True and record["artifact_weights_check"]["max_abs_diff"] == 0.0
    assert "artifact weights match: " in result.stdout
    # exit 1 (target missed) is what the same run would end with had the file's weights differed
    assert run_status(record) == 0 and run_status({**record, "artifact_weights_match": False}) == 1
    assert "Traceback" not in result.stderr and "%" in result.stderr  # the progress bar went to stderr
    # saved in the store of the data folder, like a run started in the app
    from core.store import ExperimentStore

    store = ExperimentStore(tmp_path)
    assert store.count() == 1 and record["id"] == 1
    assert Path(record["artifact_path"]).parent == store.experiment_dir(1)
    assert store.get(1)["spec_summary"] == record["spec_summary"]
    assert f"saved as experiment #1 in {tmp_path}" in result.stdout
    # through the job queue: a worker process computed it, with the --threads override laid over the defaults
    assert "job #1 queued (local executor)" in result.stdout
    [job] = JobQueue(home=tmp_path).list()
    assert (job.state, job.experiment_id, record["job_id"]) == ("done", 1, 1) and job.worker_pid != result.returncode
    assert record["threads"] == 1 and record["timing_exclusive"] is True


def test_run_no_save_keeps_the_store_empty(tmp_path: Path) -> None:
    from core.store import ExperimentStore

    home = tmp_path / "home"
    flags = ("--model", "sample:fashion_cnn", "--spec", '{"method": "torch_dynamic"}', "--eval-limit", "100",
             "--no-latency", "--quiet", "--no-save")
    out = tmp_path / "run.json"
    result = cli("run", *flags, "--json", str(out), home=home)
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())
    assert "id" not in record and Path(record["artifact_path"]).parent == tmp_path / "run_artifacts"
    assert "not saved" in result.stdout
    result = cli("run", *flags, home=home)  # no --json: artifacts go to the data folder's cli_runs/
    assert result.returncode == 0, result.stderr
    runs = list((home / "cli_runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "model.pt").is_file()
    assert ExperimentStore(home).count() == 0
    assert_one_line_error(cli("run", *flags[:-1], "--artifacts", str(tmp_path / "a"), home=home), "--no-save")


def test_parser_knows_every_command() -> None:
    parser = build_parser()
    for argv in (["models"], ["baseline", "--model", "x"], ["run", "--model", "x", "--spec", "{}"],
                 ["run", "--model", "x", "--spec", "{}", "--executor", "ray"], ["jobs"], ["cancel", "3"],
                 ["sweep", "--model", "x", "--preset", "guide"], ["search", "--model", "x"],
                 ["sensitivity", "--model", "x"], ["recipe", "--model", "x", "--target-bits", "3"]):
        assert parser.parse_args(argv).func
    # the benchmark is bench/'s own entry point (python -m bench.run_bench): core never imports bench
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--quick"])


def test_every_result_command_takes_json() -> None:
    parser = build_parser()
    for argv in (["models"], ["methods", "--model", "x"], ["baseline", "--model", "x"],
                 ["run", "--model", "x", "--spec", "{}"], ["jobs"], ["sweep", "--model", "x", "--preset", "guide"],
                 ["search", "--model", "x"], ["sensitivity", "--model", "x"],
                 ["recipe", "--model", "x", "--target-bits", "3"]):
        assert parser.parse_args([*argv, "--json", "out.json"]).json == "out.json", argv


def test_baseline_on_the_bundled_subset(tmp_path: Path) -> None:
    out = tmp_path / "bundled.json"
    result = cli(
        "baseline", "--model", "sample:fashion_resnet", "--data", "bundled", "--no-latency", "--no-export",
        "--json", str(out), "--quiet", home=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())
    assert record["eval_images"] == 2500 and "bundled subset" in record["dataset_source"]
    assert record["accuracy_top1"] >= 0.92  # the subset is real held-out data: a meaningful accuracy


def test_missing_data_path_is_one_line(tmp_path: Path) -> None:
    result = cli("baseline", "--model", "sample:fashion_cnn", "--data", str(tmp_path / "nope"), home=tmp_path)
    assert_one_line_error(result, "no such file or folder")


def test_jobs_lists_the_queue_and_cancel_stops_queued_and_running_jobs(tmp_path: Path) -> None:
    queue = JobQueue(home=tmp_path)
    cnn, data = ModelRef(kind="sample", name="fashion_cnn"), DataRef(kind="bundled")
    waiting = queue.submit(model=cnn, data=data, spec={"method": "palettize", "n_bits": 4}, label="palettize 4-bit")
    busy = queue.submit(model=cnn, data=data, spec={"method": "prune"}, label="prune 50 %")
    queue.claim(job_id=busy, pid=os.getpid())  # running in a live process (this test's) that keeps beating
    heartbeat = Heartbeat(queue=queue)
    heartbeat.job_id = busy
    heartbeat.start()
    try:
        _list_and_cancel(tmp_path, queue=queue, waiting=waiting, busy=busy)
    finally:
        heartbeat.stop()


def _list_and_cancel(tmp_path: Path, *, queue: JobQueue, waiting: int, busy: int) -> None:
    result = cli("jobs", home=tmp_path)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:4] == ["id", "state", "executor", "progress"]
    assert [row.split()[:3] for row in rows] == [[str(busy), "running", "local"], [str(waiting), "queued", "local"]]
    assert "palettize 4-bit" in rows[1] and "sample:fashion_cnn" in rows[1]

    result = cli("cancel", str(waiting), str(busy), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"job #{waiting} cancelled before it started." in result.stdout
    assert f"job #{busy}: cancel requested" in result.stdout
    assert queue.get(job_id=waiting).state == "cancelled" and queue.get(job_id=busy).cancel_requested
    out = tmp_path / "jobs.json"
    result = cli("jobs", "--state", "cancelled", "--json", str(out), home=tmp_path)
    assert [row.split()[0] for row in result.stdout.splitlines()[1:]] == [str(waiting)]
    assert [job["id"] for job in json.loads(out.read_text())["jobs"]] == [waiting]
    assert_one_line_error(cli("cancel", "99", home=tmp_path), "job #99 does not exist")


def test_a_failed_job_is_one_line_and_the_ray_executor_without_a_cluster_names_the_address(tmp_path: Path) -> None:
    spec = ("--spec", '{"method": "palettize", "n_bits": 4}', "--eval-limit", "100", "--no-latency", "--quiet")
    result = cli("run", "--model", "sample:fashion_cnn", "--data", "bundled", "--executor", "local", *spec,
                 home=tmp_path, COMPRESSION_STUDIO_EXECUTOR="ray")  # the flag wins over the environment
    assert result.returncode == 0, result.stderr
    assert "job #1 queued (local executor)" in result.stdout
    result = cli("run", "--model", "sample:no_such_net", *spec, home=tmp_path)
    assert_one_line_error(result, "job #2 failed", "no_such_net")
    assert [j.state for j in JobQueue(home=tmp_path).list()] == ["failed", "done"]

    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    result = cli("run", "--model", "sample:fashion_cnn", *spec, home=tmp_path, timeout=60,
                 COMPRESSION_STUDIO_EXECUTOR="ray", COMPRESSION_STUDIO_RAY_ADDRESS=address)
    assert_one_line_error(result, f"no Ray cluster is reachable at {address}", "ray start --head")
    assert len(JobQueue(home=tmp_path).list()) == 2  # nothing was queued for a cluster that is not there


def test_ctrl_c_cancels_the_running_job_and_saves_nothing(tmp_path: Path) -> None:
    from core.store import ExperimentStore

    command = [sys.executable, "-m", "core.cli", "run", "--model", "sample:fashion_cnn", "--spec",
               '{"method": "torch_dynamic"}', "--eval-limit", "100"]  # int8 kernels: latency timed in full (seconds)
    env = {**os.environ, "COMPRESSION_STUDIO_HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
           "COMPRESSION_STUDIO_TIMING_LOCK": str(tmp_path / "timing.lock"), "COMPRESSION_STUDIO_WORKER_IDLE": "5"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        queue = JobQueue(home=tmp_path)
        deadline = time.monotonic() + 180
        while not any(j.message.startswith("Latency") for j in queue.list()):
            assert time.monotonic() < deadline and process.poll() is None, "the job never reached its latency phase"
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "cancelled: no record or artifact was written." in stderr and "Traceback" not in stderr
    [job] = queue.list()
    assert job.state == "cancelled" and ExperimentStore(tmp_path).count() == 0


# --------------------------------------------------------------------------- one convention: --json and exit codes

FAST = ("--eval-limit", "100", "--no-latency", "--no-export", "--data", "bundled", "--quiet")


def test_sensitivity_and_recipe_write_json_and_exit_1_on_a_missed_target(tmp_path: Path) -> None:
    table = tmp_path / "sensitivity.json"
    probe = ("--model", "sample:fashion_cnn", "--data", "bundled", "--settings", "pal2,pal8", "--eval-limit", "200",
             "--quiet")
    result = cli("sensitivity", *probe, "--json", str(table), home=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    written = json.loads(table.read_text())
    layers = {row["layer"] for row in written["rows"]}
    assert {row["setting"] for row in written["rows"]} == {"pal2", "pal8"} and len(layers) >= 2
    assert all(set(row) >= {"layer", "setting", "snr_db", "top1_change"} for row in written["rows"])
    assert written["meta"]["model_label"].startswith("fashion_cnn")

    recipe = tmp_path / "recipe.json"  # the cached table: no probe runs again
    result = cli("recipe", *probe, "--target-bits", "4", "--json", str(recipe), home=tmp_path)
    assert result.returncode == 0, result.stderr
    chosen = json.loads(recipe.read_text())
    assert chosen["target"] and chosen["record"] is None  # not --run: no experiment
    assert chosen["chosen"]["predicted_bits_per_weight"] <= 4 and chosen["chosen"]["spec"]["method"] == "palettize"
    assert set(chosen["chosen"]["layer_settings"]) <= layers

    result = cli("recipe", *probe, "--target-bits", "0.5", "--json", str(recipe), home=tmp_path)
    assert result.returncode == 1, result.stderr  # out of reach: the target is missed, not the input bad
    assert "target missed:" in result.stderr and "Traceback" not in result.stderr
    assert json.loads(recipe.read_text())["chosen"] is None

    result = cli("sensitivity", "--model", "sample:fashion_cnn", "--settings", "pal5", home=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "unknown pal5")


def test_sweep_and_search_write_store_records_and_exit_1_when_nothing_is_within_budget(tmp_path: Path) -> None:
    from core.records import SCHEMAS

    sweep = tmp_path / "sweep.json"
    grid = '[{"method": "quantize_weights"}]'
    result = cli("sweep", "--model", "sample:fashion_cnn", "--grid", grid, *FAST, "--workers", "1", "--json", str(sweep),
                 home=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    written = json.loads(sweep.read_text())
    [config] = written["configs"]
    [record] = written["records"]
    assert config["state"] == "done" and config["experiment_id"] == record["id"] == 1
    assert record["origin"]["kind"] == "sweep" and record["method"] == "quantize_weights"
    assert set(SCHEMAS["experiment"]) <= set(record)  # the store's record schema, every field

    search = tmp_path / "search.json"
    flags = ("--model", "sample:fashion_cnn", "--no-refine", "--no-mixed", "--grid", grid, *FAST, "--workers", "1")
    result = cli("search", *flags, "--max-drop", "5", "--json", str(search), home=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    found = json.loads(search.read_text())
    assert found["winner"]["id"] == 1 and found["winner"]["spec_summary"] == record["spec_summary"]
    assert [c["record"]["id"] for c in found["candidates"]] == [1]
    assert found["candidates"][0]["search"]["within_budget"] is True and found["goal"]["max_drop_pts"] == 5

    # a budget no setting meets: 1-bit palettization within 0 points, on a data folder that has no other run
    lossy = ("--model", "sample:fashion_cnn", "--no-refine", "--no-mixed", "--grid", '[{"method": "palettize", '
             '"n_bits": 1}]', *FAST, "--workers", "1")
    result = cli("search", *lossy, "--max-drop", "0", "--json", str(search), home=tmp_path / "lossy", timeout=600)
    assert result.returncode == 1, result.stderr
    missed = json.loads(search.read_text())
    assert missed["winner"] is None and "Nothing is within 0 points" in missed["sentence"]
    [candidate] = missed["candidates"]
    assert candidate["search"]["within_budget"] is False and candidate["search"]["validation_drop_pts"] > 0
    assert candidate["record"]["spec_summary"].startswith("1-bit palettization")

    result = cli("search", "--model", "sample:fashion_cnn", "--max-drop", "-1", "--json", str(search), home=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "max_drop_pts")


def test_a_sweep_dry_run_writes_its_plan(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    grid = '{"methods": ["palettize"], "palettize_bits": [4], "palettize_group_sizes": [16]}'
    result = cli("sweep", "--model", "sample:fashion_cnn", "--grid", grid, "--dry-run", "--json", str(plan),
                 home=tmp_path)
    assert result.returncode == 0, result.stderr
    written = json.loads(plan.read_text())
    assert written["dry_run"] is True and written["sweep_id"] is None and written["estimated_wall_seconds"] > 0
    assert [c["method"] for c in written["configs"]] == ["palettize", "palettize"]
