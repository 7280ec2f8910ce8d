"""Evidence on pixels: does SMA find the geometry it is not told? MNIST 5000 under a fixed pixel permutation, every
arm of the protocol (`evidence.py`), ColorMAE's masks on the un-permuted images, and the paper's Figures 2 and 4;
the `sma-images` checkpoint with its card.

    sma-prepare-data --corpora images --permute_pixels   # the images first (seconds); made here when missing
    python benchmarks/images.py         # results under benchmarks/results/images/, the card under model_cards/, the
                                        # checkpoint under checkpoints/
    python benchmarks/images.py --smoke # the whole grid on a few dozen images and a tiny model (CI)

The model (`sma-images`: cross-attention over the 784 pixels, 64 latents, learned position embeddings) is given the
pixels in permuted order and no grid: its masks find the grid only by learning which positions belong together.
Its position embeddings start with no order, so it is as blind to the permutation as to any other: the permuted arms
(a), (b), (c) and the un-permuted ColorMAE arms (e) face the same learning problem, except that ColorMAE's masks know
the grid. Thresholded white noise is a uniformly random mask, which is arm (b); pink, blue and green are pretrained,
probed linearly, and the colour whose probes are best on validation is fine-tuned like the other arms.
"""

import argparse
import json
import shlex
import shutil
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from evidence import (
    ROOT,
    Experiment,
    ExtraArm,
    card_args,
    card_results,
    finetune_once,
    pretrain_arms,
    publish,
    run_experiment,
)
from safetensors.torch import load_file

import sma_hf.modeling_sma as modeling
from sma_hf import SMAConfig, SMAFeatureExtractor, SMAForMaskedModeling
from sma_hf.masking_sma import masked_counts, random_masked_positions
from sma_hf.tools.colored_noise import NOISE_COLORS, colored_noise_masked_positions, radial_power
from sma_hf.tools.common import PRESETS_DIR, TASKS_DIR, write_json_atomic
from sma_hf.tools.data import prepare_images
from sma_hf.tools.mask_health import (
    MASK_FIGURE_FILE,
    collapse_score,
    draw_masks,
    figure_png,
    grid_neighbours,
    neighbour_share,
    pairwise_mask_overlap,
    self_guided_masks,
)
from sma_hf.tools.pretrain import CHECKPOINT_PREFIX, CHECKPOINTS_DIR, MODEL_DIR, checkpoint_step


MODEL_ID = "sma-hf/sma-images"
TASK, GRID_TASK = "mnist_permuted", "mnist"
GRID = (28, 28)
PRESETS = {"self_guided": "sma-images", "random_masks": "sma-images-random-masks"}
PRETRAINED_COLORS = ("pink", "blue", "green")  # white noise, thresholded, is a uniformly random mask: arm (b)
# the same for every pretrained arm: 16 passes over the 4,000 training images, 8 to 10 minutes on 2 cores
PRETRAIN_ARGS = [
    "--max_steps", "1000", "--per_device_train_batch_size", "64", "--learning_rate", "1e-3", "--warmup_steps", "100",
    "--mask_noise_warmup_ratio", "0.25", "--eval_steps", "250", "--save_steps", "250", "--logging_steps", "50",
    "--max_eval_samples", "256", "--seed", "0", "--report_to", "none", "--model_card_domain", "images",
    "--mask_grid_shape", "28", "28",
]  # fmt: skip
# the same for every arm: batches of 32, the best epoch on validation kept; 25 epochs of the 400 images of the 10%
# budget (325 steps: 70 steps left every arm still improving, near 40% accuracy, and stopping after 3 epochs without
# a gain ended some seeds at a noisy plateau of the slow climb); up to 20 epochs of the 4,000 of the full budget,
# stopped after 3 without a gain (after 6, every arm was still climbing, no pretraining at 0.40 to 0.74 across seeds)
FINETUNE_ARGS = ["--per_device_train_batch_size", "32", "--learning_rate", "1e-3"]
BUDGET_FINETUNE_ARGS = {
    0.1: ["--num_train_epochs", "25"],
    1.0: ["--num_train_epochs", "20", "--early_stopping_patience", "3"],
}
BUDGETS = (0.1, 1.0)
# the forest with sqrt(784) features per split, the usual choice for pixels (the default grid's 0.3 of them makes it
# 20 minutes a seed on 2 cores)
CLASSICAL = [("input", "logistic_regression"),
             ("input", "random_forest", {"max_features": ["sqrt"], "min_samples_leaf": [1, 3]})]  # fmt: skip
