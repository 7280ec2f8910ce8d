"""`sma-pretrain`: SMA pretraining with accelerate on streamed corpora, from one CPU to many GPUs and nodes.

    sma-pretrain --config_name sma-chemistry-small \
        --train_file "data/chemistry/pretrain/train-*.parquet" \
        --validation_file "data/chemistry/pretrain/validation-*.parquet" \
        --output_dir outputs/sma-chemistry --max_steps 2000

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m sma_hf.tools.pretrain ...  # 2 CPU ranks

Data is read with `datasets.load_dataset(..., streaming=True)` and tokenized (discrete inputs) or feature-extracted
(continuous inputs) batch by batch. Each rank reads its own part of the stream (`split_dataset_by_node`: whole shards
when the shard count divides by the number of ranks), so every example of an epoch is seen by exactly one rank; the
batches are built here and not passed through `accelerator.prepare` (which would split the stream a second time).
The data position (epoch, examples consumed) is checkpointed with the model, the optimizer, the schedule and the
random states, so `--resume_from_checkpoint` continues at the exact step and example.

Layout of `--output_dir`: `model/`, the hub-ready export (weights, config with `auto_map`, code, tokenizer or feature
extractor, README.md, pretraining_summary.json), `checkpoints/checkpoint-<step>/` (complete checkpoints only: each is
written under a temporary name and renamed), `logs/` (TensorBoard) and `pretraining_summary.json`.
"""

import glob
import itertools
import json
import math
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, gather_object, set_seed
from huggingface_hub import create_repo
from tqdm.auto import tqdm
from transformers import AutoModelForMaskedLM, get_cosine_schedule_with_warmup
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

from ..configuration_sma import SMAConfig
from ..feature_extraction_sma import SMAFeatureExtractor
from ..masking_sma import cosine_noise_scale, masked_counts, random_masked_positions
from ..modeling_sma import SMAForMaskedModeling
from .arguments import (
    PRETRAINING,
    HubArguments,
    ModelArguments,
    PretrainingArguments,
    PretrainingDataArguments,
    parse,
    public_arguments,
)
from .colored_noise import colored_noise_masked_positions
from .common import (
    FILE_BUILDERS,
    UsageError,
    check_model_path,
    check_output_dir,
    check_token_budget,
    load_processor,
    load_sma_config,
    max_input_length,
    refuse_to_cut_elements,
    remove_outputs,
    token_budget_batches,
    usable_input,
    write_json_atomic,
)
from .hub import (
    pretraining_card_context,
    push_to_hub,
    render_model_card,
    save_hub_folder,
    sma_card_data,
)
from .mask_health import (
    MASK_FIGURE_FILE,
    draw_masks,
    figure_png,
    hidden_content,
    mask_health,
    mask_leak,
    pairwise_mask_overlap,
    self_guided_masks,
)


logger = logging.get_logger(__name__)

CHECKPOINTS_DIR = "checkpoints"
MODEL_DIR = "model"  # the hub-ready export
SUMMARY_FILE = "pretraining_summary.json"
# what a run writes in --output_dir (and --overwrite_output_dir replaces)
PRETRAINING_OUTPUTS = (MODEL_DIR, CHECKPOINTS_DIR, "logs", SUMMARY_FILE)
CHECKPOINT_PREFIX = "checkpoint-"
# examples used to fit the feature extractor's standardisation when it is not loaded with the model
NORMALIZATION_EXAMPLES = 1000
# --group_by_length sorts windows of this many batches by length
LENGTH_GROUP_BATCHES = 50
# held-out examples whose masks are drawn at each evaluation (TensorBoard) and for the model card
MASK_FIGURE_EXAMPLES = 4


def parse_args(argv=None):
    return parse("sma-pretrain", __doc__.split("\n\n")[0], PRETRAINING, argv)


def resolve_files(pattern: str, flag: str) -> list[str]:
    files = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else ([pattern] if os.path.isfile(pattern) else [])
    if not files:
        raise FileNotFoundError(f"{flag} {pattern!r} matches no file.")
    extensions = {Path(f).suffix for f in files}
    if len(extensions) > 1 or not extensions <= FILE_BUILDERS.keys():
        raise UsageError(
            f"{flag} must name files of one type among {sorted(FILE_BUILDERS)}, got extensions {sorted(extensions)}."
        )
    return files


