"""`ditto-fast bench` smoke test on checkpoints/synthetic-tiny: the record's structure, the table,
--compare's ratios and one-line argument errors. No timing is asserted: the figures of a quick
run on a shared CI machine mean nothing."""

from __future__ import annotations

import contextlib
import io
import json
import math
import pathlib
import re
import statistics

import pytest

from ditto_fast.cli import main
from ditto_fast.tools.benchmark import (
    QUICK_SETTINGS,
    RECORD_FORMAT,
    STAGES,
    BenchRecord,
    StageResult,
    Timing,
    load_record,
    select_stages,
    speed_ratios,
)

TINY = pathlib.Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic-tiny"
PER_FRAME_STAGES = {"audio", "lmdm", "stitch", "warp", "decode", "paste", "encode", "offline"}


def run_cli(*args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `ditto-fast bench ARGS` on the tiny tree, in-process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["bench", "--checkpoints", str(TINY), *args])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[pathlib.Path, str, str]:
    """One full `--quick` run: (record file, stdout, stderr)."""
    record = tmp_path_factory.mktemp("bench") / "quick.json"
    status, out, err = run_cli("--quick", "--json", str(record))
    assert status == 0, err
    return record, out, err


def test_record_has_every_stage_with_positive_finite_times(quick_run):
    data = json.loads(quick_run[0].read_text())
    assert data["format"] == RECORD_FORMAT
    assert list(data["stages"]) == list(STAGES)
    for name, entry in data["stages"].items():
        samples = entry["samples_s"]
        assert len(samples) == QUICK_SETTINGS.rounds, name
        assert all(math.isfinite(s) and s > 0 for s in samples), name
        assert entry["median_s"] == statistics.median(samples)
        assert entry["min_s"] == min(samples) and entry["mean_s"] == pytest.approx(statistics.fmean(samples))
        if name in PER_FRAME_STAGES:
            assert entry["frames"] > 0, name
            assert entry["per_frame_s"] == pytest.approx(entry["median_s"] / entry["frames"])
            assert entry["frames_per_second"] == pytest.approx(entry["frames"] / entry["median_s"])
        else:
            assert entry["frames"] == 0 and entry["per_frame_s"] is None, name
    assert data["stages"]["online"]["measures"] == "first-frame latency"
    assert data["stages"]["lmdm"]["frames"] == 80 and data["stages"]["stitch"]["frames"] == 80
    # 1 s of speech at 25 fps (the quick run's audio)
    assert data["stages"]["offline"]["frames"] == data["stages"]["audio"]["frames"] == 25


def test_record_describes_machine_and_run(quick_run):
    data = json.loads(quick_run[0].read_text())
    machine, run = data["machine"], data["run"]
    assert machine["cpu"] and machine["cores"] >= 1 and isinstance(machine["gpus"], list)
    assert machine["memory_gib"] is None or machine["memory_gib"] > 0
    for library in ("ditto_fast", "numpy", "onnxruntime", "torch"):
        assert library in machine["versions"]
    assert machine["versions"]["numpy"] and machine["versions"]["onnxruntime"]
    assert run["checkpoints"] == str(TINY) and run["synthetic"] is True and run["backend"] == "onnxruntime"
    assert (run["rounds"], run["warmup"], run["audio_seconds"]) == (
        QUICK_SETTINGS.rounds, QUICK_SETTINGS.warmup, QUICK_SETTINGS.audio_seconds)
    assert run["sampling_timesteps"] >= 1 and run["overrides"]["seed"] == 0


def test_table_lists_machine_then_every_stage_and_progress_goes_to_stderr(quick_run):
    record, out, err = quick_run
    lines = out.splitlines()
    assert lines[0].startswith("machine: ") and lines[1].startswith("run: ")
    header = next(i for i, line in enumerate(lines) if line.startswith("stage "))
    table = lines[header + 1:header + 1 + len(STAGES)]
    assert [row.split()[0] for row in table] == list(STAGES)
    data = json.loads(record.read_text())
    for row in table:
        name, median_ms = row.split()[:2]
        assert float(median_ms) == pytest.approx(data["stages"][name]["median_s"] * 1000, abs=0.05)
    assert lines[-1] == f"record written to {record}"
    assert sum(line.startswith("bench [") for line in err.splitlines()) == 2 * len(STAGES)


def test_compare_prints_new_over_old_per_stage(quick_run, tmp_path):
    baseline = quick_run[0]
    status, out, err = run_cli("--quick", "--only", "decode", "paste", "--compare", str(baseline),
                               "--json", str(tmp_path / "new.json"))
    assert status == 0, err
    new, old = load_record(tmp_path / "new.json"), load_record(baseline)
    assert "baseline machine: " in out and "new/old" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()[:1] in (["decode"], ["paste"])}
    assert set(rows) == {"decode", "paste"}
    for name, row in rows.items():
        printed = float(re.search(r"\s(\d+\.\d\d)x\s", row).group(1))
        assert printed == pytest.approx(new.stages[name].timing.median / old.stages[name].timing.median, abs=0.006)


def _record(**medians: float) -> BenchRecord:
    stages = {name: StageResult(name, "", "", "wall time", 1, Timing((seconds,))) for name, seconds in medians.items()}
    return BenchRecord({}, {}, stages)


def test_speed_ratios_divide_medians_and_leave_missing_stages_empty():
    ratios = speed_ratios(_record(warp=0.02, decode=0.03), _record(warp=0.04, paste=1.0))
    assert ratios == {"warp": pytest.approx(0.5), "decode": None}


def test_stages_come_in_pipeline_order():
    assert select_stages(["encode", "register"]) == ["register", "encode"]
    assert select_stages(None) == list(STAGES)


@pytest.mark.parametrize("args, message", [
    (["--only", "warp", "teleport"], "unknown benchmark stage 'teleport'"),
    (["--rounds", "0"], "rounds must be an integer >= 1"),
    (["--compare", "/nonexistent/base.json"], "/nonexistent/base.json"),
    (["--json", "/nonexistent/folder/out.json"], "folder /nonexistent/folder does not exist"),
    (["--set", "sampling_timestep=5"], "unknown option 'sampling_timestep'"),
])
def test_bad_arguments_fail_in_one_line_before_any_timing(args, message):
    status, out, err = run_cli(*args)
    assert status == 1 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("ditto-fast bench: error: ") and message in err


@pytest.mark.parametrize("content, message", [
    ("{not json", "not JSON"),
    ('{"format": "something else"}', "not a ditto-fast bench record"),
    (json.dumps({"format": RECORD_FORMAT, "machine": {}, "run": {}, "stages": {"warp": {"samples_s": [-1.0]}}}),
     "malformed bench record"),
])
def test_bad_baselines_fail_in_one_line(tmp_path, content, message):
    baseline = tmp_path / "baseline.json"
    baseline.write_text(content)
    status, _, err = run_cli("--compare", str(baseline))
    assert status == 1 and len(err.splitlines()) == 1 and message in err


def test_missing_checkpoints_fail_in_one_line(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["bench", "--quick", "--checkpoints", str(tmp_path / "nothing")])
    assert status == 1 and len(err.getvalue().splitlines()) == 1 and "nothing" in err.getvalue()
