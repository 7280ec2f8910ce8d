"""Token-budget batches against `--group_by_length` alone: residues per second and peak memory of `sma-pretrain` on
the protein pool with proteins read up to 2,048 residues.

Both runs pretrain the protein preset (`cross_attention`, its length raised to 2,048 residues and [SEP]) for the same
steps from the same seed, in fresh processes, one after the other:
  - `group_by_length`: 32 proteins a batch, sorted windows of batches (the protein experiment's batching);
  - `token_budget`: up to 128 proteins a batch, at most `--max_tokens_per_batch` padded residues, sorted windows too.
Residues per second = residues the model read (after truncation) / the training loop's wall time.

    python benchmarks/token_budget.py --output benchmarks/results/token_budget.json  # about 10 minutes on 2 cores
    python benchmarks/token_budget.py --smoke                                        # tiny generated proteins (CI)
"""

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sma_hf.tools.common import load_sma_config
from sma_hf.tools.pretrain import SUMMARY_FILE


ROOT = Path(__file__).resolve().parents[1]
PRESET = "sma-protein-small"
MAX_RESIDUES = 2048
ARMS = {
    "group_by_length": ["--per_device_train_batch_size", "32", "--group_by_length"],
    "token_budget": ["--per_device_train_batch_size", "128", "--group_by_length", "--max_tokens_per_batch", "16384"],
}
SMOKE_ARMS = {
    "group_by_length": ["--per_device_train_batch_size", "8", "--group_by_length"],
    "token_budget": ["--per_device_train_batch_size", "32", "--group_by_length", "--max_tokens_per_batch", "1024"],
}
# the peak resident memory of the child processes this process has waited for, in KiB (Linux's ru_maxrss unit)
PEAK_RSS_OF_CHILD = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def write_config(path: Path, smoke: bool) -> int:
    """The protein preset reading up to MAX_RESIDUES residues and [SEP] (a tiny model reading 256 for the smoke run),
    written to `path`; the residues it reads."""
    config = load_sma_config(None, PRESET)
    config.max_position_embeddings = MAX_RESIDUES + 1
    if smoke:
        config.max_position_embeddings = 257
        config.num_latents, config.embedding_size, config.hidden_size, config.intermediate_size = 8, 16, 16, 32
        config.decoder_hidden_size, config.decoder_intermediate_size, config.num_hidden_layers = 16, 32, 1
    config.to_json_file(path)
    return config.max_position_embeddings - 1


def write_smoke_pool(folder: Path) -> Path:
    """Made-up proteins of 10 to 400 residues (some cut at the smoke model's 256)."""
    rng = np.random.default_rng(0)
    proteins = ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=rng.integers(10, 400))) for _ in range(400)]
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"sequence": proteins[:360]}), folder / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"sequence": proteins[360:]}), folder / "validation-00000-of-00001.parquet")
    return folder


def pretrain(arm_args: list[str], config: Path, pool: Path, steps: int, output_dir: Path) -> dict:
    """One `sma-pretrain` run in a fresh process: its summary and the process's peak resident memory."""
    arguments = [
        "--config_name", str(config), "--input_column", "sequence",
        "--train_file", str(pool / "train-*.parquet"), "--validation_file", str(pool / "validation-*.parquet"),
        "--max_steps", str(steps), "--eval_steps", str(steps), "--max_eval_samples", "32", "--logging_steps", "50",
        "--save_steps", str(steps), "--learning_rate", "5e-4", "--warmup_steps", str(steps // 10), "--seed", "0",
        "--report_to", "none", "--output_dir", str(output_dir), *arm_args,
    ]  # fmt: skip
    command = [sys.executable, "-m", "sma_hf.tools.pretrain", *arguments]
    completed = subprocess.run([sys.executable, "-c", PEAK_RSS_OF_CHILD, *command], capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"sma-pretrain {shlex.join(arguments)} failed:\n{completed.stderr[-3000:]}")
    summary = json.loads((output_dir / SUMMARY_FILE).read_text())
    return {
        "command": shlex.join(["sma-pretrain", *arguments]),
        "steps": summary["steps"],
        "wall_time_s": summary["wall_time_s"],
        "residues_seen": summary["elements_seen"],
        "residues_per_s": summary["elements_seen"] / summary["wall_time_s"],
        "truncated_rows": summary["truncated_rows"],
        "peak_rss_mib": int(completed.stdout.split()[-1]) / 1024,
    }


def markdown(results: dict) -> str:
    lines = [
        f"Protein pool, up to {results['max_residues']:,} residues, {results['steps']} steps each:",
        "",
        "| batching | flags | residues seen | wall s | residues/s | peak memory MiB | rows cut |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, run in results["runs"].items():
        flags = " ".join(results["arms"][name])
        lines.append(
            f"| {name} | `{flags}` | {run['residues_seen']:,} | {run['wall_time_s']:,.0f} "
            f"| {run['residues_per_s']:,.0f} | {run['peak_rss_mib']:,.0f} | {run['truncated_rows']:,} |"
        )
    runs = results["runs"]
    ratio = runs["token_budget"]["residues_per_s"] / runs["group_by_length"]["residues_per_s"]
    return "\n".join([*lines, "", f"Token budget / group_by_length alone, residues per second: {ratio:.2f}x"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, default=ROOT / "data")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--smoke", action="store_true", help="tiny generated proteins and model, a few steps (CI)")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    arms = SMOKE_ARMS if args.smoke else ARMS
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        config = scratch / "config.json"
        max_residues = write_config(config, args.smoke)
        pool = write_smoke_pool(scratch / "pool") if args.smoke else args.data_dir / "proteins" / "pretrain"
        steps = 5 if args.smoke else args.steps
        runs = {name: pretrain(flags, config, pool, steps, scratch / name) for name, flags in arms.items()}
    results = {"max_residues": max_residues, "steps": steps, "arms": arms, "runs": runs}
    print(markdown(results))
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
