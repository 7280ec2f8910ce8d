"""Your own data, safely: nothing a user wrote or trained is lost by running a command twice, a folder that cannot
hold the outputs is refused before any work (`--output_dir` of `sma-pretrain` and `sma-finetune`), fine-tuning seeds
survive an interruption, and elements are never dropped without being asked for."""

import hashlib
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_finetuning_sma import write_task
from test_pretraining_sma import TINY_CONFIG, corpus, pretrain_args, smiles_rows  # noqa: F401 (fixture)

from sma_hf.tools import finetune, pretrain


def digest(folder):
    """The hashes of every file under `folder`."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


def one_line_error(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    message = str(exited.value.code)
    assert "\n" not in message and "Traceback" not in capsys.readouterr().err
    return message


def test_pretraining_twice_into_one_folder_is_refused_and_loses_nothing(corpus, capsys):  # noqa: F811
    argv = pretrain_args(corpus, "run")
    pretrain.main(argv)
    before = digest(corpus / "run")
    message = one_line_error(pretrain.main, argv, capsys)
    assert message.startswith("sma-pretrain: error: --output_dir") and "--overwrite_output_dir" in message
    assert digest(corpus / "run") == before


def test_overwrite_replaces_the_earlier_run_and_keeps_other_files(corpus):  # noqa: F811
    argv = pretrain_args(corpus, "run")
    pretrain.main(argv)
    (corpus / "run" / "notes.txt").write_text("mine")
    stale = corpus / "run" / "checkpoints" / "checkpoint-99"
    stale.mkdir()
    pretrain.main([*argv, "--overwrite_output_dir"])
    assert (corpus / "run" / "notes.txt").read_text() == "mine"
    assert not stale.exists()  # a later `--resume_from_checkpoint latest` must not find the earlier run's
    assert sorted(p.name for p in (corpus / "run" / "checkpoints").iterdir()) == ["checkpoint-3"]


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_output_dir_that_cannot_hold_the_outputs_is_refused_before_any_work(corpus, where, capsys):  # noqa: F811
    blocker = corpus / "blocker"
    blocker.write_text("not a folder")
    output_dir = blocker if where == "a file" else blocker / "run"
    argv = [*pretrain_args(corpus, "unused"), "--output_dir", str(output_dir)]
    message = one_line_error(pretrain.main, argv, capsys)
    expected = "is a file, not a folder" if where == "a file" else "cannot be written"
    assert message.startswith(f"sma-pretrain: error: --output_dir {output_dir}") and expected in message
    assert blocker.read_text() == "not a folder"


@pytest.fixture
def task(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY_CONFIG))
    rows = [{"smiles": s, "label": float(len(s))} for s in smiles_rows(40)]
    return config, write_task(tmp_path, "lengths", rows, "regression", 1, "rmse")


def finetune_args(tmp_path, task, *extra):
    config, spec = task
    return ["--config_name", str(config), "--task", str(spec), "--data_dir", str(tmp_path / "data"),
            "--output_dir", str(tmp_path / "out"), "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
            *extra]  # fmt: skip


def test_an_interrupted_fine_tuning_continues_after_its_finished_seeds(tmp_path, task, monkeypatch, capsys):
    argv = finetune_args(tmp_path, task, "--seeds", "0", "1", "2")
    trained = []
    real = finetune.train_one_seed

    def interrupted_at_seed_1(setup, finetuning, training, seed):
        if seed == 1 and not trained.count(1):
            trained.append(seed)
            raise KeyboardInterrupt  # Ctrl-C during seed 1
        trained.append(seed)
        return real(setup, finetuning, training, seed)

    monkeypatch.setattr(finetune, "train_one_seed", interrupted_at_seed_1)
    with pytest.raises(KeyboardInterrupt):
        finetune.main(argv)
    out = tmp_path / "out"
    seed_0 = json.loads((out / "seed-0" / "result.json").read_text())
    assert seed_0["test"]["rmse"] > 0 and not (out / "results.json").exists()
    capsys.readouterr()
    finetune.main(argv)  # the same command again
    assert trained == [0, 1, 1, 2]  # seed 0 was not trained again
    assert "seed 0: finished by an earlier run" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert [run["seed"] for run in results["runs"]] == [0, 1, 2]
    assert results["runs"][0] == seed_0


@pytest.mark.parametrize("change", ["arguments", "weights"])
def test_fine_tuning_into_a_folder_of_another_run_is_refused(tmp_path, task, change, capsys):
    config, spec = task
    model = tmp_path / "pretrained"
    from sma_hf import SMAConfig, SMAForMaskedModeling
    from sma_hf.tokenization_sma import create_byte_tokenizer

    SMAForMaskedModeling(SMAConfig(**TINY_CONFIG)).save_pretrained(model)
    create_byte_tokenizer().save_pretrained(model)
    argv = ["--model_name_or_path", str(model), *finetune_args(tmp_path, task)[2:]]
    finetune.main(argv)
    before = digest(tmp_path / "out")
    if change == "arguments":
        argv = [*argv, "--learning_rate", "3e-4"]
    else:  # other weights at the same path: the path alone does not say the run is the same
        SMAForMaskedModeling(SMAConfig(**TINY_CONFIG)).save_pretrained(model)
    message = one_line_error(finetune.main, argv, capsys)
    assert message.startswith(f"sma-finetune: error: --output_dir {tmp_path / 'out'} already holds files")
    assert digest(tmp_path / "out") == before


@pytest.fixture
def long_rows(tmp_path):
    """Continuous rows of 9 elements for a model that reads 6 positions; a table and a task of them."""
    rng = np.random.default_rng(0)
    rows = [{"features": rng.normal(size=9).tolist(), "label": float(i % 3)} for i in range(30)]
    pq.write_table(pa.Table.from_pylist(rows[:24]), tmp_path / "pool.parquet")
    pq.write_table(pa.Table.from_pylist(rows[24:]), tmp_path / "held_out.parquet")
    config = tmp_path / "continuous.json"
    config.write_text(json.dumps({**TINY_CONFIG, "input_type": "continuous", "max_position_embeddings": 6}))
    return config, write_task(tmp_path, "long", rows, "regression", 1, "rmse", "features", "continuous")


@pytest.mark.parametrize("tool", ["pretrain", "finetune"])
def test_continuous_rows_longer_than_the_model_are_refused_unless_a_cut_is_asked(tmp_path, long_rows, tool, capsys):
    config, spec = long_rows
    if tool == "pretrain":
        main = pretrain.main
        argv = ["--config_name", str(config), "--train_file", str(tmp_path / "pool.parquet"), "--validation_file",
                str(tmp_path / "held_out.parquet"), "--max_steps", "2", "--per_device_train_batch_size", "8",
                "--report_to", "none", "--output_dir", str(tmp_path / "run")]  # fmt: skip
    else:
        main = finetune.main
        argv = ["--config_name", str(config), "--task", str(spec), "--data_dir", str(tmp_path / "data"),
                "--num_train_epochs", "1", "--output_dir", str(tmp_path / "run")]  # fmt: skip
    message = one_line_error(main, argv, capsys)
    assert message.startswith(f"sma-{tool}: error: A row has 9 elements, more than the 6 positions the model reads")
    assert "--max_seq_length 6" in message
    main([*argv, "--max_seq_length", "6"])  # asked for: cut, and counted (the refused run left nothing in the way)
    out = capsys.readouterr().out
    if tool == "pretrain":
        summary = json.loads((tmp_path / "run" / "pretraining_summary.json").read_text())
        # 2 steps of 8 rows, every row 9 elements long; and the masks of rows without a grid are drawn as strips
        assert summary["truncated_rows"] == 16 and "Rows truncated to 6 elements: 16" in out
        assert (tmp_path / "run" / "model" / "masks.png").is_file()
    else:
        assert "Rows cut to 6 elements per split: {'train': 18, 'validation': 6, 'test': 6}" in out


def test_class_labels_as_users_have_them(tmp_path, capsys):
    """String classes get ids in sorted order from the training split (stated), the saved models carry the names,
    and a class that only the test split holds is refused in one line."""
    from transformers import AutoConfig

    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY_CONFIG))
    rows = [{"smiles": s, "label": ("yes", "no", "maybe")[i % 3]} for i, s in enumerate(smiles_rows(45))]
    spec = write_task(tmp_path, "words", rows, "single_label_classification", 3, "accuracy")
    argv = ["--config_name", str(config), "--task", str(spec), "--data_dir", str(tmp_path / "data"),
            "--num_train_epochs", "1", "--output_dir", str(tmp_path / "run")]  # fmt: skip
    finetune.main(argv)
    assert "classes from the training split, sorted: {0: 'maybe', 1: 'no', 2: 'yes'}" in capsys.readouterr().out
    saved = AutoConfig.from_pretrained(tmp_path / "run" / "seed-0")
    assert saved.id2label == {0: "maybe", 1: "no", 2: "yes"} and saved.label2id["yes"] == 2
    rows[-1]["label"] = "never seen"  # the last row lands in the test split
    spec = write_task(tmp_path, "words", rows, "single_label_classification", 3, "accuracy")
    message = one_line_error(finetune.main, [*argv[:-1], str(tmp_path / "again")], capsys)
    assert message == (
        "sma-finetune: error: Task 'words': test labels ['never seen'] are not among the training classes "
        "['maybe', 'no', 'yes']."
    )


def test_your_own_table_without_a_task_spec(tmp_path, capsys):
    """`--train_file/--validation_file/--test_file` with `--input_column`: the task is read off the table (classes
    from the training labels, the metric from their number), stated, and the results are the usual ones."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY_CONFIG))
    rows = [{"sequence": s, "toxic": ("no", "yes")[i % 2]} for i, s in enumerate(smiles_rows(40))]
    for split, part in (("train", rows[:24]), ("validation", rows[24:32]), ("test", rows[32:])):
        with open(tmp_path / f"{split}.csv", "w") as file:
            file.write("sequence,toxic\n" + "".join(f"{row['sequence']},{row['toxic']}\n" for row in part))
    argv = ["--config_name", str(config), "--train_file", str(tmp_path / "train.csv"),
            "--validation_file", str(tmp_path / "validation.csv"), "--test_file", str(tmp_path / "test.csv"),
            "--input_column", "sequence", "--label_column", "toxic", "--num_train_epochs", "1",
            "--output_dir", str(tmp_path / "run")]  # fmt: skip
    finetune.main(argv)
    out = capsys.readouterr().out
    assert (
        "Task 'train' from your table: single_label_classification, 2 label(s), selected on validation roc_auc" in out
    )
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["task"]["metric"] == "roc_auc" and 0 <= results["test"]["roc_auc"]["mean"] <= 1
    with pytest.raises(SystemExit):
        finetune.main([*argv[:-1], str(tmp_path / "other"), "--task", "freesolv"])
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "sma-finetune: error: Pass --task (a task spec) or --train_file, --validation_file and --test_file (your "
        "table)."
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (["--num_train_epochs", "0"], "--num_train_epochs must be > 0, got 0.0"),
        (["--num_train_epochs", "-3"], "--num_train_epochs must be > 0, got -3.0"),
        (["--label_fraction", "0"], r"--label_fraction must be in \(0, 1\], got 0.0"),
        (["--seeds", "1", "1"], r"--seeds must be distinct, got \[1, 1\]"),
        (["--early_stopping_patience", "0"], "--early_stopping_patience must be >= 1, got 0"),
    ],
)
def test_fine_tuning_numbers_that_would_report_an_untrained_model_are_refused(tmp_path, task, change, message,
                                                                                capsys):  # fmt: skip
    """What would exit 0 with the metrics of an untrained head: one line naming the flag, nothing written."""
    with pytest.raises(SystemExit) as exited:
        finetune.main([*finetune_args(tmp_path, task), *change])
    assert exited.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("sma-finetune: error: ") and re.search(message, line), line
    assert not (tmp_path / "out").exists()


