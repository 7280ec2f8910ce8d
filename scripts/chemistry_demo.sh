#!/usr/bin/env bash
# README's main job, end to end on a CPU: prepare the chemistry corpus (sma-prepare-data), pretrain the self-guided
# SMA model with the chosen recipe (sma-pretrain), fine-tune it on FreeSolv with 3 seeds (sma-finetune), write its
# hub-ready folder whose card carries the measured test RMSE next to the committed results of the other arms
# (sma-model-card), and load that folder back. The recipe and every command line live in benchmarks/chemistry.py
# (`main_job`); each step's exact command is recorded in the folder's pretraining_summary.json and the card.
#   bash scripts/chemistry_demo.sh        # data under data/, outputs under outputs/evidence/chemistry/main_job/
set -euo pipefail
cd "$(dirname "$0")/.."
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
python benchmarks/chemistry.py --main_job "$@"