# what decides how a mask is chosen: the self-guided selector of (a), applied after the fact to (b)'s weights
SELECTOR_FIELDS = ("masking_strategy", "masking_ratio", "mask_selection", "mask_equal_key_norms", "mask_random_floor",
                   "num_per_query", "head_aggregation", "mask_self", "mask_noise_ratio")  # fmt: skip
CROPS = (8, 12, 16, 20, 24, 28)  # Figure 4: central crops of these sizes
FIGURE_IMAGES, FIGURE_DRAWS = 4, 2


def pool_args(data_dir: Path, folder: str) -> list[str]:
    images = data_dir / "images" / folder
    return ["--train_file", str(images / "train.parquet"), "--validation_file", str(images / "validation.parquet")]


def images_experiment(data_dir: Path, smoke: bool, best_color: str | None = None) -> Experiment:
    """The grid: (a), (b), (c), logistic regression and a random forest on the permuted images, linear probes at both
    budgets, and ColorMAE's colours on the un-permuted images (with 10% of the labels; `best_color` with both)."""
    if smoke:
        presets = {arm: str(data_dir / f"{arm}.json") for arm in PRESETS}
        tasks = {name: str(data_dir / f"{name}.json") for name in (TASK, GRID_TASK)}
        pretrain_args = ["--max_steps", "2", "--per_device_train_batch_size", "8", "--eval_steps", "1",
                         "--save_steps", "1", "--report_to", "none", "--model_card_domain", "images",
                         "--mask_grid_shape", "28", "28"]  # fmt: skip
        finetune_args = ["--per_device_train_batch_size", "8"]
        budget_args = {budget: ["--num_train_epochs", "1"] for budget in BUDGETS}
        classical = [("input", "logistic_regression"), ("input", "random_forest", {"n_estimators": [5]})]
        seeds, cards = (0, 1), []
    else:
        presets, tasks = PRESETS, {TASK: TASK, GRID_TASK: GRID_TASK}
        pretrain_args, finetune_args, classical, seeds = PRETRAIN_ARGS, FINETUNE_ARGS, CLASSICAL, (0, 1, 2)
        budget_args = BUDGET_FINETUNE_ARGS
        cards = [data_dir / "images" / "data_card.json"]
    colormae = {
        f"colormae_{color}": ExtraArm(
            label=f"(e) ColorMAE {color}-noise masks, un-permuted images",
            preset=presets["random_masks"],
            pretrain_args=[*pool_args(data_dir, GRID_TASK), *pretrain_args, "--mask_noise_color", color],
            task=tasks[GRID_TASK],
            budgets=BUDGETS if color == best_color else (),
        )
        for color in PRETRAINED_COLORS
    }
    return Experiment(
        name="images (smoke)" if smoke else "images",
        data_dir=data_dir,
        tasks=[tasks[TASK]],
        presets=presets,
        pretrain_args=[*pool_args(data_dir, TASK), *pretrain_args],
        finetune_args=finetune_args,
        classical=classical,
        data_cards=cards,
        budgets=BUDGETS,
        seeds=seeds,
        probe_budgets=BUDGETS,
        extra_arms=colormae,
        budget_finetune_args=budget_args,
    )


def choose_noise_color(experiment: Experiment, work_dir: Path) -> dict:
    """Pretrain every ColorMAE colour (the experiment reuses them) and probe its frozen encoder linearly on every
    label; the colour whose probes score best on validation (a probe costs seconds, a fine-tuning minutes)."""
    arms = pretrain_arms(replace(experiment, presets={}), work_dir)
    scores = {}
    for arm, extra in experiment.extra_arms.items():
        out = work_dir / "probe" / GRID_TASK / arm
        argv = ["--model_name_or_path", arms[arm]["model_dir"], "--task", extra.task, "--data_dir",
                str(experiment.data_dir), "--output_dir", str(out), "--seeds", *map(str, experiment.seeds),
                "--linear_probe", "--label", f"{extra.label}, linear probe"]  # fmt: skip
        results = finetune_once(argv, out)
        scores[arm.removeprefix("colormae_")] = results["validation"][results["task"]["metric"]]["mean"]
    return {"validation_probe_accuracy": scores, "chosen": max(scores, key=scores.get)}