def load_stream(data: PretrainingDataArguments, split: str):
    """The `datasets.IterableDataset` of one split, or None when there is no held-out split."""
    from datasets import load_dataset

    if data.dataset_name is not None:
        if split == "validation":
            split = data.validation_split_name
        try:
            return load_dataset(data.dataset_name, data.dataset_config_name, split=split, streaming=True)
        except ValueError as error:
            if split == data.validation_split_name:
                logger.warning(f"{data.dataset_name} has no split {split!r} ({error}).")
                return None
            raise
    pattern = data.train_file if split == "train" else data.validation_file
    if pattern is None:
        return None
    flag = "--train_file" if split == "train" else "--validation_file"
    files = resolve_files(pattern, flag)
    return load_dataset(FILE_BUILDERS[Path(files[0]).suffix], data_files=files, split="train", streaming=True)


def first_example(stream, what: str) -> dict:
    try:
        return next(iter(stream))
    except StopIteration:
        raise UsageError(f"The {what} data is empty.") from None
    except Exception as error:  # e.g. pyarrow cannot read a parquet file without rows
        raise UsageError(f"The {what} data is empty or unreadable: {error}") from error


def choose_input_column(example: dict, input_column: str | None) -> str:
    columns = list(example)
    if input_column is not None:
        if input_column not in example:
            raise UsageError(f"--input_column {input_column!r} is not a column of the data; columns: {columns}.")
        return input_column
    candidates = [c for c in columns if c not in ("label", "labels", "id")]
    if len(candidates) != 1:
        raise UsageError(f"Cannot tell the input column among {columns}; pass --input_column.")
    return candidates[0]


class BatchBuilder:
    """Turns raw rows into model batches.

    Discrete inputs are strings encoded by the byte tokenizer; continuous inputs are lists of elements, standardised
    by the feature extractor. Which rows are usable is `common.usable_input`'s rule, shared with `sma-finetune`.
    """

    def __init__(self, processor, config: SMAConfig, input_column: str, max_seq_length: int, cut_asked: bool = False):
        self.processor = processor
        self.config = config
        self.input_column = input_column
        self.max_seq_length = max_seq_length
        self.cut_asked = cut_asked  # --max_seq_length given: continuous rows may be cut (see `refuse_to_cut_elements`)

    def length(self, value) -> int:
        """Elements the model sees (before truncation): bytes plus the appended [SEP], or elements."""
        return len(value.encode()) + 1 if isinstance(value, str) else len(value)

    def collate(self, values: list) -> dict[str, torch.Tensor]:
        if self.config.input_type == "discrete":
            encoded = self.processor(values, truncation=True, max_length=self.max_seq_length)
            return dict(self.processor.pad(encoded, return_tensors="pt"))
        return dict(self.processor(values, truncation=True, max_length=self.max_seq_length, return_tensors="pt"))

    def usable_values(self, rows) -> tuple[list, dict[str, int]]:
        values, skipped = [], {}
        for row in rows:
            value, reason = usable_input(row.get(self.input_column), self.config)
            if reason is None:
                values.append(value)
            else:
                skipped[reason] = skipped.get(reason, 0) + 1
        longest = max((len(value) for value in values), default=0)
        refuse_to_cut_elements(longest, self.config, self.max_seq_length, self.cut_asked)
        return values, skipped


class DataPosition:
    """Where this rank is in its stream, and what it has dropped; saved in checkpoints.

    Rows are read in windows of `group_size` batches: `window_start` is the first row of the current window and
    `batches_done` the number of its batches already used. Kept by hand because `IterableDataset.state_dict()` does
    not restore a shuffle buffer: with datasets 5.2.0, a stream restored 250 rows into an epoch (buffer 100) went on
    with other rows and lost 58 of the epoch's remaining 1,750; re-reading from `window_start` loses none.
    """

    def __init__(self, data_setup: dict | None = None):
        self.data_setup = data_setup or {}  # what must match on resume for the position to mean the same rows
        self.epoch = 0
        self.window_start = 0
        self.batches_done = 0
        self.skipped = {}  # reason -> rows never used (each row counted once)
        self.truncated = 0  # rows cut to max_seq_length (each row counted once)
        self.elements_seen = 0  # input elements of the training batches after truncation ([SEP] included)
        self.history = []  # logged metrics, so that a resumed run's summary covers the whole run
        self.elapsed_s = 0.0  # training wall time before this process started

    def state_dict(self):
        return dict(vars(self))

    def load_state_dict(self, state):
        saved = state["data_setup"]  # a setting a checkpoint predates is not checked
        changed = [
            _change(k, saved[k], self.data_setup[k])
            for k in self.data_setup
            if k in saved and saved[k] != self.data_setup[k]
        ]
        if changed:
            raise UsageError(
                f"The checkpoint was written with other settings ({'; '.join(changed)}); resuming would not continue "
                "the same run: resume with the settings it was started with, or start afresh."
            )
        vars(self).update(state)


