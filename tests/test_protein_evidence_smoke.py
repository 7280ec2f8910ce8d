"""The protein experiment's smoke mode: its whole grid on tiny generated data (per-task budgets, the classical-only
random-split localisation, logistic regression and a small forest), its tables, figures and the `sma-protein` card."""

from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from transformers import pipeline


pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` leaves it out


def test_protein_experiment_smoke_run(tmp_path, benchmark_script):
    proteins = benchmark_script("proteins")

    results_dir = tmp_path / "results"
    argv = ["--smoke", "--data_dir", str(tmp_path / "data"), "--work_dir", str(tmp_path / "work"),
            "--results_dir", str(results_dir)]  # fmt: skip
    record = proteins.main(argv)

    neural = ("self_guided", "random_masks", "scratch")
    classical = ("classical_logistic_regression_aac", "classical_random_forest_dipeptide")
    expected = {("localisation_clustered", b, arm) for b in (0.1, 1.0) for arm in neural + classical}
    expected |= {("localisation", 1.0, arm) for arm in classical}  # the random split: classical rows only
    expected |= {(task, 1.0, arm) for task in ("toxicity", "amp") for arm in neural + classical}
    cells = [(c["task"]["name"], c["budget"], c["arm"]) for c in record["cells"]]
    assert sorted(cells) == sorted(expected)  # no probes, nothing twice
    for cell in record["cells"]:
        assert cell["seeds"] == [0, 1]
        # 10% of 40 rows, but at least one per class: the 10 locations
        assert [run["num_train"] for run in cell["runs"]] == [40 if cell["budget"] == 1.0 else 10] * 2
        metric = cell["task"]["metric"]
        assert metric == {"localisation_clustered": "macro_f1", "localisation": "macro_f1"}.get(
            cell["task"]["name"], "roc_auc"
        )
        assert len(cell["test"][metric]["values"]) == 2 and "accuracy" in cell["test"]
    assert record["pretraining"]["self_guided"]["final"]["mask_collapse_score"] >= 0
    table = (results_dir / "results.md").read_text()
    assert "test Macro-F1 ↑, 10% labels" in table and "(d) logistic regression on aac features" in table
    for figure in ("localisation_clustered.png", "toxicity.png", "amp.png", "pretraining.png", "masks.png"):
        assert (results_dir / figure).read_bytes().startswith(b"\x89PNG"), figure

    model_dir = Path(record["pretraining"]["self_guided"]["model_dir"])
    card = ModelCard.load(model_dir / "README.md")
    own = {(r.dataset_name, r.metric_type) for r in card.data.eval_results}
    assert {("localisation_clustered", "macro_f1"), ("toxicity", "roc_auc"), ("amp", "roc_auc")} <= own
    assert 'pipeline("fill-mask", model="sma-hf/sma-protein")' in card.text
    assert "(d) random forest on dipeptide features, 100% labels" in card.text  # the other rows in the table
    # the card's fill-mask example, on the hub-ready folder
    filled = pipeline("fill-mask", model=str(model_dir))("MKTAYIAKQR[MASK]ISFVKSHFSRQ", top_k=3)
    assert len(filled) == 3
    assert all(c["sequence"] == f"MKTAYIAKQR{c['token_str']}ISFVKSHFSRQ" for c in filled)
