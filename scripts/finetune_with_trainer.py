"""Fine-tune a pretrained SMA checkpoint on your own labelled table with a plain `Trainer`: an example to adapt.

    python scripts/finetune_with_trainer.py --model outputs/evidence/chemistry/main_job/pretrained/model \
        --data data/chemistry/freesolv/train.parquet --input_column smiles --label_column label --num_labels 1

Public APIs only (transformers, datasets; `import sma_hf` registers the model, or pass `trust_remote_code=True`). It
holds out a seeded fifth of one parquet, csv or json table of strings and labels as validation, fine-tunes
`AutoModelForSequenceClassification` and evaluates it there after every epoch. `sma-finetune` does the same with a
task spec, several seeds and a test split. For continuous inputs use the checkpoint's `AutoFeatureExtractor`.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from datasets import load_dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

import sma_hf  # noqa: F401  (registers SMA with the Auto classes)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A pretrained SMA folder or Hub id.")
    parser.add_argument("--data", required=True, help="A parquet, csv or json file with inputs and labels.")
    parser.add_argument("--input_column", default="text")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--num_labels", type=int, default=2, help="1 for regression, else the number of classes.")
    parser.add_argument("--output_dir", default="outputs/finetuned")
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--learning_rate", type=float, default=3e-4)
    parser.add_argument("--batch_size", type=int, default=32)
    return parser


def main():
    parser = build_parser()
    args = parser.parse_args()
    regression = args.num_labels == 1
    builder = {".csv": "csv", ".json": "json", ".jsonl": "json"}.get(Path(args.data).suffix, "parquet")
    table = load_dataset(builder, data_files=args.data, split="train")
    # what would otherwise fail mid-run with a bare KeyError or TypeError: said at once, naming the flag
    for flag, column in (("--input_column", args.input_column), ("--label_column", args.label_column)):
        if column not in table.column_names:
            parser.error(f"{flag} {column!r} is not a column of {args.data} (columns: {table.column_names})")
    labels = table[args.label_column]
    missing = sum(y is None or (isinstance(y, float) and not np.isfinite(y)) for y in labels)
    if missing:
        parser.error(f"{missing} rows of --label_column {args.label_column!r} are empty or not finite: drop them")
    if not regression and not all(float(y).is_integer() and 0 <= y < args.num_labels for y in labels):
        parser.error(
            f"--label_column {args.label_column!r} must hold class ids in [0, --num_labels={args.num_labels})"
        )
    splits = table.train_test_split(test_size=0.2, seed=0)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model,
        num_labels=args.num_labels,
        problem_type="regression" if regression else "single_label_classification",
    )

    def preprocess(batch):
        features = tokenizer(
            batch[args.input_column], truncation=True, max_length=model.config.max_position_embeddings
        )
        features["labels"] = [float(y) if regression else int(y) for y in batch[args.label_column]]
        return features

    encoded = splits.map(preprocess, batched=True, remove_columns=splits["train"].column_names)

    def compute_metrics(prediction):
        logits, labels = prediction.predictions, prediction.label_ids
        if regression:
            return {"rmse": float(np.sqrt(np.mean((logits.reshape(-1) - labels) ** 2)))}
        return {"accuracy": float(np.mean(logits.argmax(-1) == labels))}

    training_args = TrainingArguments(
        output_dir=args.output_dir,
        num_train_epochs=args.epochs,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        eval_strategy="epoch",
        save_strategy="no",
        logging_strategy="epoch",
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning only helps copies to a GPU
        report_to="none",
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=encoded["train"],
        eval_dataset=encoded["test"],  # the held-out validation part
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    trainer.train()
    print({key: round(value, 4) for key, value in trainer.evaluate().items()})
    trainer.save_model(args.output_dir)


if __name__ == "__main__":
    main()
