"""The protein corpus of `sma-prepare-data`: a SwissProt pretraining pool and three tasks, from files that Debian and
PyPI packages ship (each named below, with what is read from it).

- **Pretraining pool**: SwissProt as of January 2014 (Debian `metastudent-data`: three old-style BLAST databases,
  read with `blastdbcmd` from Debian's `ncbi-blast+`), unique sequences, minus every validation and test sequence of
  the fine-tuning tasks (by exact sequence, counted).
- **Localisation** (Debian `predictnls`): 10 subcellular locations of 9,052 SwissProt proteins, in two splits: a
  stratified random one, and one that keeps similar sequences together (clusters at 30% identity from
  `mmseqs easy-cluster`, Debian `mmseqs2`; whole clusters go to one split).
- **Toxicity** (PyPI `toxinpred2`, whose BLAST database lists toxic `P_` and non-toxic `N_` proteins): stratified
  random split.
- AMP vs UniProt is the peptides corpus's task; its validation and test sequences leave the pool too.

Sequences are upper-cased; one with a letter outside the 25 IUPAC amino-acid codes is dropped and counted. Nothing is
truncated here: the models read at most `MAX_LENGTH` tokens (residues plus the closing `[SEP]`), and the data card
counts, for the pool and every task, the sequences that this cuts. Every source package is GPL-licensed software;
the data cards say so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..common import PRESETS_DIR
from .corpus import (
    TASK_FRACTIONS,
    dataset_card,
    deduplicate_labelled,
    holdout,
    new_card,
    package_dir,
    seeded_rng,
    source_entry,
    stratified_split,
    write_card,
    write_parquet,
    write_shards,
)


SWISSPROT_DIR = Path("/usr/share/metastudent-data/dataset_201401")
SWISSPROT_SETS = ("BPO", "CCO", "MFO")  # overlapping sets of one SwissProt release
PREDICTNLS_DIR = Path("/usr/share/predictnls/data")
INSTALL_HINTS = {
    "blastdbcmd": "apt-get install ncbi-blast+",
    "mmseqs": "apt-get install mmseqs2",
    "metastudent-data": "apt-get install metastudent-data  (225 MB download, 782 MB installed)",
    "predictnls": "apt-get install predictnls",
    "toxinpred2": "pip install --no-deps toxinpred2==1.1",
}
LOCATIONS = {
    "nuc": "nucleus",
    "cyt": "cytoplasm",
    "pla": "chloroplast",
    "mit": "mitochondrion",
    "ext": "extracellular",
    "ret": "endoplasmic reticulum",
    "lys": "lysosome",
    "oxi": "peroxisome",
    "vac": "vacuole",
    "gol": "Golgi apparatus",
}
AMINO_ACID_CODES = frozenset("ACDEFGHIKLMNPQRSTVWYBXZUO")
# tokens (residues + [SEP]) the protein presets read; longer sequences are cut
MAX_LENGTH = json.loads((PRESETS_DIR / "sma-protein-small.json").read_text())["max_position_embeddings"]
POOL_VALIDATION_FRACTION = 0.005
POOL_MIN_VALIDATION = 1000
CLUSTER_MIN_IDENTITY = 0.3
LICENCE_NOTE = (
    "The source packages (metastudent-data, predictnls, toxinpred2; read with ncbi-blast+ and clustered with mmseqs2) "
    "are GPL-licensed software; SwissProt itself is under CC BY 4.0 (UniProt). Check each source's terms before "
    "redistributing derived files."
)


def _require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"The protein corpus needs `{name}`: {INSTALL_HINTS[name]}")
    return path


def _require_folder(folder: Path, package: str) -> Path:
    if not folder.is_dir():
        raise FileNotFoundError(f"The protein corpus reads {folder}, which is missing: {INSTALL_HINTS[package]}")
    return folder


def _debian_version(package: str) -> str:
    try:
        return subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def read_blast_database(prefix: Path) -> list[tuple[str, str]]:
    """(title, sequence) of every record of a BLAST protein database, with `blastdbcmd`."""
    command = [_require_tool("blastdbcmd"), "-db", str(prefix), "-entry", "all", "-outfmt", "%t\t%s"]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"blastdbcmd could not read {prefix}: {completed.stderr.strip()}")
    return [tuple(line.split("\t", 1)) for line in completed.stdout.splitlines() if "\t" in line]


def usable_protein(sequence: str) -> bool:
    return bool(sequence) and set(sequence) <= AMINO_ACID_CODES


def cluster_ids(sequences: list[str], min_identity: float = CLUSTER_MIN_IDENTITY, threads: int = 2) -> list[int]:
    """The cluster of each sequence from `mmseqs easy-cluster` at `min_identity` (its representatives' order)."""
    mmseqs = _require_tool("mmseqs")
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        with open(work / "in.fasta", "w") as fasta:
            for index, sequence in enumerate(sequences):
                fasta.write(f">{index}\n{sequence}\n")
        command = [
            mmseqs,
            "easy-cluster",
            str(work / "in.fasta"),
            str(work / "out"),
            str(work / "tmp"),
            "--min-seq-id",
            str(min_identity),
            "--threads",
            str(threads),
            "-v",
            "1",
        ]
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(f"mmseqs easy-cluster failed: {completed.stderr.strip()[-2000:]}")
        representative = {}
        for line in (work / "out_cluster.tsv").read_text().splitlines():
            head, member = line.split("\t")
            representative[int(member)] = int(head)
    order = {head: i for i, head in enumerate(dict.fromkeys(representative[i] for i in range(len(sequences))))}
    return [order[representative[i]] for i in range(len(sequences))]


def cluster_split(clusters: list[int], fractions=TASK_FRACTIONS, seed: int = 0, stream: str = "cluster_split"):
    """Whole clusters to train, validation or test: clusters in a seeded order fill train up to its share, then
    validation, the rest is test. Returns three sorted index lists; no cluster is in two of them."""
    members: dict[int, list[int]] = {}
    for index, cluster in enumerate(clusters):
        members.setdefault(cluster, []).append(index)
    order = seeded_rng(seed, stream).permutation(len(members))
    groups = [members[key] for key in sorted(members)]
    cutoffs = (fractions[0] * len(clusters), (fractions[0] + fractions[1]) * len(clusters))
    train, valid, test = [], [], []
    for position in order:
        group = groups[position]
        if len(train) + len(group) <= cutoffs[0]:
            train += group
        elif len(train) + len(valid) + len(group) <= cutoffs[1]:
            valid += group
        else:
            test += group
    return sorted(train), sorted(valid), sorted(test)


def _labelled_table(rows: list[tuple[str, int]], indices) -> pa.Table:
    return pa.table(
        {
            "sequence": pa.array([rows[i][0] for i in indices], type=pa.string()),
            "label": pa.array([rows[i][1] for i in indices], type=pa.int64()),
        }
    )


def _cut_counts(sequences) -> dict[str, int]:
    return {f"cut_at_{MAX_LENGTH}_tokens": sum(len(s) + 1 > MAX_LENGTH for s in sequences)}


def _class_counts(labels, parts, num_classes):
    return {
        split: np.bincount([labels[i] for i in part], minlength=num_classes).tolist()
        for split, part in zip(("train", "validation", "test"), parts)
    }


def _write_localisation(folder: Path, root: Path, predictnls_dir: Path, seed: int, card: dict) -> dict[str, set]:
    """Both localisation splits; returns the validation and test sequences of each."""
    sequences_file, locations_file = predictnls_dir / "allProt.fasta", predictnls_dir / "NewProtList"
    names = sorted(LOCATIONS)
    location_of = dict(line.split("\t")[:2] for line in locations_file.read_text().splitlines() if "\t" in line)
    raw = []
    for line in sequences_file.read_text().splitlines():
        if line.startswith(">") and "\t" in line:
            name, sequence = line[1:].split("\t", 1)
            raw.append((name, sequence.strip().upper()))
    for path, read in ((sequences_file, len(raw)), (locations_file, len(location_of))):
        card["sources"].append(
            source_entry("predictnls", "predictnls", path, rows_read=read, version=_debian_version("predictnls"))
        )
    missing_location = sum(name not in location_of for name, _ in raw)
    invalid = sum(name in location_of and not usable_protein(s) for name, s in raw)
    labelled = [(s, names.index(location_of[n])) for n, s in raw if n in location_of and usable_protein(s)]
    rows, counts = deduplicate_labelled(labelled)
    labels = [label for _, label in rows]
    filters = {
        "no_location": missing_location,
        "invalid_sequence": invalid,
        "conflicting_label_rows": counts["conflicting_label_rows"],
        "duplicate_rows": counts["duplicate_rows"],
    }
    clusters = cluster_ids([s for s, _ in rows])
    held_out = {}
    for name, parts, method in (
        (
            "localisation",
            stratified_split(labels, TASK_FRACTIONS, seed, "proteins/localisation"),
            "stratified (per location) seeded random split 80/10/10",
        ),
        (
            "localisation_clustered",
            cluster_split(clusters, TASK_FRACTIONS, seed, "proteins/localisation_clusters"),
            f"whole clusters at {CLUSTER_MIN_IDENTITY:.0%} identity (mmseqs easy-cluster) in a seeded order to "
            "train (up to 80%), then validation (10%), the rest test; no cluster in two splits",
        ),
    ):
        files = [
            write_parquet(_labelled_table(rows, part), folder / name / f"{split}.parquet", root)
            for split, part in zip(("train", "validation", "test"), parts)
        ]
        card["datasets"][name] = dataset_card(
            len(raw),
            filters,
            files,
            method,
            info={
                "labels": {str(i): f"{LOCATIONS[n]} ({n})" for i, n in enumerate(names)},
                "class_counts": _class_counts(labels, parts, len(names)),
                "clusters": len(set(clusters)),
                **_cut_counts(s for s, _ in rows),
            },
        )
        held_out[name] = {rows[i][0] for part in parts[1:] for i in part}
    return held_out


def _write_toxicity(folder: Path, root: Path, toxinpred_dir: Path, seed: int, card: dict) -> set[str]:
    prefix = toxinpred_dir / "Database" / "data"
    records = read_blast_database(prefix)
    card["sources"].append(
        source_entry("toxinpred2", "toxinpred2", prefix.with_suffix(".psq"), rows_read=len(records))
    )
    unlabelled = sum(not title.startswith(("P_", "N_")) for title, _ in records)
    candidates = [(s.upper(), int(t.startswith("P_"))) for t, s in records if t.startswith(("P_", "N_"))]
    invalid = sum(not usable_protein(s) for s, _ in candidates)
    rows, counts = deduplicate_labelled([(s, y) for s, y in candidates if usable_protein(s)])
    labels = [label for _, label in rows]
    parts = stratified_split(labels, TASK_FRACTIONS, seed, "proteins/toxicity")
    files = [
        write_parquet(_labelled_table(rows, part), folder / "toxicity" / f"{split}.parquet", root)
        for split, part in zip(("train", "validation", "test"), parts)
    ]
    card["datasets"]["toxicity"] = dataset_card(
        len(records),
        {
            "no_label_prefix": unlabelled,
            "invalid_sequence": invalid,
            "conflicting_label_rows": counts["conflicting_label_rows"],
            "duplicate_rows": counts["duplicate_rows"],
        },
        files,
        "stratified (per label) seeded random split 80/10/10",
        info={
            "label": "1 = toxic (P_), 0 = non-toxic (N_)",
            "class_counts": _class_counts(labels, parts, 2),
            **_cut_counts(s for s, _ in rows),
        },
    )
    return {rows[i][0] for part in parts[1:] for i in part}


def _amp_held_out(root: Path) -> set[str]:
    folder = root / "peptides" / "amp"
    paths = [folder / f"{split}.parquet" for split in ("validation", "test")]
    if not all(path.is_file() for path in paths):
        raise FileNotFoundError(
            f"The protein pool leaves out the AMP task's held-out sequences: prepare the peptides "
            f"corpus under {root} first (sma-prepare-data --corpora peptides proteins)."
        )
    return {s for path in paths for s in pq.read_table(path).column("sequence").to_pylist()}


def _write_pool(folder, root, swissprot_dir, held_out: dict[str, set], seed, num_shards, card) -> dict[str, Any]:
    sequences, read = {}, 0  # sequence -> first accession
    for subset in SWISSPROT_SETS:
        prefix = swissprot_dir / subset / "goasp.fasta"
        records = read_blast_database(prefix)
        read += len(records)
        card["sources"].append(
            source_entry(
                "metastudent-data",
                "metastudent-data",
                prefix.with_suffix(".psq"),
                rows_read=len(records),
                version=_debian_version("metastudent-data"),
            )
        )
        for title, sequence in records:
            sequences.setdefault(sequence.upper(), title.split("|")[0])
    invalid = {s for s in sequences if not usable_protein(s)}
    evaluation = set().union(*held_out.values())
    removed = {name: len((set(sequences) - invalid) & group) for name, group in held_out.items()}
    pool = sorted(set(sequences) - invalid - evaluation)
    train, validation = holdout(pool, POOL_VALIDATION_FRACTION, POOL_MIN_VALIDATION, seed, "proteins/pretrain")
    table = lambda values: pa.table({"sequence": pa.array(values, type=pa.string())})  # noqa: E731
    files = write_shards(table(train), folder / "pretrain", "train", num_shards, root)
    files.append(write_parquet(table(validation), folder / "pretrain" / "validation-00000-of-00001.parquet", root))
    lengths = np.array([len(s) for s in pool])
    return dataset_card(
        read,
        {
            "duplicates": read - len(sequences),
            "invalid_sequence": len(invalid),
            "in_a_fine_tuning_validation_or_test_split": len((set(sequences) - invalid) & evaluation),
        },
        files,
        f"unique SwissProt sequences of the {'/'.join(SWISSPROT_SETS)} sets, sorted then shuffled (seeded); "
        f"{POOL_VALIDATION_FRACTION:.1%} (at least {POOL_MIN_VALIDATION}) held out as validation; train in "
        f"{num_shards} contiguous shards",
        info={
            "removed_per_task": removed,
            "residues": int(lengths.sum()),
            "median_length": int(np.median(lengths)),
            **_cut_counts(pool),
            "truncation": f"none here; a model reads at most {MAX_LENGTH} tokens (residues + [SEP]) of a sequence",
        },
    )


def prepare_proteins(
    output_dir: str | os.PathLike,
    seed: int = 0,
    num_shards: int = 16,
    swissprot_dir: Path = SWISSPROT_DIR,
    predictnls_dir: Path = PREDICTNLS_DIR,
    toxinpred_dir: Path | None = None,
) -> dict[str, Any]:
    """Write the protein corpus (pool, localisation in two splits, toxicity) and its data card; return the card.

    The peptides corpus must be prepared under `output_dir` first (its AMP held-out sequences leave the pool).
    """
    root = Path(output_dir)
    folder = root / "proteins"
    _require_tool("blastdbcmd")
    _require_folder(swissprot_dir, "metastudent-data")
    _require_folder(predictnls_dir, "predictnls")
    if toxinpred_dir is None:
        try:
            toxinpred_dir = package_dir("toxinpred2")
        except ImportError:
            raise FileNotFoundError(f"The protein corpus reads toxinpred2's database: {INSTALL_HINTS['toxinpred2']}")
    card = new_card("proteins", seed)
    held_out = _write_localisation(folder, root, predictnls_dir, seed, card)
    held_out["toxicity"] = _write_toxicity(folder, root, toxinpred_dir, seed, card)
    held_out["amp"] = _amp_held_out(root)
    card["datasets"]["pretrain"] = _write_pool(folder, root, swissprot_dir, held_out, seed, num_shards, card)
    card["notes"] += [
        LICENCE_NOTE,
        "Sequences are upper-cased; a sequence with a letter outside the 25 IUPAC amino-acid codes is dropped and "
        "counted as invalid. A sequence with two labels is dropped (every row of it); exact repeats are kept once.",
        "The pool keeps the tasks' training sequences (inputs only) and drops every validation and test sequence of "
        "localisation (both splits), toxicity and AMP, by exact sequence; the per-task counts overlap.",
        "Similar sequences inflate scores on a random split: report the clustered localisation split beside it.",
    ]
    return write_card(folder, card)
