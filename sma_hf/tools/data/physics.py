"""The physics corpus of `sma-prepare-data`: collision events in the layout of the HIGGS data set (Baldi, Sadowski and
Whiteson 2014), simulated at 13 TeV with Pythia 8 and clustered with FastJet, since the UCI file itself cannot be
fetched here. A look-alike, not the UCI data: its numbers are not the paper's.

- signal: gg -> H0 (425 GeV) -> W- H+ (325 GeV), H+ -> W+ h0 (125 GeV), h0 -> b b-bar;
- background: top pairs, t t-bar -> W+ b W- b-bar;
- in both, W+ -> l+ nu (e, mu) and W- -> quarks: the lepton-plus-jets final state the HIGGS features describe.

Reconstruction (`reconstruct`): one isolated lepton, at least four jets (anti-kt, R = 0.4), Gaussian smearing and
b-tag efficiencies (`DETECTOR`), the 28 HIGGS columns (`FEATURES`). Generation runs in seeded chunks of
`CHUNK_EVENTS` events, one pinned process per core; a finished chunk is a parquet file that a re-run reuses, so an
interrupted generation resumes. The optional packages: `pip install "sma_hf[physics]"` (pythia8mc and fastjet are
GPL; this package only calls them).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..common import PHYSICS_EXTRA_HINT, UsageError
from .corpus import (
    dataset_card,
    float_list_array,
    import_optional,
    new_card,
    package_version,
    seeded_rng,
    write_card,
    write_parquet,
    write_shards,
)


CHUNK_EVENTS = 2_000  # about 15 s of one core: what an interruption can lose
PROCESSES = {"ttbar": 0, "signal": 1}  # process -> label
COMMON_SETTINGS = (
    "Beams:eCM = 13000",
    "24:onMode = off",  # W+ -> e+ nu or mu+ nu, W- -> quarks: one lepton, one hadronic W
    "24:onPosIfAny = 11 13",
    "24:onNegIfAny = 1 2 3 4 5",
)
QUIET_SETTINGS = (
    "Next:numberCount = 0",
    "Next:numberShowEvent = 0",
    "Next:numberShowProcess = 0",
    "Next:numberShowInfo = 0",
    "Print:quiet = on",
)
RECONSTRUCTION_VERSION = 2  # raise it whenever `reconstruct` writes other numbers: finished chunks are then remade
PROCESS_SETTINGS = {
    "ttbar": ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on"),
    "signal": (
        "Higgs:useBSM = on",
        "HiggsBSM:gg2H2 = on",
        "HiggsH2:coup2HchgW = 1.0",  # the default 0 closes H0 -> W H+
        "35:m0 = 425",
        "35:doForceWidth = on",  # a narrow H0, as in the HIGGS signal
        "35:mWidth = 1.0",
        "35:onMode = off",
        "35:onIfAny = 37",
        "37:m0 = 325",
        "37:onMode = off",
        "37:onPosIfMatch = 24 25",  # H+ -> W+ h0 only, so that the lepton's W comes from the H+
        "25:m0 = 125",
        "25:onMode = off",
        "25:onIfMatch = 5 -5",
    ),
}
DETECTOR = {
    "lepton_pt_min_gev": 25.0,
    "jet_pt_min_gev": 25.0,
    "eta_max": 2.5,  # leptons and jets
    "calorimeter_eta_max": 4.9,  # the visible particles summed for the missing transverse momentum
    "isolation_cone": 0.3,  # sum of other visible pT within this Delta R below a share of the lepton's pT
    "isolation_max_share": 0.1,
    "jet_radius": 0.4,
    "jet_cluster_pt_min_gev": 10.0,  # jets kept before smearing: what the smearing can lift over the cut
    "jet_resolution_stochastic": 1.0,  # sigma(pT) / pT = sqrt(a^2 / pT + c^2), pT in GeV
    "jet_resolution_constant": 0.05,
    "lepton_resolution": 0.02,  # sigma(pT) / pT
    "missing_et_soft_resolution": 0.5,  # sigma per component = this * sqrt(scalar pT sum of what is in no jet)
    "btag_efficiency": {"b": 0.70, "c": 0.10, "light": 0.01},  # a jet within the jet radius of a b (c) hadron
    "flavour_hadron_pt_min_gev": 5.0,
    "w_mass_gev": 80.4,  # the neutrino's pz from the W mass; the smaller |pz| of the two solutions
    "top_mass_gev": 172.5,  # which b joins the hadronic W in m_jjj
}
FEATURES = (
    "lepton_pt", "lepton_eta", "lepton_phi", "missing_energy_magnitude", "missing_energy_phi",
    "jet1_pt", "jet1_eta", "jet1_phi", "jet1_btag", "jet2_pt", "jet2_eta", "jet2_phi", "jet2_btag",
    "jet3_pt", "jet3_eta", "jet3_phi", "jet3_btag", "jet4_pt", "jet4_eta", "jet4_phi", "jet4_btag",
    "m_jj", "m_jjj", "m_lv", "m_jlv", "m_bb", "m_wbb", "m_wwbb",
)  # fmt: skip
LOG_FEATURES = tuple(name for name in FEATURES if name.endswith("_pt") or name.startswith("m_")) + (
    "missing_energy_magnitude",
)  # GeV-valued, heavy-tailed: log1p before standardising
MASS_DEFINITIONS = {
    "m_jj": "the two of the four leading jets that are not b candidates (the b candidates: tagged jets first, then "
    "the rest, each in pT order; the first two)",
    "m_jjj": "m_jj's jets and the b candidate that brings the mass closest to the top mass",
    "m_lv": "lepton and neutrino (pz from the W mass; the real part where there is no real solution)",
    "m_jlv": "lepton, neutrino and the other b candidate",
    "m_bb": "the two b candidates",
    "m_wbb": "lepton, neutrino and the two b candidates",
    "m_wwbb": "lepton, neutrino and the four jets",
}
# held out from the shuffled events: the labelled task's splits; the pretraining pool is every other event
TASK_SIZES = {"train": 10_000, "validation": 5_000, "test": 10_000}


def _physics_modules():
    """pythia8mc, awkward, fastjet and vector (with its awkward behaviours registered), or the install hint."""
    modules = []
    for name in ("pythia8mc", "awkward", "fastjet", "vector"):
        modules.append(import_optional(name, PHYSICS_EXTRA_HINT))
    modules[3].register_awkward()
    return modules


def generation_settings(process: str) -> tuple[str, ...]:
    """The Pythia settings of a process (without its seed and the quiet output settings)."""
    return COMMON_SETTINGS + PROCESS_SETTINGS[process]


def settings_fingerprint(process: str, chunk_events: int) -> str:
    """What a chunk's rows depend on besides its seed: the settings, the detector, the reconstruction and its
    columns, the chunk size, and the versions of the generator and the jet clustering."""
    described = [generation_settings(process), DETECTOR, RECONSTRUCTION_VERSION, FEATURES, chunk_events,
                 package_version("pythia8mc"), package_version("fastjet")]  # fmt: skip
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:12]


def chunk_seed(seed: int, process: str, chunk: int) -> int:
    """Pythia's seed of one chunk (Pythia takes 1 to 900,000,000)."""
    return int(seeded_rng(seed, f"physics/{process}/{chunk}").integers(1, 900_000_000))