def _change(name: str, saved, now) -> str:
    """`name: saved -> now`; of a dict, the entries that differ (`model_config.mask_random_floor: 0.25 -> 0.1`)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        keys = sorted(k for k in {**saved, **now} if saved.get(k) != now.get(k))
        return ", ".join(f"{name}.{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in keys)
    return f"{name}: {saved!r} -> {now!r}"


def rank_stream(stream, seed: int, shuffle_buffer_size: int, rank: int, world_size: int):
    """Shuffle (same order on every rank), then keep this rank's part: whole shards when they divide evenly."""
    from datasets.distributed import split_dataset_by_node

    stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
    if world_size > 1:
        stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
    return stream


def training_batches(stream, builder: BatchBuilder, batch_size: int, position: DataPosition, group_size: int = 1,
                     seed: int = 0, max_tokens: int | None = None):  # fmt: skip
    """Endless batches over this rank's stream, epoch after epoch, starting at `position` and advancing it.

    Rows are read `group_size` batches at a time; with `group_size > 1` a window is sorted by length before it is cut
    into batches (whose order is then shuffled), so that batches hold inputs of similar lengths and little padding.
    A batch holds at most `batch_size` rows and, with `max_tokens`, at most that many padded elements.
    The stream is re-iterated for every epoch with `set_epoch` (a new shuffle order). A resumed run re-reads its
    window from `position.window_start` and skips the batches already used, which reproduces the exact data order.
    """
    while True:
        stream.set_epoch(position.epoch)  # on the object iterated: derived datasets would lose it
        rows = itertools.islice(iter(stream), position.window_start, None)
        epoch_had_rows = position.window_start > 0
        epoch_had_batches = epoch_had_rows  # a resumed epoch yielded batches before the checkpoint
        while True:
            window = list(itertools.islice(rows, batch_size * group_size))
            if not window:
                break
            epoch_had_rows = True
            values, skipped = builder.usable_values(window)
            # each row once: in the first epoch, and not again for a window read again on resume
            if position.epoch == 0 and position.batches_done == 0:
                for reason, count in skipped.items():
                    position.skipped[reason] = position.skipped.get(reason, 0) + count
            if group_size > 1:
                values.sort(key=builder.length)
            model_lengths = [min(builder.length(v), builder.max_seq_length) for v in values]
            cut = token_budget_batches(model_lengths, batch_size, max_tokens)
            batches = [[values[i] for i in batch] for batch in cut]
            if group_size > 1:
                order = np.random.default_rng([seed, position.epoch, position.window_start]).permutation(len(batches))
                batches = [batches[i] for i in order]
            for index in range(position.batches_done, len(batches)):
                epoch_had_batches = True
                position.batches_done = index + 1
                lengths = [builder.length(v) for v in batches[index]]
                if position.epoch == 0:  # each row once
                    position.truncated += sum(length > builder.max_seq_length for length in lengths)
                position.elements_seen += sum(min(length, builder.max_seq_length) for length in lengths)
                yield builder.collate(batches[index])
            position.window_start += len(window)
            position.batches_done = 0
        if not epoch_had_rows:
            raise UsageError("This rank's part of the training data is empty (fewer rows than processes?).")
        if not epoch_had_batches:
            raise UsageError(f"No training row of this rank is usable; rows skipped by reason: {position.skipped}.")
        position.epoch += 1
        position.window_start = 0


def load_model_and_processor(model_args: ModelArguments, max_seq_length: int | None):
    config = load_sma_config(model_args.model_name_or_path, model_args.config_name)
    max_seq_length = max_input_length(max_seq_length, config)
    processor = load_processor(model_args.model_name_or_path, config)
    if config.input_type == "discrete" and len(processor) > config.vocab_size:
        raise UsageError(f"The tokenizer has {len(processor)} ids but the config's vocab_size is {config.vocab_size}.")
    if processor is None:
        processor = SMAFeatureExtractor(input_channels=config.input_channels)  # fitted on the data in `pretrain`
    if model_args.model_name_or_path is not None:
        model = AutoModelForMaskedLM.from_pretrained(model_args.model_name_or_path)
    else:
        model = SMAForMaskedModeling(config)
    return model, processor, max_seq_length


