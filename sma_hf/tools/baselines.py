"""Baselines without pretraining: what a chemist, a biologist or a physicist fits first, and the linear probe's fit.

- Featurisers: `morgan_fingerprints` (RDKit), `amino_acid_composition`, `dipeptide_composition`, and
  `input_values` (a tabular task's continuous inputs, the values the model reads).
- `classical_baseline`: a random forest, gradient boosting, a multi-layer perceptron or (for classes) logistic
  regression (scikit-learn), or LightGBM, on such features, hyper-parameters chosen on the validation split, run per
  seed and label budget like `sma-finetune`; its results are written in `sma-finetune`'s format, so that tables and
  model cards read both alike.
- `fit_linear_model`: ridge or logistic regression, regularisation chosen on validation (`sma-finetune
  --linear_probe` fits it on frozen embeddings).

scikit-learn and RDKit come with the `data` extra (`pip install "sma_hf[data]"`), LightGBM with the `physics` extra.
"""

import itertools
from collections.abc import Callable

import numpy as np

from ..configuration_sma import SMAConfig
from .common import DATA_EXTRA_HINT, PHYSICS_EXTRA_HINT
from .metrics import task_metrics
from .task_data import SPLITS, label_subset, load_splits, load_task, results_record, usable_rows


AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
# the grids searched on the validation split
RANDOM_FOREST_GRID = {"max_features": ["sqrt", 0.3], "min_samples_leaf": [1, 3]}
GRADIENT_BOOSTING_GRID = {"learning_rate": [0.05, 0.1], "max_leaf_nodes": [15, 31]}
LIGHTGBM_GRID = {"learning_rate": [0.03, 0.1], "num_leaves": [15, 63]}
MLP_GRID = {"hidden_layer_sizes": [(128, 128), (256, 256, 256)], "alpha": [1e-4, 1e-2]}
CLASSICAL_MODELS = ("random_forest", "gradient_boosting", "lightgbm", "mlp", "logistic_regression")
RIDGE_ALPHAS = [10.0**k for k in range(-3, 4)]
LOGISTIC_CS = [10.0**k for k in range(-3, 3)]


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError as error:
        raise ImportError(f"The baselines need scikit-learn: {DATA_EXTRA_HINT}") from error


def morgan_fingerprints(smiles: list[str], radius: int = 2, num_bits: int = 2048) -> np.ndarray:
    """[molecules, num_bits] 0/1 Morgan (ECFP-like) fingerprints of SMILES strings, with RDKit."""
    try:
        from rdkit import Chem
        from rdkit.Chem import rdFingerprintGenerator
    except ImportError as error:
        raise ImportError(f"Morgan fingerprints need RDKit: {DATA_EXTRA_HINT}") from error
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=num_bits)
    rows = []
    for value in smiles:
        molecule = Chem.MolFromSmiles(value)
        if molecule is None:
            raise ValueError(f"RDKit cannot parse the SMILES {value!r}.")
        rows.append(generator.GetFingerprintAsNumPy(molecule))
    return np.asarray(rows, dtype=np.float32)


def amino_acid_composition(sequences: list[str]) -> np.ndarray:
    """[sequences, 20] share of each standard amino acid (other letters are not counted)."""
    index = {letter: i for i, letter in enumerate(AMINO_ACIDS)}
    counts = np.zeros((len(sequences), len(AMINO_ACIDS)), dtype=np.float64)
    for row, sequence in enumerate(sequences):
        for letter in sequence:
            if letter in index:
                counts[row, index[letter]] += 1
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def dipeptide_composition(sequences: list[str]) -> np.ndarray:
    """[sequences, 400] share of each pair of consecutive standard amino acids."""
    index = {letter: i for i, letter in enumerate(AMINO_ACIDS)}
    counts = np.zeros((len(sequences), len(AMINO_ACIDS) ** 2), dtype=np.float64)
    for row, sequence in enumerate(sequences):
        for first, second in zip(sequence, sequence[1:]):
            if first in index and second in index:
                counts[row, index[first] * len(AMINO_ACIDS) + index[second]] += 1
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def input_values(rows: list) -> np.ndarray:
    """[rows, features] the continuous inputs of a tabular task, the values the model reads (one per element)."""
    return np.asarray([np.asarray(row, dtype=np.float32).reshape(-1) for row in rows])


