"""Run by tests/tools/test_pretraining_sma.py under `accelerate launch` with 2 CPU processes (no test module).

Usage: distributed_pretraining.py DATA_DIR CONFIG_JSON OUTPUT_DIR
Writes OUTPUT_DIR/coverage.json (rows seen per rank in one epoch, for 4 and for 3 shards), runs `sma-pretrain`
(OUTPUT_DIR/run), and compares a run stopped after a checkpoint and resumed with an uninterrupted one
(OUTPUT_DIR/resume.json).
"""

import json
import sys
from pathlib import Path

import datasets.config
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors.torch import load_file

import sma_hf.tools.pretrain as pretraining
from sma_hf import SMAConfig, create_byte_tokenizer
from sma_hf.tools.pretrain import BatchBuilder, DataPosition, load_stream, parse_args, rank_stream, training_batches


def run(argv: list[str]):
    """`sma-pretrain argv` without the process-group teardown at its end, so that several runs share the group."""
    pretraining.pretrain(parse_args(argv))


# datasets sleeps 5 s each time a multi-shard stream's iterator closes (a pyarrow workaround); the tiny corpora here
# end an epoch every few steps
datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0
data_dir, config_path, output_dir = map(Path, sys.argv[1:4])
accelerator = Accelerator()
assert accelerator.num_processes == 2, f"expected 2 processes, got {accelerator.num_processes}"
tokenizer = create_byte_tokenizer(model_max_length=64)
config = SMAConfig(**json.loads(config_path.read_text()))

coverage = {}
for name in ("four_shards", "three_shards"):
    args = parse_args(
        [
            "--config_name",
            str(config_path),
            "--train_file",
            str(data_dir / name / "*.parquet"),
            "--output_dir",
            str(output_dir),
            "--max_steps",
            "1",
        ]
    )
    stream = rank_stream(
        load_stream(args.data, "train"),
        seed=0,
        shuffle_buffer_size=16,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
    )
    position = DataPosition()
    seen = []
    for batch in training_batches(stream, BatchBuilder(tokenizer, config, "smiles", 64), 4, position):
        if position.epoch > 0:
            break
        seen += tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    coverage[name] = gather_object([seen])
if accelerator.is_main_process:
    (output_dir / "coverage.json").write_text(json.dumps(coverage))

run(
    [
        "--config_name",
        str(config_path),
        "--train_file",
        str(data_dir / "four_shards" / "*.parquet"),
        "--output_dir",
        str(output_dir / "run"),
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        "4",
        "--save_steps",
        "2",
        "--report_to",
        "none",
    ]
)

# resume on 2 ranks whose parts differ (3 shards: rows split one by one, 17 and 16), with length-grouped windows


def resume_args(name: str, *extra: str) -> list[str]:
    return ["--config_name", str(config_path), "--train_file", str(data_dir / "three_shards" / "*.parquet"),
            "--output_dir", str(output_dir / name), "--max_steps", "6", "--per_device_train_batch_size", "4",
            "--save_steps", "3", "--group_by_length", "--report_to", "none", *extra]  # fmt: skip


run(resume_args("straight"))
real_save = pretraining.save_checkpoint


def save_then_die(accelerator, checkpoint_root, step, position):
    real_save(accelerator, checkpoint_root, step, position)
    raise KeyboardInterrupt


pretraining.save_checkpoint = save_then_die
try:
    run(resume_args("resumed"))
except KeyboardInterrupt:
    pass
pretraining.save_checkpoint = real_save
run(resume_args("resumed", "--resume_from_checkpoint", "latest"))
if accelerator.is_main_process:
    straight = load_file(output_dir / "straight" / "model" / "model.safetensors")
    resumed = load_file(output_dir / "resumed" / "model" / "model.safetensors")
    difference = max(float((straight[k] - resumed[k]).abs().max()) for k in straight)
    (output_dir / "resume.json").write_text(json.dumps({"max_abs_difference": difference}))
torch.distributed.destroy_process_group()