@torch.no_grad()
def evaluate(model: SMAForMaskedModeling, batches: list[dict], seed: int) -> dict[str, float]:
    """Held-out reconstruction loss and mask health, on the same masks at every evaluation.

    - `eval_loss`: loss on seeded uniformly random masks (the no-mask evaluation loss only measures copying);
    - `eval_loss_self_guided`: loss on the model's own self-guided masks (no warm-up noise). Far below `eval_loss`
      means the masks pick what is easy to predict;
    - `mask_overlap_self_guided` / `mask_overlap_random`: mean pairwise Jaccard overlap of the masks of different
      examples (see `pairwise_mask_overlap`). Near 1 means one mask for every example.
    - `mask_leak`: how far the content the model's own masks hide is from what the same positions hold in other
      examples (see `mask_leak`).
    """
    was_training = model.training
    model.eval()
    noise_scales = [m.mask_noise_scale for m in model.modules() if hasattr(m, "mask_noise_scale")]
    model.set_mask_noise_scale(0.0)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    sums = {"random": 0.0, "self_guided": 0.0}
    counts = {"random": 0, "self_guided": 0}
    overlaps = {"random": [], "self_guided": []}
    hidden = []  # (what the own masks hide, what the same positions hold in the next example), per batch
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        valid = batch["attention_mask"].bool()
        masks = {
            "random": random_masked_positions(valid, model.config.masking_ratio, generator),
            "self_guided": model.sma(**batch, sample_mask=True, generator=generator).mask,
        }
        for kind, mask in masks.items():
            if mask.any():
                n = int(mask.sum())
                sums[kind] += float(model(**batch, masked_positions=mask).loss) * n
                counts[kind] += n
                overlaps[kind].append(float(pairwise_mask_overlap(mask, valid)))
                if kind == "self_guided":
                    hidden.append([part.cpu() for part in hidden_content(batch, mask)])
    model.set_mask_noise_scale(noise_scales[0] if noise_scales else 1.0)
    model.train(was_training)
    if counts["random"] == 0:
        raise UsageError("No held-out example is long enough to be masked; the evaluation loss is undefined.")
    return {
        "eval_loss": sums["random"] / counts["random"],
        "eval_loss_self_guided": sums["self_guided"] / max(counts["self_guided"], 1),
        "mask_overlap_random": float(np.nanmean(overlaps["random"])),
        "mask_overlap_self_guided": float(np.nanmean(overlaps["self_guided"])),
        "mask_leak": mask_leak(*(torch.cat(parts) for parts in zip(*hidden))) if hidden else float("nan"),
    }


