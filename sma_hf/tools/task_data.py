"""Fine-tuning tasks: a task spec (shipped by name or a JSON path), its splits, which rows are usable, seeded label
subsets, and the results record every fine-tuning and baseline writes (so that cards and tables read them alike)."""

import json
import math
from pathlib import Path

import numpy as np

from ..configuration_sma import SMAConfig
from .common import FILE_BUILDERS, TASKS_DIR, shipped_or_path, usable_input
from .metrics import METRICS, greater_is_better


PROBLEM_TYPES = ("regression", "single_label_classification", "token_classification")


SPLITS = ("train", "validation", "test")


def load_task(name_or_path: str) -> dict:
    """A task spec, by path or by the name of a shipped one; checked, with `greater_is_better` from its metric."""
    path = shipped_or_path(name_or_path, TASKS_DIR, "--task")
    task = json.loads(path.read_text())
    required = ("name", "data_files", "input_column", "label_column", "problem_type", "num_labels", "metric")
    missing = [key for key in required if key not in task]
    if missing:
        raise ValueError(f"Task spec {path} lacks {missing}.")
    if task["problem_type"] not in PROBLEM_TYPES:
        raise ValueError(
            f"Task spec {path}: problem_type must be one of {PROBLEM_TYPES}, got {task['problem_type']!r}."
        )
    if task["metric"] not in METRICS:
        raise ValueError(f"Task spec {path}: metric must be one of {METRICS}, got {task['metric']!r}.")
    if sorted(task["data_files"]) != sorted(SPLITS):
        raise ValueError(f"Task spec {path}: data_files must name exactly the splits {SPLITS}.")
    task["greater_is_better"] = greater_is_better(task["metric"])
    task.setdefault("description", task["name"])
    return task


def load_splits(task: dict, data_dir: str):
    from datasets import load_dataset

    splits = {}
    for split, relative in task["data_files"].items():
        path = Path(data_dir) / relative
        if not path.is_file():
            raise FileNotFoundError(
                f"Task {task['name']!r}: {split} file {path} does not exist (run sma-prepare-data or pass --data_dir)."
            )
        builder = FILE_BUILDERS.get(path.suffix)
        if builder is None or builder == "text":
            raise ValueError(f"Task {task['name']!r}: {path} must be parquet, json/jsonl or csv.")
        dataset = load_dataset(builder, data_files=str(path), split="train")
        for column in (task["input_column"], task["label_column"]):
            if column not in dataset.column_names:
                raise ValueError(
                    f"Task {task['name']!r}: column {column!r} is not in {path} (columns: {dataset.column_names})."
                )
        if len(dataset) == 0:
            raise ValueError(f"Task {task['name']!r}: {split} file {path} has no rows.")
        splits[split] = dataset
    return splits


def row_problem(value, label, task: dict, config: SMAConfig) -> str | None:
    """Why a task row cannot be used (its input by `common.usable_input`'s rule, then its label), or None."""
    value, reason = usable_input(value, config)
    if reason is not None:
        return reason
    if label is None:
        return "missing label"
    if task["problem_type"] == "token_classification":
        num_elements = len(value.encode()) if isinstance(value, str) else len(value)  # UTF-8 bytes or elements
        if len(label) != num_elements:
            return "number of labels differs from the number of input elements"
        return None
    if not math.isfinite(float(label)):
        return "non-finite label"
    return None


def usable_rows(dataset, split: str, task: dict, config: SMAConfig, skipped: dict):
    """The rows of a split that can be used; the others are counted in `skipped[split][reason]`. Class labels must
    be ids in [0, num_labels): anything else is an error, not a skip (the task spec and the data disagree)."""
    values, labels = dataset[task["input_column"]], dataset[task["label_column"]]
    reasons = [row_problem(v, y, task, config) for v, y in zip(values, labels)]
    for reason in filter(None, reasons):
        skipped.setdefault(split, {})
        skipped[split][reason] = skipped[split].get(reason, 0) + 1
    if any(reasons):
        dataset = dataset.select([i for i, reason in enumerate(reasons) if reason is None])
    if len(dataset) == 0:
        raise ValueError(f"Task {task['name']!r}: no usable row in the {split} split ({skipped[split]}).")
    if task["problem_type"] != "regression":
        ids = np.concatenate([np.ravel(y) for y in dataset[task["label_column"]]]).astype(np.float64)
        if (ids != np.round(ids)).any() or ids.min() < 0 or ids.max() >= task["num_labels"]:
            raise ValueError(
                f"Task {task['name']!r}: {split} labels must be class ids in [0, {task['num_labels']}), "
                f"found values from {ids.min()} to {ids.max()}."
            )
    return dataset


def label_subset(dataset, task: dict, fraction: float, seed: int):
    """A seeded share of the training rows: the label budget. Single-label classes keep their proportions (at least
    one row per class); a fraction of 1 keeps every row."""
    if fraction == 1.0:
        return dataset
    # by hand: `Dataset.train_test_split(stratify_by_column=...)` keeps no row of a class it rounds to zero (it refuses
    # classes of one row), and the committed results were made with these subsets
    rng = np.random.default_rng([seed, 1729])  # its own stream, apart from the initialisation's
    if task["problem_type"] == "single_label_classification":
        labels = np.asarray(dataset[task["label_column"]])
        groups = [np.flatnonzero(labels == value) for value in np.unique(labels)]
    else:
        groups = [np.arange(len(dataset))]
    chosen = [rng.permutation(group)[: max(1, round(fraction * len(group)))] for group in groups]
    return dataset.select(sorted(np.concatenate(chosen).tolist()))


def summarize(values: list[float]) -> dict:
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
        "values": [float(v) for v in array],
    }


def results_record(
    task: dict, label: str, model: str, runs: list[dict], counts: dict, skipped: dict, command, **extra
) -> dict:
    """The results of one model on one task over seeds, as `sma-finetune` writes them to `results.json`: every
    metric on validation and test as mean, sample standard deviation and per-seed values (also written by the
    classical baselines and the experiments, so that cards and tables read them alike)."""
    metric_names = [m for m in METRICS if m in runs[0]["test"]]
    return {
        "task": {
            "name": task["name"],
            "description": task["description"],
            "problem_type": task["problem_type"],
            "metric": task["metric"],
            "greater_is_better": task["greater_is_better"],
            **{f"num_{split}": count for split, count in counts.items()},
        },
        "model_name_or_path": model,
        "label": label,
        "seeds": [run["seed"] for run in runs],
        **extra,
        "skipped_rows": skipped,
        **{
            split: {name: summarize([run[split][name] for run in runs]) for name in metric_names}
            for split in ("validation", "test")
        },
        "runs": runs,
        "command": command,
    }