def _mass(*momenta: np.ndarray) -> np.ndarray:
    """Invariant mass of the sum of [n, 4] (px, py, pz, E) arrays."""
    total = np.sum(momenta, axis=0)
    return np.sqrt(np.maximum(total[:, 3] ** 2 - np.sum(total[:, :3] ** 2, axis=1), 0.0))


def _momenta(pt, eta, phi, mass) -> np.ndarray:
    pz = pt * np.sinh(eta)
    energy = np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2)
    return np.stack([pt * np.cos(phi), pt * np.sin(phi), pz, energy], axis=-1)


def neutrino_momenta(lepton: np.ndarray, met_x: np.ndarray, met_y: np.ndarray) -> np.ndarray:
    """[n, 4] neutrino momenta: transverse from the missing momentum, pz from the W mass (the smaller |pz|; the real
    part where the discriminant is negative). `lepton` is [n, 4] (px, py, pz, E) of a massless lepton."""
    w_mass = DETECTOR["w_mass_gev"]
    px, py, pz, energy = lepton.T
    pt2 = px**2 + py**2
    a = w_mass**2 / 2 + px * met_x + py * met_y
    root = np.sqrt(np.maximum(a**2 - pt2 * (met_x**2 + met_y**2), 0.0))
    solutions = np.stack([(a * pz + energy * root) / pt2, (a * pz - energy * root) / pt2])
    nu_z = np.take_along_axis(solutions, np.argmin(np.abs(solutions), axis=0)[None], axis=0)[0]
    return np.stack([met_x, met_y, nu_z, np.sqrt(met_x**2 + met_y**2 + nu_z**2)], axis=-1)


