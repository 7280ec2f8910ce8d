"""What every corpus preparation of `sma-prepare-data` shares: optional imports with the install hint, source
entries (package, version, file hash), atomic parquet and text writes, the content hash of a table, sharded splits,
seeded random / stratified splits and held-out parts, and the data cards (`DATA_CARD.md` and `data_card.json`).

Every filter is counted in the data card; for every dataset `rows_read - sum(filters) == rows_written`. Same package
versions and seed give the same rows; the card's `sha256` of a file is a hash of its rows (`content_hash`), not of
the file bytes."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..common import DATA_EXTRA_HINT, TEMPLATES_DIR, atomic_write, write_text_atomic


DATA_CARD_TEMPLATE = TEMPLATES_DIR / "data_card.md"


TASK_FRACTIONS = (0.8, 0.1, 0.1)


def import_optional(module: str, install_hint: str = DATA_EXTRA_HINT):
    """Import an optional dependency, or fail with the install hint of its extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"sma-prepare-data needs `{module.split('.')[0]}` from an optional extra: {install_hint}"
        ) from error


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing (executing) it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"sma-prepare-data reads the files bundled with `{package}`, which is not installed: {DATA_EXTRA_HINT}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_entry(package: str, distribution: str, path: Path, **extra: Any) -> dict[str, Any]:
    """Card entry of one source file: package, version, file (relative to site-packages where possible), hash."""
    path = Path(path)
    shown = str(path)
    for parent in path.parents:
        if parent.name == "site-packages" or parent.name == "dist-packages":
            shown = path.relative_to(parent).as_posix()
            break
    entry = {"package": package, "version": package_version(distribution), "file": shown}
    if path.is_file():
        entry["file_sha256"] = _file_sha256(path)
    entry.update(extra)
    return entry


def _type_name(data_type: pa.DataType) -> str:
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return "string"
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type) or pa.types.is_fixed_size_list(data_type):
        return f"list<{_type_name(data_type.value_type)}>"
    return str(data_type)


def content_hash(table: pa.Table) -> str:
    """sha256 over the rows of a table (column names, types and values), independent of the parquet encoding.

    Strings hash as length-prefixed UTF-8, numbers as little-endian int64 / float64 / float32 and list columns as
    their lengths plus their flattened values, so reading a written file back gives the hash in the data card.
    """
    digest = hashlib.sha256()
    digest.update(f"rows={table.num_rows}\n".encode())
    for name, column in zip(table.column_names, table.columns):
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if column.null_count:
            raise ValueError(f"column {name!r} has {column.null_count} nulls; the prepared data has none")
        type_name = _type_name(column.type)
        digest.update(f"column={name}:{type_name}\n".encode())
        if type_name == "string":
            for value in column.to_pylist():
                encoded = value.encode("utf-8")
                digest.update(len(encoded).to_bytes(8, "little"))
                digest.update(encoded)
        elif type_name.startswith("list<"):
            lengths = np.asarray(column.value_lengths().to_numpy(zero_copy_only=False), dtype="<i8")
            values = column.flatten()
            digest.update(lengths.tobytes())
            digest.update(_numeric_bytes(values))
        else:
            digest.update(_numeric_bytes(column))
    return digest.hexdigest()


def _numeric_bytes(array: pa.Array) -> bytes:
    if pa.types.is_floating(array.type):
        dtype = "<f4" if array.type.bit_width == 32 else "<f8"
    elif pa.types.is_integer(array.type):
        dtype = "<i8"
    else:
        raise TypeError(f"content_hash does not handle {array.type}")
    return np.ascontiguousarray(array.to_numpy(zero_copy_only=False), dtype=dtype).tobytes()


def float_list_array(matrix: np.ndarray) -> pa.ListArray:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    rows, width = matrix.shape
    offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32), type=pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), type=pa.float32()))


def write_parquet(data: pa.Table | dict[str, Any], path: str | os.PathLike, root: str | os.PathLike | None = None):
    """Write a table (or a dict of columns) to ``path`` atomically; return ``{path, rows, sha256}``.

    ``path`` in the returned entry is relative to ``root`` when given. Dict values may be lists, numpy vectors or
    2-D float arrays (written as ``list<float32>``).
    """
    if not isinstance(data, pa.Table):
        columns = {}
        for name, values in data.items():
            if isinstance(values, np.ndarray) and values.ndim == 2:
                columns[name] = float_list_array(values)
            else:
                columns[name] = pa.array(values)
        data = pa.table(columns)
    path = Path(path)
    atomic_write(path, lambda temporary: pq.write_table(data, temporary, compression="zstd"))
    shown = path.relative_to(root).as_posix() if root is not None else str(path)
    return {"path": shown, "rows": data.num_rows, "sha256": content_hash(data)}


def write_shards(table: pa.Table, folder: Path, split: str, num_shards: int, root: Path) -> list[dict]:
    """Write ``{split}-0000i-of-0000N.parquet`` contiguous shards and remove stale shards of other layouts."""
    bounds = np.linspace(0, table.num_rows, num_shards + 1).round().astype(int)
    entries, names = [], set()
    for index in range(num_shards):
        name = f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
        names.add(name)
        shard = table.slice(int(bounds[index]), int(bounds[index + 1] - bounds[index]))
        entries.append(write_parquet(shard, folder / name, root))
    for stale in folder.glob(f"{split}-*-of-*.parquet"):
        if stale.name not in names:
            stale.unlink()
    return entries


