"""Every flag of `sma-pretrain` and `sma-finetune`, as dataclasses parsed by transformers' `HfArgumentParser`; the
flags both take are defined once (`ModelArguments`, `CommonTrainingArguments`). Each dataclass checks its own values
in `__post_init__`, and `parse` reports a bad one as a single line naming the flag (no traceback)."""

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from transformers import HfArgumentParser

from .colored_noise import NOISE_COLORS
from .common import PRESETS_DIR, shipped_names
from .hub import CARD_DOMAINS


def _at_least_one(values: dict):
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}.")


@dataclass
class ModelArguments:
    config_name: str | None = field(
        default=None,
        metadata={
            "help": f"SMAConfig to start from scratch: a shipped preset ({', '.join(shipped_names(PRESETS_DIR))}) "
            "or a JSON path."
        },
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Folder or Hub id of an SMA checkpoint to start from."}
    )

    def __post_init__(self):
        if (self.config_name is None) == (self.model_name_or_path is None):
            raise ValueError("Pass exactly one of --config_name (from scratch) or --model_name_or_path.")


@dataclass
class CommonTrainingArguments:
    output_dir: str = field(metadata={"help": "Where the run writes everything it makes."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace what an earlier run wrote in --output_dir (other files there are kept)."},
    )
    per_device_train_batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    max_seq_length: int | None = field(
        default=None, metadata={"help": "Longer inputs are truncated (default: the model's limit)."}
    )
    max_tokens_per_batch: int | None = field(
        default=None,
        metadata={
            "help": "Cap each training batch at this many padded elements (rows x its longest row): long inputs come "
            "in smaller batches; --per_device_train_batch_size stays the most rows (sma-pretrain: best with "
            "--group_by_length)."
        },
    )

    def __post_init__(self):
        _at_least_one({"per_device_train_batch_size": self.per_device_train_batch_size})
        if self.max_tokens_per_batch is not None:
            _at_least_one({"max_tokens_per_batch": self.max_tokens_per_batch})
        if self.learning_rate <= 0:
            raise ValueError(f"--learning_rate must be > 0, got {self.learning_rate}.")
        if self.weight_decay < 0:
            raise ValueError(f"--weight_decay must be >= 0, got {self.weight_decay}.")


@dataclass
class PretrainingDataArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id (streamed)."})
    dataset_config_name: str | None = None
    train_file: str | None = field(
        default=None, metadata={"help": "Local training files: a path or glob (parquet, json/jsonl, csv, txt)."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Local held-out files (path or glob)."})
    validation_split_name: str = field(default="validation", metadata={"help": "Held-out split of --dataset_name."})
    input_column: str | None = field(
        default=None, metadata={"help": "Column holding the inputs (default: the only non-label column)."}
    )
    shuffle_buffer_size: int = 1000
    group_by_length: bool = field(
        default=False, metadata={"help": "Batch inputs of similar lengths (sorted windows of batches): less padding."}
    )
    max_eval_samples: int = 1000
    mask_grid_shape: list[int] | None = field(
        default=None,
        metadata={
            "help": "HEIGHT WIDTH: draw the masks of grid-shaped inputs (images, row-major) as this grid; sequences "
            "are drawn as text."
        },
    )
    mask_noise_color: Literal[NOISE_COLORS] | None = field(
        default=None,
        metadata={
            "help": "ColorMAE masks instead of the model's: 2-D noise of this colour filtered in the "
            "--mask_grid_shape grid, thresholded to the masking ratio (needs a config with masking_strategy='random')."
        },
    )

    def __post_init__(self):
        if (self.dataset_name is None) == (self.train_file is None):
            raise ValueError("Pass exactly one of --dataset_name or --train_file.")
        _at_least_one({"shuffle_buffer_size": self.shuffle_buffer_size})
        if self.mask_grid_shape is not None and (len(self.mask_grid_shape) != 2 or min(self.mask_grid_shape) < 1):
            raise ValueError(
                f"--mask_grid_shape takes HEIGHT WIDTH (two positive integers), got {self.mask_grid_shape}."
            )
        if self.mask_noise_color is not None and self.mask_grid_shape is None:
            raise ValueError("--mask_noise_color filters noise in the images' grid: give --mask_grid_shape H W.")


@dataclass
class PretrainingArguments:
    max_steps: int = field(metadata={"help": "Optimizer steps (streams have no length)."})
    per_device_eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    mask_noise_warmup_ratio: float = field(
        default=0.25,
        metadata={
            "help": "Share of --max_steps over which the self-guided mask's warm-up noise falls from 1 to 0 (cosine)."
        },
    )
    seed: int = 42
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    logging_steps: int = 10
    eval_steps: int = 200
    save_steps: int = 500
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint folder, or 'latest' for the newest complete one in output_dir."}
    )
    report_to: str = field(default="tensorboard", metadata={"help": "accelerate tracker(s), or 'none'."})

    def __post_init__(self):
        _at_least_one({name: getattr(self, name) for name in ("max_steps", "per_device_eval_batch_size",
                       "gradient_accumulation_steps", "logging_steps", "eval_steps", "save_steps")})  # fmt: skip
        if not 0 <= self.warmup_steps <= self.max_steps:
            raise ValueError(f"--warmup_steps must be in [0, --max_steps], got {self.warmup_steps}.")
        if not 0.0 <= self.mask_noise_warmup_ratio <= 1.0:
            raise ValueError(f"--mask_noise_warmup_ratio must be in [0, 1], got {self.mask_noise_warmup_ratio}.")


@dataclass
class HubArguments:
    push_to_hub: bool = False
    hub_model_id: str | None = field(default=None, metadata={"help": "Repository to push to, e.g. org/sma-chemistry."})
    hub_token: str | None = None
    model_card_domain: str = field(
        default="generic", metadata={"choices": CARD_DOMAINS, "help": "Whose text the model card uses."}
    )
    model_card_template: str | None = field(
        default=None, metadata={"help": "Your own Jinja model card template instead of the shipped one."}
    )

    def __post_init__(self):
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id (e.g. org/sma-chemistry).")
        if self.model_card_template and not Path(self.model_card_template).is_file():  # the card is written last
            raise FileNotFoundError(f"Model card template {self.model_card_template} does not exist.")


@dataclass
class FinetuningArguments:
    task: str | None = field(
        default=None,
        metadata={"help": "Task spec: a shipped name (e.g. freesolv) or a JSON path; or give your table."},
    )
    data_dir: str = field(default="data", metadata={"help": "Root the task's data_files are relative to."})
    train_file: str | None = field(
        default=None, metadata={"help": "Your table instead of --task: the training split."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "With --train_file: the validation split."})
    test_file: str | None = field(default=None, metadata={"help": "With --train_file: the test split."})
    input_column: str | None = field(
        default=None, metadata={"help": "With --train_file: the column of the inputs (default: text)."}
    )
    label_column: str | None = field(
        default=None, metadata={"help": "With --train_file: the column of the labels (default: label)."}
    )
    problem_type: Literal["regression", "single_label_classification", "token_classification"] | None = field(
        default=None,
        metadata={"help": "With --train_file (default: regression for non-integer numbers, else classification)."},
    )
    metric: str | None = field(
        default=None,
        metadata={"help": "With --train_file: what selects the epoch (default: rmse, roc_auc for 2 classes, else "
                  "macro_f1)."},
    )  # fmt: skip
    label: str | None = field(default=None, metadata={"help": "Name of this model in the results and model cards."})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "One model per seed."})
    label_fraction: float = field(
        default=1.0,
        metadata={
            "help": "Label budget: train on this seeded share of the training rows (per seed; stratified by class)."
        },
    )
    linear_probe: bool = field(
        default=False,
        metadata={
            "help": "Fit a linear model on the frozen encoder's mean-pooled embeddings instead of fine-tuning "
            "(needs scikit-learn)."
        },
    )
    num_train_epochs: float = 30
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop a seed once the validation metric has not improved for this many epochs."},
    )
    per_device_eval_batch_size: int = 128
    warmup_ratio: float = 0.1
    classifier_pooling: Literal["attention", "mean"] | None = field(
        default=None, metadata={"help": "Override the config's pooling of the encoder."}
    )

    def __post_init__(self):
        table = {
            "--train_file": self.train_file,
            "--validation_file": self.validation_file,
            "--test_file": self.test_file,
        }
        if (self.task is None) == (self.train_file is None):
            raise ValueError(
                "Pass --task (a task spec) or --train_file, --validation_file and --test_file (your table)."
            )
        if self.task is None and None in table.values():
            missing = [flag for flag, value in table.items() if value is None]
            raise ValueError(f"Your table needs every split: {', '.join(missing)} missing.")
        described = (self.problem_type, self.metric, self.input_column, self.label_column, *table.values())
        if self.task is not None and any(value is not None for value in described):
            raise ValueError(
                "--problem_type, --metric, the columns and the split files describe your table: not with --task."
            )
        if self.task is None:
            self.input_column = self.input_column or "text"
            self.label_column = self.label_column or "label"
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"--label_fraction must be in (0, 1], got {self.label_fraction}.")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        if self.num_train_epochs <= 0:
            raise ValueError(f"--num_train_epochs must be > 0, got {self.num_train_epochs}.")
        _at_least_one({"per_device_eval_batch_size": self.per_device_eval_batch_size})
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(f"--early_stopping_patience must be >= 1, got {self.early_stopping_patience}.")
        if self.early_stopping_patience is not None and self.linear_probe:
            raise ValueError("--early_stopping_patience needs fine-tuning epochs; --linear_probe fits once.")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds must be distinct, got {self.seeds}.")


# each script's groups, by the name the drivers read them under (`args.data.train_file`)
PRETRAINING = {
    "model": ModelArguments,
    "data": PretrainingDataArguments,
    "training": CommonTrainingArguments,
    "run": PretrainingArguments,
    "hub": HubArguments,
}
FINETUNING = {"model": ModelArguments, "finetuning": FinetuningArguments, "training": CommonTrainingArguments}


def parse(program: str, description: str, groups: dict[str, type], argv: list[str] | None) -> argparse.Namespace:
    """The flags of `groups` from `argv`, one dataclass per group under its name; a bad value exits with one line
    naming its flag."""
    # no abbreviated flags: a prefix of --hub_token would escape the redaction of published commands
    parser = HfArgumentParser(tuple(groups.values()), prog=program, description=description, allow_abbrev=False)
    try:
        parsed = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    return argparse.Namespace(**dict(zip(groups, parsed)))


def public_arguments(args: argparse.Namespace) -> dict:
    """Every flag's value, flat, as it may be published (summaries, cards, TensorBoard): without the Hub token."""
    values = {k: v for group in vars(args).values() for k, v in dataclasses.asdict(group).items()}
    return {k: ("***" if k == "hub_token" and v else v) for k, v in values.items()}