def checkpoint_step(path: Path) -> int:
    suffix = path.name[len(CHECKPOINT_PREFIX) :]
    if not path.name.startswith(CHECKPOINT_PREFIX) or not suffix.isdigit():
        raise UsageError(f"--resume_from_checkpoint must name a `{CHECKPOINT_PREFIX}<step>` folder, got {path}.")
    return int(suffix)


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (incomplete ones are never renamed to `checkpoint-<step>`)."""
    folder = output_dir / CHECKPOINTS_DIR
    found = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    return None if found is None else Path(found)


def data_position_file(checkpoint: Path, rank: int) -> Path:
    return checkpoint / f"data_position_{rank}.json"


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, position: "DataPosition") -> Path:
    """`accelerator.save_state` plus each rank's data position into a temporary folder, renamed once every rank has
    written its part. Like `save_state`, this assumes that all ranks see one filesystem."""
    final = output_dir / CHECKPOINTS_DIR / f"{CHECKPOINT_PREFIX}{step}"
    partial = output_dir / CHECKPOINTS_DIR / f".partial-{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process:
        for stale in partial.parent.glob(f".partial-{CHECKPOINT_PREFIX}*"):  # left by a run killed mid-write
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    # save_state keeps custom objects of the main process only, but every rank has its own place in the stream
    write_json_atomic(data_position_file(partial, accelerator.process_index), position.state_dict())
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
    accelerator.wait_for_everyone()
    return final


class MaskFigures:
    """Draws the masks the model chooses for a few fixed held-out rows: at each evaluation into TensorBoard, and at the
    end into the hub folder, for the model card."""

    def __init__(self, builder: BatchBuilder, rows: list, grid_shape, seed: int):
        self.rows, self.grid_shape, self.seed = rows, grid_shape, seed
        self.batch = builder.collate(rows) if rows else None

    def draw(self, model):
        masks = self_guided_masks(model, self.batch, self.seed)
        counts = zip(masks.sum(dim=1).tolist(), self.batch["attention_mask"].sum(dim=1).tolist())
        titles = [
            f"held-out example {i}: {masked} of {valid} elements masked" for i, (masked, valid) in enumerate(counts)
        ]
        return draw_masks(self.rows, masks, grid_shape=self.grid_shape, titles=titles)

    def log(self, accelerator: Accelerator, model, step: int):
        tracker = next((t for t in accelerator.trackers if t.name == "tensorboard"), None)
        if self.batch is not None and tracker is not None:
            tracker.writer.add_figure("mask_health/masks", self.draw(model), global_step=step)  # and closes it

    def png(self, model) -> bytes | None:
        return None if self.batch is None else figure_png(self.draw(model))


@dataclass
class Training:
    """What the optimizer steps work on, made once in `pretrain`."""

    accelerator: Accelerator
    model: torch.nn.Module  # prepared by the accelerator
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    position: DataPosition
    output_dir: Path
    masks: Callable[[torch.Tensor], torch.Tensor] | None = None  # valid -> masked_positions, instead of the model's


def pretrain(args, command: str | None = None) -> dict:
    """Run the pretraining described by `args` (see `parse_args`); `command` is recorded in the summary and card."""
    data, training, run, hub = args.data, args.training, args.run, args.hub
    check_model_path(args.model.model_name_or_path)
    if training.overwrite_output_dir and run.resume_from_checkpoint:
        raise UsageError(
            "--overwrite_output_dir removes the checkpoints that --resume_from_checkpoint resumes: pass one."
        )
    output_dir = Path(training.output_dir)
    # every rank checks (and fails alike); one per machine removes an overwritten run's outputs
    stale = check_output_dir(
        training.output_dir, training.overwrite_output_dir, bool(run.resume_from_checkpoint), PRETRAINING_OUTPUTS
    )
    accelerator = make_accelerator(run, output_dir)
    if accelerator.is_local_main_process:
        remove_outputs(stale)
    accelerator.wait_for_everyone()
    set_seed(run.seed)  # the same initial weights on every rank
    model, processor, max_seq_length = load_model_and_processor(args.model, training.max_seq_length)
    check_token_budget(training.max_tokens_per_batch, max_seq_length)
    train_stream = load_stream(data, "train")
    cut_asked = training.max_seq_length is not None
    builder = batch_builder(train_stream, data.input_column, processor, model.config, max_seq_length, cut_asked)
    eval_batches, figure_rows = held_out_batches(
        load_stream(data, "validation"), builder, data.max_eval_samples, run.per_device_eval_batch_size
    )
    if hub.push_to_hub and accelerator.is_main_process:  # a bad token or repo id fails now, not after training
        create_repo(hub.hub_model_id, token=hub.hub_token, exist_ok=True)
    optimizer = torch.optim.AdamW(
        param_groups(model, training.weight_decay), lr=training.learning_rate, betas=(0.9, 0.999)
    )
    # stepped here once per optimizer step (a prepared scheduler would step once per process)
    scheduler = get_cosine_schedule_with_warmup(optimizer, run.warmup_steps, run.max_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    # what must match on resume: for a saved data position to mean the same rows, and the weights this model's
    config = accelerator.unwrap_model(model).config
    position = DataPosition({
        "num_processes": accelerator.num_processes,
        "per_device_train_batch_size": training.per_device_train_batch_size,
        "group_by_length": data.group_by_length,
        "max_tokens_per_batch": training.max_tokens_per_batch,
        "shuffle_buffer_size": data.shuffle_buffer_size,
        "seed": run.seed,
        "mask_noise_color": data.mask_noise_color,
        "model_config": {name: getattr(config, name) for name in SMAConfig.__annotations__},
    })  # fmt: skip
    step = resume_or_seed_ranks(run.resume_from_checkpoint, run.seed, accelerator, position, output_dir)
    stream = rank_stream(
        train_stream, run.seed, data.shuffle_buffer_size, accelerator.process_index, accelerator.num_processes
    )
    group_size = LENGTH_GROUP_BATCHES if data.group_by_length else 1
    batches = training_batches(stream, builder, training.per_device_train_batch_size, position, group_size, run.seed,
                               training.max_tokens_per_batch)  # fmt: skip
    figures = MaskFigures(builder, figure_rows, data.mask_grid_shape, run.seed)
    if run.report_to != "none":
        published = public_arguments(args)
        accelerator.init_trackers(
            "sma_pretrain", config={k: v for k, v in published.items() if isinstance(v, (int, float, str, bool))}
        )
    state = Training(accelerator, model, optimizer, scheduler, position, output_dir, noise_masks(data, config))
    train(state, run, batches, eval_batches, figures, step)
    batch_size = training.per_device_train_batch_size * run.gradient_accumulation_steps * accelerator.num_processes
    summary = run_summary(
        accelerator, position, run.max_steps, batch_size, max_seq_length, public_arguments(args), command
    )
    if accelerator.is_main_process:
        export(accelerator.unwrap_model(model), processor, output_dir, summary, hub, figures)
    accelerator.wait_for_everyone()
    for tracker in accelerator.trackers:  # `end_training` would also end the process group, which `main` owns
        tracker.finish()
    return summary


def noise_masks(data: PretrainingDataArguments, config: SMAConfig) -> Callable | None:
    """ColorMAE's masks of `--mask_noise_color` (drawn from torch's random state, which checkpoints keep), or None."""
    if data.mask_noise_color is None:
        return None
    if config.masking_strategy != "random":
        raise UsageError(
            "--mask_noise_color replaces the model's masks: pretrain a config with masking_strategy='random' (the "
            f"data-independent strategy), got {config.masking_strategy!r}."
        )
    height, width = data.mask_grid_shape

    def masks(valid: torch.Tensor) -> torch.Tensor:
        if valid.shape[1] != height * width or not valid.all():
            lengths = sorted(set(valid.sum(dim=1).tolist()))
            raise UsageError(
                f"--mask_grid_shape {height} {width} holds {height * width} elements, but training rows have "
                f"{lengths}: --mask_noise_color needs every row to be one whole image."
            )
        return colored_noise_masked_positions(valid, config.masking_ratio, (height, width), data.mask_noise_color)

    return masks


def make_accelerator(run: PretrainingArguments, output_dir: Path) -> Accelerator:
    return Accelerator(
        mixed_precision=run.mixed_precision,
        gradient_accumulation_steps=run.gradient_accumulation_steps,
        log_with=None if run.report_to == "none" else run.report_to.split(","),
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )


def batch_builder(
    train_stream, input_column: str | None, processor, config: SMAConfig, max_seq_length: int, cut_asked: bool
) -> BatchBuilder:
    """The builder of batches from the stream's input column; a new feature extractor is fitted on the first rows."""
    input_column = choose_input_column(first_example(train_stream, "training"), input_column)
    builder = BatchBuilder(processor, config, input_column, max_seq_length, cut_asked)
    if config.input_type == "continuous" and not processor.do_normalize:
        sample, _ = builder.usable_values(itertools.islice(iter(train_stream), NORMALIZATION_EXAMPLES))
        if not sample:
            raise UsageError("No usable training example to fit the feature extractor's standardisation on.")
        processor.fit(sample)
    return builder


