"""Label budgets, linear probes and classical baselines: exact subset sizes, seeded choices, results in the format of
sma-finetune."""

import json

import numpy as np
import pytest
from datasets import Dataset
from test_finetuning_sma import TINY_CONFIG, smiles_rows, write_task

from sma_hf.tools.baselines import (
    LIGHTGBM_GRID,
    LOGISTIC_CS,
    MLP_GRID,
    RANDOM_FOREST_GRID,
    amino_acid_composition,
    classical_baseline,
    dipeptide_composition,
    input_values,
    morgan_fingerprints,
)
from sma_hf.tools.finetune import main
from sma_hf.tools.task_data import label_subset


def test_label_subset_sizes_strata_and_seeds():
    task = {"problem_type": "single_label_classification", "label_column": "label"}
    dataset = Dataset.from_dict({"x": list(range(100)), "label": [0] * 80 + [1] * 20})
    subset = label_subset(dataset, task, 0.1, seed=0)
    assert len(subset) == 10 and sorted(subset["label"]) == [0] * 8 + [1] * 2  # the class shares are kept
    assert subset["x"] == label_subset(dataset, task, 0.1, seed=0)["x"]  # seeded
    assert subset["x"] != label_subset(dataset, task, 0.1, seed=1)["x"]
    assert len(label_subset(dataset, task, 1.0, seed=3)) == 100
    regression = {"problem_type": "regression", "label_column": "label"}
    assert len(label_subset(dataset, regression, 0.25, seed=0)) == 25
    tiny = Dataset.from_dict({"x": [0, 1, 2], "label": [0, 1, 1]})
    assert sorted(label_subset(tiny, task, 0.1, seed=0)["label"]) == [0, 1]  # at least one row per class


def test_finetune_with_a_label_budget_and_a_linear_probe(tmp_path):
    rows = [{"smiles": s, "label": 2.0 * len(s)} for s in smiles_rows(60)]
    task = write_task(tmp_path, "reg", rows, "regression", 1, "rmse")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY_CONFIG))
    common = [
        "--config_name",
        str(config),
        "--task",
        str(task),
        "--data_dir",
        str(tmp_path / "data"),
        "--seeds",
        "0",
        "1",
    ]
    main([*common, "--output_dir", str(tmp_path / "budget"), "--label_fraction", "0.25", "--num_train_epochs", "1"])
    budget = json.loads((tmp_path / "budget" / "results.json").read_text())
    assert [run["num_train"] for run in budget["runs"]] == [9, 9] and budget["label_fraction"] == 0.25
    main([*common, "--output_dir", str(tmp_path / "probe"), "--linear_probe"])
    probe = json.loads((tmp_path / "probe" / "results.json").read_text())
    assert probe["protocol"] == "linear probe" and [run["num_train"] for run in probe["runs"]] == [36, 36]
    assert all(run["hyperparameters"]["alpha"] in [10.0**k for k in range(-3, 4)] for run in probe["runs"])
    # a random encoder per seed: the probes differ; each is finite
    assert np.isfinite(probe["test"]["rmse"]["values"]).all() and len(set(probe["test"]["rmse"]["values"])) == 2
    with pytest.raises(SystemExit):
        main([*common, "--output_dir", str(tmp_path / "bad"), "--label_fraction", "0"])


def test_a_checkpoints_probe_embeds_each_row_once_for_every_seed(tmp_path, monkeypatch):
    import sma_hf.tools.finetune as finetuning

    rows = [{"smiles": s, "label": 2.0 * len(s)} for s in smiles_rows(60)]
    task = write_task(tmp_path, "reg", rows, "regression", 1, "rmse")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY_CONFIG))
    common = ["--task", str(task), "--data_dir", str(tmp_path / "data"), "--seeds", "0", "1"]
    main(["--config_name", str(config), *common, "--output_dir", str(tmp_path / "model"), "--num_train_epochs", "1"])
    calls = []
    embed = finetuning.encoder_embeddings

    def counting(setup):
        calls.append(setup.model_name_or_path)
        return embed(setup)

    monkeypatch.setattr(finetuning, "encoder_embeddings", counting)
    checkpoint = ["--model_name_or_path", str(tmp_path / "model" / "seed-0"), *common, "--linear_probe"]
    main([*checkpoint, "--output_dir", str(tmp_path / "probe"), "--label_fraction", "0.5"])
    probe = json.loads((tmp_path / "probe" / "results.json").read_text())
    assert len(calls) == 1 and [run["num_train"] for run in probe["runs"]] == [18, 18]
    main([*checkpoint, "--output_dir", str(tmp_path / "full")])
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    assert len(calls) == 2 and full["test"]["rmse"]["values"][0] == full["test"]["rmse"]["values"][1]  # same model


