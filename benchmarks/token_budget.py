"""Token-budget batches against `--group_by_length` alone: elements per second and peak memory of `sma-pretrain` on
the protein pool with proteins read up to 2,048 residues.

Both batchings pretrain the protein preset (`cross_attention`, 2,048 residues and [SEP]) for
the same steps from the same seed, each run in a fresh process, alternating (A B A B ...) so that a drift of a shared
machine hits both alike:
  - `group_by_length`: 32 proteins a batch, sorted windows of 50 batches;
  - `token_budget`: up to 128 proteins a batch and at most `--max_tokens_per_batch` padded elements, sorted windows
    of 50 x 128 rows (so it also sorts over a 4x larger window).
Elements per second = elements the model read (residues after truncation, and one [SEP] per protein) / the run's
wall time (its training loop, the final evaluation of 32 held-out proteins and the mask report included: the same
fixed cost in both).

    python benchmarks/token_budget.py --output benchmarks/results/speed/token_budget.json  # 4 runs, ~8 min, 2 cores
    python benchmarks/token_budget.py --smoke                                               # generated proteins (CI)

With `--output`, the tables are written beside the JSON as markdown too.
"""

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from evidence import write_smoke_data
from speed import machine_load

from sma_hf.tools.common import load_sma_config
from sma_hf.tools.pretrain import SUMMARY_FILE


ROOT = Path(__file__).resolve().parents[1]
PRESET = "sma-protein-small"
SMOKE_MAX_RESIDUES = 256
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
    """The protein preset (a tiny model reading SMOKE_MAX_RESIDUES residues and [SEP] for the smoke run), written to
    `path`; the residues it reads."""
    config = load_sma_config(None, PRESET)
    if smoke:
        config.max_position_embeddings = SMOKE_MAX_RESIDUES + 1
        config.num_latents, config.embedding_size, config.hidden_size, config.intermediate_size = 8, 16, 16, 32
        config.decoder_hidden_size, config.decoder_intermediate_size, config.num_hidden_layers = 16, 32, 1
    config.to_json_file(path)
    return config.max_position_embeddings - 1


def write_smoke_pool(data_dir: Path) -> Path:
    """Made-up proteins of 10 to 400 residues (some cut at the smoke model's 256), in the protein pool's layout."""
    rng = np.random.default_rng(0)
    proteins = ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=rng.integers(10, 400))) for _ in range(60)]
    write_smoke_data(data_dir, "proteins", "sequence", proteins, tasks=[], label=None)
    return data_dir / "proteins" / "pretrain"


def protein_pool(data_dir: Path) -> Path:
    pool = data_dir / "proteins" / "pretrain"
    if not any(pool.glob("train-*.parquet")):
        raise SystemExit(f"No protein pool under {pool}: make it with `sma-prepare-data --corpora proteins`.")
    return pool


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
        "elements_seen": summary["elements_seen"],
        "elements_per_s": summary["elements_seen"] / summary["wall_time_s"],
        "truncated_rows": summary["truncated_rows"],
        "peak_rss_mib": int(completed.stdout.split()[-1]) / 1024,
    }


def alternating_runs(arms: dict, config: Path, pool: Path, steps: int, rounds: int, scratch: Path) -> dict:
    """`rounds` runs of each arm, alternating arms within every round."""
    runs = {name: [] for name in arms}
    for round_index in range(rounds):
        for name, flags in arms.items():
            runs[name].append(pretrain(flags, config, pool, steps, scratch / f"{name}-{round_index}"))
    return runs


def markdown(results: dict) -> str:
    lines = [
        f"Protein pool, up to {results['max_residues']:,} residues, {results['steps']} steps per run, "
        f"{results['rounds']} alternating rounds; other processes' CPU use at start / end: "
        f"{results['machine']['other_cpu_use_at_start']} / {results['machine']['other_cpu_use_at_end']}.",
        "",
        "| batching | flags | round | elements seen | wall s | elements/s | peak memory MiB | rows cut |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results["runs"].items():
        flags = " ".join(results["arms"][name])
        for index, run in enumerate(runs):
            lines.append(
                f"| {name} | `{flags}` | {index + 1} | {run['elements_seen']:,} | {run['wall_time_s']:,.0f} "
                f"| {run['elements_per_s']:,.0f} | {run['peak_rss_mib']:,.0f} | {run['truncated_rows']:,} |"
            )
    ratios = ", ".join(f"{ratio:.2f}x" for ratio in results["ratio_per_round"])
    return "\n".join([*lines, "", f"Token budget / group_by_length alone, elements per second, per round: {ratios}"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, default=ROOT / "data")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each batching, alternating")
    parser.add_argument("--smoke", action="store_true", help="tiny generated proteins and model, a few steps (CI)")
    parser.add_argument("--output", type=Path, help="write the results as JSON here (and the tables beside it)")
    args = parser.parse_args(argv)
    arms = SMOKE_ARMS if args.smoke else ARMS
    steps = 5 if args.smoke else args.steps
    start_load = machine_load("start")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        config = scratch / "config.json"
        max_residues = write_config(config, args.smoke)
        pool = write_smoke_pool(scratch / "data") if args.smoke else protein_pool(args.data_dir)
        runs = alternating_runs(arms, config, pool, steps, args.rounds, scratch)
    ratios = [budget["elements_per_s"] / plain["elements_per_s"]
              for plain, budget in zip(runs["group_by_length"], runs["token_budget"])]  # fmt: skip
    results = {
        "max_residues": max_residues,
        "steps": steps,
        "rounds": args.rounds,
        "machine": {**start_load, **machine_load("end")},
        "arms": arms,
        "runs": runs,
        "ratio_per_round": ratios,
        "ratio_median": statistics.median(ratios),
    }
    print(markdown(results))
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
        args.output.with_suffix(".md").write_text(markdown(results) + "\n")
    return results


if __name__ == "__main__":
    main()
