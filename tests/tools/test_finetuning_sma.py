"""sma-finetune: every task type, validation-only selection, seeds, metrics, units of saved regressors."""

import functools
import itertools
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from test_pretraining_sma import TINY_CONFIG, smiles_rows
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sma_hf.tools.finetune import main
from sma_hf.tools.metrics import average_ranks, macro_f1, roc_auc, spearman, task_metrics


def write_task(tmp_path, name, rows, problem_type, num_labels, metric, input_column="smiles", input_type="discrete"):
    """Split `rows` 60/20/20 into parquet files and write the task spec."""
    files = {}
    n = len(rows)
    for split, part in (("train", rows[: n * 3 // 5]), ("validation", rows[n * 3 // 5 : n * 4 // 5]),
                        ("test", rows[n * 4 // 5 :])):  # fmt: skip
        path = tmp_path / "data" / name / f"{split}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(part), path)
        files[split] = f"{name}/{split}.parquet"
    spec = dict(name=name, data_files=files, input_column=input_column, label_column="label",
                problem_type=problem_type, num_labels=num_labels, metric=metric, input_type=input_type)  # fmt: skip
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return path


def run(tmp_path, config_path, task, *extra):
    out = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}"  # a new folder per run (a used one is refused)
    main(["--config_name", str(config_path), "--task", str(task), "--data_dir", str(tmp_path / "data"),
          "--output_dir", str(out), "--num_train_epochs", "3", "--per_device_train_batch_size", "8",
          "--learning_rate", "1e-3", *extra])  # fmt: skip
    return out, json.loads((out / "results.json").read_text())


def test_regression_selects_on_validation_and_saves_in_task_units(tmp_path, config_path):
    rows = [{"smiles": s, "label": 10.0 + 3.0 * len(s)} for s in smiles_rows(60)]  # far from 0 mean / unit std
    task = write_task(tmp_path, "length", rows, "regression", 1, "rmse")
    out, results = run(tmp_path, config_path, task, "--seeds", "0", "1")
    assert results["seeds"] == [0, 1] and results["task"]["num_train"] == 36 and results["task"]["num_test"] == 12
    rmse = results["test"]["rmse"]
    assert len(rmse["values"]) == 2 and rmse["mean"] == pytest.approx(np.mean(rmse["values"]))
    assert rmse["std"] == pytest.approx(np.std(rmse["values"], ddof=1))
    assert set(results["test"]) == {"rmse", "mae", "spearman"}
    assert results["command"].startswith("sma-finetune --config_name")

    for run_result in results["runs"]:
        # the selected checkpoint is the best epoch on validation (lowest rmse), never chosen on test
        history = json.loads((out / f"seed-{run_result['seed']}" / "trainer_state.json").read_text())["log_history"]
        validation = [h["eval_rmse"] for h in history if "eval_rmse" in h]
        assert run_result["validation"]["rmse"] == pytest.approx(min(validation), rel=1e-5)
        # the saved model predicts labels in the task's units: its test RMSE is the reported one
        model = AutoModelForSequenceClassification.from_pretrained(out / f"seed-{run_result['seed']}").eval()
        tokenizer = AutoTokenizer.from_pretrained(out / f"seed-{run_result['seed']}")
        test_rows = rows[48:]
        batch = tokenizer([r["smiles"] for r in test_rows], padding=True, return_tensors="pt")
        with torch.no_grad():
            predictions = model(**batch).logits.squeeze(-1).numpy()
        labels = np.array([r["label"] for r in test_rows])
        assert np.sqrt(np.mean((predictions - labels) ** 2)) == pytest.approx(run_result["test"]["rmse"], rel=1e-4)


def test_early_stopping_ends_a_seed_patience_epochs_after_its_best_validation_epoch(tmp_path, config_path):
    rows = [{"smiles": s, "label": float(i % 7)} for i, s in enumerate(smiles_rows(60))]  # labels unrelated to input
    task = write_task(tmp_path, "noise", rows, "regression", 1, "rmse")
    out, results = run(tmp_path, config_path, task, "--num_train_epochs", "40", "--early_stopping_patience", "2")
    history = json.loads((out / "seed-0" / "trainer_state.json").read_text())["log_history"]
    validation = [h["eval_rmse"] for h in history if "eval_rmse" in h]
    best = int(np.argmin(validation))
    assert len(validation) == best + 1 + 2 < 40
    assert results["validation"]["rmse"]["mean"] == pytest.approx(validation[best], rel=1e-5)
    for bad in (["--early_stopping_patience", "0"], ["--early_stopping_patience", "2", "--linear_probe"]):
        with pytest.raises(SystemExit):
            run(tmp_path, config_path, task, *bad)


def test_binary_classification_reports_roc_auc(tmp_path, config_path):
    rows = [{"smiles": s, "label": int("N" in s)} for s in smiles_rows(60)]
    task = write_task(tmp_path, "has_n", rows, "single_label_classification", 2, "roc_auc")
    out, results = run(tmp_path, config_path, task)
    assert set(results["test"]) == {"accuracy", "roc_auc"}
    # the reported test ROC-AUC is that of the saved (selected) model's scores
    model = AutoModelForSequenceClassification.from_pretrained(out / "seed-0").eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "seed-0")
    test_rows = rows[48:]
    with torch.no_grad():
        logits = model(**tokenizer([r["smiles"] for r in test_rows], padding=True, return_tensors="pt")).logits
    expected = roc_auc((logits[:, 1] - logits[:, 0]).numpy(), np.array([r["label"] for r in test_rows]))
    assert results["test"]["roc_auc"]["mean"] == pytest.approx(expected, abs=1e-6)


def test_token_classification_labels_follow_the_bytes(tmp_path, config_path):
    # one label per byte: is it a lowercase (aromatic) atom
    rows = [{"smiles": s, "label": [int(c.islower()) for c in s]} for s in smiles_rows(40)]
    rows[0] = {"smiles": "Cé" + "c" * 70, "label": [0, 1, 1] + [1] * 70}  # é is 2 bytes; longer than 64: truncated
    rows[1] = {"smiles": "CCO", "label": [0, 0]}  # one label short: skipped and counted
    task = write_task(tmp_path, "aromatic", rows, "token_classification", 2, "accuracy")
    out, results = run(tmp_path, config_path, task, "--max_seq_length", "10")
    assert results["skipped_rows"] == {"train": {"number of labels differs from the number of input elements": 1}}
    assert (out / "seed-0" / "config.json").is_file()

    from sma_hf import SMAConfig, create_byte_tokenizer
    from sma_hf.tools.finetune import Encoder
    from sma_hf.tools.task_data import load_task

    encoder = Encoder(load_task(str(task)), SMAConfig(**TINY_CONFIG), create_byte_tokenizer(), max_length=10)
    features = encoder.features([rows[0]["smiles"], "CcO"], [rows[0]["label"], [0, 1, 0]])
    assert features["labels"][0] == [0, 1, 1, 1, 1, 1, 1, 1, 1, -100]  # 9 bytes kept, then [SEP]
    assert features["labels"][1] == [0, 1, 0, -100]
    assert [len(ids) for ids in features["input_ids"]] == [10, 4]


def test_continuous_inputs_and_skipped_rows(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"features": rng.normal(size=6).tolist(), "label": int(i % 3)} for i in range(45)]
    rows[2]["features"][0] = float("nan")  # an unusable row: skipped and counted
    task = write_task(tmp_path, "table", rows, "single_label_classification", 3, "accuracy", "features", "continuous")
    config = {**TINY_CONFIG, "input_type": "continuous", "input_channels": 1, "max_position_embeddings": 6}
    path = tmp_path / "continuous.json"
    path.write_text(json.dumps(config))
    _, results = run(tmp_path, path, task)
    assert results["skipped_rows"] == {"train": {"non-finite input values": 1}}
    assert results["task"]["num_train"] == 26
    assert set(results["test"]) == {"accuracy", "macro_f1"}


def test_bad_labels_are_counted_or_refused(tmp_path, config_path):
    rows = [{"smiles": s, "label": float(len(s))} for s in smiles_rows(30)]
    rows[3]["label"] = float("nan")
    task = write_task(tmp_path, "nan", rows, "regression", 1, "rmse")
    _, results = run(tmp_path, config_path, task, "--num_train_epochs", "1")
    assert results["skipped_rows"] == {"train": {"non-finite label": 1}}
    assert np.isfinite(results["test"]["rmse"]["mean"])
    rows = [{"smiles": s, "label": i % 3} for i, s in enumerate(smiles_rows(30))]
    task = write_task(tmp_path, "classes", rows, "single_label_classification", 2, "accuracy")
    with pytest.raises(
        SystemExit, match=r"the training split has 3 classes \[0, 1, 2\], the task spec says num_labels=2"
    ):
        run(tmp_path, config_path, task)


def test_task_and_model_must_agree(tmp_path, config_path):
    rows = [{"features": [1.0, 2.0], "label": 0.5}] * 10
    task = write_task(tmp_path, "cont", rows, "regression", 1, "rmse", "features", "continuous")
    with pytest.raises(SystemExit, match="continuous inputs but the model takes discrete"):
        run(tmp_path, config_path, task)
    bad = json.loads(task.read_text()) | {"label_column": "target"}
    task.write_text(json.dumps(bad))
    with pytest.raises(SystemExit, match="column 'target' is not in"):
        run(tmp_path, config_path, task)


def test_metrics_against_brute_force():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=40).astype(float)  # many ties
    labels = rng.integers(0, 2, size=40)
    pairs = [(p, n) for p, n in itertools.product(scores[labels == 1], scores[labels == 0])]
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert roc_auc(scores, labels) == pytest.approx(expected)
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    x = rng.normal(size=30)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    metrics = task_metrics("regression", np.array([[1.0], [2.0], [4.0]]), np.array([1.0, 3.0, 3.0]))
    assert metrics["rmse"] == pytest.approx(np.sqrt(2 / 3)) and metrics["mae"] == pytest.approx(2 / 3)


def test_macro_f1_weighs_every_class_alike_as_scikit_learn_does():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    labels = rng.choice(5, size=200, p=[0.6, 0.25, 0.1, 0.04, 0.01])  # unbalanced, as localisation is
    for predictions in (rng.integers(0, 5, 200), np.zeros(200, dtype=int), np.where(labels == 4, 3, labels)):
        assert macro_f1(predictions, labels) == pytest.approx(f1_score(labels, predictions, average="macro"))
    logits = np.eye(3)[[0, 0, 1, 2]]  # class 0 always right, classes 1 and 2 once each
    metrics = task_metrics("single_label_classification", logits, np.array([0, 0, 1, 1]))
    assert metrics == {"accuracy": 0.75, "macro_f1": pytest.approx((1 + 2 / 3 + 0) / 3)}


def test_the_log_says_each_thing_once(tmp_path, config_path, recwarn, caplog, capfd):
    """No warning per epoch or per seed on a CPU: torch's pin-memory warning, transformers' checkpoint-write bars and
    the BOS/EOS alignment stay out; the load report (new head weights) comes once, not once per seed."""
    from transformers.utils import logging as transformers_logging

    from sma_hf import SMAConfig, SMAForMaskedModeling, create_byte_tokenizer

    pretrained = tmp_path / "pretrained"
    SMAForMaskedModeling(SMAConfig(**TINY_CONFIG)).save_pretrained(pretrained)
    create_byte_tokenizer(model_max_length=64).save_pretrained(pretrained)
    rows = [{"smiles": s, "label": float(len(s))} for s in smiles_rows(40)]
    task = write_task(tmp_path, "quiet", rows, "regression", 1, "rmse")
    capfd.readouterr()  # what saving the checkpoint printed
    transformers_logging.enable_propagation()  # so that caplog sees transformers' records
    try:
        main(["--model_name_or_path", str(pretrained), "--task", str(task), "--data_dir", str(tmp_path / "data"),
              "--output_dir", str(tmp_path / "out"), "--num_train_epochs", "2", "--seeds", "0", "1"])  # fmt: skip
    finally:
        transformers_logging.disable_propagation()
        transformers_logging.enable_progress_bar()
    messages = [record.getMessage() for record in caplog.records]
    assert not [str(w.message) for w in recwarn if "pin_memory" in str(w.message)]
    # one record may reach caplog twice once transformers propagates; count emissions, not deliveries
    reports = {(r.name, r.created) for r in caplog.records if "LOAD REPORT" in r.getMessage()}
    assert len(reports) == 1, reports
    assert not [message for message in messages if "PAD/BOS/EOS" in message]
    assert "Writing model shards" not in capfd.readouterr().err


def test_token_budget_batches_keep_every_row_once_an_epoch_in_a_new_order():
    from sma_hf.tools.finetune import TokenBudgetBatches

    lengths = np.random.default_rng(0).integers(2, 40, size=57).tolist()
    batches = TokenBudgetBatches(lengths, max_rows=6, max_tokens=80, seed=3)
    orders = []
    for epoch in range(3):
        batches.set_epoch(epoch)
        epoch_batches = list(batches)
        assert len(epoch_batches) == len(batches)  # the step count Trainer planned
        assert sorted(i for batch in epoch_batches for i in batch) == list(range(57))
        for batch in epoch_batches:
            assert len(batch) <= 6 and len(batch) * max(lengths[i] for i in batch) <= 80
        orders.append(epoch_batches)
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[2])  # the same batches, reordered
    batches.set_epoch(1)
    assert list(batches) == orders[1]  # an epoch's order is reproducible (a resumed run)


