"""The physics corpus of sma-prepare-data: a few hundred events really generated with Pythia 8 and clustered with
FastJet (in seconds), their reconstruction, counts, splits, the pretraining pool, determinism and resumption."""

import json
import os
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest


for _module in ("pythia8mc", "fastjet", "awkward", "vector"):
    pytest.importorskip(_module)

from sma_hf.tools.common import UsageError  # noqa: E402
from sma_hf.tools.data import corpus, prepare  # noqa: E402
from sma_hf.tools.data import physics as physics_data  # noqa: E402
from sma_hf.tools.data.physics import DETECTOR, FEATURES  # noqa: E402
from sma_hf.tools.task_data import load_task  # noqa: E402


EVENTS = 400  # per process, in chunks of CHUNK: two chunks each, so resumption can lose one
CHUNK = 200
SPLITS = ("train", "validation", "test")
SIZES = {"train": 60, "validation": 30, "test": 60}  # of about 280 balanced events


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    card = physics_data.prepare_physics(root, seed=0, events_per_process=EVENTS, num_shards=2, chunk_events=CHUNK,
                                        task_sizes=SIZES)  # fmt: skip
    return root, card


def _table(root, split):
    return pq.read_table(root / "physics" / "higgs" / f"{split}.parquet")


def _raw(table):
    return np.column_stack([table.column(name).to_numpy() for name in FEATURES])


def _feature_rows(table):
    return {tuple(np.round(row, 5)) for row in table.column("features").to_pylist()}


def test_every_event_is_counted(generated):
    root, card = generated
    for process, summary in card["generation"]["processes"].items():
        assert summary["chunks"] == EVENTS // CHUNK and summary["generated"] + summary["failed"] == EVENTS
        assert summary["generated"] == sum(summary["dropped"].values()) + summary["selected"], process
        assert 0 < summary["selected"] < summary["generated"] and summary["events_per_second_per_process"] > 0
        assert len(set(summary["pythia_seeds"])) == summary["chunks"]
    for name, dataset in card["datasets"].items():
        assert dataset["rows_read"] - sum(dataset["filters"].values()) == dataset["rows_written"], name
        for entry in dataset["files"]:
            assert corpus.content_hash(pq.read_table(root / entry["path"])) == entry["sha256"]
    processes = card["generation"]["processes"]
    imbalance = abs(processes["signal"]["selected"] - processes["ttbar"]["selected"])
    assert card["datasets"]["higgs"]["filters"]["dropped_to_balance_the_classes"] == imbalance
    assert json.loads((root / "physics" / "data_card.json").read_text()) == card
    assert "not the UCI data" in (root / "physics" / "DATA_CARD.md").read_text()


def test_reconstructed_events_are_physical(generated):
    root, _ = generated
    table = pq.read_table([root / "physics" / "higgs" / f"{split}.parquet" for split in SPLITS])
    assert table.column_names == ["features", "label", *FEATURES]
    raw = _raw(table)
    column = {name: raw[:, i] for i, name in enumerate(FEATURES)}
    jet_pt = raw[:, [FEATURES.index(f"jet{k}_pt") for k in range(1, 5)]]
    assert (np.diff(jet_pt, axis=1) <= 0).all() and (jet_pt > DETECTOR["jet_pt_min_gev"]).all()
    assert (column["lepton_pt"] > DETECTOR["lepton_pt_min_gev"] * 0.8).all()  # the cut is before the smearing
    etas = [column[f"jet{k}_eta"] for k in range(1, 5)] + [column["lepton_eta"]]
    assert (np.abs(etas) < DETECTOR["eta_max"]).all()
    tags = np.sum([column[f"jet{k}_btag"] for k in range(1, 5)], axis=0)
    assert set(np.unique(tags)) >= {0.0, 1.0, 2.0} and 0.7 < tags.mean() < 2.0  # two b jets an event, tagged at 70%
    assert (column["m_lv"] >= DETECTOR["w_mass_gev"] - 1e-3).all()  # the neutrino's pz solves the W mass
    # the mass of more momenta is never smaller (all physical four-vectors)
    assert (column["m_wbb"] >= column["m_bb"] - 1e-3).all() and (column["m_wwbb"] >= column["m_wbb"] - 1e-3).all()
    assert (column["m_jjj"] >= column["m_jj"] - 1e-3).all()