def test_classical_baselines_choose_on_validation(tmp_path):
    molecules = ["C" * n + "O" * (n % 3) + "N" * (n % 2) for n in range(1, 41)]
    rows = [{"smiles": s, "label": float(s.count("C")) + 0.5 * s.count("O")} for s in molecules]
    write_task(tmp_path, "atoms", rows, "regression", 1, "rmse")
    results = classical_baseline(str(tmp_path / "atoms.json"), str(tmp_path / "data"), "morgan", seeds=[0, 1])
    assert results["protocol"] == "classical baseline" and results["seeds"] == [0, 1]
    assert set(results["test"]) == {"rmse", "mae", "spearman"}
    for run in results["runs"]:
        assert run["hyperparameters"]["max_features"] in RANDOM_FOREST_GRID["max_features"]
        assert run["num_train"] == 24
    classes = [{"smiles": s, "label": int("O" in s)} for s in molecules]
    write_task(tmp_path, "has_o", classes, "single_label_classification", 2, "roc_auc")
    boosted = classical_baseline(str(tmp_path / "has_o.json"), str(tmp_path / "data"), "morgan", "gradient_boosting",
                                 seeds=[0], label_fraction=0.5)  # fmt: skip
    assert set(boosted["test"]) == {"accuracy", "roc_auc"} and boosted["runs"][0]["num_train"] == 12
    with pytest.raises(ValueError, match="`model_name` must be"):
        classical_baseline(str(tmp_path / "atoms.json"), str(tmp_path / "data"), "morgan", "svm", seeds=[0])


def test_logistic_regression_and_a_smaller_forest_grid(tmp_path):
    rng = np.random.default_rng(0)
    sequences = ["".join(rng.choice(list("ACDEKLR"), size=20)) for _ in range(60)]
    charge = [s.count("K") + s.count("R") - s.count("D") - s.count("E") for s in sequences]
    rows = [{"sequence": s, "label": int(c > 0)} for s, c in zip(sequences, charge)]
    write_task(tmp_path, "charge", rows, "single_label_classification", 2, "roc_auc", "sequence")
    task, data = str(tmp_path / "charge.json"), str(tmp_path / "data")
    linear = classical_baseline(task, data, "aac", "logistic_regression", seeds=[0])
    assert linear["runs"][0]["hyperparameters"]["C"] in LOGISTIC_CS
    assert linear["test"]["roc_auc"]["mean"] > 0.8  # composition decides the label: a linear model sees it
    grid = {"n_estimators": [20], "min_samples_leaf": [1, 5]}
    forest = classical_baseline(task, data, "aac", "random_forest", seeds=[0], grid=grid)
    assert forest["runs"][0]["hyperparameters"]["min_samples_leaf"] in (1, 5)
    assert forest["runs"][0]["hyperparameters"]["n_estimators"] == 20 and "grid=" in forest["command"]
    write_task(tmp_path, "length", [{"sequence": s, "label": float(len(set(s)))} for s in sequences], "regression", 1,
               "rmse", "sequence")  # fmt: skip
    with pytest.raises(ValueError, match="logistic_regression'` is for classification"):
        classical_baseline(str(tmp_path / "length.json"), data, "aac", "logistic_regression", seeds=[0])


def test_lightgbm_and_mlp_on_input_values(tmp_path):
    pytest.importorskip("lightgbm")
    rng = np.random.default_rng(0)
    features = rng.standard_normal((80, 6)).astype(np.float32)
    rows = [{"features": row.tolist(), "label": int(row[0] + row[1] > 0)} for row in features]
    write_task(tmp_path, "tabular", rows, "single_label_classification", 2, "accuracy", "features", "continuous")
    task, data = str(tmp_path / "tabular.json"), str(tmp_path / "data")
    grid = {**LIGHTGBM_GRID, "n_estimators": [50]}
    boosted = classical_baseline(task, data, "input", "lightgbm", seeds=[0, 1], grid=grid)
    assert {run["hyperparameters"]["num_leaves"] for run in boosted["runs"]} <= set(LIGHTGBM_GRID["num_leaves"])
    assert boosted["test"]["accuracy"]["mean"] > 0.7 and boosted["label"] == "lightgbm on input features"
    mlp = classical_baseline(task, data, "input", "mlp", seeds=[0])
    assert mlp["runs"][0]["hyperparameters"]["alpha"] in MLP_GRID["alpha"]
    assert mlp["test"]["roc_auc"]["mean"] > 0.8  # a sum of two inputs: the perceptron sees it


def test_featurisers():
    values = input_values([[1.0, 2.0], np.array([[3.0], [4.0]])])  # one value per element, any nesting
    assert values.shape == (2, 2) and values.dtype == np.float32 and values[1, 1] == 4.0
    fingerprints = morgan_fingerprints(["CCO", "c1ccccc1"], num_bits=256)
    assert fingerprints.shape == (2, 256) and set(np.unique(fingerprints)) <= {0.0, 1.0}
    assert not np.array_equal(fingerprints[0], fingerprints[1])
    with pytest.raises(ValueError, match="cannot parse the SMILES 'C1CC'"):
        morgan_fingerprints(["C1CC"])
    composition = amino_acid_composition(["AAC", "XY"])
    assert composition[0, 0] == pytest.approx(2 / 3) and composition[0, 1] == pytest.approx(1 / 3)
    assert composition[1].sum() == pytest.approx(1.0)  # X is no standard residue: only Y counts
    pairs = dipeptide_composition(["ACA"])
    assert pairs.shape == (1, 400) and pairs[0, 1] == 0.5 and pairs[0, 20] == 0.5  # AC and CA