def held_out_batches(
    validation_stream, builder: BatchBuilder, max_rows: int, batch_size: int
) -> tuple[list[dict], list]:
    """The held-out rows as batches (at most `max_rows` rows), and the first few rows, whose masks are drawn; both
    empty without held-out data."""
    if validation_stream is None:
        logger.warning("No held-out data: neither held-out losses nor mask health will be measured.")
        return [], []
    choose_input_column(first_example(validation_stream, "validation"), builder.input_column)
    values, skipped = builder.usable_values(itertools.islice(iter(validation_stream), max_rows))
    if skipped:
        logger.warning(f"Skipped held-out rows (never used): {skipped}")
    batches = [builder.collate(values[i : i + batch_size]) for i in range(0, len(values), batch_size)]
    ratio = builder.config.masking_ratio
    if not any(masked_counts(batch["attention_mask"].bool(), ratio).sum() > 0 for batch in batches):
        raise UsageError(
            f"No held-out row is usable and long enough to be masked at masking_ratio={ratio}; "
            f"rows skipped by reason: {skipped}."
        )
    return batches, values[:MASK_FIGURE_EXAMPLES]


def resume_or_seed_ranks(
    resume_from_checkpoint: str | None, seed: int, accelerator: Accelerator, position: DataPosition, output_dir: Path
) -> int:
    """Restore the state of `resume_from_checkpoint` ("latest": the newest complete one) and return its step; or
    give each rank its own random state (different masks and dropout per rank) and return 0."""
    if not resume_from_checkpoint:
        set_seed(seed, device_specific=True)
        return 0
    if resume_from_checkpoint == "latest":
        checkpoint = latest_checkpoint(output_dir)
    else:
        checkpoint = Path(resume_from_checkpoint)
    if checkpoint is None or not checkpoint.is_dir():
        raise FileNotFoundError(f"No checkpoint to resume from at {resume_from_checkpoint!r}.")
    step = checkpoint_step(checkpoint)
    accelerator.load_state(str(checkpoint))  # weights, optimizer, schedule, random states of every rank
    # checkpoints fall between optimizer steps: the micro-batch count restarts, whatever accumulation the run had
    accelerator.step = 0
    position_file = data_position_file(checkpoint, accelerator.process_index)
    if not position_file.is_file():
        raise FileNotFoundError(f"{position_file} is missing: was the checkpoint written by fewer processes?")
    position.load_state_dict(json.loads(position_file.read_text()))
    accelerator.print(
        f"Resumed from {checkpoint} at step {step} (epoch {position.epoch}, row {position.window_start})."
    )
    return step


