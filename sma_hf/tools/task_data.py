"""Fine-tuning tasks: a task spec (shipped by name or a JSON path), its splits, which rows are usable, seeded label
subsets, and the results record every fine-tuning and baseline writes (so that cards and tables read them alike)."""

import json
import math
from pathlib import Path

import numpy as np

from ..configuration_sma import SMAConfig
from .common import FILE_BUILDERS, TASKS_DIR, UsageError, shipped_or_path, usable_input
from .metrics import METRICS, greater_is_better


PROBLEM_TYPES = ("regression", "single_label_classification", "token_classification")


SPLITS = ("train", "validation", "test")


def load_task(name_or_path: str) -> dict:
    """A task spec, by path or by the name of a shipped one; checked, with `greater_is_better` from its metric."""
    path = shipped_or_path(name_or_path, TASKS_DIR, "--task")
    return checked_task(json.loads(path.read_text()), path)


def table_task(files: dict[str, str], input_column: str, label_column: str, problem_type, metric) -> tuple:
    """The task of your own table (`--train_file` ...), and its splits: what a spec would say, read off the data.
    Numbers that are not all integers are a regression, anything else single-label classes (`class_names`); the
    metric defaults to RMSE, ROC-AUC for two classes, else macro-F1."""
    name = Path(files["train"]).stem
    data_files = {split: str(Path(path).resolve()) for split, path in files.items()}
    task = {"name": name, "data_files": data_files, "input_column": input_column, "label_column": label_column}
    splits = load_splits(task, data_dir="/")
    train = splits["train"][label_column]
    if problem_type is None:
        numbers = all(isinstance(y, (int, float)) and not isinstance(y, bool) for y in train if y is not None)
        integers = numbers and all(float(y).is_integer() for y in train if y is not None)
        problem_type = "regression" if numbers and not integers else "single_label_classification"
    num_labels = 1
    if problem_type == "single_label_classification":
        num_labels = len({y for y in train if y is not None})
    elif problem_type == "token_classification":
        num_labels = 1 + max(int(max(row)) for row in train if row)
    if metric is None and problem_type == "token_classification":
        metric = "accuracy"
    elif metric is None:
        metric = {1: "rmse", 2: "roc_auc"}.get(num_labels, "macro_f1")
    task.update(problem_type=problem_type, num_labels=num_labels, metric=metric)
    print(f"Task {name!r} from your table: {problem_type}, {num_labels} label(s), selected on validation {metric}")
    return checked_task(task, "your table"), splits


def checked_task(task: dict, path) -> dict:
    """`task` with `greater_is_better` and a description, or a one-line error naming what is wrong in it."""
    required = ("name", "data_files", "input_column", "label_column", "problem_type", "num_labels", "metric")
    missing = [key for key in required if key not in task]
    if missing:
        raise UsageError(f"Task spec {path} lacks {missing}.")
    if task["problem_type"] not in PROBLEM_TYPES:
        raise UsageError(
            f"Task spec {path}: problem_type must be one of {PROBLEM_TYPES}, got {task['problem_type']!r}."
        )
    if task["metric"] not in METRICS:
        raise UsageError(f"Task spec {path}: metric must be one of {METRICS}, got {task['metric']!r}.")
    if sorted(task["data_files"]) != sorted(SPLITS):
        raise UsageError(f"Task spec {path}: data_files must name exactly the splits {SPLITS}.")
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
            raise UsageError(f"Task {task['name']!r}: {path} must be parquet, json/jsonl or csv.")
        dataset = load_dataset(builder, data_files=str(path), split="train")
        for column in (task["input_column"], task["label_column"]):
            if column not in dataset.column_names:
                raise UsageError(
                    f"Task {task['name']!r}: column {column!r} is not in {path} (columns: {dataset.column_names})."
                )
        if len(dataset) == 0:
            raise UsageError(f"Task {task['name']!r}: {split} file {path} has no rows.")
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
    if isinstance(label, str):  # a class name (see `class_names`)
        return None if label.strip() or task["problem_type"] != "single_label_classification" else "empty label"
    if not math.isfinite(float(label)):
        return "non-finite label"
    return None


