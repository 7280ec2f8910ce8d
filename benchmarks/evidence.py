"""The evidence protocol that every experiment shares (chemistry first; proteins, images and physics reuse it).

Arms: (a) SMA pretrained with self-guided masks, (b) the same model pretrained with random masks of the same ratio,
(c) the same architecture without pretraining, all with the same data, steps and seed; (d) the classical tool of the
field. Per task and label budget (a seeded share of the training labels, stratified where there are classes), every
arm is fine-tuned with 3 seeds (best epoch on validation, test split read once) and the classical tool is fitted with
hyper-parameters chosen on validation; at the full budget, a linear probe on the frozen encoders of (a), (b) and of a
randomly initialised encoder. Each run writes, under its results folder: `results.json` (package versions, seeds,
data hashes, every per-seed number, wall times), `results.md` (the tables) and PNG figures.

The pieces a user calls on their own task live in the package (`sma-pretrain`, `sma-finetune`, `--label_fraction`,
`--linear_probe`, `sma_hf.tools.baselines`); this module only arranges them into the grid of one experiment.
"""

import importlib.metadata
import json
import platform
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sma_hf.tools import finetune, pretrain
from sma_hf.tools.baselines import classical_baseline
from sma_hf.tools.common import write_json_atomic
from sma_hf.tools.finetune import load_task
from sma_hf.tools.metrics import display_name


PRETRAINED_ARMS = ("self_guided", "random_masks")
ARM_LABELS = {
    "self_guided": "(a) SMA, self-guided masks",
    "random_masks": "(b) same model, random masks",
    "scratch": "(c) same architecture, no pretraining",
}
VERSIONED_PACKAGES = ("sma_hf", "torch", "transformers", "accelerate", "datasets", "scikit-learn", "rdkit", "numpy")


@dataclass
class Experiment:
    """One experiment's grid. Presets and task specs are shipped names or JSON paths."""

    name: str
    data_dir: Path
    tasks: list[str]
    presets: dict[str, str]  # arm ("self_guided", "random_masks") -> the config it is pretrained with
    pretrain_args: list[str]  # the same for both pretrained arms: data, steps, optimizer, seed
    finetune_args: list[str]  # the same for every arm and budget: epochs, batch, learning rate, pooling
    classical: list[tuple[str, str]]  # (features, model name) of `sma_hf.tools.baselines.classical_baseline`
    data_cards: list[Path]  # whose file hashes identify the data
    budgets: tuple[float, ...] = (0.1, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2)


def cell_label(arm: str, budget: float) -> str:
    return f"{ARM_LABELS[arm]}, {budget:.0%} labels"


def pretrain_arms(experiment: Experiment, work_dir: Path) -> dict[str, dict]:
    """Pretrain (a) and (b); each arm's hub-ready folder, command, wall time and final held-out numbers."""
    arms = {}
    for arm, preset in experiment.presets.items():
        argv = ["--config_name", preset, *experiment.pretrain_args, "--output_dir", str(work_dir / arm)]
        started = time.time()
        summary = pretrain.pretrain(pretrain.parse_args(argv), command=pretrain.redacted_command(argv))
        arms[arm] = {
            "model_dir": str(work_dir / arm / "model"),
            "preset": preset,
            "command": summary["command"],
            "wall_time_s": round(time.time() - started, 1),
            "final": summary["final"],
            "history": summary["history"],
        }
    return arms


def run_finetune(argv: list[str]) -> dict:
    started = time.time()
    results = finetune.finetune(finetune.parse_args(argv), command=shlex.join(["sma-finetune", *argv]))
    return {**results, "wall_time_s": round(time.time() - started, 1)}


