"""The peptides corpus of `sma-prepare-data`: a pretraining pool of every modlAMP sequence minus the AMP task's
validation and test sequences, and AMP-vs-UniProt as a stratified binary task."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .corpus import (
    TASK_FRACTIONS,
    dataset_card,
    deduplicate_labelled,
    holdout,
    new_card,
    package_dir,
    source_entry,
    stratified_split,
    write_card,
    write_parquet,
    write_shards,
)


PEPTIDE_VALIDATION_FRACTION = 0.05


PEPTIDE_MIN_VALIDATION = 200


AMINO_ACIDS = frozenset("ACDEFGHIKLMNPQRSTVWY")


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


def prepare_peptides(output_dir: str | os.PathLike, seed: int = 0, num_shards: int = 4) -> dict[str, Any]:
    """Write the peptide corpus (pretraining pool, AMP-vs-UniProt task) and its data card; return the card."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    root = Path(output_dir)
    folder = root / "peptides"
    data = package_dir("modlamp") / "data"
    card = new_card("peptides", seed)
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
        card["sources"].append(source_entry("modlamp", "modlamp", path, rows_read=len(sequences)))

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
    card["datasets"]["amp"] = dataset_card(
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
    train, validation = holdout(
        pool, PEPTIDE_VALIDATION_FRACTION, PEPTIDE_MIN_VALIDATION, seed, "peptides/pretrain/validation"
    )
    pretrain = folder / "pretrain"

    def table(sequences):
        return pa.table({"sequence": pa.array(sequences, type=pa.string())})

    files = write_shards(table(train), pretrain, "train", num_shards, root)
    files.append(write_parquet(table(validation), pretrain / "validation-00000-of-00001.parquet", root))
    card["datasets"]["pretrain"] = dataset_card(
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
    return write_card(folder, card)
