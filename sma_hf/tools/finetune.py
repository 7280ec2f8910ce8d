"""`sma-finetune`: fine-tune an SMA checkpoint on a labeled task with the transformers `Trainer`.

    sma-finetune --model_name_or_path outputs/sma-chemistry/model --task freesolv \
        --output_dir outputs/freesolv-sma --seeds 0 1 2

A task is a small JSON spec, given by path or by the name of one shipped with the package (`--task freesolv`; see
`sma_hf/tools/tasks/`): data files per split (relative to `--data_dir`), the input and label columns,
`problem_type` ("regression", "single_label_classification" or "token_classification"), the number of labels and
the metric used to select the model. The model is selected on the validation split only (the best epoch by the
task's metric); the test split is read once, at the end, by the selected model. Each seed trains a fresh head; the
results JSON holds every metric on validation and test as mean, sample standard deviation and the per-seed values.

Regression labels are standardised with the training split's mean and std while training (the head then learns
values of order 1) and the transform is folded into the output layer before saving, so the saved model predicts
in the task's own units.
"""

import json
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.utils import logging

from ..configuration_sma import SMAConfig
from ..feature_extraction_sma import SMAFeatureExtractor
from .arguments import (
    FINETUNING,
    CommonTrainingArguments,
    FinetuningArguments,
    ModelArguments,
    parse,
    public_arguments,
)
from .baselines import fit_linear_model
from .common import (
    UsageError,
    check_model_path,
    check_output_dir,
    check_token_budget,
    file_sha256,
    load_processor,
    load_sma_config,
    max_input_length,
    refuse_to_cut_elements,
    remove_outputs,
    token_budget_batches,
    usable_input,
    weights_sha256,
    write_json_atomic,
)
from .metrics import task_metrics
from .task_data import (
    SPLITS,
    class_names,
    label_subset,
    label_subset_indices,
    load_splits,
    load_task,
    results_record,
    table_task,
    usable_rows,
)


RUN_FILE = "finetune_run.json"  # the arguments of the run whose seeds the folder holds
SEED_RESULT_FILE = "result.json"  # in seed-<seed>/, written when that seed ends
# what a run writes in --output_dir (and --overwrite_output_dir replaces)
FINETUNING_OUTPUTS = ("results.json", "seed-*", RUN_FILE)


def regression_label_transform(train, task: dict) -> tuple[float, float] | None:
    """(mean, std) of the training labels of a regression task, which the head learns standardised; else None."""
    if task["problem_type"] != "regression":
        return None
    values = np.asarray(train[task["label_column"]], dtype=np.float64)
    return float(values.mean()), float(values.std()) or 1.0


class Encoder:
    """Turns usable task rows into model features (token ids or element values, and labels)."""

    def __init__(self, task: dict, config: SMAConfig, processor, max_length: int):
        self.task, self.config, self.processor, self.max_length = task, config, processor, max_length

    def encode(self, dataset, label_transform: tuple[float, float] | None):
        def encode_batch(batch):
            return self.features(batch[self.task["input_column"]], batch[self.task["label_column"]], label_transform)

        return dataset.map(encode_batch, batched=True, remove_columns=dataset.column_names)

    def features(self, values, labels, label_transform=None) -> dict:
        task, config = self.task, self.config
        if config.input_type == "discrete":
            features = dict(self.processor(values, truncation=True, max_length=self.max_length))
            # the tokenizer appends [SEP]: the elements that remain are all ids but the last
            kept = [len(ids) - 1 for ids in features["input_ids"]]
        else:
            arrays = [usable_input(v, config)[0] for v in values]
            features = dict(self.processor(arrays, padding=False, truncation=True, max_length=self.max_length))
            features["inputs"] = [x.tolist() for x in features["inputs"]]
            features["attention_mask"] = [m.tolist() for m in features["attention_mask"]]
            kept = [len(x) for x in features["inputs"]]
        if task["problem_type"] == "regression":
            mean, std = label_transform
            features["labels"] = [(float(y) - mean) / std for y in labels]
        elif task["problem_type"] == "single_label_classification":
            features["labels"] = [int(y) for y in labels]
        else:  # one label per element; [SEP] gets -100 (truncated elements are gone with their labels)
            length_key = "input_ids" if config.input_type == "discrete" else "inputs"
            features["labels"] = [
                [int(y) for y in element_labels[:n]] + [-100] * (len(ids) - n)
                for element_labels, ids, n in zip(labels, features[length_key], kept)
            ]
        return features