def flavour_hadrons(particles, quark: int):
    """Hadrons carrying a b (5) or c (4) quark above the pT threshold, decayed or not."""
    code = abs(particles.id)
    carries = ((code // 100) % 10 == quark) | ((code // 1000) % 10 == quark)
    return particles[carries & (particles.p.pt > DETECTOR["flavour_hadron_pt_min_gev"])]


def _near_any(ak, jets, hadrons):
    pairs = ak.cartesian({"jet": jets, "hadron": hadrons.p}, nested=True)
    return ak.any(pairs.jet.deltaR(pairs.hadron) < DETECTOR["jet_radius"], axis=-1)


def _momentum4d(ak, momenta, scale=1.0):
    return ak.zip(
        {"px": momenta.px * scale, "py": momenta.py * scale, "pz": momenta.pz * scale, "E": momenta.E * scale},
        with_name="Momentum4D",
    )


def _smeared(ak, momenta, relative_sigma, rng: np.random.Generator):
    """Each object's four-momentum scaled by max(1 + sigma * N(0, 1), 0), sigma per object (jagged like `momenta`)."""
    sigma = ak.to_numpy(ak.flatten(relative_sigma))
    scale = ak.unflatten(np.maximum(1 + sigma * rng.standard_normal(len(sigma)), 0.0), ak.num(momenta))
    return _momentum4d(ak, momenta, scale)


def _transverse_sum(ak, momenta) -> tuple[np.ndarray, np.ndarray]:
    return ak.to_numpy(ak.sum(momenta.px, axis=1)), ak.to_numpy(ak.sum(momenta.py, axis=1))


def reconstruct(events, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, int]]:
    """The [events passing, 28] HIGGS features (`FEATURES`) of a batch of Pythia events (`Pythia.nextBatch`), and how
    many events each cut dropped. Leptons and jets are smeared before they are cut, and the missing transverse
    momentum carries their mismeasurement plus a resolution term for the particles in neither."""
    _, ak, fastjet, _ = _physics_modules()
    particles = events.prt
    final = particles[particles.status > 0]
    code = abs(final.id)
    visible = final[(code != 12) & (code != 14) & (code != 16) & (abs(final.p.eta) < DETECTOR["calorimeter_eta_max"])]
    index = ak.local_index(visible.id)

    # one isolated lepton; a 2% smearing cannot lift a lepton from half the cut over it
    code = abs(visible.id)
    candidate = ((code == 11) | (code == 13)) & (abs(visible.p.eta) < DETECTOR["eta_max"])
    candidate = candidate & (visible.p.pt > 0.5 * DETECTOR["lepton_pt_min_gev"])
    true_leptons, lepton_indices = _momentum4d(ak, visible.p[candidate]), index[candidate]
    resolution = ak.ones_like(true_leptons.pt) * DETECTOR["lepton_resolution"]
    leptons = _smeared(ak, true_leptons, resolution, rng)
    pairs = ak.cartesian({"lepton": true_leptons, "other": visible.p}, nested=True)
    indices = ak.cartesian({"lepton": lepton_indices, "other": index}, nested=True)
    inside = (pairs.lepton.deltaR(pairs.other) < DETECTOR["isolation_cone"]) & (indices.lepton != indices.other)
    cone = ak.sum(ak.where(inside, pairs.other.pt, 0.0), axis=-1)
    chosen = (leptons.pt > DETECTOR["lepton_pt_min_gev"]) & (cone < DETECTOR["isolation_max_share"] * leptons.pt)
    one_lepton = ak.num(leptons[chosen]) == 1
    counts = {"not_one_isolated_lepton": int(len(events) - ak.sum(one_lepton))}
    lepton, true_lepton = ak.firsts(leptons[chosen][one_lepton]), ak.firsts(true_leptons[chosen][one_lepton])
    lepton_index, visible = ak.firsts(lepton_indices[chosen][one_lepton]), visible[one_lepton]
    particles, index = particles[one_lepton], index[one_lepton]

    # jets of every other visible particle, smeared, then cut; at least four
    definition = fastjet.JetDefinition(fastjet.antikt_algorithm, DETECTOR["jet_radius"])
    inputs = _momentum4d(ak, visible[index != lepton_index].p)
    true_jets = fastjet.ClusterSequence(inputs, definition).inclusive_jets(min_pt=DETECTOR["jet_cluster_pt_min_gev"])
    true_jets = _momentum4d(ak, true_jets)
    stochastic, constant = DETECTOR["jet_resolution_stochastic"], DETECTOR["jet_resolution_constant"]
    all_jets = _smeared(ak, true_jets, np.sqrt(stochastic**2 / true_jets.pt + constant**2), rng)

    # missing transverse momentum: minus the visible sum, with the smeared objects in place of the true ones
    visible_x, visible_y = _transverse_sum(ak, visible.p)
    jets_shift_x, jets_shift_y = _transverse_sum(ak, all_jets - true_jets)
    soft = ak.to_numpy(ak.sum(visible.p.pt, axis=1) - ak.sum(true_jets.pt, axis=1) - true_lepton.pt)
    noise = DETECTOR["missing_et_soft_resolution"] * np.sqrt(np.maximum(soft, 0.0))
    lepton_shift_x, lepton_shift_y = ak.to_numpy(lepton.px - true_lepton.px), ak.to_numpy(lepton.py - true_lepton.py)
    met_x = -visible_x - jets_shift_x - lepton_shift_x + noise * rng.standard_normal(len(noise))
    met_y = -visible_y - jets_shift_y - lepton_shift_y + noise * rng.standard_normal(len(noise))

    jets = all_jets[(all_jets.pt > DETECTOR["jet_pt_min_gev"]) & (abs(all_jets.eta) < DETECTOR["eta_max"])]
    jets = jets[ak.argsort(jets.pt, ascending=False)]
    four_jets = ak.to_numpy(ak.num(jets) >= 4)
    counts["fewer_than_four_jets"] = int(len(jets) - four_jets.sum())
    jets, lepton, particles = jets[four_jets][:, :4], lepton[four_jets], particles[four_jets]
    met_x, met_y = met_x[four_jets], met_y[four_jets]
    n = len(jets)
    if n == 0:
        return np.zeros((0, len(FEATURES))), counts

    is_b = _near_any(ak, jets, flavour_hadrons(particles, 5))
    is_c = _near_any(ak, jets, flavour_hadrons(particles, 4))
    efficiency = DETECTOR["btag_efficiency"]
    chance = ak.to_numpy(
        ak.flatten(ak.where(is_b, efficiency["b"], ak.where(is_c, efficiency["c"], efficiency["light"])))
    )
    btag = (rng.random((n, 4)) < chance.reshape(n, 4)).astype(np.float64)

    jet_pt, jet_eta = ak.to_numpy(jets.pt).reshape(n, 4), ak.to_numpy(jets.eta).reshape(n, 4)
    jet_phi, jet_mass = ak.to_numpy(jets.phi).reshape(n, 4), ak.to_numpy(jets.mass).reshape(n, 4)
    lepton_pt, lepton_eta, lepton_phi = ak.to_numpy(lepton.pt), ak.to_numpy(lepton.eta), ak.to_numpy(lepton.phi)
    jet_momenta = _momenta(jet_pt, jet_eta, jet_phi, jet_mass)  # [n, 4 jets, 4]
    lepton_momenta = _momenta(lepton_pt, lepton_eta, lepton_phi, np.zeros(n))
    neutrino = neutrino_momenta(lepton_momenta, met_x, met_y)
    order = np.argsort(-btag, axis=1, kind="stable")  # tagged first, each group in pT order
    rows = np.arange(n)
    b1, b2, j1, j2 = (jet_momenta[rows, order[:, k]] for k in range(4))
    with_b1, with_b2 = _mass(j1, j2, b1), _mass(j1, j2, b2)
    top_mass = DETECTOR["top_mass_gev"]
    first_is_hadronic = np.abs(with_b1 - top_mass) <= np.abs(with_b2 - top_mass)
    leptonic_b = np.where(first_is_hadronic[:, None], b2, b1)
    jets_columns = np.stack([jet_pt, jet_eta, jet_phi, btag], axis=-1).reshape(n, 16)
    features = np.column_stack(
        [
            lepton_pt, lepton_eta, lepton_phi, np.hypot(met_x, met_y), np.arctan2(met_y, met_x), jets_columns,
            _mass(j1, j2), np.where(first_is_hadronic, with_b1, with_b2), _mass(lepton_momenta, neutrino),
            _mass(lepton_momenta, neutrino, leptonic_b), _mass(b1, b2), _mass(lepton_momenta, neutrino, b1, b2),
            _mass(lepton_momenta, neutrino, b1, b2, j1, j2),
        ]
    )  # fmt: skip
    return features, counts


def generate_chunk(process: str, seed: int, chunk: int, chunk_events: int, path: Path) -> dict[str, Any]:
    """Generate and reconstruct one chunk of `chunk_events` events into `path` (atomically); return its record."""
    pythia8mc, ak, _, _ = _physics_modules()
    started = time.perf_counter()
    pythia = pythia8mc.Pythia("", False)
    pythia_seed = chunk_seed(seed, process, chunk)
    seeded = ("Random:setSeed = on", f"Random:seed = {pythia_seed}")
    for setting in (*generation_settings(process), *QUIET_SETTINGS, *seeded):
        if not pythia.readString(setting):
            raise RuntimeError(f"Pythia refused the setting {setting!r}")
    if not pythia.init():
        raise RuntimeError(f"Pythia failed to initialise {process}")
    events = pythia.nextBatch(chunk_events, "none")  # an event Pythia fails to make is None: counted, not redrawn
    failed = ak.is_none(events, axis=0)
    events = events[~failed]
    features, dropped = reconstruct(events, seeded_rng(seed, f"physics/{process}/{chunk}/detector"))
    record = {
        "process": process,
        "chunk": chunk,
        "pythia_seed": pythia_seed,
        "generated": len(events),
        "failed": int(ak.sum(failed)),
        "dropped": dropped,
        "selected": len(features),
        "sigma_gen_mb": pythia.infoPython().sigmaGen(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    columns = {name: pa.array(features[:, i], type=pa.float64()) for i, name in enumerate(FEATURES)}
    table = pa.table(columns).replace_schema_metadata({"sma_chunk": json.dumps(record)})
    write_parquet(table, path)
    return record


def _chunk_record(path: Path) -> dict[str, Any]:
    return json.loads(pq.read_schema(path).metadata[b"sma_chunk"])


def _pin_to_one_core(cores: list[int], counter) -> None:
    """Pool initializer: each worker on a core of its own, so that two generators never share one."""
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    if hasattr(os, "sched_setaffinity"):  # Linux; elsewhere the workers are left to the scheduler
        os.sched_setaffinity(0, {cores[slot % len(cores)]})


def _run_chunk(job: tuple[str, int, int, int, str]) -> dict[str, Any]:
    process, seed, chunk, chunk_events, path = job
    return generate_chunk(process, seed, chunk, chunk_events, Path(path))


def generate_events(
    folder: Path, events_per_process: int, seed: int, workers: int | None = None, chunk_events: int = CHUNK_EVENTS
) -> list[dict]:
    """Every chunk of both processes under `folder/<process>-<settings fingerprint>/`, reusing finished ones; return
    the chunk records in (process, chunk) order."""
    from tqdm.auto import tqdm

    if events_per_process % chunk_events:
        raise UsageError(f"--physics_events must be a multiple of {chunk_events:,} (the events of a chunk)")
    num_chunks = events_per_process // chunk_events
    folders = {process: folder / f"{process}-{settings_fingerprint(process, chunk_events)}" for process in PROCESSES}
    paths = {
        (process, chunk): folders[process] / f"chunk-{chunk:05d}.parquet"
        for process in PROCESSES
        for chunk in range(num_chunks)
    }
    # the seed is not in the fingerprint: it is checked on reading
    records = {key: _chunk_record(path) for key, path in paths.items() if path.is_file()}
    for key, record in records.items():
        if record["pythia_seed"] != chunk_seed(seed, *key):
            raise UsageError(f"{paths[key]} was generated with another --seed; remove {folder} or keep its seed")
    jobs = [(process, seed, chunk, chunk_events, str(path)) for (process, chunk), path in paths.items()
            if (process, chunk) not in records]  # fmt: skip
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count()))
    workers = min(workers or len(cores), len(cores), max(len(jobs), 1))
    if jobs:
        started = time.perf_counter()
        context = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: no inherited state
        counter = context.Value("i", 0)
        with context.Pool(workers, initializer=_pin_to_one_core, initargs=(cores, counter)) as pool:
            bar = tqdm(total=len(jobs) * chunk_events, unit="event", desc=f"physics: {workers} pinned processes")
            for record in pool.imap_unordered(_run_chunk, jobs):
                records[(record["process"], record["chunk"])] = record
                bar.update(chunk_events)
            bar.close()
        seconds = time.perf_counter() - started
        print(f"generated {len(jobs) * chunk_events:,} events in {seconds:.0f} s "
              f"({len(jobs) * chunk_events / seconds:.0f} events/s, {workers} processes)")  # fmt: skip
    return [{**records[key], "path": str(paths[key])} for key in sorted(paths, key=lambda k: (PROCESSES[k[0]], k[1]))]


def model_features(raw: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None):
    """The model's inputs: log1p of the GeV-valued columns (`LOG_FEATURES`), then standardised (with the given
    training statistics, or the rows' own); returns (features, mean, std)."""
    logged = raw.copy()
    for name in LOG_FEATURES:
        column = FEATURES.index(name)
        logged[:, column] = np.log1p(logged[:, column])
    if mean is None:
        mean, std = logged.mean(axis=0), logged.std(axis=0)
        std[std == 0] = 1.0
    return ((logged - mean) / std).astype(np.float32), mean, std


def prepare_physics(
    output_dir: str | os.PathLike,
    seed: int = 0,
    events_per_process: int = 150_000,
    num_shards: int = 4,
    workers: int | None = None,
    chunk_events: int = CHUNK_EVENTS,
    task_sizes: dict[str, int] = TASK_SIZES,
) -> dict[str, Any]:
    """Generate (or reuse) the events, then write the labelled `higgs` splits (`task_sizes` events each), the
    unlabelled pretraining pool and the card; return the card."""
    root = Path(output_dir)
    folder = root / "physics"
    card = new_card("physics", seed)
    records = generate_events(folder / "events", events_per_process, seed, workers, chunk_events)
    by_process = {
        process: pa.concat_tables([pq.read_table(r["path"]) for r in records if r["process"] == process])
        for process in PROCESSES
    }
    balanced = min(table.num_rows for table in by_process.values())
    raw = np.concatenate(
        [np.column_stack([t.column(name).to_numpy() for name in FEATURES])[:balanced] for t in by_process.values()]
    )
    labels = np.repeat(list(PROCESSES.values()), balanced)
    order = seeded_rng(seed, "physics/shuffle").permutation(len(labels))
    raw, labels = raw[order], labels[order]

    if sum(task_sizes.values()) > len(labels):
        raise UsageError(
            f"{len(labels):,} balanced events cannot fill the higgs splits {task_sizes}: raise --physics_events above "
            f"{events_per_process:,}"
        )
    test = slice(0, task_sizes["test"])
    validation = slice(task_sizes["test"], task_sizes["test"] + task_sizes["validation"])
    pool = slice(
        task_sizes["test"] + task_sizes["validation"], len(labels)
    )  # the task's train rows are its first rows
    features, mean, std = model_features(raw[pool])
    named = lambda part: {name: raw[part][:, i].astype(np.float32) for i, name in enumerate(FEATURES)}  # noqa: E731
    files = []
    for split, part in (("train", slice(pool.start, pool.start + task_sizes["train"])), ("validation", validation),
                        ("test", test)):  # fmt: skip
        table = {
            "features": model_features(raw[part], mean, std)[0],
            "label": labels[part].astype(np.int64),
            **named(part),
        }
        files.append(write_parquet(table, folder / "higgs" / f"{split}.parquet", root))
    selected = sum(r["selected"] for r in records)
    card["datasets"]["higgs"] = dataset_card(
        selected,
        {
            "dropped_to_balance_the_classes": selected - 2 * balanced,
            "pretraining_pool_only": len(labels) - sum(task_sizes.values()),
        },
        files,
        "seeded shuffle of the balanced events: test first, then validation, then the labelled train rows (the first "
        "rows of the pretraining pool)",
        info={
            "label": "1 = signal (H0 -> W H+ -> W W h0, h0 -> b b-bar), 0 = top pairs",
            "features_column": "the 28 columns below in order: log1p of the GeV-valued ones, then standardised "
            "with the pretraining pool's statistics",
            "columns": list(FEATURES),
            "log1p_columns": list(LOG_FEATURES),
            "pool_mean": [round(float(v), 8) for v in mean],
            "pool_std": [round(float(v), 8) for v in std],
            "mass_definitions": MASS_DEFINITIONS,
        },
    )
    pool_table = pa.table({"features": float_list_array(features)})
    validation_table = pa.table({"features": float_list_array(model_features(raw[validation], mean, std)[0])})
    pool_files = write_shards(pool_table, folder / "pretrain", "train", num_shards, root)
    pool_files += write_shards(validation_table, folder / "pretrain", "validation", 1, root)
    card["datasets"]["pretrain"] = dataset_card(
        len(labels) - task_sizes["test"],
        {},
        pool_files,
        "every balanced event but the test rows, without labels; its validation split = the higgs validation rows",
        info={"features_column": "as in higgs"},
    )
    card["generation"] = _generation_summary(records, events_per_process, chunk_events)
    card["sources"] = [
        {"package": name, "version": package_version(name), "file": "(event generator)", "rows_read": None}
        for name in ("pythia8mc", "fastjet")
    ]
    card["notes"] += [
        "A 13 TeV look-alike of the UCI HIGGS data set simulated with Pythia 8 (multi-parton interactions, parton "
        "showers and hadronisation on) and FastJet; not the UCI data, so its numbers are not the paper's.",
        "Processes: "
        + "; ".join(f"{p}: {', '.join(PROCESS_SETTINGS[p])}" for p in PROCESSES)
        + f"; both: {', '.join(COMMON_SETTINGS)}.",
        "Detector model (Gaussian smearing, b-tag efficiencies, cuts): " + json.dumps(DETECTOR),
        f"Generation: chunks of {chunk_events} events, Pythia seeded per chunk from --seed; see `generation` in "
        "data_card.json for events generated, dropped per cut and selected per process, and the rate.",
        "The pretraining pool holds the labelled train rows without their labels (as the paper pretrains on the "
        "training set); validation and test rows are never in its train split.",
        "pythia8mc and fastjet are GPL (v2 or later); they generated these files and are not part of sma_hf.",
    ]
    return write_card(folder, card)


def _generation_summary(records: list[dict], events_per_process: int, chunk_events: int) -> dict[str, Any]:
    summary = {"chunk_events": chunk_events, "events_per_process_asked": events_per_process, "processes": {}}
    for process in PROCESSES:
        mine = [r for r in records if r["process"] == process]
        dropped: dict[str, int] = {}
        for record in mine:
            for key, value in record["dropped"].items():
                dropped[key] = dropped.get(key, 0) + value
        generated = sum(r["generated"] for r in mine)
        seconds = sum(r["seconds"] for r in mine)
        summary["processes"][process] = {
            "label": PROCESSES[process],
            "settings": list(generation_settings(process)),
            "chunks": len(mine),
            "generated": generated,
            "failed": sum(r["failed"] for r in mine),
            "dropped": dropped,
            "selected": sum(r["selected"] for r in mine),
            "sigma_gen_mb": float(np.mean([r["sigma_gen_mb"] for r in mine])),
            "events_per_second_per_process": round(generated / seconds, 1),  # its events over its chunks' seconds
            "pythia_seeds": [r["pythia_seed"] for r in mine],
        }
    return summary
