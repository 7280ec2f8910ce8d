"""The examples in scripts/ run as a user would run them."""

import runpy
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
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