def test_finetuning_with_a_token_budget_trains_on_batches_within_it(tmp_path, config_path, monkeypatch):
    rows = [{"smiles": s, "label": float(len(s))} for s in smiles_rows(40)]
    task = write_task(tmp_path, "lengths", rows, "regression", 1, "rmse")
    from sma_hf.modeling_sma import SMAForSequenceClassification

    shapes = []
    forward = SMAForSequenceClassification.forward

    @functools.wraps(forward)  # Trainer keeps the dataset columns that the signature names
    def recording(self, *args, **kwargs):
        if self.training:
            shapes.append(tuple(kwargs["input_ids"].shape))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(SMAForSequenceClassification, "forward", recording)
    _, results = run(tmp_path, config_path, task, "--max_tokens_per_batch", "64")
    train_rows = results["runs"][0]["num_train"]
    assert shapes and all(rows * length <= 64 for rows, length in shapes)
    assert sum(rows for rows, _ in shapes) == 3 * train_rows  # 3 epochs, every row once in each
    assert max(rows for rows, _ in shapes) <= 8  # --per_device_train_batch_size stays the most rows
    with pytest.raises(SystemExit, match=r"--max_tokens_per_batch \(32\) is below the longest input .*\(64 elements"):
        run(tmp_path, config_path, task, "--max_tokens_per_batch", "32")