FEATURISERS = {
    "morgan": morgan_fingerprints,
    "aac": amino_acid_composition,
    "dipeptide": dipeptide_composition,
    "input": input_values,
}


def _scores(task: dict, model, features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    if task["problem_type"] == "regression":
        return task_metrics("regression", model.predict(features)[:, None], labels)
    return task_metrics(task["problem_type"], model.predict_proba(features), labels)


def _select_on_validation(task: dict, candidates, features: dict, labels: dict):
    """Fit every candidate (hyper-parameters, unfitted model) on train; the best by the task's metric on validation,
    with its validation and test metrics (the test split is read once, by the chosen model)."""
    best = None
    for hyperparameters, model in candidates:
        model.fit(features["train"], labels["train"])
        validation = _scores(task, model, features["validation"], labels["validation"])
        value = validation[task["metric"]]
        better = best is None or (value > best[0] if task["greater_is_better"] else value < best[0])
        if better:
            best = (value, hyperparameters, model, validation)
    _, hyperparameters, model, validation = best
    test = _scores(task, model, features["test"], labels["test"])
    return {"validation": validation, "test": test, "hyperparameters": hyperparameters}


def _linear_candidates(problem_type: str):
    """Ridge (regression) or logistic regression on standardised features, one per regularisation strength."""
    _sklearn()
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if problem_type == "regression":
        return [({"alpha": a}, make_pipeline(StandardScaler(), Ridge(alpha=a))) for a in RIDGE_ALPHAS]
    return [({"C": c}, make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))) for c in LOGISTIC_CS]


def fit_linear_model(task: dict, features: dict, labels: dict) -> dict:
    """Ridge (regression) or logistic regression on standardised features, the regularisation chosen on validation.

    `features` and `labels` map "train", "validation" and "test" to arrays. Returns the validation and test metrics
    of the chosen model and its `hyperparameters`."""
    return _select_on_validation(task, _linear_candidates(task["problem_type"]), features, labels)


def _classical_candidates(model_name: str, problem_type: str, seed: int, grid: dict | None):
    if model_name == "logistic_regression":
        if problem_type == "regression" or grid is not None:
            raise ValueError("`model_name='logistic_regression'` is for classification tasks, with its own grid.")
        yield from _linear_candidates(problem_type)
        return
    _sklearn()
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.feature_selection import VarianceThreshold
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    regression = problem_type == "regression"
    if model_name == "random_forest":
        model_class = RandomForestRegressor if regression else RandomForestClassifier
        default_grid, fixed = RANDOM_FOREST_GRID, {"n_estimators": 500, "n_jobs": -1, "random_state": seed}
    elif model_name == "gradient_boosting":
        model_class = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
        default_grid, fixed = GRADIENT_BOOSTING_GRID, {"max_iter": 200, "early_stopping": False, "random_state": seed}
    elif model_name == "lightgbm":
        try:
            import lightgbm
        except ImportError as error:
            raise ImportError(f"The LightGBM baseline needs lightgbm: {PHYSICS_EXTRA_HINT}") from error
        model_class = lightgbm.LGBMRegressor if regression else lightgbm.LGBMClassifier
        default_grid = LIGHTGBM_GRID
        fixed = {"n_estimators": 400, "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8,
                 "random_state": seed, "verbose": -1}  # fmt: skip
    elif model_name == "mlp":
        model_class = MLPRegressor if regression else MLPClassifier
        # early stopping on a tenth of the training rows: the validation split stays for choosing the grid point
        default_grid, fixed = MLP_GRID, {"early_stopping": True, "max_iter": 300, "random_state": seed}
    else:
        raise ValueError(f"`model_name` must be one of {CLASSICAL_MODELS}, got {model_name!r}.")
    grid = default_grid if grid is None else grid
    for values in itertools.product(*grid.values()):
        hyperparameters = dict(zip(grid, values))
        # features constant on the training rows (most fingerprint bits of a small set) carry nothing: dropping them
        # makes gradient boosting several times faster
        model = model_class(**{**fixed, **hyperparameters})
        scaled = [StandardScaler()] if model_name == "mlp" else []  # trees need no scale
        yield hyperparameters, make_pipeline(VarianceThreshold(), *scaled, model)