def prepare_smoke_data(data_dir: Path):
    """The real images, cut to 200 / 20 / 20 rows per split, the shipped task specs, and the presets shrunk."""
    prepare_images(data_dir, permute_pixels=True)
    for name in (TASK, GRID_TASK):
        spec = json.loads((TASKS_DIR / f"{name}.json").read_text())
        for split, rows in (("train", 200), ("validation", 20), ("test", 20)):
            path = data_dir / spec["data_files"][split]
            table = pq.read_table(path)  # in label order: rows spread over the whole file keep every class
            pq.write_table(table.take(np.linspace(0, table.num_rows - 1, rows).astype(np.int64)), path)
        (data_dir / f"{name}.json").write_text(json.dumps(spec))
    tiny = dict(num_latents=8, embedding_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=32, decoder_hidden_size=16, decoder_num_attention_heads=2,
                decoder_intermediate_size=32)  # fmt: skip
    for arm, preset in PRESETS.items():
        shipped = json.loads((PRESETS_DIR / f"{preset}.json").read_text())
        (data_dir / f"{arm}.json").write_text(json.dumps({**shipped, **tiny}))


def prepare_data(data_dir: Path, smoke: bool):
    if smoke:
        prepare_smoke_data(data_dir)
    elif not (data_dir / "images" / "mnist_permuted" / "permutation.json").is_file():
        prepare_images(data_dir, permute_pixels=True)


# --------------------------------------------------------------------------------
# the geometry of the masks: coherence in the true grid, overlap between images, and the controls


def held_out_rows(data_dir: Path, folder: str) -> list:
    return pq.read_table(data_dir / "images" / folder / "validation.parquet").column("pixels").to_pylist()


def model_batch(model_dir: Path, rows: list) -> dict:
    """`rows` as the model in `model_dir` reads them, through its own feature extractor."""
    return dict(SMAFeatureExtractor.from_pretrained(model_dir)(rows, return_tensors="pt"))


def load_model(model_dir: Path, checkpoint: Path | None = None, selector: dict | None = None):
    """The pretrained model (or its weights at `checkpoint`), optionally with another mask selector."""
    config = SMAConfig.from_pretrained(model_dir, **(selector or {}))
    if checkpoint is None:
        return SMAForMaskedModeling.from_pretrained(model_dir, config=config).eval()
    model = SMAForMaskedModeling(config)
    model.load_state_dict(load_file(checkpoint / "model.safetensors"))
    return model.eval()


def rate_control_masks(masks: torch.Tensor, seed: int) -> torch.Tensor:
    """Masks drawn independently per image with each position masked at its average rate in `masks` and the same
    count per image: what a fixed prior over positions gives, with no grouping per image. `masks` [images, length]
    must mask the same count in every image. Systematic sampling over a random order of the positions, in integers
    (a position's share of the draws is its count of masked images out of all images), keeps both exact."""
    counts = masks.sum(dim=1)
    if not (counts == counts[0]).all():
        raise ValueError("`masks` must mask the same count in every image.")
    generator = torch.Generator().manual_seed(seed)
    images, length = masks.shape
    masked_images = masks.long().sum(dim=0)  # per position: of `images` draws, how many masked it
    order = torch.rand(images, length, generator=generator).argsort(dim=1)
    after = masked_images[order].cumsum(dim=1)
    before = after - masked_images[order]
    start = torch.randint(images, (images, 1), generator=generator)
    # a position is drawn when a point start + j x images (j = 0, 1, ...) falls in its share (before, after]
    drawn = torch.div(after - start - 1, images, rounding_mode="floor") > torch.div(
        before - start - 1, images, rounding_mode="floor"
    )
    return torch.zeros_like(masks).scatter_(1, order, drawn)


def geometry_of(masks: torch.Tensor, valid: torch.Tensor, neighbours: np.ndarray) -> dict:
    return {
        "coherence": neighbour_share(masks.numpy(), valid.numpy(), neighbours),
        "overlap": float(pairwise_mask_overlap(masks, valid)),
    }