def train(state: Training, run: PretrainingArguments, batches, eval_batches, figures: "MaskFigures", step: int):
    """The optimizer steps from `step` to `run.max_steps`: logging, held-out evaluation and checkpoints on the way."""
    accelerator, position = state.accelerator, state.position
    unwrapped = accelerator.unwrap_model(state.model)
    noise_warmup_steps = round(run.mask_noise_warmup_ratio * run.max_steps)
    progress = tqdm(total=run.max_steps, initial=step, disable=not accelerator.is_local_main_process, desc="pretrain")
    metrics, start = {}, time.time() - position.elapsed_s
    window_loss, window_steps = 0.0, 0
    while step < run.max_steps:
        unwrapped.set_mask_noise_scale(cosine_noise_scale(step, noise_warmup_steps))
        loss, grad_norm = optimizer_step(state, batches, run.gradient_accumulation_steps, run.max_grad_norm, step)
        step += 1
        progress.update(1)
        window_loss += loss
        window_steps += 1
        if step % run.logging_steps == 0 or step == run.max_steps:
            metrics = {
                "train_loss": window_loss / window_steps,
                "learning_rate": state.scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                "epoch": position.epoch,
            }
            if unwrapped.config.masking_strategy == "self_guided":  # random masks have no warm-up noise
                metrics["mask_noise_scale"] = cosine_noise_scale(step - 1, noise_warmup_steps)
            window_loss, window_steps = 0.0, 0
            progress.set_postfix(loss=f"{metrics['train_loss']:.4f}")
        if eval_batches and (step % run.eval_steps == 0 or step == run.max_steps):
            if accelerator.is_main_process:
                metrics.update(evaluate(unwrapped, eval_batches, seed=run.seed))
                health, warnings = mask_health(metrics)
                metrics.update(health)
                progress.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
                for warning in warnings:
                    logger.warning(f"Step {step}: {warning}")
                figures.log(accelerator, unwrapped, step)
            accelerator.wait_for_everyone()
        if metrics:
            accelerator.log(metrics, step=step)
            position.history.append({"step": step, **metrics})
            metrics = {}
        if step % run.save_steps == 0 and step < run.max_steps:
            position.elapsed_s = time.time() - start
            save_checkpoint(accelerator, state.output_dir, step, position)
    progress.close()
    position.elapsed_s = time.time() - start


def optimizer_step(
    state: Training, batches, accumulation_steps: int, max_grad_norm: float, step: int
) -> tuple[float, torch.Tensor]:
    """Optimizer step `step + 1` over `accumulation_steps` batches: its loss (the mean over every rank) and
    gradient norm."""
    accelerator, model, optimizer = state.accelerator, state.model, state.optimizer
    model.train()
    step_loss = torch.zeros((), device=accelerator.device)
    for _ in range(accumulation_steps):
        batch = next(batches)
        # gradients synchronised across ranks on the last micro-batch only; `backward` divides by the accumulation
        if state.masks is not None:
            batch["masked_positions"] = state.masks(batch["attention_mask"].bool())
        with accelerator.accumulate(model):
            loss = model(**{k: v.to(accelerator.device) for k, v in batch.items()}).loss
            accelerator.backward(loss)
        step_loss += loss.detach() / accumulation_steps
    # reduced before the step, so that every rank sees a non-finite loss of any rank and stops together
    mean_loss = float(accelerator.reduce(step_loss, reduction="mean"))
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"Non-finite training loss ({mean_loss}) at step {step + 1}.")
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    if not accelerator.optimizer_step_was_skipped:  # fp16 skips steps whose gradients overflowed
        state.scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return mean_loss, grad_norm