def evaluate_arms(experiment: Experiment, arms: dict[str, dict], work_dir: Path) -> list[dict]:
    """Every cell of the grid: (task, budget, arm, protocol) -> results in `sma-finetune`'s format."""
    cells = []
    seeds = [str(seed) for seed in experiment.seeds]
    scratch_preset = experiment.presets["self_guided"]
    for task in experiment.tasks:
        name = load_task(task)["name"]
        for budget in experiment.budgets:
            models = {arm: ["--model_name_or_path", arms[arm]["model_dir"]] for arm in PRETRAINED_ARMS}
            models["scratch"] = ["--config_name", scratch_preset]
            for arm, model in models.items():
                out = work_dir / "finetune" / name / f"{arm}-{budget:g}"
                argv = [*model, "--task", task, "--data_dir", str(experiment.data_dir), "--output_dir", str(out),
                        "--seeds", *seeds, "--label_fraction", f"{budget:g}", "--label", cell_label(arm, budget),
                        *experiment.finetune_args]  # fmt: skip
                cells.append({"budget": budget, "arm": arm, "row": ARM_LABELS[arm], **run_finetune(argv)})
            for features, model_name in experiment.classical:
                started = time.time()
                row = f"(d) {model_name.replace('_', ' ')} on {features} features"
                label = f"{row}, {budget:.0%} labels"
                results = classical_baseline(task, str(experiment.data_dir), features, model_name,
                                             list(experiment.seeds), budget, label)  # fmt: skip
                results["wall_time_s"] = round(time.time() - started, 1)
                cells.append({"budget": budget, "arm": f"classical_{model_name}", "row": row, **results})
        probes = {arm: ["--model_name_or_path", arms[arm]["model_dir"]] for arm in PRETRAINED_ARMS}
        probes["scratch"] = ["--config_name", scratch_preset]  # a random encoder per seed
        for arm, model in probes.items():
            out = work_dir / "probe" / name / arm
            argv = [*model, "--task", task, "--data_dir", str(experiment.data_dir), "--output_dir", str(out),
                    "--seeds", *seeds, "--linear_probe", "--label", f"{ARM_LABELS[arm]}, linear probe"]  # fmt: skip
            row = f"{ARM_LABELS[arm]}: linear probe of the frozen encoder"
            cells.append({"budget": 1.0, "arm": f"probe_{arm}", "row": row, **run_finetune(argv)})
    return cells


def data_hashes(cards: list[Path]) -> dict[str, str]:
    hashes = {}
    for card in cards:
        for dataset in json.loads(card.read_text())["datasets"].values():
            hashes.update({entry["path"]: entry["sha256"] for entry in dataset["files"]})
    return hashes