def load_config(model_args: ModelArguments, classifier_pooling: str | None, task: dict) -> SMAConfig:
    config = load_sma_config(model_args.model_name_or_path, model_args.config_name)
    if task.get("input_type", config.input_type) != config.input_type:
        raise UsageError(
            f"Task {task['name']!r} has {task['input_type']} inputs but the model takes {config.input_type} inputs."
        )
    config.num_labels = task["num_labels"]
    config.problem_type = None if task["problem_type"] == "token_classification" else task["problem_type"]
    config.classifier_pooling = classifier_pooling or config.classifier_pooling
    return config


def fitted_processor(model_name_or_path: str | None, config: SMAConfig, train_values):
    """The checkpoint's processor, or a new one (a feature extractor is fitted on the usable training values)."""
    processor = load_processor(model_name_or_path, config)
    if processor is not None:
        return processor
    checked = (usable_input(value, config) for value in train_values)
    arrays = [array for array, reason in checked if reason is None]  # the others are skipped (and counted) later
    return SMAFeatureExtractor(input_channels=config.input_channels).fit(arrays)


def make_collator(config: SMAConfig, task: dict, processor):
    """transformers' collators: the feature extractor's `pad` also pads per-element labels (the token collator
    reads `input_ids`, which continuous inputs do not have)."""
    if config.input_type == "discrete" and task["problem_type"] == "token_classification":
        return DataCollatorForTokenClassification(processor)
    return DataCollatorWithPadding(processor)


def metrics_in_task_units(task: dict, label_transform):
    """`compute_metrics` for `Trainer`: standardised regression outputs and labels are mapped back first."""

    def compute_metrics(prediction):
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        labels = prediction.label_ids
        if label_transform is not None:
            mean, std = label_transform
            logits, labels = logits * std + mean, labels * std + mean
        return task_metrics(task["problem_type"], logits, labels)

    return compute_metrics


def new_model(model_name_or_path: str | None, config: SMAConfig, task: dict, quiet: bool = False):
    """A fresh model for one seed; `quiet` leaves out transformers' load report (new head weights, unused decoder),
    which is the same for every seed."""
    auto_class = (
        AutoModelForTokenClassification
        if task["problem_type"] == "token_classification"
        else AutoModelForSequenceClassification
    )
    if model_name_or_path is None:
        return auto_class.from_config(config)
    verbosity = logging.get_verbosity()
    if quiet:
        logging.set_verbosity_error()
    try:
        return auto_class.from_pretrained(model_name_or_path, config=config)
    finally:
        logging.set_verbosity(verbosity)


@torch.no_grad()
def fold_label_transform(model, mean: float, std: float):
    """Make the output layer predict `std * output + mean`, i.e. labels in the task's own units."""
    model.classifier.weight.mul_(std)
    model.classifier.bias.mul_(std).add_(mean)


class TokenBudgetBatches(torch.utils.data.Sampler):
    """Training batches of at most `max_rows` rows and `max_tokens` padded elements (`--max_tokens_per_batch`;
    transformers' samplers fix the rows per batch). The batches are cut once, from the rows sorted by length (equal
    lengths in a seeded order), and only their order changes between epochs: every epoch has the same number of
    steps, which `Trainer` counts in advance, and sees every row once."""

    def __init__(self, lengths: list[int], max_rows: int, max_tokens: int, seed: int):
        rng = np.random.default_rng([seed, 1730])  # its own stream, apart from the label budget's (`label_subset`)
        order = np.lexsort((rng.permutation(len(lengths)), np.asarray(lengths)))  # by length, ties in random order
        cut = token_budget_batches([lengths[i] for i in order], max_rows, max_tokens)
        self.batches = [[int(order[i]) for i in batch] for batch in cut]
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for index in np.random.default_rng([self.seed, self.epoch]).permutation(len(self.batches)):
            yield self.batches[index]