def test_splits_balance_and_model_features(generated):
    root, card = generated
    tables = {split: _table(root, split) for split in SPLITS}
    info = card["datasets"]["higgs"]["info"]
    labels = np.concatenate([tables[s].column("label").to_numpy() for s in SPLITS])
    pool_only = card["datasets"]["higgs"]["filters"]["pretraining_pool_only"]
    balanced = (len(labels) + pool_only) // 2
    assert abs(int(labels.sum()) - len(labels) / 2) <= len(labels) / 4 and balanced * 2 == len(labels) + pool_only
    for split, table in tables.items():
        statistics = np.array(info["pool_mean"]), np.array(info["pool_std"])
        expected, _, _ = physics_data.model_features(_raw(table), *statistics)
        np.testing.assert_allclose(np.asarray(table.column("features").to_pylist()), expected, atol=1e-5)
    spec = load_task("higgs")
    assert (spec["input_column"], spec["input_type"], spec["num_labels"]) == ("features", "continuous", 2)
    assert all((root / path).is_file() for path in spec["data_files"].values())


def test_pretraining_pool_holds_no_test_or_validation_event(generated):
    root, _ = generated
    pool = root / "physics" / "pretrain"
    pool_train = pq.read_table(sorted(pool.glob("train-*.parquet")))
    pool_validation = pq.read_table(sorted(pool.glob("validation-*.parquet")))
    assert pool_train.column_names == ["features"] and len(list(pool.glob("train-*.parquet"))) == 2
    train, validation, test = (_feature_rows(_table(root, split)) for split in SPLITS)
    assert not _feature_rows(pool_train) & (test | validation)
    assert train <= _feature_rows(pool_train)  # the labelled rows, without their labels
    assert _feature_rows(pool_validation) == validation


def test_same_seed_same_events_and_resumption(generated, tmp_path):
    root, card = generated
    events = root / "physics" / "events"
    lost = sorted(events.glob("signal-*/chunk-00001.parquet"))[0]
    kept = sorted(events.glob("ttbar-*/chunk-00000.parquet"))[0]
    kept_time = kept.stat().st_mtime_ns
    lost.unlink()  # an interrupted run: one chunk missing
    again = physics_data.prepare_physics(root, seed=0, events_per_process=EVENTS, num_shards=2, chunk_events=CHUNK,
                                         task_sizes=SIZES)  # fmt: skip
    assert lost.is_file() and kept.stat().st_mtime_ns == kept_time  # only the missing chunk was made again
    strip = lambda c: {k: v for k, v in c.items() if k != "generation"}  # noqa: E731 (rates differ per run)
    assert strip(again) == strip(card)
    with pytest.raises(UsageError, match="another --seed"):
        physics_data.prepare_physics(root, seed=1, events_per_process=EVENTS, chunk_events=CHUNK, task_sizes=SIZES)


def test_neutrino_from_the_w_mass():
    lepton = np.array([[30.0, 10.0, 20.0, np.sqrt(30.0**2 + 10.0**2 + 20.0**2)]])
    neutrino = physics_data.neutrino_momenta(lepton, np.array([25.0]), np.array([-5.0]))
    assert physics_data._mass(lepton, neutrino)[0] == pytest.approx(DETECTOR["w_mass_gev"])
    other_root = lepton.copy()
    other_root[0, 2] = -lepton[0, 2]  # mirrored lepton: the mirrored solution
    mirrored = physics_data.neutrino_momenta(other_root, np.array([25.0]), np.array([-5.0]))
    assert mirrored[0, 2] == pytest.approx(-neutrino[0, 2])
    # no real solution (a large missing momentum against the lepton): the real part, and m_lv above the W mass
    far = physics_data.neutrino_momenta(lepton, np.array([-400.0]), np.array([-150.0]))
    pt2 = lepton[0, 0] ** 2 + lepton[0, 1] ** 2
    a = DETECTOR["w_mass_gev"] ** 2 / 2 + lepton[0, 0] * -400.0 + lepton[0, 1] * -150.0
    assert far[0, 2] == pytest.approx(a * lepton[0, 2] / pt2)
    assert physics_data._mass(lepton, far)[0] > DETECTOR["w_mass_gev"]


