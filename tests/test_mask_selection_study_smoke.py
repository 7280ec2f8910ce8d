"""The mask selection study's smoke mode: every selection on both input layouts (a sequence, a permuted grid), its
table, the figures of the selections side by side, and a second run that reuses what the first finished."""

import json
import math
from pathlib import Path

import pytest


pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` leaves it out


def test_mask_selection_study_smoke_run(tmp_path, benchmark_script):
    study = benchmark_script("mask_selection_study")

    results_dir = tmp_path / "results"
    argv = ["--smoke", "--data_dir", str(tmp_path / "data"), "--work_dir", str(tmp_path / "work"),
            "--results_dir", str(results_dir)]  # fmt: skip
    record = study.main(argv)

    assert [(row["testbed"], row["variant"]) for row in record["rows"]] == [
        (testbed, variant) for testbed in ("sequences", "grid") for variant in study.VARIANTS
    ]
    for row in record["rows"]:
        assert 0 <= row["mask_leak"] <= 1 and all(0 <= v <= 1 for v in row["coherence"].values())
        assert math.isfinite(row["mask_loss_ratio"]) and len(row["probe"]["validation"]["values"]) == 3
        assert [entry["step"] for entry in row["history"]] == [1, 2, 3, 4]
    table = (results_dir / "study.md").read_text()
    assert table.count("| sequences |") == table.count("| grid |") == len(study.VARIANTS)
    assert json.loads((results_dir / "study.json").read_text())["rows"] == record["rows"]
    for figure in ("masks_sequences.png", "masks_grid.png"):
        assert (results_dir / figure).read_bytes().startswith(b"\x89PNG"), figure

    # run again: every pretraining and probe is reused, not redone
    summaries = sorted((tmp_path / "work").rglob("pretraining_summary.json"))
    stamps = [path.stat().st_mtime_ns for path in summaries]
    assert study.main(argv)["rows"] == record["rows"]
    assert [path.stat().st_mtime_ns for path in summaries] == stamps


def test_true_order_neighbours_undo_the_permutation(benchmark_script):
    study = benchmark_script("mask_selection_study")

    permutation = [3, 0, 2, 1]  # input position i holds pixel permutation[i] of a 2x2 grid
    bed = study.Testbed("grid", {}, Path("."), "pixels", [], "task", grid=(2, 2), permutation=permutation)
    neighbours = study.true_order_neighbours(bed, 4)
    # pixel 0 (top left, at input position 1) touches pixels 2 (below, position 2) and 1 (right, position 3)
    assert sorted(n for n in neighbours[1] if n >= 0) == [2, 3]
    sequence = study.Testbed("sequence", {}, Path("."), "sequence", [], "task")
    assert study.true_order_neighbours(sequence, 3).tolist() == [[-1, 1], [0, 2], [1, -1]]
