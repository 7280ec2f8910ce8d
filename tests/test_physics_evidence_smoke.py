"""The physics experiment's smoke mode: its whole grid on tiny generated events (both label budgets, LightGBM and
the MLP, the linear probes), its tables, figures and the `sma-physics` card, whose usage example runs."""

import json
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard


for _module in ("lightgbm", "pythia8mc", "fastjet"):
    pytest.importorskip(_module)
pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` leaves it out


def test_physics_experiment_smoke_run(tmp_path, benchmark_script):
    physics = benchmark_script("physics")

    results_dir = tmp_path / "results"
    argv = ["--smoke", "--data_dir", str(tmp_path / "data"), "--work_dir", str(tmp_path / "work"),
            "--results_dir", str(results_dir)]  # fmt: skip
    record = physics.main(argv)

    neural = ("self_guided", "random_masks", "scratch")
    classical = ("classical_lightgbm_input", "classical_mlp_input")
    expected = {("higgs", b, arm) for b in (0.1, 1.0) for arm in neural + classical}
    expected |= {("higgs", 1.0, f"probe_{arm}") for arm in neural}
    cells = [(c["task"]["name"], c["budget"], c["arm"]) for c in record["cells"]]
    assert sorted(cells) == sorted(expected)
    for cell in record["cells"]:
        assert cell["seeds"] == [0, 1] and {"accuracy", "roc_auc"} <= set(cell["test"])
        assert [run["num_train"] for run in cell["runs"]] == [40 if cell["budget"] == 1.0 else 4] * 2
    table = (results_dir / "results.md").read_text()
    assert "test Accuracy ↑, 10% labels" in table and "(d) lightgbm on input features" in table
    for figure in ("higgs.png", "pretraining.png", "masks.png", "column_masks.png"):
        assert (results_dir / figure).read_bytes().startswith(b"\x89PNG"), figure
    transform = json.loads((tmp_path / "work" / "checkpoints" / "sma-physics" / "column_transform.json").read_text())
    card = json.loads((tmp_path / "data" / "physics" / "data_card.json").read_text())
    assert transform["mean"] == card["datasets"]["higgs"]["info"]["pool_mean"] and len(transform["std"]) == 28
    columns = record["column_masks"]  # 20 held-out events, 6 of 28 columns masked in each
    assert columns["events"] == 20 and sum(columns["mask_rate"].values()) == pytest.approx(6)
    assert columns["same_object_share"]["random"] == pytest.approx(98 / 756, abs=0.08)  # sum n(n-1) / (28 * 27)

    model_dir = Path(record["pretraining"]["self_guided"]["model_dir"])
    card = ModelCard.load(model_dir / "README.md")
    own = {(r.dataset_name, r.metric_type) for r in card.data.eval_results}
    assert own == {("higgs", "accuracy"), ("higgs", "roc_auc")}
    assert "(d) mlp on input features, 10% labels" in card.text
    assert {r.task_type for r in card.data.eval_results} == {"tabular-classification"}
    # the card's usage example, on the hub-ready folder
    example = re.search(r"```python\n(import numpy.*?)```", card.text, re.S).group(1)
    namespace = {}
    exec(example.replace('"sma-hf/sma-physics"', repr(str(model_dir))), namespace)
    assert tuple(namespace["embeddings"].shape) == (2, 16)