def versions() -> dict[str, str]:
    found = {}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def run_experiment(experiment: Experiment, work_dir: Path, results_dir: Path, command: str) -> dict:
    """Pretrain, evaluate every cell, and write results.json, results.md and the figures to `results_dir`."""
    started = time.time()
    arms = pretrain_arms(experiment, work_dir)
    cells = evaluate_arms(experiment, arms, work_dir)
    record = {
        "experiment": experiment.name,
        "command": command,
        "wall_time_s": round(time.time() - started, 1),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "versions": versions(),
        "seeds": list(experiment.seeds),
        "budgets": list(experiment.budgets),
        "data_sha256": data_hashes(experiment.data_cards),
        "pretrain_args": experiment.pretrain_args,
        "finetune_args": experiment.finetune_args,
        "pretraining": arms,
        "cells": cells,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(results_dir / "results.json", record)
    (results_dir / "results.md").write_text(results_markdown(record))
    draw_result_figures(record, results_dir)
    return record


def _cell(record: dict, task: str, budget: float, arm: str) -> dict | None:
    return next(
        (c for c in record["cells"] if (c["task"]["name"], c["budget"], c["arm"]) == (task, budget, arm)), None
    )


def _summary(cell: dict | None, split: str, metric: str) -> str:
    if cell is None or metric not in cell[split]:
        return "—"
    block = cell[split][metric]
    return f"{block['mean']:.3f} ± {block['std']:.3f}"


def row_order(record: dict) -> list[str]:
    arms = list(dict.fromkeys(cell["arm"] for cell in record["cells"]))
    return [a for a in arms if not a.startswith("probe_")] + [a for a in arms if a.startswith("probe_")]


def results_markdown(record: dict) -> str:
    """One table per task: test metric (mean ± sample std over seeds) per arm and label budget, plus the task's
    other test metrics and the validation metric at the full budget."""
    lines = [f"# {record['experiment']}: does SMA pretraining pay?", ""]
    lines.append(f"Command: `{record['command']}` ({record['wall_time_s'] / 60:.1f} min on {record['machine']}).")
    lines.append("Mean ± sample standard deviation over seeds " + ", ".join(map(str, record["seeds"])) + "; the best")
    lines.append("epoch and every hyper-parameter chosen on validation; the test split read once per seed.")
    for task_name in dict.fromkeys(cell["task"]["name"] for cell in record["cells"]):
        first = next(c for c in record["cells"] if c["task"]["name"] == task_name)
        task = first["task"]
        metric = task["metric"]
        others = [m for m in first["test"] if m != metric]
        arrow = "↑" if task["greater_is_better"] else "↓"
        lines += ["", f"## {task_name}: {task['description']}", ""]
        counts = f"{task['num_train']:,} / {task['num_validation']:,} / {task['num_test']:,}"
        lines.append(f"Train / validation / test: {counts}.")
        lines.append("")
        budgets = [b for b in record["budgets"]]
        header = [f"test {display_name(metric)} {arrow}, {b:.0%} labels" for b in budgets]
        header += [f"test {display_name(m)}, 100%" for m in others] + [f"validation {display_name(metric)}, 100%"]
        lines.append("| model | " + " | ".join(header) + " |")
        lines.append("|---" * (len(header) + 1) + "|")
        for arm in row_order(record):
            cells = {b: _cell(record, task_name, b, arm) for b in budgets}
            if not any(cells.values()):
                continue
            label = next(c for c in cells.values() if c)["row"]
            values = [_summary(cells[b], "test", metric) for b in budgets]
            values += [_summary(cells[1.0], "test", m) for m in others]
            values.append(_summary(cells[1.0], "validation", metric))
            lines.append(f"| {label} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def draw_result_figures(record: dict, results_dir: Path):
    """`<task>.png`: the test metric of every arm per label budget (mean and the per-seed values);
    `pretraining.png`: the held-out losses and the mask overlap of (a) and (b) over the pretraining steps;
    `masks.png`: the masks (a) chooses for held-out examples at the end of pretraining."""
    import shutil

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (losses, overlaps) = plt.subplots(1, 2, figsize=(8, 3))
    for index, (arm, pretrained) in enumerate(record["pretraining"].items()):
        evaluations = [entry for entry in pretrained["history"] if "eval_loss" in entry]
        steps = [entry["step"] for entry in evaluations]
        losses.plot(steps, [e["eval_loss"] for e in evaluations], color=f"C{index}", label=f"{ARM_LABELS[arm]}")
        if arm == "self_guided":
            losses.plot(steps, [e["eval_loss_self_guided"] for e in evaluations], color=f"C{index}", ls="--",
                        label="(a) on its own self-guided masks")  # fmt: skip
            overlaps.plot(steps, [e["mask_overlap_self_guided"] for e in evaluations], color=f"C{index}",
                          label="self-guided masks of (a)")  # fmt: skip
            overlaps.plot(steps, [e["mask_overlap_random"] for e in evaluations], color="0.5", ls=":",
                          label="random masks of the same size")  # fmt: skip
    losses.set(xlabel="pretraining step", ylabel="held-out loss (random masks unless said)")
    overlaps.set(xlabel="pretraining step", ylabel="mask overlap across examples", ylim=(0, 1))
    losses.legend(fontsize=6), overlaps.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(results_dir / "pretraining.png", dpi=130)
    plt.close(figure)
    masks = Path(record["pretraining"]["self_guided"]["model_dir"]) / "masks.png"
    if masks.is_file():
        shutil.copyfile(masks, results_dir / "masks.png")

    for task_name in dict.fromkeys(cell["task"]["name"] for cell in record["cells"]):
        task = next(c for c in record["cells"] if c["task"]["name"] == task_name)["task"]
        metric = task["metric"]
        arms = [a for a in row_order(record) if _cell(record, task_name, 1.0, a)]
        figure, ax = plt.subplots(figsize=(1.2 + 0.9 * len(arms), 3.4))
        width = 0.8 / len(record["budgets"])
        for b_index, budget in enumerate(record["budgets"]):
            for a_index, arm in enumerate(arms):
                cell = _cell(record, task_name, budget, arm)
                if cell is None:
                    continue
                x = a_index + (b_index - (len(record["budgets"]) - 1) / 2) * width
                block = cell["test"][metric]
                ax.bar(x, block["mean"], width * 0.9, color=f"C{b_index}", alpha=0.75,
                       label=f"{budget:.0%} of the labels" if a_index == 0 else None)  # fmt: skip
                ax.scatter([x] * len(block["values"]), block["values"], s=8, color="black", zorder=3)
        ax.set_xticks(range(len(arms)))
        labels = [next(c for c in record["cells"] if c["arm"] == a)["row"] for a in arms]
        ax.set_xticklabels([label.replace(", ", ",\n", 1) for label in labels], fontsize=6, rotation=30, ha="right")
        ax.set_ylabel(f"test {display_name(metric)} ({'higher' if task['greater_is_better'] else 'lower'} is better)")
        ax.set_title(f"{task_name}: mean over seeds (bars) and each seed (dots)", fontsize=9)
        ax.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(results_dir / f"{task_name}.png", dpi=130)
        plt.close(figure)