def mask_geometry(work_dir: Path, data_dir: Path, permutation: list[int]) -> dict:
    """Over pretraining, on the held-out images: the geometry (`geometry_of`) of (a)'s own masks, of the
    average-rate control, of (a)'s selector applied to (b)'s weights, and of random masks; ColorMAE's masks once."""
    neighbours = grid_neighbours(GRID, permutation)
    batch = model_batch(work_dir / "self_guided" / MODEL_DIR, held_out_rows(data_dir, TASK))
    valid = batch["attention_mask"].bool()
    selector_config = SMAConfig.from_pretrained(work_dir / "self_guided" / MODEL_DIR)
    selector = {name: getattr(selector_config, name) for name in SELECTOR_FIELDS}
    ratio = selector_config.masking_ratio
    random = random_masked_positions(valid, ratio, torch.Generator().manual_seed(0))
    steps = []
    for arm in ("self_guided", "random_masks"):
        checkpoints = sorted((work_dir / arm / CHECKPOINTS_DIR).glob(f"{CHECKPOINT_PREFIX}*"), key=checkpoint_step)
        final_step = json.loads((work_dir / arm / "pretraining_summary.json").read_text())["steps"]
        points = [(checkpoint_step(c), c) for c in checkpoints] + [(final_step, None)]  # None: the final model
        for step, checkpoint in points:
            model = load_model(work_dir / arm / MODEL_DIR, checkpoint, selector if arm == "random_masks" else None)
            own = self_guided_masks(model, batch, seed=0)
            entry = {"arm": arm, "step": step, **geometry_of(own, valid, neighbours)}
            if arm == "self_guided":
                entry["rate_control"] = geometry_of(rate_control_masks(own, seed=0), valid, neighbours)
            steps.append(entry)
    colormae = {
        color: geometry_of(
            colored_noise_masked_positions(valid, ratio, GRID, color, torch.Generator().manual_seed(0)),
            valid,
            grid_neighbours(GRID),
        )  # fmt: skip
        for color in NOISE_COLORS
    }
    final = [entry for entry in steps if entry["arm"] == "self_guided"][-1]
    random_geometry = geometry_of(random, valid, neighbours)
    return {
        "held_out_images": len(valid),
        "masking_ratio": ratio,
        "selector": selector,
        "over_training": steps,
        "random": random_geometry,
        "colormae": colormae,
        "final": {
            "coherence_vs_random": final["coherence"] / random_geometry["coherence"],
            "overlap": final["overlap"],
            "collapse_score": collapse_score(final["overlap"], random_geometry["overlap"]),
            "beats_rate_control": final["coherence"] > final["rate_control"]["coherence"],
        },
    }


def permuted_to_grid(values: torch.Tensor, permutation: list[int] | None) -> torch.Tensor:
    """[batch, 784] in input order -> in the true grid's row-major order (`permuted[i] = pixels[permutation[i]]`)."""
    if permutation is None:
        return values
    grid = torch.empty_like(values)
    grid[:, torch.as_tensor(permutation)] = values
    return grid