def test_each_worker_is_pinned_to_a_core_of_its_own():
    before = os.sched_getaffinity(0)
    cores = sorted(before)

    class Counter:  # multiprocessing.Value's interface, in this process
        value = 1

        def get_lock(self):
            import contextlib

            return contextlib.nullcontext()

    counter = Counter()
    try:
        physics_data._pin_to_one_core(cores, counter)
        assert os.sched_getaffinity(0) == {cores[1 % len(cores)]} and counter.value == 2
    finally:
        os.sched_setaffinity(0, before)


def test_flags_and_the_install_hint(monkeypatch, capsys, tmp_path):
    assert "physics" in prepare.CORPORA and "physics" not in prepare.build_parser().parse_args([]).corpora
    for flag in (["--physics_events", "0"], ["--workers", "0"]):
        with pytest.raises(SystemExit):
            prepare.main(["--corpora", "physics", *flag])
        assert f"{flag[0]} must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"--physics_events must be a multiple of 2,000"):
        prepare.main(["--output_dir", str(tmp_path), "--corpora", "physics", "--physics_events", "3000"])
    monkeypatch.setitem(sys.modules, "pythia8mc", None)
    with pytest.raises(ImportError, match=r"sma_hf\[physics\]"):
        physics_data.generate_chunk("signal", 0, 0, 10, None)


def test_flavour_hadrons_and_the_fingerprint(monkeypatch):
    import awkward as ak
    import vector

    vector.register_awkward()  # what the generator does before it reads momenta
    ids = [521, 5122, 411, 443, 22, 5, 2212]  # B+, Lambda_b, D+, J/psi, photon, b quark, proton
    columns = {"px": [[20.0] * 7], "py": [[0.0] * 7], "pz": [[0.0] * 7], "E": [[30.0] * 7]}
    momenta = ak.zip(columns, with_name="Momentum4D")
    particles = ak.zip({"id": [ids], "p": momenta}, depth_limit=2)
    assert ak.to_list(physics_data.flavour_hadrons(particles, 5).id) == [[521, 5122]]
    assert ak.to_list(physics_data.flavour_hadrons(particles, 4).id) == [[411, 443]]
    before = physics_data.settings_fingerprint("signal", CHUNK)
    fingerprint = physics_data.settings_fingerprint
    assert fingerprint("ttbar", CHUNK) != before != fingerprint("signal", 7)
    monkeypatch.setitem(DETECTOR, "jet_resolution_constant", 0.1)
    assert physics_data.settings_fingerprint("signal", CHUNK) != before  # a changed detector: other chunks


def test_too_few_events_for_the_splits(generated, capsys):
    root, _ = generated
    with pytest.raises(UsageError, match="cannot fill the higgs splits"):
        physics_data.prepare_physics(root, seed=0, events_per_process=EVENTS, chunk_events=CHUNK)  # 10,000 rows each
    # the command line says it in one line; the chunks it made stay for the next run
    with pytest.raises(SystemExit, match=r"sma-prepare-data: error: .* raise --physics_events above 2,000"):
        prepare.main(["--output_dir", str(root / "cli"), "--corpora", "physics", "--physics_events", "2000"])
    assert len(list((root / "cli" / "physics" / "events").glob("*/chunk-00000.parquet"))) == 2


def test_generating_workers_each_run_on_one_core():
    import multiprocessing

    cores = sorted(os.sched_getaffinity(0))
    context = multiprocessing.get_context("spawn")
    with context.Pool(2, initializer=physics_data._pin_to_one_core, initargs=(cores, context.Value("i", 0))) as pool:
        affinities = pool.map(os.sched_getaffinity, [0] * 4, chunksize=1)
    assert all(len(affinity) == 1 and affinity <= set(cores) for affinity in affinities)
