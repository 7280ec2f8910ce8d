"""The tabular corpus of `sma-prepare-data`: scikit-learn's breast cancer set, standardised with training
statistics."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .corpus import (
    TASK_FRACTIONS,
    dataset_card,
    float_list_array,
    import_optional,
    new_card,
    package_dir,
    source_entry,
    stratified_split,
    write_card,
    write_parquet,
)


def prepare_tabular(output_dir: str | os.PathLike, seed: int = 0) -> dict[str, Any]:
    """Write scikit-learn's breast cancer set (standardised features, stratified split); return the card."""
    root = Path(output_dir)
    folder = root / "tabular"
    card = new_card("tabular", seed)
    sklearn_datasets = import_optional("sklearn.datasets")
    bunch = sklearn_datasets.load_breast_cancer()
    features = np.asarray(bunch.data, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    card["sources"].append(
        source_entry(
            "scikit-learn",
            "scikit-learn",
            package_dir("sklearn") / "datasets" / "data" / "breast_cancer.csv",
            rows_read=len(features),
            loader="sklearn.datasets.load_breast_cancer",
        )
    )
    parts = stratified_split(labels, TASK_FRACTIONS, seed, "tabular/breast_cancer")
    mean = features[parts[0]].mean(axis=0)
    std = features[parts[0]].std(axis=0)
    std[std == 0] = 1.0
    standardised = ((features - mean) / std).astype(np.float32)
    files = []
    for split, indices in zip(("train", "validation", "test"), parts):
        table = pa.table(
            {"features": float_list_array(standardised[indices]), "label": pa.array(labels[indices], type=pa.int64())}
        )
        files.append(write_parquet(table, folder / "breast_cancer" / f"{split}.parquet", root))
    card["datasets"]["breast_cancer"] = dataset_card(
        len(features),
        {},
        files,
        "stratified (per label) seeded random split 80/10/10",
        info={
            "label": "0 = malignant, 1 = benign (scikit-learn's target)",
            "standardisation": "(x - train mean) / train std (ddof 0), float32",
            "feature_names": [str(name) for name in bunch.feature_names],
            "train_mean": [round(float(v), 10) for v in mean],
            "train_std": [round(float(v), 10) for v in std],
        },
    )
    return write_card(folder, card)