class TokenBudgetTrainer(Trainer):
    """`Trainer` whose training batches are `TokenBudgetBatches`."""

    def __init__(self, *args, max_tokens_per_batch: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_tokens_per_batch = max_tokens_per_batch

    def get_train_dataloader(self) -> DataLoader:
        elements = self.processing_class.model_input_names[0]  # input_ids or inputs
        lengths = [len(row) for row in self.train_dataset[elements]]
        batches = TokenBudgetBatches(lengths, self.args.per_device_train_batch_size, self.max_tokens_per_batch,
                                     self.args.seed)  # fmt: skip
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=batches,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)


@dataclass
class Setup:
    """What every seed of a run shares, made once in `finetune`."""

    task: dict
    config: SMAConfig
    rows: dict  # usable rows per split
    encoder: Encoder
    collator: object
    processor: object
    model_name_or_path: str | None  # None: from scratch (`--config_name`)
    # the checkpoint's frozen encoder's pooled embeddings of every row, per split: the same for every seed's probe
    checkpoint_embeddings: dict[str, np.ndarray] = field(default_factory=dict)


def training_arguments(
    finetuning: FinetuningArguments, training: CommonTrainingArguments, setup: Setup, seed: int, output_dir: Path
) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=finetuning.num_train_epochs,
        per_device_train_batch_size=training.per_device_train_batch_size,
        per_device_eval_batch_size=finetuning.per_device_eval_batch_size,
        learning_rate=training.learning_rate,
        weight_decay=training.weight_decay,
        warmup_steps=finetuning.warmup_ratio,  # transformers reads a float below 1 as a share of the steps
        lr_scheduler_type="linear",
        # byte sequences vary in length: batching similar lengths saves most of the padding
        train_sampling_strategy="group_by_length" if setup.config.input_type == "discrete" else "random",
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,  # selected on the validation split
        metric_for_best_model=setup.task["metric"],
        greater_is_better=setup.task["greater_is_better"],
        logging_strategy="epoch",
        # pinned memory only helps copies to an accelerator; without one, torch warns at every evaluation
        dataloader_pin_memory=torch.cuda.is_available(),
        seed=seed,
        report_to="none",
    )


def train_one_seed(
    setup: Setup, finetuning: FinetuningArguments, training: CommonTrainingArguments, seed: int
) -> dict:
    """Fine-tune a fresh model on this seed's label budget, select its best epoch on validation, read the test split
    once, save it."""
    set_seed(seed)
    task, rows = setup.task, setup.rows
    train = label_subset(rows["train"], task, finetuning.label_fraction, seed)
    label_transform = regression_label_transform(train, task)
    encoded = {"train": setup.encoder.encode(train, label_transform)}
    encoded.update({split: setup.encoder.encode(rows[split], label_transform) for split in ("validation", "test")})
    seed_dir = Path(training.output_dir) / f"seed-{seed}"
    shutil.rmtree(seed_dir / "checkpoints", ignore_errors=True)  # an interrupted try of this seed
    patience = finetuning.early_stopping_patience
    if training.max_tokens_per_batch is None:
        trainer_class = Trainer
    else:
        trainer_class = partial(TokenBudgetTrainer, max_tokens_per_batch=training.max_tokens_per_batch)
    trainer = trainer_class(
        model=new_model(setup.model_name_or_path, setup.config, task, quiet=seed != finetuning.seeds[0]),
        args=training_arguments(finetuning, training, setup, seed, seed_dir / "checkpoints"),
        data_collator=setup.collator,
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        processing_class=setup.processor,
        compute_metrics=metrics_in_task_units(task, label_transform),
        callbacks=[EarlyStoppingCallback(patience)] if patience else None,
    )
    trainer.train()
    validation = trainer.evaluate(encoded["validation"], metric_key_prefix="validation")
    test = trainer.predict(encoded["test"], metric_key_prefix="test").metrics
    if label_transform is not None:
        fold_label_transform(trainer.model, *label_transform)
    trainer.save_model(str(seed_dir))
    trainer.state.save_to_json(str(seed_dir / "trainer_state.json"))  # the per-epoch validation history
    shutil.rmtree(seed_dir / "checkpoints", ignore_errors=True)
    return {
        "seed": seed,
        "num_train": len(train),
        "validation": {k.removeprefix("validation_"): v for k, v in validation.items()},
        "test": {k.removeprefix("test_"): v for k, v in test.items()},
        "best_checkpoint": trainer.state.best_model_checkpoint,
    }