def run_summary(
    accelerator: Accelerator,
    position: DataPosition,
    steps: int,
    batch_size: int,
    max_seq_length: int,
    arguments: dict,
    command: str | None,
) -> dict:
    """What the run did, over every rank: steps, time, hardware, rows skipped or truncated, the logged history."""
    skipped, truncated, elements_seen = {}, 0, 0
    ranks = gather_object([(position.skipped, position.truncated, position.elements_seen)])
    for rank_skipped, rank_truncated, rank_elements in ranks:
        for reason, count in rank_skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
        truncated += rank_truncated
        elements_seen += rank_elements
    if skipped:
        accelerator.print(f"Skipped training rows (never used): {skipped}")
    accelerator.print(f"Rows truncated to {max_seq_length} elements: {truncated}")
    history = position.history
    return {
        "steps": steps,
        "wall_time_s": round(position.elapsed_s, 1),
        "num_processes": accelerator.num_processes,
        "hardware": hardware_description(accelerator),
        "command": command,
        "train_batch_size_total": batch_size,
        "skipped_rows": skipped,  # all ranks, each row once
        "truncated_rows": truncated,
        "elements_seen": elements_seen,  # all ranks, after truncation
        "final": history[-1] if history else {},
        "history": history,
        "args": arguments,
    }


def param_groups(model, weight_decay: float):
    """No weight decay on biases, LayerNorm weights, embedding tables, the latent array and the pooling query."""
    no_decay = set()
    for module in model.modules():
        if isinstance(module, (torch.nn.Embedding, torch.nn.LayerNorm)):
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    decay, plain = [], []
    for name, parameter in model.named_parameters():
        skip = id(parameter) in no_decay or parameter.ndim < 2 or name.endswith(("latents", "query"))
        (plain if skip else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


HUB_TOKEN_FLAGS = ("--hub_token", "--hub-token")  # both spellings HfArgumentParser accepts (abbreviations are off)


def redacted_command(argv: list[str]) -> str:
    argv = list(argv)
    for i, arg in enumerate(argv):
        flag, equals, _ = arg.partition("=")
        if flag in HUB_TOKEN_FLAGS and equals:
            argv[i] = f"{flag}=***"
        elif flag in HUB_TOKEN_FLAGS and i + 1 < len(argv):
            argv[i + 1] = "***"
    return shlex.join(["sma-pretrain", *argv])


def export(model, processor, output_dir: Path, summary: dict, hub: HubArguments, figures: "MaskFigures") -> Path:
    """Write the hub-ready model to `output_dir/model` (and push it if asked); return that folder."""
    write_json_atomic(output_dir / SUMMARY_FILE, summary)
    # the summary travels with the model: `sma-model-card` renders the final card from it
    extra_files = {"pretraining_summary.json": summary}
    figure = figures.png(model)
    if figure is not None:
        extra_files[MASK_FIGURE_FILE] = figure
    card = render_model_card(
        model_id=hub.hub_model_id or output_dir.name,
        results=[],
        card_data=sma_card_data(model.config),
        context=pretraining_card_context(summary, config=model.config, mask_figure=figure is not None),
        domain=hub.model_card_domain,
        template_path=hub.model_card_template,
    )
    model_dir = output_dir / MODEL_DIR
    save_hub_folder(model, processor, model_dir, card, extra_files=extra_files)
    if hub.push_to_hub:
        print(f"Pushed to {push_to_hub(model_dir, hub.hub_model_id, token=hub.hub_token)}")
    return model_dir


def hardware_description(accelerator: Accelerator) -> str:
    if accelerator.device.type == "cuda":
        device = torch.cuda.get_device_name(accelerator.device)
    else:
        device = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    return f"{accelerator.num_processes} x {device}, torch {torch.__version__}"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        pretrain(parse_args(argv), command=redacted_command(argv))
    except (UsageError, FileNotFoundError) as error:  # what the user asked for, said in one line
        sys.exit(f"sma-pretrain: error: {error}")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # gloo sometimes aborts at interpreter exit otherwise


if __name__ == "__main__":
    main()
