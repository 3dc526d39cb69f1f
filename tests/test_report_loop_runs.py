"""psim-report and psim-loop runs: a "Loop runs (psim-loop)" table read from summary.json, and every
folder it cannot read named with its reason, never ignored silently. Loop runs come from ``run_loop``
itself, with cheap stand-in stages (no model is fitted)."""
import csv
import json

import pytest
from hydra import compose, initialize_config_module

from prosthesis_sim.loop import run_loop
from prosthesis_sim.report import build_report, report_main
from prosthesis_sim.report.loop_runs import loop_section, split_loop_runs
from tests.test_loop_safety import (
    Frames,
    renderer,  # noqa: F401 (fixture)
    stand_in_loop,
)


@pytest.fixture(scope="module")
def loop_runs(small_data, renderer, tmp_path_factory):  # noqa: F811
    """A folder with two loop runs, a folder psim-loop never finished, and one that no psim command wrote."""
    base = tmp_path_factory.mktemp("loops")
    run_loop(stand_in_loop(small_data), Frames(6), renderer, base / "a", write_video=False,
             stages={"encoder": "ridge", "decoder": "ridge_pixels", "phosphene": "argus_scoreboard", "source": "video"})
    run_loop(stand_in_loop(small_data, delay=0.02), Frames(30, live=True), renderer, base / "b", write_video=False)
    (base / "unfinished").mkdir()
    (base / "unfinished" / "frames.jsonl").write_text("{}\n")
    (base / "notes").mkdir()
    (base / "notes" / "todo.txt").write_text("x")
    (base / ".hidden").mkdir()
    return base


def rows_of(md: str, heading: str) -> dict[str, list[str]]:
    block = md.split(heading, 1)[1].split("\n\n")[2]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.splitlines()]
    return {r[0]: r[1:] for r in rows[2:]}


def test_loop_runs_get_a_table_from_their_summaries(loop_runs, tmp_path, caplog):
    md = build_report([loop_runs], tmp_path).read_text()
    rows = rows_of(md, "## Loop runs (psim-loop)")
    assert set(rows) == {f"`{loop_runs / 'a'}`", f"`{loop_runs / 'b'}`"}
    for name in ("a", "b"):
        s = json.loads((loop_runs / name / "summary.json").read_text())
        _, frames, dropped, fps, loop_ms, total_ms, path, floor, ceiling, _, _, stopped = rows[f"`{loop_runs / name}`"]
        assert frames == str(s["frames"]) and dropped == f"{s['dropped_frames']} of {s['captured_frames']}"
        assert fps == f"{s['fps']:.2f}" and loop_ms == f"{s['median_latency_ms']['loop']:.1f}"
        assert total_ms == f"{s['median_latency_ms']['total']:.1f}" and stopped == s["stopped"]
        assert [path, floor, ceiling] == [f"{s['mean_scores'][p]['pearson']:.3f}" for p in ("path", "floor", "ceiling")]
    assert rows[f"`{loop_runs / 'a'}`"][0] == "video → ridge → ridge_pixels → argus_scoreboard"
    assert rows[f"`{loop_runs / 'b'}`"][0] == "Frames → Encoder → Decoder → phosphene"  # class names by default
    assert "slower than the camera" in md.split("Why frames were dropped:", 1)[1]  # run b dropped frames

    with open(tmp_path / "loop_runs.csv", newline="") as f:
        saved = {r["run"]: r for r in csv.DictReader(f)}
    s = json.loads((loop_runs / "a" / "summary.json").read_text())
    assert float(saved[str(loop_runs / "a")]["path_ssim"]) == s["mean_scores"]["path"]["ssim"]

    # what it cannot read is named, with why: in the log and in the report
    skipped = md.split("## Skipped folders", 1)[1]
    assert f"`{loop_runs / 'unfinished'}`: frames.jsonl without summary.json" in skipped
    assert f"`{loop_runs / 'notes'}`: no metrics.json (psim-train)" in skipped and ".hidden" not in skipped
    assert f"skipped {loop_runs / 'notes'} (no metrics.json" in caplog.text


def test_nothing_readable_is_an_error_naming_all_three_kinds(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as err:
        split_loop_runs([tmp_path / "empty"])
    assert "psim-train" in str(err.value) and "psim-eval" in str(err.value) and "psim-loop" in str(err.value)


def test_a_loop_run_given_directly_and_psim_report_command(loop_runs, tmp_path):
    loops, rest, skipped = split_loop_runs([loop_runs / "a"])
    assert loops == [loop_runs / "a"] and rest == [] and skipped == []
    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose("report", overrides=[f"runs={loop_runs / 'a'}", f"out={tmp_path / 'report'}"])
    md = report_main(cfg).read_text()
    assert "## Loop runs (psim-loop)" in md and "## Skipped folders" not in md
    assert (tmp_path / "report" / "loop_runs.csv").is_file()
    assert loop_section([], tmp_path / "report") == []  # a rebuild without loop runs leaves no stale table
    assert not (tmp_path / "report" / "loop_runs.csv").exists()
