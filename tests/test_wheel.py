"""The package as a pip user gets it: a built wheel, installed into a fresh virtual environment, run outside the
source tree. First with the model's dependencies only, then with the `train` extra.

This is the slowest test of the suite (about a minute for the installs, most of it pip's dependency resolution;
pip's cache serves the downloads after the first run). torch is installed first at the version the suite runs on, so
that pip takes the build already on this machine instead of pulling a CUDA build.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import random_inputs, tiny_config
from transformers import AutoModel, AutoModelForSequenceClassification

from sma_hf import SMAForMaskedModeling, create_byte_tokenizer


pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` leaves it out


ROOT = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPTS = ("sma-prepare-data", "sma-pretrain", "sma-finetune", "sma-model-card")
# what the train extra adds (jinja2 and tqdm come with torch and transformers)
TOOL_DEPENDENCIES = ("accelerate", "datasets", "pyarrow", "tensorboard", "matplotlib")


def run(command: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(cwd / "hf_home"), PIP_DISABLE_PIP_VERSION_CHECK="1"
    )
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def build_outputs(folder: str, names: list[str]) -> set[str]:
    """What the wheel's copy of the tree leaves out: build outputs anywhere, the corpora and runs at the top level
    (not the package's own `sma_hf/tools/data/`)."""
    top_level = {"data", "outputs"} if Path(folder) == ROOT else set()
    return {
        n
        for n in names
        if n in top_level | {".git", ".venv", "build", "dist", "__pycache__"} or n.endswith(".egg-info")
    }


def fresh_venv_with_the_wheel(root: Path) -> dict:
    """A fresh virtual environment with the wheel of this source tree installed (model dependencies only). The wheel
    is built from a copy of the tree without build outputs: a stale `build/` could slip removed files into it."""
    source = root / "source"
    shutil.copytree(ROOT, source, ignore=build_outputs)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(root / "dist"), str(source)], root)
    (wheel,) = (root / "dist").glob("sma_hf-*.whl")
    run([sys.executable, "-m", "venv", str(root / "venv")], root)
    bin_dir = root / "venv" / "bin"
    torch_version = torch.__version__.split("+")[0]
    run([str(bin_dir / "pip"), "install", "--quiet", f"torch=={torch_version}"], root)
    run([str(bin_dir / "pip"), "install", "--quiet", str(wheel)], root)
    work = root / "outside_the_source_tree"
    work.mkdir()
    return {"bin": bin_dir, "wheel": wheel, "work": work, "source": source}


def test_the_wheel_installs_the_model_alone_and_the_tools_with_the_train_extra(tmp_path):
    """One environment, two phases in this order: the plain install, then the train extra added to it."""
    (tmp_path / "wheel").mkdir()
    venv = fresh_venv_with_the_wheel(tmp_path / "wheel")
    check_the_model_alone(venv, tmp_path)
    check_every_tool_outside_the_source_tree(venv)


def check_the_model_alone(venv: dict, tmp_path: Path):
    config = tiny_config(num_labels=2)
    SMAForMaskedModeling(config).save_pretrained(tmp_path / "checkpoint")
    create_byte_tokenizer(model_max_length=64).save_pretrained(tmp_path / "checkpoint")
    batch = random_inputs(config, batch_size=2, length=10)
    torch.save(batch, tmp_path / "batch.pt")
    expected = AutoModel.from_pretrained(tmp_path / "checkpoint").eval()(**batch).last_hidden_state
    code = f"""
import importlib.util, torch
assert [m for m in {TOOL_DEPENDENCIES!r} if importlib.util.find_spec(m)] == []
import sma_hf
assert "sma_hf.tools" not in __import__("sys").modules
from transformers import AutoModel, AutoModelForSequenceClassification

batch = torch.load({str(tmp_path / "batch.pt")!r})
model = AutoModel.from_pretrained({str(tmp_path / "checkpoint")!r}).eval()
torch.save(model(**batch).last_hidden_state, {str(tmp_path / "out.pt")!r})
AutoModelForSequenceClassification.from_pretrained({str(tmp_path / "checkpoint")!r})
print(sma_hf.__file__)
"""
    result = run([str(venv["bin"] / "python"), "-c", code], venv["work"])
    assert "site-packages" in result.stdout
    assert torch.allclose(torch.load(tmp_path / "out.pt"), expected.detach(), atol=1e-6)
    # the model's own tests need nothing beyond the plain install and pytest (run from the bin folder, so that the
    # installed wheel is imported, not the source copy)
    run([str(venv["bin"] / "pip"), "install", "--quiet", f"pytest=={pytest.__version__}"], venv["work"])
    tests = venv["source"] / "tests" / "model"
    result = run([str(venv["bin"] / "pytest"), str(tests), "-q", "-x", "-rs", "-p", "no:cacheprovider"], venv["work"])
    skips = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert " passed" in result.stdout and all("device_map needs accelerate" in line for line in skips), skips
    for script in CONSOLE_SCRIPTS:
        result = run([str(venv["bin"] / script), "--help"], venv["work"], check=False)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.strip().splitlines() == [
            f"{script} needs the train extra (missing: {', '.join(TOOL_DEPENDENCIES)}): pip install 'sma_hf[train]'"
        ]


def check_every_tool_outside_the_source_tree(venv: dict):
    bin_dir, work = venv["bin"], venv["work"]
    run([str(bin_dir / "pip"), "install", "--quiet", f"{venv['wheel']}[train]"], work)
    for script in CONSOLE_SCRIPTS:
        assert "usage:" in run([str(bin_dir / script), "--help"], work).stdout

    molecules = ["C" * (1 + i % 7) + "(=O)" * (i % 3) + "N" * (i % 5) for i in range(60)]
    pq.write_table(pa.table({"smiles": molecules}), work / "pool.parquet")
    run([str(bin_dir / "sma-pretrain"), "--config_name", "sma-chemistry-small", "--train_file", "pool.parquet",
         "--output_dir", "pretrained", "--max_steps", "3", "--per_device_train_batch_size", "8",
         "--report_to", "none", "--model_card_domain", "chemistry"], work)  # fmt: skip
    model_dir = work / "pretrained" / "model"
    assert {"model.safetensors", "modeling_sma.py", "tokenizer.json", "README.md"} <= {
        p.name for p in model_dir.iterdir()
    }

    freesolv = work / "data" / "chemistry" / "freesolv"  # where the shipped `freesolv` task spec looks
    freesolv.mkdir(parents=True)
    for split, part in (("train", molecules[:40]), ("validation", molecules[40:50]), ("test", molecules[50:])):
        pq.write_table(
            pa.table({"smiles": part, "label": [float(len(m)) for m in part]}), freesolv / f"{split}.parquet"
        )
    run([str(bin_dir / "sma-finetune"), "--model_name_or_path", str(model_dir), "--task", "freesolv",
         "--output_dir", "finetuned", "--num_train_epochs", "1",
         "--per_device_train_batch_size", "16"], work)  # fmt: skip
    results = json.loads((work / "finetuned" / "results.json").read_text())
    assert results["task"]["name"] == "freesolv" and results["task"]["greater_is_better"] is False

    run([str(bin_dir / "sma-model-card"), "--model_dir", str(model_dir), "--domain", "chemistry",
         "--model_id", "org/sma-wheel", "--results", "finetuned/results.json"], work)  # fmt: skip
    card = (model_dir / "README.md").read_text()
    assert "model-index" in card and "SMILES strings as UTF-8 bytes" in card
    loaded = AutoModelForSequenceClassification.from_pretrained(work / "finetuned" / "seed-0")
    assert loaded.config.problem_type == "regression"