def probe_one_seed(setup: Setup, label_fraction: float, seed: int) -> dict:
    """A linear model on the frozen encoder's mean-pooled embeddings (`--linear_probe`): ridge regression or
    logistic regression, its regularisation chosen on validation. The encoder is the checkpoint's (its embeddings
    computed once for every seed), or a randomly initialised one (seeded) with `--config_name`."""
    set_seed(seed)
    task, rows = setup.task, setup.rows
    train = label_subset(rows["train"], task, label_fraction, seed)
    embeddings = encoder_embeddings(setup) if setup.model_name_or_path is None else setup.checkpoint_embeddings
    if not embeddings:
        embeddings.update(encoder_embeddings(setup))
    features = dict(embeddings)
    if label_fraction < 1.0:
        features["train"] = embeddings["train"][label_subset_indices(rows["train"], task, label_fraction, seed)]
    labels = {split: np.asarray(dataset[task["label_column"]]) for split, dataset in (("train", train),
              ("validation", rows["validation"]), ("test", rows["test"]))}  # fmt: skip
    return {"seed": seed, "num_train": len(train), **fit_linear_model(task, features, labels)}


def encoder_embeddings(setup: Setup) -> dict[str, np.ndarray]:
    """Pooled embeddings of every row of each split by the checkpoint's encoder, or by a random one drawn from the
    current seed (`--config_name`)."""
    config = setup.config
    config.classifier_pooling = "mean"  # a pretrained encoder has no trained attention pooler
    if setup.model_name_or_path is None:
        encoder_model = AutoModel.from_config(config)
    else:
        encoder_model = AutoModel.from_pretrained(setup.model_name_or_path, config=config)
    # labels play no part in the embeddings; regression labels are encoded untransformed here
    label_transform = regression_label_transform(setup.rows["train"], setup.task)
    return {
        split: pooled_embeddings(encoder_model.eval(), setup.encoder.encode(dataset, label_transform), setup.collator)
        for split, dataset in setup.rows.items()
    }


@torch.no_grad()
def pooled_embeddings(model, dataset, collator, batch_size: int = 64) -> np.ndarray:
    """[examples, hidden_size] float64 pooled outputs of an `SMAModel`."""
    pooled = []
    for start in range(0, len(dataset), batch_size):
        batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        batch.pop("labels")
        pooled.append(model(**batch).pooler_output.double().numpy())
    return np.concatenate(pooled)


def run_record(args, task: dict, config: SMAConfig) -> dict:
    """What makes two runs the same run, seed for seed: every argument (the list of seeds aside), and what paths and
    names do not pin down: the starting weights (the hash of a local checkpoint's weight files), the data (the hash
    of each split's file) and the model's config as this run resolved it."""
    record = {k: v for k, v in public_arguments(args).items() if k not in ("seeds", "overwrite_output_dir")}
    record["model_sha256"] = weights_sha256(args.model.model_name_or_path)
    record["data_sha256"] = {
        split: file_sha256(Path(args.finetuning.data_dir) / path) for split, path in task["data_files"].items()
    }
    record["config"] = {
        k: v for k, v in config.to_dict().items() if not k.startswith("_") and k != "transformers_version"
    }
    return json.loads(json.dumps(record))  # as it reads back from the file (tuples become lists)