def test_the_same_fine_tuning_with_other_data_or_overwrite_is_not_read_back(tmp_path, capsys):
    """A finished run is read back only when nothing it rests on changed: other data in the same files is refused
    (its seeds would be stale), and --overwrite_output_dir trains again."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY_CONFIG))
    rows = [{"sequence": s, "label": len(s) + 0.5} for s in smiles_rows(30)]  # numbers: a regression
    for split, part in (("train", rows[:18]), ("validation", rows[18:24]), ("test", rows[24:])):
        pq.write_table(pa.Table.from_pylist(part), tmp_path / f"{split}.parquet")
    argv = ["--config_name", str(config), "--train_file", str(tmp_path / "train.parquet"),
            "--validation_file", str(tmp_path / "validation.parquet"), "--test_file", str(tmp_path / "test.parquet"),
            "--input_column", "sequence", "--num_train_epochs", "1",
            "--output_dir", str(tmp_path / "run")]  # fmt: skip
    finetune.main(argv)
    finetune.main(argv)
    assert "seed 0: finished by an earlier run" in capsys.readouterr().out
    finetune.main([*argv, "--overwrite_output_dir"])
    assert "finished by an earlier run" not in capsys.readouterr().out
    pq.write_table(
        pa.Table.from_pylist([{**row, "label": row["label"] + 1} for row in rows[:18]]), tmp_path / "train.parquet"
    )
    before = digest(tmp_path / "run")
    message = one_line_error(finetune.main, argv, capsys)
    assert message.startswith(f"sma-finetune: error: --output_dir {tmp_path / 'run'} already holds files")
    assert digest(tmp_path / "run") == before


def test_a_refused_fine_tuning_does_not_block_the_corrected_command(tmp_path, task, capsys):
    one_line_error(finetune.main, [*finetune_args(tmp_path, task), "--max_seq_length", "1000"], capsys)
    finetune.main(finetune_args(tmp_path, task))  # the same folder, nothing to overwrite
    assert (tmp_path / "out" / "results.json").is_file()
