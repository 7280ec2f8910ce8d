"""The protein corpus of sma-prepare-data on tiny sources this test writes itself: BLAST databases made with
`makeblastdb`, predictnls-style files, an AMP task; no held-out sequence in the pool, whole clusters per split.

Needs Debian's `ncbi-blast+` and `mmseqs2` (about 36 MB of downloads; `.ci/run` installs them)."""

import json
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_data_preparation_sma import PROTEIN_TASKS, check_shipped_spec

from sma_hf.tools.data import proteins as protein_data


for _tool in ("makeblastdb", "blastdbcmd", "mmseqs"):
    if shutil.which(_tool) is None:
        pytest.skip(f"needs {_tool}: apt-get install ncbi-blast+ mmseqs2", allow_module_level=True)

SPLITS = ("train", "validation", "test")
RESIDUES = "ACDEFGHIKLMNPQRSTVWY"


def family(seed: int, members: int, length: int = 60) -> list[str]:
    """Sequences of one family: a random ancestor and members with a few point mutations (clustered together)."""
    rng = np.random.default_rng(seed)
    ancestor = rng.choice(list(RESIDUES), length)
    sequences = []
    for _ in range(members):
        member = ancestor.copy()
        positions = rng.choice(length, 3, replace=False)
        member[positions] = rng.choice(list(RESIDUES), 3)
        sequences.append("".join(member))
    return sequences


def blast_database(prefix, titles_and_sequences):
    prefix.parent.mkdir(parents=True, exist_ok=True)
    fasta = prefix.parent / "in.fasta"
    fasta.write_text("".join(f">{title}\n{sequence}\n" for title, sequence in titles_and_sequences))
    subprocess.run(["makeblastdb", "-in", str(fasta), "-dbtype", "prot", "-out", str(prefix), "-blastdb_version", "4"],
                   check=True, capture_output=True)  # fmt: skip


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("proteins")
    # localisation: 12 families of 5 proteins, two locations; one protein without a location, one invalid sequence
    localised = [(f"p{f}_{m}", s, ("nuc", "cyt")[f % 2]) for f in range(12) for m, s in enumerate(family(f, 5))]
    predictnls = root / "predictnls"
    predictnls.mkdir()
    lines = [f">{name}\t{sequence}" for name, sequence, _ in localised] + [">orphan\tMKV", ">bad\tMK1V"]
    (predictnls / "allProt.fasta").write_text("\n".join(lines) + "\n")
    locations = [f"{name}\t{location}" for name, _, location in localised] + ["bad\tnuc"]
    (predictnls / "NewProtList").write_text("\n".join(locations) + "\n")
    # toxicity: 40 toxic, 40 non-toxic
    toxic = [(f"P_{i}", s) for i, s in enumerate(family(100, 40))]
    harmless = [(f"N_{i}", s) for i, s in enumerate(family(200, 40))]
    blast_database(root / "toxinpred2" / "Database" / "data", toxic + harmless)
    # SwissProt: three overlapping sets holding every task sequence and 30 others
    others = family(300, 30)
    everything = [s for _, s, _ in localised] + [s for _, s in toxic + harmless] + others
    for index, subset in enumerate(protein_data.SWISSPROT_SETS):
        part = everything[index::2] + others  # overlapping
        blast_database(root / "swissprot" / subset / "goasp.fasta", [(f"Q{i}|GO:1", s) for i, s in enumerate(part)])
    # the peptides corpus's AMP task
    amp = root / "data" / "peptides" / "amp"
    amp.mkdir(parents=True)
    for split, sequences in (("validation", [others[0]]), ("test", [others[1]]), ("train", [others[2]])):
        pq.write_table(pa.table({"sequence": sequences, "label": [1] * len(sequences)}), amp / f"{split}.parquet")
    card = protein_data.prepare_proteins(
        root / "data",
        num_shards=2,
        swissprot_dir=root / "swissprot",
        predictnls_dir=predictnls,
        toxinpred_dir=root / "toxinpred2",
    )
    return root, card


def read(root, relative, column="sequence"):
    return pq.read_table(root / "data" / relative).column(column).to_pylist()