def finetune(args, command: str | None = None) -> dict:
    """Fine-tune (or probe) on every seed and write `results.json` (`command`, the reproducing command line, goes
    into it)."""
    model_args, finetuning, training = args.model, args.finetuning, args.training
    check_model_path(model_args.model_name_or_path)
    output_dir = Path(training.output_dir)
    if finetuning.task is not None:
        task = load_task(finetuning.task)
        splits = load_splits(task, finetuning.data_dir)
    else:
        files = {
            "train": finetuning.train_file,
            "validation": finetuning.validation_file,
            "test": finetuning.test_file,
        }
        task, splits = table_task(
            files, finetuning.input_column, finetuning.label_column, finetuning.problem_type, finetuning.metric
        )
    if finetuning.linear_probe and training.max_tokens_per_batch is not None:
        raise UsageError("--max_tokens_per_batch caps training batches; --linear_probe trains none (fits once).")
    if finetuning.linear_probe and task["problem_type"] == "token_classification":
        raise UsageError("--linear_probe probes pooled embeddings: it needs a sequence-level task, not token labels.")
    config = load_config(model_args, finetuning.classifier_pooling, task)
    skipped = {}
    rows = {split: usable_rows(splits[split], split, task, config, skipped) for split in SPLITS}
    if skipped:
        print(f"Skipped unusable rows per split: {skipped}")
    if task["problem_type"] == "single_label_classification":  # saved with the models: pipelines print the names
        names = class_names(rows, task)
        config.id2label = dict(enumerate(names))
        config.label2id = {class_name: index for index, class_name in enumerate(names)}
    processor = fitted_processor(model_args.model_name_or_path, config, rows["train"][task["input_column"]])
    if config.input_type == "discrete":  # what Trainer would otherwise align, with a warning for every seed
        config.bos_token_id, config.eos_token_id = processor.bos_token_id, processor.eos_token_id
    max_length = max_input_length(training.max_seq_length, config)
    check_token_budget(training.max_tokens_per_batch, max_length)
    if config.input_type == "continuous":  # elements past the model's positions are lost: asked for, or refused
        # a usable row is a list of elements (or, with one channel, of numbers): its length counts its elements
        lengths = {split: [len(value) for value in rows[split][task["input_column"]]] for split in SPLITS}
        longest = max(max(counts) for counts in lengths.values())
        refuse_to_cut_elements(longest, config, max_length, training.max_seq_length is not None)
        cut = {split: sum(n > max_length for n in counts) for split, counts in lengths.items()}
        if any(cut.values()):
            print(f"Rows cut to {max_length} elements per split: {cut}")
    encoder = Encoder(task, config, processor, max_length)
    collator = make_collator(config, task, processor)
    setup = Setup(task, config, rows, encoder, collator, processor, model_args.model_name_or_path)
    # every check passed: the same run (`run_record`) continues, its finished seeds read back, not trained again
    record = run_record(args, task, config)
    run_file = output_dir / RUN_FILE
    continues = run_file.is_file() and json.loads(run_file.read_text()) == record
    remove_outputs(check_output_dir(training.output_dir, training.overwrite_output_dir, continues, FINETUNING_OUTPUTS))
    write_json_atomic(run_file, record)
    runs = []
    for seed in finetuning.seeds:
        seed_file = output_dir / f"seed-{seed}" / SEED_RESULT_FILE
        if seed_file.is_file():
            print(f"seed {seed}: finished by an earlier run of these arguments; read from {seed_file}")
            runs.append(json.loads(seed_file.read_text()))
            continue
        if finetuning.linear_probe:
            run = probe_one_seed(setup, finetuning.label_fraction, seed)
        else:
            run = train_one_seed(setup, finetuning, training, seed)
        write_json_atomic(seed_file, run)  # this seed is done, whatever happens to the next ones
        runs.append(run)
    metric = task["metric"]
    for run in runs:
        print(
            f"seed {run['seed']}: validation {metric} {run['validation'][metric]:.4f}, test {run['test'][metric]:.4f}"
        )
    default_label = model_args.model_name_or_path or f"{model_args.config_name} (from scratch)"
    results = results_record(
        task,
        finetuning.label or default_label + (" (linear probe)" if finetuning.linear_probe else ""),
        model_args.model_name_or_path or model_args.config_name,
        runs,
        {split: len(rows[split]) for split in SPLITS},
        skipped,
        command,
        label_fraction=finetuning.label_fraction,
        protocol="linear probe" if finetuning.linear_probe else "fine-tuning",
        model_sha256=record["model_sha256"],  # which weights "this model" is: `sma-model-card` checks it
    )
    write_json_atomic(output_dir / "results.json", results)
    test = results["test"][metric]
    print(f"{task['name']} test {metric}: {test['mean']:.4f} ± {test['std']:.4f} over {len(finetuning.seeds)} seeds")
    return results


def parse_args(argv=None):
    return parse("sma-finetune", __doc__.split("\n\n")[0], FINETUNING, argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    logging.disable_progress_bar()  # transformers' bars of every checkpoint write; Trainer's own bars stay
    try:
        finetune(parse_args(argv), command=shlex.join(["sma-finetune", *argv]))
    except (UsageError, FileNotFoundError) as error:  # what the user asked for, said in one line
        sys.exit(f"sma-finetune: error: {error}")


if __name__ == "__main__":
    main()
