"""The examples in scripts/ run as a user would run them."""

import re
import runpy
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import tiny_config
from transformers import AutoModelForSequenceClassification

from sma_hf import SMAForMaskedModeling, create_byte_tokenizer


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_finetune_with_trainer_example(tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "pretrained"
    SMAForMaskedModeling(tiny_config(encoder_type="self_attention", embedding_size=32)).save_pretrained(checkpoint)
    create_byte_tokenizer(model_max_length=64).save_pretrained(checkpoint)
    molecules = ["C" * (1 + i % 9) + "O" * (i % 4) for i in range(40)]
    pq.write_table(
        pa.table({"smiles": molecules, "label": [float(len(m)) for m in molecules]}), tmp_path / "t.parquet"
    )
    output_dir = tmp_path / "finetuned"
    argv = ["finetune_with_trainer.py", "--model", str(checkpoint), "--data", str(tmp_path / "t.parquet"),
            "--input_column", "smiles", "--num_labels", "1", "--epochs", "2",
            "--output_dir", str(output_dir)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPTS / "finetune_with_trainer.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "'eval_rmse'" in printed and "'epoch': 2.0" in printed
    model = AutoModelForSequenceClassification.from_pretrained(output_dir)
    assert model.config.problem_type == "regression" and model.config.num_labels == 1


@pytest.mark.parametrize(
    "argv, table, message",
    [
        (["--num_labels", "1"], {"smiles": ["CCO"] * 5, "label": [1.0] * 5},
         "--input_column 'text' is not a column of"),
        (["--input_column", "smiles", "--num_labels", "1"], {"smiles": ["CCO"] * 5, "label": [1.0, None, 2.0, 3.0,
         float("nan")]}, "2 rows of --label_column 'label' are empty or not finite"),
        (["--input_column", "smiles"], {"smiles": ["CCO"] * 4, "label": [0, 1, 2, 1]},
         r"must hold class ids in \[0, --num_labels=2\)"),
    ],
)  # fmt: skip
def test_finetune_with_trainer_example_says_what_is_wrong_with_the_table(tmp_path, monkeypatch, capsys, argv, table,
                                                                         message):  # fmt: skip
    pq.write_table(pa.table(table), tmp_path / "t.parquet")
    monkeypatch.setattr(sys, "argv", ["finetune_with_trainer.py", "--model", "unused", "--data",
                                      str(tmp_path / "t.parquet"), *argv])  # fmt: skip
    with pytest.raises(SystemExit):
        runpy.run_path(str(SCRIPTS / "finetune_with_trainer.py"), run_name="__main__")
    assert re.search(message, capsys.readouterr().err.strip().splitlines()[-1])