def usable_rows(dataset, split: str, task: dict, config: SMAConfig, skipped: dict):
    """The rows of a split that can be used; the others are counted in `skipped[split][reason]`. Token labels must
    be ids in [0, num_labels): anything else is an error, not a skip (the task spec and the data disagree); class
    labels are checked by `class_names`."""
    values, labels = dataset[task["input_column"]], dataset[task["label_column"]]
    reasons = [row_problem(v, y, task, config) for v, y in zip(values, labels)]
    for reason in filter(None, reasons):
        skipped.setdefault(split, {})
        skipped[split][reason] = skipped[split].get(reason, 0) + 1
    if any(reasons):
        dataset = dataset.select([i for i, reason in enumerate(reasons) if reason is None])
    if len(dataset) == 0:
        raise UsageError(f"Task {task['name']!r}: no usable row in the {split} split ({skipped[split]}).")
    if task["problem_type"] == "token_classification":
        ids = np.concatenate([np.ravel(y) for y in dataset[task["label_column"]]]).astype(np.float64)
        if (ids != np.round(ids)).any() or ids.min() < 0 or ids.max() >= task["num_labels"]:
            raise UsageError(
                f"Task {task['name']!r}: {split} labels must be class ids in [0, {task['num_labels']}), "
                f"found values from {ids.min()} to {ids.max()}."
            )
    return dataset


def class_names(rows: dict, task: dict) -> list[str]:
    """The classes of a single-label task, in id order, with every split's labels made ids.

    Integer labels in [0, num_labels) are the ids (named by the spec's `class_names`, or by themselves). Any other
    labels (strings such as `yes`/`no`, or integers such as -1/1) are class names: ids follow their sorted order in
    the training split, stated, and a class that only validation or test holds is refused (no model can learn it)."""
    column, name = task["label_column"], task["name"]
    labels = {split: list(rows[split][column]) for split in SPLITS}
    every = [y for split in SPLITS for y in labels[split]]
    integers = all(isinstance(y, (int, np.integer)) or (isinstance(y, float) and y.is_integer()) for y in every)
    if integers and all(0 <= y < task["num_labels"] for y in every):
        return task.get("class_names") or [str(i) for i in range(task["num_labels"])]
    if not integers and not all(isinstance(y, str) for y in every):
        raise UsageError(f"Task {name!r}: labels must be all class ids (integers) or all class names (strings).")
    names = sorted(set(labels["train"]))
    for split in ("validation", "test"):
        unseen = sorted(set(labels[split]) - set(names))
        if unseen:
            raise UsageError(f"Task {name!r}: {split} labels {unseen} are not among the training classes {names}.")
    if len(names) != task["num_labels"]:
        raise UsageError(f"Task {name!r}: the training split has {len(names)} classes {names}, the task spec says "
                         f"num_labels={task['num_labels']}.")  # fmt: skip
    ids = {class_name: index for index, class_name in enumerate(names)}
    for split in SPLITS:
        rows[split] = rows[split].map(lambda row: {column: ids[row[column]]})
    print(f"Task {name!r}: classes from the training split, sorted: {dict(enumerate(names))}")
    return [str(class_name) for class_name in names]


def label_subset(dataset, task: dict, fraction: float, seed: int):
    """A seeded share of the training rows: the label budget. Single-label classes keep their proportions (at least
    one row per class); a fraction of 1 keeps every row."""
    if fraction == 1.0:
        return dataset
    return dataset.select(label_subset_indices(dataset, task, fraction, seed))


def label_subset_indices(dataset, task: dict, fraction: float, seed: int) -> list[int]:
    """The rows of `label_subset` (a fraction below 1), in increasing order."""
    # by hand: `Dataset.train_test_split(stratify_by_column=...)` keeps no row of a class it rounds to zero (it refuses
    # classes of one row), and the committed results were made with these subsets
    rng = np.random.default_rng([seed, 1729])  # its own stream, apart from the initialisation's
    if task["problem_type"] == "single_label_classification":
        labels = np.asarray(dataset[task["label_column"]])
        groups = [np.flatnonzero(labels == value) for value in np.unique(labels)]
    else:
        groups = [np.arange(len(dataset))]
    chosen = [rng.permutation(group)[: max(1, round(fraction * len(group)))] for group in groups]
    return sorted(np.concatenate(chosen).tolist())


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
