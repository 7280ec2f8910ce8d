"""Evaluation metrics of the tools (numpy only; ties get average ranks), and which direction is better for each."""

import math

import numpy as np


# metrics where a smaller value is better; every other metric is higher-is-better
LOWER_IS_BETTER = frozenset({"rmse", "mse", "mae", "loss", "log_loss", "cross_entropy", "error", "perplexity"})
DISPLAY_NAMES = {
    "rmse": "RMSE",
    "mse": "MSE",
    "mae": "MAE",
    "spearman": "Spearman",
    "pearson": "Pearson",
    "r2": "R²",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "accuracy": "Accuracy",
    "f1": "F1",
    "macro_f1": "Macro-F1",
    "mcc": "MCC",
}
# every metric `task_metrics` reports, in the order results list them
METRICS = ("rmse", "mae", "spearman", "roc_auc", "accuracy", "macro_f1")


def greater_is_better(metric: str) -> bool:
    return metric.lower() not in LOWER_IS_BETTER


def display_name(metric: str) -> str:
    return DISPLAY_NAMES.get(metric.lower(), metric)


def average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + end + 1) / 2  # 1-based average rank of the tied run
            start = end
    return ranks


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    a, b = average_ranks(predictions), average_ranks(labels)
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve = probability that a positive outscores a negative (Mann-Whitney U)."""
    positives = labels == 1
    num_positive, num_negative = int(positives.sum()), int((~positives).sum())
    if num_positive == 0 or num_negative == 0:
        return float("nan")
    ranks = average_ranks(scores)
    return float((ranks[positives].sum() - num_positive * (num_positive + 1) / 2) / (num_positive * num_negative))


def macro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """The unweighted mean of the per-class F1 over the classes that occur in `labels` or `predictions` (as
    scikit-learn's `f1_score(average="macro")`): a rare class counts as much as a common one."""
    scores = []
    for label in np.union1d(labels, predictions):
        true_positive = np.sum((predictions == label) & (labels == label))
        scores.append(2 * true_positive / (np.sum(predictions == label) + np.sum(labels == label)))
    return float(np.mean(scores))


def task_metrics(problem_type: str, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and Spearman for regression; accuracy for classification, with ROC-AUC for two classes and
    macro-F1 for more."""
    if problem_type == "regression":
        predictions, labels = logits.reshape(-1), labels.reshape(-1)
        errors = predictions - labels
        return {
            "rmse": float(np.sqrt(np.mean(errors**2))),
            "mae": float(np.mean(np.abs(errors))),
            "spearman": spearman(predictions, labels),
        }
    if problem_type == "token_classification":
        keep = labels != -100
        logits, labels = logits[keep], labels[keep]
    predictions = logits.argmax(-1)
    metrics = {"accuracy": float(np.mean(predictions == labels))}
    if logits.shape[-1] == 2:
        metrics["roc_auc"] = roc_auc(logits[:, 1] - logits[:, 0], labels)
    elif problem_type == "single_label_classification":
        metrics["macro_f1"] = macro_f1(predictions, labels)
    return metrics