def test_no_held_out_sequence_in_the_pool_and_every_count_adds_up(sources):
    root, card = sources
    pool = set()
    for entry in card["datasets"]["pretrain"]["files"]:
        pool |= set(read(root, entry["path"]))
    held_out = set(read(root, "peptides/amp/validation.parquet")) | set(read(root, "peptides/amp/test.parquet"))
    for task in ("localisation", "localisation_clustered", "toxicity"):
        for split in ("validation", "test"):
            held_out |= set(read(root, f"proteins/{task}/{split}.parquet"))
    assert held_out and not pool & held_out
    assert set(read(root, "proteins/localisation/train.parquet")) & pool  # training inputs stay in the pool
    pretrain = card["datasets"]["pretrain"]
    assert pretrain["filters"]["in_a_fine_tuning_validation_or_test_split"] == len(held_out)
    assert pretrain["rows_read"] - sum(pretrain["filters"].values()) == pretrain["rows_written"]
    localisation = card["datasets"]["localisation"]
    assert localisation["filters"] == {"no_location": 1, "invalid_sequence": 1, "conflicting_label_rows": 0,
                                       "duplicate_rows": 0}  # fmt: skip
    assert json.loads((root / "data" / "proteins" / "data_card.json").read_text()) == card
    assert "GPL" in (root / "data" / "proteins" / "DATA_CARD.md").read_text()


def test_the_clustered_split_keeps_each_family_in_one_split(sources):
    root, card = sources
    family_of = {s: f for f in range(12) for s in family(f, 5)}
    splits = {split: read(root, f"proteins/localisation_clustered/{split}.parquet") for split in SPLITS}
    families = {split: {family_of[s] for s in sequences} for split, sequences in splits.items()}
    assert not families["train"] & families["validation"] and not families["train"] & families["test"]
    assert not families["validation"] & families["test"]
    assert sum(len(s) for s in splits.values()) == 60 and card["datasets"]["localisation"]["info"]["clusters"] == 12
    random = {split: read(root, f"proteins/localisation/{split}.parquet", "label") for split in SPLITS}
    assert [len(random[s]) for s in SPLITS] == [48, 6, 6] and sorted(random["test"]) == [0, 0, 0, 5, 5, 5]  # cyt, nuc


def test_toxicity_labels_and_a_missing_tool_names_its_install_line(sources, monkeypatch, tmp_path):
    root, card = sources
    labels = {split: read(root, f"proteins/toxicity/{split}.parquet", "label") for split in SPLITS}
    assert [sum(labels[s]) for s in SPLITS] == [32, 4, 4] and [len(labels[s]) for s in SPLITS] == [64, 8, 8]
    monkeypatch.setattr(protein_data.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="needs `blastdbcmd`: apt-get install ncbi-blast\\+"):
        protein_data.prepare_proteins(tmp_path)
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match="apt-get install metastudent-data"):
        protein_data.prepare_proteins(tmp_path, swissprot_dir=tmp_path / "absent")


def test_the_shipped_protein_task_specs_match_the_prepared_data(sources):
    root, _ = sources
    for name, expected in PROTEIN_TASKS.items():
        check_shipped_spec(name, expected, root / "data")


def test_the_data_card_counts_the_sequences_a_model_cuts(sources, monkeypatch):
    root, card = sources
    pool = [s for path in sorted((root / "data/proteins/pretrain").glob("*.parquet"))
            for s in pq.read_table(path).column("sequence").to_pylist()]  # fmt: skip
    key = f"cut_at_{protein_data.MAX_LENGTH}_tokens"
    assert card["datasets"]["pretrain"]["info"][key] == sum(len(s) + 1 > protein_data.MAX_LENGTH for s in pool)
    assert key in card["datasets"]["toxicity"]["info"] and key in card["datasets"]["localisation"]["info"]
    monkeypatch.setattr(protein_data, "MAX_LENGTH", 11)  # 10 residues and [SEP] fit, 11 residues do not
    assert protein_data._cut_counts(["A" * 10, "A" * 11, "A" * 30]) == {"cut_at_11_tokens": 2}
