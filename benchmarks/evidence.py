"""The evidence protocol that every experiment shares (`chemistry.py` and `proteins.py`; later domains reuse it).

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
import os
import platform
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from sma_hf import SMAConfig
from sma_hf.tools import finetune, hub, pretrain
from sma_hf.tools.baselines import classical_baseline
from sma_hf.tools.common import TASKS_DIR, OutputDirInUse, UsageError, load_sma_config, write_json_atomic
from sma_hf.tools.mask_health import MASK_FIGURE_FILE
from sma_hf.tools.metrics import display_name
from sma_hf.tools.task_data import load_task


ROOT = Path(__file__).resolve().parents[1]
PRETRAINED_ARMS = ("self_guided", "random_masks")
ARM_LABELS = {
    "self_guided": "(a) SMA, self-guided masks",
    "random_masks": "(b) same model, random masks",
    "scratch": "(c) same architecture, no pretraining",
}
VERSIONED_PACKAGES = ("sma_hf", "torch", "transformers", "accelerate", "datasets", "scikit-learn", "rdkit", "numpy",
                      "lightgbm", "pythia8mc", "fastjet")  # fmt: skip


@dataclass
class ExtraArm:
    """A pretrained arm besides (a) and (b), fine-tuned on its own task (e.g. ColorMAE's masks, which need the
    images' grid and so the un-permuted images)."""

    label: str
    preset: str
    pretrain_args: list[str]  # instead of the experiment's
    task: str
    budgets: tuple[float, ...]


@dataclass
class Experiment:
    """One experiment's grid. Presets and task specs are shipped names or JSON paths."""

    name: str
    data_dir: Path
    tasks: list[str]
    presets: dict[str, str]  # arm ("self_guided", "random_masks") -> the config it is pretrained with
    pretrain_args: list[str]  # the same for both pretrained arms: data, steps, optimizer, seed
    finetune_args: list[str]  # the same for every arm and budget: epochs, batch, learning rate, pooling
    classical: list[tuple]  # (features, model name[, grid]) of `sma_hf.tools.baselines.classical_baseline`
    data_cards: list[Path]  # whose file hashes identify the data
    budgets: tuple[float, ...] = (0.1, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    task_budgets: dict[str, tuple[float, ...]] = field(default_factory=dict)  # task name -> instead of `budgets`
    classical_only_tasks: list[str] = field(default_factory=list)  # task names whose neural rows did not fit
    linear_probes: bool = True
    probe_budgets: tuple[float, ...] = (1.0,)
    extra_arms: dict[str, ExtraArm] = field(default_factory=dict)
    budget_finetune_args: dict[float, list[str]] = field(default_factory=dict)  # budget -> after `finetune_args`

    def arm_label(self, arm: str) -> str:
        return self.extra_arms[arm].label if arm in self.extra_arms else ARM_LABELS[arm]


def cell_label(arm: str, budget: float, label: str | None = None) -> str:
    return f"{label or ARM_LABELS[arm]}, {budget:.0%} labels"


def pretrain_arms(experiment: Experiment, work_dir: Path) -> dict[str, dict]:
    """Pretrain (a) and (b); each arm's hub-ready folder, command, wall time and final held-out numbers."""
    arms = {}
    plans = {arm: (preset, experiment.pretrain_args) for arm, preset in experiment.presets.items()}
    plans.update({arm: (extra.preset, extra.pretrain_args) for arm, extra in experiment.extra_arms.items()})
    for arm, (preset, pretrain_args) in plans.items():
        argv = ["--config_name", preset, *pretrain_args, "--output_dir", str(work_dir / arm)]
        started = time.time()
        summary = pretrain_or_reuse(argv, work_dir / arm, preset)
        arms[arm] = {
            "label": experiment.arm_label(arm),
            "model_dir": str(work_dir / arm / "model"),
            "preset": preset,
            "command": summary["command"],
            "wall_time_s": round(time.time() - started, 1),
            "final": summary["final"],
            "history": summary["history"],
        }
    return arms


def pretrain_or_reuse(argv: list[str], output_dir: Path, config_name: str) -> dict:
    """`sma-pretrain argv` (writing to `output_dir`), and its summary. A finished run of the same command whose model
    has the config `config_name` resolves to is reused, an interrupted one of the same settings resumed from its
    newest checkpoint; anything else in `output_dir` (a run of another command or config, or one stopped before its
    first checkpoint) is this study's own output and is made again."""
    saved = output_dir / pretrain.SUMMARY_FILE
    command = pretrain.redacted_command(argv)
    if saved.is_file() and json.loads(saved.read_text())["command"] == command:
        # every field as resolved, defaults included: a default that changed since makes the run again
        wanted = load_sma_config(None, config_name)
        trained = SMAConfig.from_pretrained(output_dir / pretrain.MODEL_DIR)
        if all(getattr(trained, name) == getattr(wanted, name) for name in SMAConfig.__annotations__):  # SMA's own
            return json.loads(saved.read_text())
    elif not saved.is_file() and pretrain.latest_checkpoint(output_dir) is not None:
        try:
            return pretrain.pretrain(
                pretrain.parse_args([*argv, "--resume_from_checkpoint", "latest"]), command=command
            )
        except UsageError:  # written with other settings (`DataPosition`): made again below
            pass
    shutil.rmtree(output_dir, ignore_errors=True)
    return pretrain.pretrain(pretrain.parse_args(argv), command=command)


def pretrain_once(config: dict, argv: list[str], folder: Path) -> dict:
    """`pretrain_or_reuse` of `config` (written to `folder/config.json`) with the flags `argv`, into
    `folder/pretrained`."""
    path = folder / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    output_dir = folder / "pretrained"
    return pretrain_or_reuse(
        ["--config_name", str(path), *argv, "--output_dir", str(output_dir)], output_dir, str(path)
    )


def run_finetune(argv: list[str]) -> dict:
    started = time.time()
    results = finetune.finetune(finetune.parse_args(argv), command=shlex.join(["sma-finetune", *argv]))
    return {**results, "wall_time_s": round(time.time() - started, 1)}


def finetune_once(argv: list[str], output_dir: Path) -> dict:
    """`run_finetune` into `output_dir`: the same run (arguments, starting weights, data, config; `sma-finetune`
    decides) reads back the seeds it finished and trains the others. Anything else there (another run, or one too
    old to record what it was) is this study's own output and is made again."""
    try:
        return run_finetune(argv)
    except OutputDirInUse:
        shutil.rmtree(output_dir)
        return run_finetune(argv)


def evaluate_arms(experiment: Experiment, arms: dict[str, dict], work_dir: Path) -> list[dict]:
    """Every cell of the grid: (task, budget, arm, protocol) -> results in `sma-finetune`'s format."""
    cells = []
    for task in experiment.tasks:
        name = load_task(task)["name"]
        neural = name not in experiment.classical_only_tasks
        for budget in experiment.task_budgets.get(name, experiment.budgets):
            if neural:
                cells += [finetune_cell(experiment, arms, task, budget, arm, work_dir) for arm in ARM_LABELS]
            cells += [classical_cell(experiment, task, budget, *tool) for tool in experiment.classical]
        if neural and experiment.linear_probes:
            for budget in experiment.probe_budgets:
                cells += [probe_cell(experiment, arms, task, arm, work_dir, budget) for arm in ARM_LABELS]
    for arm, extra in experiment.extra_arms.items():
        cells += [finetune_cell(experiment, arms, extra.task, budget, arm, work_dir) for budget in extra.budgets]
    return cells


def _model_args(experiment: Experiment, arms: dict[str, dict], arm: str) -> list[str]:
    if arm == "scratch":  # the self-guided arm's architecture, randomly initialised per seed
        return ["--config_name", experiment.presets["self_guided"]]
    return ["--model_name_or_path", arms[arm]["model_dir"]]


def finetune_cell(experiment: Experiment, arms: dict, task: str, budget: float, arm: str, work_dir: Path) -> dict:
    out = work_dir / "finetune" / load_task(task)["name"] / f"{arm}-{budget:g}"
    argv = [*_model_args(experiment, arms, arm), "--task", task, "--data_dir", str(experiment.data_dir),
            "--output_dir", str(out), "--seeds", *map(str, experiment.seeds), "--label_fraction", f"{budget:g}",
            "--label", cell_label(arm, budget, experiment.arm_label(arm)), *experiment.finetune_args,
            *experiment.budget_finetune_args.get(budget, [])]  # fmt: skip
    return {"budget": budget, "arm": arm, "row": experiment.arm_label(arm), **finetune_once(argv, out)}


def classical_cell(experiment: Experiment, task: str, budget: float, features: str, model_name: str, grid=None):
    started = time.time()
    row = f"(d) {model_name.replace('_', ' ')} on {features} features"
    results = classical_baseline(task, str(experiment.data_dir), features, model_name, list(experiment.seeds),
                                 budget, f"{row}, {budget:.0%} labels", grid)  # fmt: skip
    results["wall_time_s"] = round(time.time() - started, 1)
    return {"budget": budget, "arm": f"classical_{model_name}_{features}", "row": row, **results}


def probe_cell(experiment: Experiment, arms: dict, task: str, arm: str, work_dir: Path, budget: float) -> dict:
    out = work_dir / "probe" / load_task(task)["name"] / (arm if budget == 1.0 else f"{arm}-{budget:g}")
    label = f"{ARM_LABELS[arm]}, linear probe"
    argv = [*_model_args(experiment, arms, arm), "--task", task, "--data_dir", str(experiment.data_dir),
            "--output_dir", str(out), "--seeds", *map(str, experiment.seeds), "--linear_probe"]  # fmt: skip
    if budget != 1.0:
        argv += ["--label_fraction", f"{budget:g}", "--label", cell_label(arm, budget, label)]
    else:
        argv += ["--label", label]
    row = f"{ARM_LABELS[arm]}: linear probe of the frozen encoder"
    return {"budget": budget, "arm": f"probe_{arm}", "row": row, **finetune_once(argv, out)}


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
        "task_budgets": {task: list(budgets) for task, budgets in experiment.task_budgets.items()},
        "classical_only_tasks": experiment.classical_only_tasks,
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


def write_smoke_data(data_dir: Path, corpus: str, column: str, inputs: list[str], tasks: list[str], label):
    """Tiny made-up files in a corpus's layout, for a smoke run: a pretraining pool of `inputs[:40]` (the other 20
    held out), and per shipped task its spec (as `data_dir/<task>.json`) and splits of rows 0-39, 40-49 and 50-59
    (train, validation, test), labelled `label(spec, index in the split, input)`."""
    pool = data_dir / corpus / "pretrain"
    pool.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({column: inputs[:40]}), pool / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({column: inputs[40:]}), pool / "validation-00000-of-00001.parquet")
    for task in tasks:
        spec = json.loads((TASKS_DIR / f"{task}.json").read_text())
        for split, part in (("train", inputs[:40]), ("validation", inputs[40:50]), ("test", inputs[50:])):
            path = data_dir / spec["data_files"][split]
            path.parent.mkdir(parents=True, exist_ok=True)
            labels = [label(spec, index, value) for index, value in enumerate(part)]
            pq.write_table(pa.table({column: part, "label": labels}), path)
        (data_dir / f"{task}.json").write_text(json.dumps(spec))


def card_args(domain: str, model_id: str, tags: list[str], data_card: Path) -> list[str]:
    """`sma-model-card`'s arguments for a checkpoint (besides its folder and results); the data card if it exists."""
    argv = ["--domain", domain, "--model_id", model_id, "--tags", *tags]
    return argv + ["--data_card", str(data_card)] if data_card.is_file() else argv


def card_results(record: dict, tasks: list[str]) -> list[dict]:
    """The results a card shows: the self-guided model's own first (full budget, in the order of `tasks`; its
    model-index), then every other arm and budget."""
    own = [c for c in record["cells"] if c["arm"] == "self_guided" and c["budget"] == 1.0]  # one per task
    others = [c for c in record["cells"] if c not in own]
    return sorted(own, key=lambda c: tasks.index(c["task"]["name"])) + others


def publish(model_dir: Path, results: list[dict], card_args: list[str], card_path: Path | None = None,
            figure_dir: Path | None = None, checkpoint_dir: Path | None = None) -> Path:  # fmt: skip
    """Render the card of the hub-ready folder (`sma-model-card` with `card_args`: domain, model id, tags, data
    card) from its pretraining summary and `results` (the model's own first); copy it to `card_path` (the committed
    card under model_cards/), showing the committed copy of the mask figure in `figure_dir` (the hub folder carries
    its own); and copy the whole folder to `checkpoint_dir` (the committed checkpoint under checkpoints/, which
    loads offline from a fresh clone and is what `sma-model-card --push_to_hub` publishes)."""
    argv = ["--model_dir", str(model_dir), *card_args]
    results_dir = model_dir.parent / "card_results"
    results_dir.mkdir(exist_ok=True)
    for index, result in enumerate(results):
        path = results_dir / f"{index:02d}-{result['task']['name']}.json"
        path.write_text(json.dumps(result))
        argv += ["--results", str(path)] if index == 0 else [str(path)]
    hub.main(argv)
    if checkpoint_dir is not None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the experiment's own output, made again
        shutil.copytree(model_dir, checkpoint_dir, ignore=shutil.ignore_patterns(".*"))
        for name in ("README.md", "pretraining_summary.json"):  # their commands and paths, from the root
            (checkpoint_dir / name).write_text((checkpoint_dir / name).read_text().replace(f"{ROOT}/", ""))
    if card_path is not None:
        figure = os.path.relpath(figure_dir / MASK_FIGURE_FILE, card_path.parent)
        card = (model_dir / "README.md").read_text().replace(f"]({MASK_FIGURE_FILE})", f"]({figure})")
        card_path.write_text(card.replace(f"{ROOT}/", ""))  # its commands, run from the repository's root
    return model_dir / "README.md"


def _cell(record: dict, task: str, budget: float, arm: str) -> dict | None:
    return next(
        (c for c in record["cells"] if (c["task"]["name"], c["budget"], c["arm"]) == (task, budget, arm)), None
    )


def _summary(cell: dict | None, split: str, metric: str) -> str:
    if cell is None or metric not in cell[split]:
        return "—"
    block = cell[split][metric]
    return f"{block['mean']:.3f} ± {block['std']:.3f}"


def task_budgets(record: dict, task_name: str) -> list[float]:
    return sorted({c["budget"] for c in record["cells"] if c["task"]["name"] == task_name})


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
        budgets = task_budgets(record, task_name)
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
            values += [_summary(cells.get(1.0), "test", m) for m in others]
            values.append(_summary(cells.get(1.0), "validation", metric))
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
        losses.plot(steps, [e["eval_loss"] for e in evaluations], color=f"C{index}", label=pretrained["label"])
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
        budgets = task_budgets(record, task_name)
        arms = [a for a in row_order(record) if any(_cell(record, task_name, b, a) for b in budgets)]
        figure, ax = plt.subplots(figsize=(1.2 + 0.9 * len(arms), 3.4))
        width = 0.8 / len(budgets)
        for b_index, budget in enumerate(budgets):
            for a_index, arm in enumerate(arms):
                cell = _cell(record, task_name, budget, arm)
                if cell is None:
                    continue
                x = a_index + (b_index - (len(budgets) - 1) / 2) * width
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
