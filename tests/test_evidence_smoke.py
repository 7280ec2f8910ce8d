"""The chemistry experiment's smoke mode: the whole grid of the evidence protocol on tiny generated data, its tables,
figures, results file and the card of the self-guided checkpoint."""

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard


pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` leaves it out


ROOT = Path(__file__).resolve().parents[1]


def test_chemistry_experiment_smoke_run(tmp_path, benchmark_script):
    chemistry = benchmark_script("chemistry")

    results_dir = tmp_path / "results"
    argv = ["--smoke", "--data_dir", str(tmp_path / "data"), "--work_dir", str(tmp_path / "work"),
            "--results_dir", str(results_dir)]  # fmt: skip
    record = chemistry.main(argv)

    # every cell of the grid: per task, (a), (b), (c) and the classical tool at both budgets, then three probes
    cells = {(c["task"]["name"], c["budget"], c["arm"]) for c in record["cells"]}
    for task in ("freesolv", "solubility"):
        for budget in (0.1, 1.0):
            for arm in ("self_guided", "random_masks", "scratch", "classical_gradient_boosting_morgan"):
                assert (task, budget, arm) in cells
        assert {(task, 1.0, f"probe_{arm}") for arm in ("self_guided", "random_masks", "scratch")} <= cells
    assert len(cells) == len(record["cells"]) == 2 * (2 * 4 + 3)
    for cell in record["cells"]:
        assert cell["seeds"] == [0, 1] and len(cell["test"]["rmse"]["values"]) == 2
        expected = 4 if cell["budget"] == 0.1 else 40  # 10% of 40 training rows, per seed
        assert [run["num_train"] for run in cell["runs"]] == [expected, expected]
    saved = json.loads((results_dir / "results.json").read_text())
    assert (
        saved["versions"]["torch"]
        and saved["pretraining"]["self_guided"]["final"]["mask_collapse_score"]
        == (record["pretraining"]["self_guided"]["final"]["mask_collapse_score"])
    )
    table = (results_dir / "results.md").read_text()
    assert "| (c) same architecture, no pretraining |" in table and "test RMSE ↓, 10% labels" in table
    for figure in ("freesolv.png", "solubility.png", "pretraining.png", "masks.png"):
        assert (results_dir / figure).read_bytes().startswith(b"\x89PNG"), figure

    card = ModelCard.load(Path(record["pretraining"]["self_guided"]["model_dir"]) / "README.md")
    own = {(r.dataset_name, r.metric_type) for r in card.data.eval_results}
    assert {("freesolv", "rmse"), ("solubility", "rmse")} <= own  # the model's own results, both tasks
    assert "(d) gradient boosting on morgan features, 10% labels" in card.text  # every other arm in the table
    # the committed form of the checkpoint: the whole hub-ready folder, commands relative to the repository
    checkpoint = tmp_path / "work" / "checkpoints" / "sma-chemistry-small"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "masks.png").is_file()
    assert ModelCard.load(checkpoint / "README.md").data.eval_results == card.data.eval_results
    assert str(ROOT) + "/" not in (checkpoint / "README.md").read_text()