def draw_geometry(geometry: dict, spectra: dict, path: Path):
    """Coherence and overlap over pretraining, and the masks' spectra in the true grid."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (coherence, overlap, spectrum) = plt.subplots(1, 3, figsize=(13, 3.6))
    lines = {
        "(a) self-guided masks": ("self_guided", lambda e: e),
        "average-rate control of (a)": ("self_guided", lambda e: e["rate_control"]),
        "(a)'s selector on (b)'s weights": ("random_masks", lambda e: e),
    }
    for index, (label, (arm, part)) in enumerate(lines.items()):
        entries = [e for e in geometry["over_training"] if e["arm"] == arm]
        steps = [e["step"] for e in entries]
        coherence.plot(steps, [part(e)["coherence"] for e in entries], marker="o", color=f"C{index}", label=label)
        overlap.plot(steps, [part(e)["overlap"] for e in entries], marker="o", color=f"C{index}", label=label)
    for ax, key in ((coherence, "coherence"), (overlap, "overlap")):
        ax.axhline(geometry["random"][key], color="0.4", ls=":", label="random masks")
        ax.axhline(geometry["colormae"]["green"][key], color="C5", ls="--", label="ColorMAE green (knows the grid)")
        ax.set_xlabel("pretraining step")
    coherence.set(ylabel="share of a masked pixel's 4 grid neighbours masked", ylim=(0, 1))
    overlap.set(ylabel="mask overlap between images (Jaccard)", ylim=(0, 1))
    coherence.legend(fontsize=6)
    bands = np.arange(len(next(iter(spectra.values())))) + 0.5
    for index, (label, power) in enumerate(spectra.items()):
        spectrum.plot(bands / len(bands) * 0.5, power, marker=".", label=label, color=f"C{index + 5}")
    spectrum.set(xlabel="radial frequency (cycles per pixel)", ylabel="share of the mask's power", yscale="log")
    spectrum.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)


def mask_spectra(work_dir: Path, data_dir: Path, permutation: list[int]) -> dict[str, list[float]]:
    """Radial power spectra, in the true grid, of (a)'s final masks and of each noise colour's masks."""
    model = load_model(work_dir / "self_guided" / MODEL_DIR)
    batch = model_batch(work_dir / "self_guided" / MODEL_DIR, held_out_rows(data_dir, TASK))
    valid = batch["attention_mask"].bool()
    own = permuted_to_grid(self_guided_masks(model, batch, seed=0), permutation)
    spectra = {"(a) self-guided, in the true grid": radial_power(own.view(-1, *GRID)).tolist()}
    for color in NOISE_COLORS:
        noise = colored_noise_masked_positions(valid, model.config.masking_ratio, GRID, color,
                                               torch.Generator().manual_seed(0))  # fmt: skip
        spectra[f"ColorMAE {color}"] = radial_power(noise.view(-1, *GRID)).tolist()
    return spectra


def draw_figure2(work_dir: Path, data_dir: Path, permutation: list[int], paths: list[Path]):
    """Figure 2: (a)'s masks drawn back in the un-permuted grid, two draws for each of a few held-out images, written
    to each of `paths` (the hub folder's `masks.png` among them: sma-pretrain drew the permuted pixels as a grid)."""
    model = load_model(work_dir / "self_guided" / MODEL_DIR)
    rows = held_out_rows(data_dir, TASK)[:FIGURE_IMAGES]
    batch = model_batch(work_dir / "self_guided" / MODEL_DIR, rows)
    examples, masks, titles = [], [], []
    pixels = permuted_to_grid(torch.tensor(rows), permutation)
    for draw in range(FIGURE_DRAWS):
        drawn = permuted_to_grid(self_guided_masks(model, batch, seed=draw), permutation)
        for index in range(FIGURE_IMAGES):
            examples.append(pixels[index].numpy())
            masks.append(drawn[index].numpy())
            titles.append(f"image {index + 1}, draw {draw + 1}")
    png = figure_png(draw_masks(examples, np.stack(masks), grid_shape=GRID, titles=titles))
    for path in paths:
        path.write_bytes(png)


# --------------------------------------------------------------------------------
# Figure 4: how much the per-query top sets overlap as the number of inputs grows


@contextmanager
def captured_rows(into: list):
    """Record the sampled queries' rows of attention logits that the model's mask is chosen from (the arguments of
    `masked_positions_from_rows`), unchanged: the per-query top sets are read from exactly what the model scored."""
    original = modeling.masked_positions_from_rows

    def recording(row_scores, queries, valid, *args, **kwargs):
        into.append((row_scores, queries, valid))
        return original(row_scores, queries, valid, *args, **kwargs)

    modeling.masked_positions_from_rows = recording
    try:
        yield
    finally:
        modeling.masked_positions_from_rows = original


def crop_positions(size: int, permutation: list[int]) -> torch.Tensor:
    """The input positions holding the pixels of the central `size` x `size` crop, in increasing order."""
    start = (GRID[0] - size) // 2
    rows, columns = np.meshgrid(np.arange(start, start + size), np.arange(start, start + size), indexing="ij")
    where = np.empty(GRID[0] * GRID[1], dtype=np.int64)
    where[np.asarray(permutation)] = np.arange(GRID[0] * GRID[1])
    return torch.as_tensor(np.sort(where[(rows * GRID[1] + columns).ravel()]))


def top_set_union(work_dir: Path, data_dir: Path, permutation: list[int]) -> dict:
    """For central crops of several sizes (n pixels, fed at their own positions): the union of the sampled queries'
    top-k sets over the masking ratio x n, with k = round(ratio x n / queries) per image, each query's share of the
    mask (each query's row averaged over heads). This is the paper's rule, which leaves the mask's size to how much
    the top sets overlap: 1 when they do not overlap, up to the rounding of k. Beside it is the mask of the
    summed-rows rule, exact by design."""
    model = load_model(work_dir / "self_guided" / MODEL_DIR)
    config = model.config
    processor = SMAFeatureExtractor.from_pretrained(work_dir / "self_guided" / MODEL_DIR)
    rows = torch.tensor(held_out_rows(data_dir, TASK))
    table = []
    for size in CROPS:
        positions = crop_positions(size, permutation)
        batch = dict(processor(list(rows[:, positions].numpy()), return_tensors="pt"))
        batch["position_ids"] = positions.expand(len(rows), -1).clone()
        captured = []
        with captured_rows(captured):
            mask = self_guided_masks(model, batch, seed=0)
        row_scores, queries, valid = captured[0]
        probs = row_scores.float().masked_fill(~valid[:, None, None, :], -torch.inf).softmax(dim=-1).mean(dim=1)
        target = masked_counts(valid, config.masking_ratio).float()
        k = torch.round(target / queries.counts).long()  # per image: each query's share of the mask
        top = probs.topk(int(k.max()), dim=-1).indices  # [batch, slots, max k]
        within = torch.arange(top.shape[-1])[None, None, :] < k[:, None, None]
        votes = (queries.sampled[:, :, None] & within).long().flatten(1)  # unsampled slots count for nothing
        union = (torch.zeros(valid.shape, dtype=torch.long).scatter_add_(1, top.flatten(1), votes) > 0).sum(dim=1)
        table.append({
            "crop": size,
            "inputs": len(positions),
            "queries_per_image": float(queries.counts.float().mean()),
            "k": float(k.float().mean()),
            "per_query_union_over_target": float((union.float() / target).mean()),
            "summed_rows_over_target": float((mask.sum(dim=1) / target).mean()),
        })  # fmt: skip
    return {"masking_ratio": config.masking_ratio, "images": len(rows), "crops": table}


def draw_figure4(figure4: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, ax = plt.subplots(figsize=(5, 3.4))
    inputs = [row["inputs"] for row in figure4["crops"]]
    ax.plot(inputs, [row["per_query_union_over_target"] for row in figure4["crops"]], marker="o",
            label="union of per-query top-k sets (k = ratio x n / queries)")  # fmt: skip
    ax.plot(inputs, [row["summed_rows_over_target"] for row in figure4["crops"]], marker="s",
            label="summed rows (this package)")  # fmt: skip
    ax.set(xlabel="inputs n (central crops)", ylabel="masked / (masking ratio x n)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)


def geometry_markdown(geometry: dict, selection: dict, figure4: dict) -> str:
    random = geometry["random"]
    lines = ["", "## Does SMA find the grid?", ""]
    lines.append(f"On the {geometry['held_out_images']} held-out images, masking ratio {geometry['masking_ratio']}. "
                 "Coherence: the share of a masked pixel's 4 neighbours in the true 28x28 grid that are masked too; "
                 "overlap: mean Jaccard overlap of different images' masks.")  # fmt: skip
    lines += ["", "| masks | step | coherence | overlap |", "|---|---:|---:|---:|"]
    for entry in geometry["over_training"]:
        name = "(a) self-guided" if entry["arm"] == "self_guided" else "(a)'s selector on (b)'s weights"
        lines.append(f"| {name} | {entry['step']} | {entry['coherence']:.3f} | {entry['overlap']:.3f} |")
        if "rate_control" in entry:
            control = entry["rate_control"]
            lines.append(f"| average-rate control of (a) | {entry['step']} | {control['coherence']:.3f} | "
                         f"{control['overlap']:.3f} |")  # fmt: skip
    lines.append(f"| random masks | | {random['coherence']:.3f} | {random['overlap']:.3f} |")
    for color, numbers in geometry["colormae"].items():
        lines.append(
            f"| ColorMAE {color} (knows the grid) | | {numbers['coherence']:.3f} | {numbers['overlap']:.3f} |"
        )
    final = geometry["final"]
    lines += ["", f"At the end: coherence {final['coherence_vs_random']:.2f}x random masks', overlap "
              f"{final['overlap']:.3f}, collapse score {final['collapse_score']:.3f}, above the average-rate control: "
              f"{'yes' if final['beats_rate_control'] else 'no'}."]  # fmt: skip
    scores = ", ".join(f"{c} {v:.3f}" for c, v in selection["validation_probe_accuracy"].items())
    lines += ["", f"ColorMAE colour chosen on the validation accuracy of linear probes of the frozen encoders: "
              f"{selection['chosen']} ({scores})."]  # fmt: skip
    lines += ["", "## Figure 4: the overlap of per-query top sets", ""]
    lines.append("(a)'s final model on central crops of the held-out images; each sampled query's top-k set, k its "
                 "share of the mask (ratio x n / queries).")  # fmt: skip
    header = "| crop | inputs n | queries per image | k | per-query union / (ratio x n) | summed rows / (ratio x n) |"
    lines += ["", header, "|---:|---:|---:|---:|---:|---:|"]
    for row in figure4["crops"]:
        lines.append(f"| {row['crop']}x{row['crop']} | {row['inputs']} | {row['queries_per_image']:.1f} | "
                     f"{row['k']:.1f} | {row['per_query_union_over_target']:.3f} | "
                     f"{row['summed_rows_over_target']:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def images_card_args(data_dir: Path) -> list[str]:
    return card_args("images", MODEL_ID, ["images", "mnist"], data_dir / "images" / "data_card.json")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, default=ROOT / "data")
    parser.add_argument("--work_dir", type=Path, default=ROOT / "outputs" / "evidence" / "images")
    parser.add_argument("--results_dir", type=Path, default=ROOT / "benchmarks" / "results" / "images")
    parser.add_argument("--smoke", action="store_true", help="A few dozen images and a tiny model: the plumbing only.")
    args = parser.parse_args(argv)
    prepare_data(args.data_dir, args.smoke)
    command = shlex.join(["python", "benchmarks/images.py", *(argv if argv is not None else sys.argv[1:])])
    selection = choose_noise_color(images_experiment(args.data_dir, args.smoke), args.work_dir)
    experiment = images_experiment(args.data_dir, args.smoke, selection["chosen"])
    record = run_experiment(experiment, args.work_dir, args.results_dir, command)
    permutation = json.loads((args.data_dir / "images" / TASK / "permutation.json").read_text())["permutation"]
    geometry = mask_geometry(args.work_dir, args.data_dir, permutation)
    figure4 = top_set_union(args.work_dir, args.data_dir, permutation)
    spectra = mask_spectra(args.work_dir, args.data_dir, permutation)
    draw_geometry(geometry, spectra, args.results_dir / "geometry.png")
    model_dir = Path(record["pretraining"]["self_guided"]["model_dir"])
    figure2 = ["figure2_masks.png", MASK_FIGURE_FILE]
    draw_figure2(args.work_dir, args.data_dir, permutation,
                 [*(args.results_dir / name for name in figure2), model_dir / MASK_FIGURE_FILE])  # fmt: skip
    draw_figure4(figure4, args.results_dir / "figure4_top_sets.png")
    record.update(colormae_selection=selection, geometry=geometry, figure4=figure4, spectra=spectra)
    write_json_atomic(args.results_dir / "results.json", record)
    with (args.results_dir / "results.md").open("a") as markdown:
        markdown.write(geometry_markdown(geometry, selection, figure4))
    # the order the model reads the pixels in, which a user of the checkpoint needs (its card says so)
    shutil.copyfile(args.data_dir / "images" / TASK / "permutation.json", model_dir / "permutation.json")
    card_path = None if args.smoke else ROOT / "model_cards" / "sma-images.md"
    checkpoint_dir = (args.work_dir if args.smoke else ROOT) / "checkpoints" / MODEL_ID.split("/")[1]
    publish(model_dir, card_results(record, [TASK]), images_card_args(args.data_dir), card_path, args.results_dir,
            checkpoint_dir)  # fmt: skip
    return record


if __name__ == "__main__":
    main()
