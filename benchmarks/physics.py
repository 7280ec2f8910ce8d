"""Evidence on collision events: does SMA pretraining pay on a HIGGS-like benchmark? Every arm of the protocol
(`evidence.py`) on signal-versus-background classification with 1,000 and 10,000 labels, after pretraining on the
unlabelled events; the `sma-physics` checkpoint with its card.

    sma-prepare-data --corpora physics          # the events first (about 20 minutes on 2 cores; `pip install
                                                # "sma_hf[physics]"`); this script makes them when they are missing
    python benchmarks/physics.py                # the experiment: results under benchmarks/results/physics/, the card
                                                # under model_cards/, the checkpoint under checkpoints/ (70 minutes
                                                # on 2 CPU cores)
    python benchmarks/physics.py --smoke        # the whole grid on a few hundred events and a tiny model (CI)

The data are a 13 TeV Pythia 8 look-alike of the UCI HIGGS set (`sma_hf/tools/data/physics.py`), not the UCI data:
the numbers are not the paper's. The recipe follows the authors' HIGGS recipe scaled down (`sma-physics` preset:
self-attention over the 28 columns, width 128, masking ratio 0.2, 3 columns per query, `mask_self`, `random_mix`;
warm-up noise over the first 25% of the steps).
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from evidence import ROOT, Experiment, card_args, card_results, publish, run_experiment

from sma_hf import SMAFeatureExtractor, SMAForMaskedModeling
from sma_hf.tools.common import PRESETS_DIR, TASKS_DIR, write_json_atomic
from sma_hf.tools.data import prepare_physics
from sma_hf.tools.data.physics import FEATURES
from sma_hf.tools.mask_health import self_guided_masks


MODEL_ID = "sma-hf/sma-physics"
TASKS = ["higgs"]
PRESETS = {"self_guided": "sma-physics", "random_masks": "sma-physics-random-masks"}
# the same for both pretrained arms: about 9 minutes each on 2 cores (0.35 s a step), 4 passes over the pool
PRETRAIN_ARGS = [
    "--max_steps", "1500", "--per_device_train_batch_size", "256", "--learning_rate", "1e-3",
    "--warmup_steps", "150", "--mask_noise_warmup_ratio", "0.25", "--eval_steps", "250", "--save_steps", "500",
    "--logging_steps", "50", "--max_eval_samples", "2000", "--seed", "0", "--report_to", "none",
    "--model_card_domain", "physics",
]  # fmt: skip
# the same for every arm and budget: up to 20 epochs, stopped after 3 that do not improve on validation (best kept)
FINETUNE_ARGS = ["--num_train_epochs", "20", "--early_stopping_patience", "3", "--per_device_train_batch_size", "128",
                 "--learning_rate", "5e-4"]  # fmt: skip
BUDGETS = (0.1, 1.0)  # of the 10,000 labelled training events: 1,000 and 10,000 labels
CLASSICAL = [("input", "lightgbm"), ("input", "mlp")]
# the physics objects the 28 columns describe: does the model mask an object's columns together?
OBJECTS = {"lepton": 3, "missing energy": 2, "jet 1": 4, "jet 2": 4, "jet 3": 4, "jet 4": 4, "masses": 7}
COLUMN_MASK_EVENTS = 2000


def physics_experiment(data_dir: Path, smoke: bool) -> Experiment:
    pool = data_dir / "physics" / "pretrain"
    data = ["--train_file", str(pool / "train-*.parquet"), "--validation_file", str(pool / "validation-*.parquet")]
    if smoke:
        return Experiment(
            name="physics (smoke)",
            data_dir=data_dir,
            tasks=[str(data_dir / f"{task}.json") for task in TASKS],
            presets={arm: str(data_dir / f"{arm}.json") for arm in PRESETS},
            pretrain_args=[
                *data,
                "--max_steps",
                "2",
                "--per_device_train_batch_size",
                "8",
                "--eval_steps",
                "2",
                "--report_to",
                "none",
                "--model_card_domain",
                "physics",
            ],  # fmt: skip
            finetune_args=["--num_train_epochs", "1", "--per_device_train_batch_size", "8"],
            classical=[
                ("input", "lightgbm", {"n_estimators": [5]}),
                ("input", "mlp", {"max_iter": [5], "early_stopping": [False]}),  # 4 rows leave none to stop on
            ],
            data_cards=[],
            budgets=BUDGETS,
            seeds=(0, 1),
        )
    return Experiment(
        name="physics",
        data_dir=data_dir,
        tasks=TASKS,
        presets=PRESETS,
        pretrain_args=[*data, *PRETRAIN_ARGS],
        finetune_args=FINETUNE_ARGS,
        classical=CLASSICAL,
        data_cards=[data_dir / "physics" / "data_card.json"],
        budgets=BUDGETS,
    )


def prepare_smoke_data(data_dir: Path):
    """A few hundred events really generated (2 x 400, in chunks of 200), small higgs splits of 40 / 20 / 10, and the
    shipped presets shrunk to a tiny model."""
    prepare_physics(data_dir, events_per_process=400, chunk_events=200,
                    task_sizes={"train": 40, "validation": 20, "test": 10})  # fmt: skip
    spec = json.loads((TASKS_DIR / "higgs.json").read_text())
    (data_dir / "higgs.json").write_text(json.dumps(spec))
    tiny = dict(embedding_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                decoder_hidden_size=16, decoder_num_attention_heads=2, decoder_intermediate_size=32)  # fmt: skip
    for arm, preset in PRESETS.items():
        shipped = json.loads((PRESETS_DIR / f"{preset}.json").read_text())
        (data_dir / f"{arm}.json").write_text(json.dumps({**shipped, **tiny}))


def prepare_data(data_dir: Path, smoke: bool):
    """The physics corpus of `sma-prepare-data` (made when missing), or a few hundred events for the smoke run."""
    if smoke:
        prepare_smoke_data(data_dir)
    elif not (data_dir / "physics" / "data_card.json").is_file():
        prepare_physics(data_dir)


def same_object_share(masks: np.ndarray) -> float:
    """Over every masked column of every event, the share of the event's other masked columns that describe the same
    object (`OBJECTS`)."""
    owner = np.repeat(np.arange(len(OBJECTS)), list(OBJECTS.values()))
    shares = []
    for row in masks:
        masked = owner[row]
        if len(masked) > 1:
            same = (masked[:, None] == masked[None, :]).sum(axis=1) - 1
            shares.append(same / (len(masked) - 1))
    return float(np.concatenate(shares).mean())


def column_masks(model_dir: Path, pool_dir: Path, results_dir: Path) -> dict:
    """Which columns the self-guided model masks, and together with which, on held-out events (against random
    masks of the same size): `column_masks.json` and `column_masks.png`."""
    rows = pq.read_table(sorted(pool_dir.glob("validation-*.parquet"))).column("features").to_pylist()
    rows = rows[:COLUMN_MASK_EVENTS]
    model = SMAForMaskedModeling.from_pretrained(model_dir).eval()
    batch = SMAFeatureExtractor.from_pretrained(model_dir)(rows, return_tensors="pt")
    own = self_guided_masks(model, dict(batch)).numpy()
    size = int(own.sum(axis=1)[0])
    generator = torch.Generator().manual_seed(0)
    random = torch.zeros(own.shape, dtype=torch.bool)
    for row in random:
        row[torch.randperm(own.shape[1], generator=generator)[:size]] = True
    random = random.numpy()
    together = (own[:, :, None] & own[:, None, :]).mean(axis=0) / np.maximum(own.mean(axis=0)[:, None], 1e-9)
    result = {
        "events": len(rows),
        "masked_per_event": size,
        "mask_rate": dict(zip(FEATURES, own.mean(axis=0).round(4).tolist())),
        "same_object_share": {"self_guided": same_object_share(own), "random": same_object_share(random)},
        "masked_together": {name: dict(zip(FEATURES, row.round(4).tolist())) for name, row in zip(FEATURES, together)},
    }
    write_json_atomic(results_dir / "column_masks.json", result)

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (rates, pairs) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1, 1.3]})
    rates.barh(range(len(FEATURES)), own.mean(axis=0), color="C0")
    rates.axvline(size / len(FEATURES), color="0.4", ls=":", label="random masks")
    rates.set(yticks=range(len(FEATURES)), xlabel="share of events with the column masked")
    rates.set_yticklabels(FEATURES, fontsize=6)
    rates.invert_yaxis()
    rates.legend(fontsize=7)
    image = pairs.imshow(together, cmap="viridis", vmin=0, vmax=1)
    pairs.set(xticks=range(len(FEATURES)), yticks=range(len(FEATURES)))
    pairs.set_xticklabels(FEATURES, fontsize=5, rotation=90)
    pairs.set_yticklabels(FEATURES, fontsize=5)
    pairs.set_title("P(column masked | row column masked)", fontsize=8)
    figure.colorbar(image, ax=pairs, fraction=0.046)
    shares = result["same_object_share"]
    figure.suptitle(f"Self-guided masks of {len(rows):,} held-out events: masked columns from the same object "
                    f"{shares['self_guided']:.2f} (random masks {shares['random']:.2f})", fontsize=9)  # fmt: skip
    figure.tight_layout()
    figure.savefig(results_dir / "column_masks.png", dpi=130)
    plt.close(figure)
    return result


def write_column_transform(data_card: Path, folders: list[Path]):
    """`column_transform.json` in each folder: what turns the 28 HIGGS columns into the model's inputs (the order,
    which columns go through log1p, then the pool's mean and std), which a user of the checkpoint needs."""
    info = json.loads(data_card.read_text())["datasets"]["higgs"]["info"]
    transform = {
        "columns": info["columns"],
        "log1p_columns": info["log1p_columns"],
        "mean": info["pool_mean"],
        "std": info["pool_std"],
        "inputs": "(log1p(x) for the log1p columns, x for the others - mean) / std, in the order of columns",
    }
    for folder in folders:
        write_json_atomic(folder / "column_transform.json", transform)