def dataset_card(
    rows_read: int, filters: dict[str, int], files: list[dict], split_method: str, **extra: Any
) -> dict[str, Any]:
    rows_written = sum(entry["rows"] for entry in files)
    if rows_read - sum(filters.values()) != rows_written:
        raise RuntimeError(f"filter counts do not add up: {rows_read} - {filters} != {rows_written}")
    return {
        "rows_read": rows_read,
        "filters": dict(filters),
        "rows_written": rows_written,
        "split_method": split_method,
        "files": files,
        **extra,
    }


def write_card(folder: Path, card: dict[str, Any]) -> dict[str, Any]:
    """`data_card.json`, and `DATA_CARD.md` rendered from it as a Hub dataset card (YAML metadata, then the sources,
    each dataset's counts and files, the notes)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    write_text_atomic(folder / "data_card.json", json.dumps(card, indent=2, sort_keys=False) + "\n")
    metadata = DatasetCardData(pretty_name=f"SMA {card['corpus']} corpus", tags=["sma", card["corpus"]])
    # the info values as JSON in their own key order (jinja's `tojson` sorts keys)
    datasets = {name: {**dataset, "info": {key: json.dumps(value) for key, value in dataset.get("info", {}).items()}}
                for name, dataset in card["datasets"].items()}  # fmt: skip
    rendered = DatasetCard.from_template(
        metadata, template_path=str(DATA_CARD_TEMPLATE), **{**card, "datasets": datasets}
    )
    write_text_atomic(folder / "DATA_CARD.md", str(rendered))
    return card


def new_card(corpus: str, seed: int) -> dict[str, Any]:
    return {
        "corpus": corpus,
        "generator": f"sma-prepare-data (sma_hf {package_version('sma_hf')})",
        "seed": seed,
        "sources": [],
        "datasets": {},
        "notes": [],
    }


def seeded_rng(seed: int, stream: str) -> np.random.Generator:
    """An independent, reproducible random stream per (seed, purpose)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(stream.encode())]))


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    return tuple(float(f) for f in fractions)


def _split_sizes(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    _, valid_fraction, test_fraction = check_fractions(fractions)
    n_valid, n_test = int(round(valid_fraction * n)), int(round(test_fraction * n))
    return n - n_valid - n_test, n_valid, n_test


# Splits by hand rather than with `Dataset.train_test_split`: the committed corpora (whose row hashes every results
# file records) are these functions' output, and a three-way split per class is one call here, two there.
def random_split(n: int, fractions: Sequence[float], seed: int, stream: str = "random_split"):
    """Seeded random split of ``range(n)``; returns three sorted index lists."""
    n_train, n_valid, _ = _split_sizes(n, fractions)
    order = seeded_rng(seed, stream).permutation(n)
    parts = order[:n_train], order[n_train : n_train + n_valid], order[n_train + n_valid :]
    return tuple(sorted(int(i) for i in part) for part in parts)


def stratified_split(labels: Sequence[int], fractions: Sequence[float], seed: int, stream: str = "stratified"):
    """Seeded split with the fractions applied per class; returns three sorted index lists."""
    labels = np.asarray(labels)
    rng = seeded_rng(seed, stream)
    train, valid, test = [], [], []
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        members = members[rng.permutation(len(members))]
        n_train, n_valid, _ = _split_sizes(len(members), fractions)
        train += members[:n_train].tolist()
        valid += members[n_train : n_train + n_valid].tolist()
        test += members[n_train + n_valid :].tolist()
    return sorted(train), sorted(valid), sorted(test)


def holdout(items: Sequence[str], fraction: float, minimum: int, seed: int, stream: str):
    """Seeded (train, validation) parts of a pool, both in a seeded shuffled order (shards mix all sources)."""
    items = sorted(items)
    order = seeded_rng(seed, stream).permutation(len(items))
    n_valid = min(max(int(round(fraction * len(items))), minimum), len(items) // 2)
    shuffled = [items[i] for i in order]
    return shuffled[n_valid:], shuffled[:n_valid]


def deduplicate_labelled(rows: Sequence[tuple[str, int]]):
    """Drop every sequence carrying more than one label, then keep one row per sequence (first-occurrence order).

    Returns ``(rows, counts)`` with ``conflicting_sequences``, ``conflicting_label_rows`` (rows dropped for a
    conflict) and ``duplicate_rows`` (further rows dropped as exact repeats).
    """
    labels: dict[str, set[int]] = {}
    for sequence, label in rows:
        labels.setdefault(sequence, set()).add(label)
    conflicting = {sequence for sequence, values in labels.items() if len(values) > 1}
    kept: dict[str, int] = {}
    conflict_rows = 0
    for sequence, label in rows:
        if sequence in conflicting:
            conflict_rows += 1
        elif sequence not in kept:
            kept[sequence] = label
    unique_rows = list(kept.items())
    counts = {
        "conflicting_sequences": len(conflicting),
        "conflicting_label_rows": conflict_rows,
        "duplicate_rows": len(rows) - conflict_rows - len(unique_rows),
    }
    return unique_rows, counts