def classical_baseline(
    task_name_or_path: str,
    data_dir: str,
    features: str | Callable = "morgan",
    model_name: str = "random_forest",
    seeds: list[int] = (0, 1, 2),
    label_fraction: float = 1.0,
    label: str | None = None,
    grid: dict[str, list] | None = None,
) -> dict:
    """A classical model (`CLASSICAL_MODELS`) on fixed features of a task's inputs, per seed and label budget.

    Args:
        task_name_or_path: a shipped task spec (e.g. "freesolv") or a JSON path, as for `sma-finetune --task`.
        data_dir: the root of the task's data files.
        features: "morgan" (fingerprints of SMILES), "aac" (amino-acid composition), "dipeptide", "input" (a
            tabular task's continuous inputs), or a function from a list of inputs to a [rows, features] array.
        model_name: "random_forest", "gradient_boosting" (scikit-learn's histogram boosting), "lightgbm", "mlp" or,
            for classification, "logistic_regression" (the last two on standardised features); hyper-parameters
            are chosen on validation per seed.
        seeds: one model per seed (and one label-budget subset per seed, the same as `sma-finetune`'s).
        label_fraction: the label budget, a share of the training rows.
        grid: the hyper-parameters searched on validation (each a list of values), instead of the model's default
            grid (`RANDOM_FOREST_GRID`, `GRADIENT_BOOSTING_GRID`, `LIGHTGBM_GRID`, `MLP_GRID`); a value also
            replaces a fixed setting such as `n_estimators`.
    Returns the results in `sma-finetune`'s format (`results.json`).
    """
    task = load_task(task_name_or_path)
    featurise = FEATURISERS[features] if isinstance(features, str) else features
    feature_name = features if isinstance(features, str) else getattr(features, "__name__", "features")
    splits = load_splits(task, data_dir)
    config = SMAConfig(input_type=task.get("input_type", "discrete"))  # only which inputs are usable is read
    skipped = {}
    rows = {split: usable_rows(splits[split], split, task, config, skipped) for split in SPLITS}
    fixed = {split: featurise(list(rows[split][task["input_column"]])) for split in ("validation", "test")}
    labels = {split: np.asarray(rows[split][task["label_column"]]) for split in ("validation", "test")}
    runs = []
    for seed in seeds:
        train = label_subset(rows["train"], task, label_fraction, seed)
        features_by_split = {"train": featurise(list(train[task["input_column"]])), **fixed}
        labels_by_split = {"train": np.asarray(train[task["label_column"]]), **labels}
        candidates = _classical_candidates(model_name, task["problem_type"], seed, grid)
        fitted = _select_on_validation(task, candidates, features_by_split, labels_by_split)
        runs.append({"seed": seed, "num_train": len(train), **fitted})
    command = (
        f"sma_hf.tools.baselines.classical_baseline({task['name']!r}, {data_dir!r}, features={feature_name!r}, "
        f"model_name={model_name!r}, seeds={list(seeds)}, label_fraction={label_fraction}"
        + (f", grid={grid!r})" if grid is not None else ")")
    )
    return results_record(
        task,
        label or f"{model_name.replace('_', ' ')} on {feature_name} features",
        f"{model_name} ({feature_name})",
        runs,
        {split: len(rows[split]) for split in SPLITS},
        skipped,
        command,
        label_fraction=label_fraction,
        protocol="classical baseline",
    )
