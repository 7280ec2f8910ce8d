"""The image experiment's smoke mode: its whole grid on a few dozen real images (both label budgets, logistic
regression and the forest, linear probes at both budgets, ColorMAE's colours and the choice between them), the mask
geometry, Figures 2 and 4, its tables and the `sma-images` card."""

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard


@pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` leaves it out
def test_images_experiment_smoke_run(tmp_path, benchmark_script):
    images = benchmark_script("images")

    results_dir = tmp_path / "results"
    argv = ["--smoke", "--data_dir", str(tmp_path / "data"), "--work_dir", str(tmp_path / "work"),
            "--results_dir", str(results_dir)]  # fmt: skip
    record = images.main(argv)

    chosen = record["colormae_selection"]["chosen"]
    assert set(record["colormae_selection"]["validation_probe_accuracy"]) == {"pink", "blue", "green"}
    neural = ("self_guided", "random_masks", "scratch")
    classical = ("classical_logistic_regression_input", "classical_random_forest_input")
    expected = {("mnist_permuted", b, arm) for b in (0.1, 1.0) for arm in neural + classical}
    expected |= {("mnist_permuted", b, f"probe_{arm}") for b in (0.1, 1.0) for arm in neural}
    expected |= {("mnist", b, f"colormae_{chosen}") for b in (0.1, 1.0)}
    cells = [(c["task"]["name"], c["budget"], c["arm"]) for c in record["cells"]]
    assert sorted(cells) == sorted(expected)
    for cell in record["cells"]:
        assert cell["seeds"] == [0, 1]
        assert [run["num_train"] for run in cell["runs"]] == [200 if cell["budget"] == 1.0 else 20] * 2
        if not cell["arm"].startswith(("classical", "probe")):  # the per-budget fine-tuning flags
            assert cell["command"].endswith("--num_train_epochs 1")
    assert set(record["pretraining"]) == {"self_guided", "random_masks", "colormae_pink", "colormae_blue",
                                          "colormae_green"}  # fmt: skip
    colormae_args = record["pretraining"]["colormae_green"]["command"]
    assert "--mask_noise_color green" in colormae_args and "images/mnist/train.parquet" in colormae_args

    geometry = record["geometry"]  # 20 held-out images; checkpoints at step 1 and the final model of (a) and (b)
    assert geometry["held_out_images"] == 20
    assert [(e["arm"], e["step"]) for e in geometry["over_training"]] == [
        ("self_guided", 1), ("self_guided", 2), ("random_masks", 1), ("random_masks", 2)]  # fmt: skip
    assert geometry["random"]["coherence"] == pytest.approx(0.5, abs=0.1)  # half the pixels masked at random
    assert geometry["colormae"]["green"]["coherence"] > geometry["colormae"]["blue"]["coherence"]
    crops = record["figure4"]["crops"]
    assert [row["inputs"] for row in crops] == [64, 144, 256, 400, 576, 784]
    for row in crops:  # the union holds at most queries x k, the mask's size up to the rounding of k
        assert 0 < row["per_query_union_over_target"] <= 1 + row["queries_per_image"] / row["inputs"]
        assert row["summed_rows_over_target"] == pytest.approx(1.0, abs=0.01)  # exact count but for rounding

    table = (results_dir / "results.md").read_text()
    assert "## Does SMA find the grid?" in table and "## Figure 4" in table and "(e) ColorMAE" in table
    for figure in ("mnist_permuted.png", "mnist.png", "pretraining.png", "geometry.png", "figure2_masks.png",
                   "figure4_top_sets.png"):  # fmt: skip
        assert (results_dir / figure).read_bytes().startswith(b"\x89PNG"), figure
    saved = json.loads((results_dir / "results.json").read_text())
    assert saved["figure4"] == record["figure4"] and saved["colormae_selection"]["chosen"] == chosen

    model_dir = Path(record["pretraining"]["self_guided"]["model_dir"])
    card = ModelCard.load(model_dir / "README.md")
    own = {(r.dataset_name, r.metric_type) for r in card.data.eval_results}
    assert {r.task_type for r in card.data.eval_results} == {"image-classification"}
    assert own == {("mnist_permuted", "accuracy"), ("mnist_permuted", "macro_f1")}
    assert f"(e) ColorMAE {chosen}-noise masks" in card.text
    checkpoint = tmp_path / "work" / "checkpoints" / "sma-images"
    assert (checkpoint / "model.safetensors").is_file() and "permutation.json" in card.text
    saved_permutation = json.loads((checkpoint / "permutation.json").read_text())["permutation"]
    assert sorted(saved_permutation) == list(range(784))


def test_the_average_rate_control_keeps_each_positions_rate_and_the_count(benchmark_script):
    images = benchmark_script("images")
    generator = torch.Generator().manual_seed(0)
    rates = torch.linspace(0.05, 0.95, 20)  # sums to 10: 10 masked in each image
    drawn = [torch.multinomial(rates, 10, generator=generator) for _ in range(400)]
    masks = torch.stack([torch.zeros(20, dtype=torch.bool).scatter_(0, row, True) for row in drawn])
    control = images.rate_control_masks(masks, seed=1)
    assert control.sum(dim=1).tolist() == [10] * 400
    draws = torch.stack([images.rate_control_masks(masks, seed=s).float().mean(dim=0) for s in range(50)]).mean(dim=0)
    torch.testing.assert_close(draws, masks.float().mean(dim=0), atol=0.01, rtol=0)  # each position's own rate
    grouped = torch.zeros(400, 20, dtype=torch.bool)
    grouped[:200, :10], grouped[200:, 10:] = True, True  # two fixed blobs: the control mixes them
    mixed = images.rate_control_masks(grouped, seed=0)
    assert (mixed.sum(dim=1) == 10).all() and (mixed[:, :10].sum(dim=1) == 10).float().mean() < 0.01
    with pytest.raises(ValueError, match="the same count in every image"):
        images.rate_control_masks(torch.eye(3, dtype=torch.bool).logical_or(torch.tensor([True, False, False])), 0)
