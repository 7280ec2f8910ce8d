"""Run by tests/test_pretraining_sma.py under `accelerate launch` with 2 CPU processes (not a test module itself).

Usage: distributed_pretraining.py DATA_DIR CONFIG_JSON OUTPUT_DIR
Writes OUTPUT_DIR/coverage.json (rows seen per rank in one epoch, for 4 and for 3 shards) and runs `sma-pretrain`.
"""

import json
import sys
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import gather_object

from sma_hf import SMAConfig, create_byte_tokenizer
from sma_hf.pretraining_sma import (
    BatchBuilder,
    DataPosition,
    load_stream,
    main,
    parse_args,
    rank_stream,
    training_batches,
)


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
        load_stream(args, "train"),
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

main(
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
