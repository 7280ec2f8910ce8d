"""Evidence on molecules: does SMA pretraining pay? Every arm of the protocol (`evidence.py`) on FreeSolv and
solubility, and the chemistry checkpoint with its card.

    python benchmarks/chemistry.py               # the experiment: results under benchmarks/results/chemistry/,
                                                 # the card under model_cards/ (about an hour on 2 CPU cores)
    python benchmarks/chemistry.py --main_job    # README's main job: the self-guided model alone, FreeSolv, its card
    python benchmarks/chemistry.py --smoke       # the whole grid on tiny generated data, in seconds (CI)

The recipe (pretraining and fine-tuning settings below, architecture and masking in the `sma-chemistry-small`
presets) was chosen on validation by `benchmarks/chemistry_recipe_study.py`.
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from evidence import (
    ROOT,
    Experiment,
    card_args,
    card_results,
    cell_label,
    finetune_once,
    pretrain_or_reuse,
    publish,
    run_experiment,
    write_smoke_data,
)
from transformers import AutoModel, AutoTokenizer

from sma_hf.tools.data import prepare_chemistry


MODEL_ID = "sma-hf/sma-chemistry-small"
TASKS = ["freesolv", "solubility"]
PRESETS = {"self_guided": "sma-chemistry-small", "random_masks": "sma-chemistry-small-random-masks"}
# the recipe (chemistry_recipe_study.py's best, 3,000 steps; mean pooling is in the presets): the same for both
# pretrained arms, and the same fine-tuning for every arm and budget
PRETRAIN_ARGS = [
    "--max_steps", "3000", "--per_device_train_batch_size", "64", "--group_by_length",
    "--learning_rate", "5e-4", "--warmup_steps", "300", "--mask_noise_warmup_ratio", "0.25",
    "--eval_steps", "250", "--save_steps", "500", "--logging_steps", "50", "--seed", "0", "--report_to", "none",
    "--model_card_domain", "chemistry",
]  # fmt: skip
FINETUNE_ARGS = ["--num_train_epochs", "30", "--per_device_train_batch_size", "32", "--learning_rate", "3e-4"]
CLASSICAL = [("morgan", "random_forest"), ("morgan", "gradient_boosting")]


def chemistry_experiment(data_dir: Path, smoke: bool) -> Experiment:
    pool = data_dir / "chemistry" / "pretrain"
    data = ["--train_file", str(pool / "train-*.parquet"), "--validation_file", str(pool / "validation-*.parquet")]
    if smoke:
        return Experiment(
            name="chemistry (smoke)",
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
            ],  # fmt: skip
            finetune_args=["--num_train_epochs", "1", "--per_device_train_batch_size", "8"],
            classical=[("morgan", "gradient_boosting")],  # the fast one; both are tested in tests/tools
            data_cards=[],
            seeds=(0, 1),
        )
    return Experiment(
        name="chemistry",
        data_dir=data_dir,
        tasks=TASKS,
        presets=PRESETS,
        pretrain_args=[*data, *PRETRAIN_ARGS],
        finetune_args=FINETUNE_ARGS,
        classical=CLASSICAL,
        data_cards=[data_dir / "chemistry" / "data_card.json"],
    )


def smoke_label(spec: dict, index: int, molecule: str) -> float:
    return float(len(molecule)) + (0.5 if spec["name"] == "solubility" else 0.0)


def prepare_data(data_dir: Path, smoke: bool):
    """The chemistry corpus of `sma-prepare-data`, or, for the smoke run, tiny made-up files of the same layout."""
    if not smoke:
        if not (data_dir / "chemistry" / "data_card.json").is_file():
            prepare_chemistry(data_dir)
        return
    molecules = [f"C{'C' * (i % 7)}{'O' * (i % 3)}{'N' * (i % 2)}{'c1ccccc1' * (i % 2)}" for i in range(60)]
    write_smoke_data(data_dir, "chemistry", "smiles", molecules, TASKS, smoke_label)
    tiny = {"input_type": "discrete", "encoder_type": "self_attention", "max_position_embeddings": 64,
            "embedding_size": 16, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 32, "decoder_hidden_size": 16, "decoder_num_attention_heads": 2,
            "decoder_intermediate_size": 32, "masking_ratio": 0.3, "num_per_query": 3}  # fmt: skip
    (data_dir / "self_guided.json").write_text(
        json.dumps({**tiny, "head_aggregation": "random_mix", "mask_self": True})
    )
    (data_dir / "random_masks.json").write_text(json.dumps({**tiny, "masking_strategy": "random"}))


def chemistry_card_args(data_dir: Path) -> list[str]:
    return card_args("chemistry", MODEL_ID, ["chemistry", "smiles"], data_dir / "chemistry" / "data_card.json")


def main_job(data_dir: Path, work_dir: Path) -> dict:
    """README's main job: prepare the data, pretrain the self-guided model with the recipe, fine-tune it on FreeSolv
    (3 seeds), write its hub-ready folder whose card also cites the committed results of the other arms, load it."""
    started = time.time()
    prepare_data(data_dir, smoke=False)
    experiment = chemistry_experiment(data_dir, smoke=False)
    pretrained = work_dir / "pretrained"
    argv = ["--config_name", PRESETS["self_guided"], *experiment.pretrain_args, "--output_dir", str(pretrained)]
    pretrain_or_reuse(argv, pretrained, PRESETS["self_guided"])
    model_dir = pretrained / "model"
    freesolv = work_dir / "freesolv"
    own = finetune_once(["--model_name_or_path", str(model_dir), "--task", "freesolv", "--data_dir", str(data_dir),
                         "--output_dir", str(freesolv), "--seeds", "0", "1", "2", "--label_fraction", "1",
                         "--label", cell_label("self_guided", 1.0), *FINETUNE_ARGS], freesolv)  # fmt: skip
    committed = ROOT / "benchmarks" / "results" / "chemistry" / "results.json"
    others = []
    if committed.is_file():  # the other arms, from the committed experiment rather than run again
        others = card_results(json.loads(committed.read_text()), TASKS)[1:]
    card = publish(model_dir, [own, *others], chemistry_card_args(data_dir))
    model = AutoModel.from_pretrained(model_dir, classifier_pooling="mean").eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    embeddings = model(**tokenizer(["CCO", "c1ccccc1O"], padding=True, return_tensors="pt")).pooler_output
    rmse = own["test"]["rmse"]
    minutes = (time.time() - started) / 60
    print(f"Loaded {model_dir}: {type(model).__name__}, embeddings {tuple(embeddings.shape)}; card {card}: FreeSolv "
          f"test RMSE {rmse['mean']:.3f} ± {rmse['std']:.3f}; main job {minutes:.1f} min")  # fmt: skip
    return own


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, default=ROOT / "data")
    parser.add_argument("--work_dir", type=Path, default=ROOT / "outputs" / "evidence" / "chemistry")
    parser.add_argument("--results_dir", type=Path, default=ROOT / "benchmarks" / "results" / "chemistry")
    parser.add_argument("--smoke", action="store_true", help="Tiny generated data and model: the plumbing only.")
    parser.add_argument("--main_job", action="store_true", help="README's main job (see the module docstring).")
    args = parser.parse_args(argv)
    if args.main_job:
        return main_job(args.data_dir, args.work_dir / "main_job")
    prepare_data(args.data_dir, args.smoke)
    experiment = chemistry_experiment(args.data_dir, args.smoke)
    command = shlex.join(["python", "benchmarks/chemistry.py", *(argv if argv is not None else sys.argv[1:])])
    record = run_experiment(experiment, args.work_dir, args.results_dir, command)
    card_path = None if args.smoke else ROOT / "model_cards" / "sma-chemistry-small.md"
    model_dir = Path(record["pretraining"]["self_guided"]["model_dir"])
    publish(
        model_dir,
        card_results(record, TASKS),
        chemistry_card_args(args.data_dir),
        card_path,
        figure_dir=args.results_dir,
        checkpoint_dir=(args.work_dir if args.smoke else ROOT) / "checkpoints" / MODEL_ID.split("/")[1],
    )
    return record


if __name__ == "__main__":
    main()
