"""What the tools share: shipped resources by name or path, the one row check, the console scripts' extra check,
atomic writes."""

import importlib.metadata
import json
import sys

import numpy as np
import pytest

from sma_hf import SMAConfig
from sma_hf.tools import cli
from sma_hf.tools.common import (
    PRESETS_DIR,
    TASKS_DIR,
    atomic_write,
    load_sma_config,
    shipped_or_path,
    usable_input,
    write_json_atomic,
)


MASKING_FIELDS = {"masking_strategy", "mask_selection", "head_aggregation", "mask_self"}


@pytest.mark.parametrize("twin", sorted(PRESETS_DIR.glob("*-random-masks.json")), ids=lambda path: path.stem)
def test_random_mask_twin_differs_from_its_preset_only_in_the_masking(twin):
    """An experiment's arm (b) must be arm (a)'s architecture: a length or width changed in one preset alone would
    compare two models."""
    twin_fields = json.loads(twin.read_text())
    own = json.loads((PRESETS_DIR / twin.name.replace("-random-masks", "")).read_text())
    assert twin_fields["masking_strategy"] == "random"
    differing = {name for name in own.keys() | twin_fields.keys() if own.get(name) != twin_fields.get(name)}
    assert differing <= MASKING_FIELDS


def test_shipped_resources_by_name_or_path(tmp_path):
    assert (
        shipped_or_path("sma-chemistry-small", PRESETS_DIR, "--config_name")
        == PRESETS_DIR / "sma-chemistry-small.json"
    )
    assert shipped_or_path("freesolv", TASKS_DIR, "--task") == TASKS_DIR / "freesolv.json"
    own = tmp_path / "freesolv"  # a file of that name wins over the shipped one
    own.write_text("{}")
    assert shipped_or_path(str(own), TASKS_DIR, "--task") == own
    with pytest.raises(FileNotFoundError, match=r"--task 'nope' is neither a file nor one of the shipped names \["):
        shipped_or_path("nope", TASKS_DIR, "--task")
    config = load_sma_config(None, "sma-chemistry-small")
    assert config.encoder_type == "self_attention" and config.masking_strategy == "self_guided"
    (tmp_path / "typo.json").write_text(json.dumps({"hiden_size": 64}))
    with pytest.raises(ValueError, match=r"fields that SMAConfig does not know: \['hiden_size'\]"):
        load_sma_config(None, str(tmp_path / "typo.json"))


@pytest.mark.parametrize(
    "value, channels, reason",
    [
        (None, 1, "missing input"),
        ([1.0, 2.0, 3.0], 1, None),  # a flat list: one element per value
        ([[1.0], [2.0]], 1, None),
        ([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], 3, None),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3, "input is not a list of 3-channel elements"),  # never reshaped
        ([[1.0, 2.0]], 3, "input is not a list of 3-channel elements"),
        ([], 1, "empty input"),
        ([1.0, float("nan")], 1, "non-finite input values"),
        (["a", "b"], 1, "input is not numeric"),
    ],
)
def test_one_row_check_for_continuous_inputs(value, channels, reason):
    config = SMAConfig(input_type="continuous", input_channels=channels)
    array, why = usable_input(value, config)
    assert why == reason
    if reason is None:
        assert array.dtype == np.float32 and array.shape[1] == channels


def test_one_row_check_for_discrete_inputs():
    config = SMAConfig()
    assert usable_input("CCO", config) == ("CCO", None)
    assert usable_input("  ", config) == (None, "empty input")
    assert usable_input(3, config) == (None, "input is not a string")


def test_console_script_without_the_train_extra_says_what_to_install(monkeypatch, capsys):
    real_version = importlib.metadata.version

    def version(name):
        if name in ("accelerate", "tensorboard"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(sys, "argv", ["sma-pretrain", "--help"])
    with pytest.raises(SystemExit) as exited:
        cli.pretrain()
    assert exited.value.code == (
        "sma-pretrain needs the train extra (missing: accelerate, tensorboard): pip install 'sma_hf[train]'"
    )
    assert cli.missing_train_requirements() == ["accelerate", "tensorboard"]


def test_pretraining_and_fine_tuning_refuse_the_same_rows():
    from sma_hf.tools.pretrain import BatchBuilder
    from sma_hf.tools.task_data import row_problem

    config = SMAConfig(input_type="continuous", input_channels=2)
    task = {"problem_type": "regression", "name": "t"}
    rows = [[1.0, 2.0, 3.0, 4.0], [[1.0, 2.0], [3.0, 4.0]], [[1.0, float("inf")]]]
    fine_tuning = [row_problem(row, 0.5, task, config) for row in rows]
    _, pretraining = BatchBuilder(None, config, "x", 8).usable_values([{"x": row} for row in rows])
    assert fine_tuning == ["input is not a list of 2-channel elements", None, "non-finite input values"]
    assert pretraining == {"input is not a list of 2-channel elements": 1, "non-finite input values": 1}


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "deep" / "results.json"
    write_json_atomic(path, {"a": 1})

    def fails(temporary):
        temporary.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fails)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary file left


MISSPELT = ["outputs/sma-chemsitry/model", "./model", "/nowhere/model", "a/b/c", "outputs/x"]


@pytest.mark.parametrize("misspelt", MISSPELT)
def test_a_misspelt_local_model_path_is_refused_at_once(tmp_path, monkeypatch, misspelt, capsys):
    """Not a Hub lookup that waits on the network and blames it: one line naming the flag, before any work."""
    import time

    from sma_hf.tools import finetune

    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()  # so "outputs/x" names a folder here, not a Hub id
    started = time.time()
    with pytest.raises(SystemExit) as exited:
        finetune.main(["--model_name_or_path", misspelt, "--task", "freesolv", "--output_dir", str(tmp_path / "out")])
    assert time.time() - started < 5
    error = str(exited.value.code)
    assert error == f"sma-finetune: error: --model_name_or_path {misspelt}: no such model folder."
    assert not (tmp_path / "out").exists()