def physics_card_args(data_dir: Path) -> list[str]:
    return card_args("physics", MODEL_ID, ["physics", "tabular"], data_dir / "physics" / "data_card.json")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, default=ROOT / "data")
    parser.add_argument("--work_dir", type=Path, default=ROOT / "outputs" / "evidence" / "physics")
    parser.add_argument("--results_dir", type=Path, default=ROOT / "benchmarks" / "results" / "physics")
    parser.add_argument("--smoke", action="store_true", help="Tiny generated data and model: the plumbing only.")
    args = parser.parse_args(argv)
    prepare_data(args.data_dir, args.smoke)
    experiment = physics_experiment(args.data_dir, args.smoke)
    command = shlex.join(["python", "benchmarks/physics.py", *(argv if argv is not None else sys.argv[1:])])
    record = run_experiment(experiment, args.work_dir, args.results_dir, command)
    card_path = None if args.smoke else ROOT / "model_cards" / "sma-physics.md"
    model_dir = Path(record["pretraining"]["self_guided"]["model_dir"])
    checkpoint_dir = (args.work_dir if args.smoke else ROOT) / "checkpoints" / MODEL_ID.split("/")[1]
    publish(model_dir, card_results(record, TASKS), physics_card_args(args.data_dir), card_path, args.results_dir,
            checkpoint_dir)  # fmt: skip
    write_column_transform(args.data_dir / "physics" / "data_card.json", [model_dir, checkpoint_dir])
    record["column_masks"] = column_masks(model_dir, args.data_dir / "physics" / "pretrain", args.results_dir)
    return record


if __name__ == "__main__":
    main()
