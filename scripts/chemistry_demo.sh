#!/usr/bin/env bash
# README's main job, end to end on a CPU: prepare the chemistry corpus, pretrain a small SMA on it, fine-tune it on
# FreeSolv next to two baselines (the same model pretrained with uniformly random masks for the same steps, and the
# same architecture without pretraining), write a hub-ready folder whose card carries the measured FreeSolv test
# RMSE, and load that folder back. Every step is a console script of the sma_hf package.
#   bash scripts/chemistry_demo.sh            # outputs under outputs/, data under data/
#   OUTPUT_DIR=/tmp/run bash scripts/chemistry_demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${DATA_DIR:-data}
OUTPUT_DIR=${OUTPUT_DIR:-outputs}
MODEL_ID=${MODEL_ID:-sma-hf/sma-chemistry-small}
SEEDS=${SEEDS:-"0 1 2"}
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

sma-prepare-data --output_dir "$DATA_DIR" --corpora chemistry

PRETRAIN=(--train_file "$DATA_DIR/chemistry/pretrain/train-*.parquet"
          --validation_file "$DATA_DIR/chemistry/pretrain/validation-*.parquet"
          --model_card_domain chemistry
          --max_steps 2000 --per_device_train_batch_size 64 --group_by_length
          --learning_rate 5e-4 --warmup_steps 200 --mask_noise_warmup_ratio 0.25
          --eval_steps 250 --save_steps 500 --logging_steps 50 --seed 0)
sma-pretrain --config_name sma-chemistry-small "${PRETRAIN[@]}" \
  --output_dir "$OUTPUT_DIR/sma-chemistry-small" --hub_model_id "$MODEL_ID"
sma-pretrain --config_name sma-chemistry-small-random-masks "${PRETRAIN[@]}" \
  --output_dir "$OUTPUT_DIR/sma-chemistry-small-random-masks"

FINETUNE=(--task freesolv --data_dir "$DATA_DIR" --seeds $SEEDS
          --num_train_epochs 30 --per_device_train_batch_size 32 --learning_rate 3e-4)
sma-finetune --model_name_or_path "$OUTPUT_DIR/sma-chemistry-small/model" "${FINETUNE[@]}" \
  --output_dir "$OUTPUT_DIR/freesolv-sma" --label "SMA (self-guided pretraining)"
sma-finetune --model_name_or_path "$OUTPUT_DIR/sma-chemistry-small-random-masks/model" "${FINETUNE[@]}" \
  --output_dir "$OUTPUT_DIR/freesolv-random-masks" --label "Same model, pretrained with random masks"
sma-finetune --config_name sma-chemistry-small "${FINETUNE[@]}" \
  --output_dir "$OUTPUT_DIR/freesolv-scratch" --label "Same architecture, no pretraining"

sma-model-card --model_dir "$OUTPUT_DIR/sma-chemistry-small/model" --domain chemistry \
  --model_id "$MODEL_ID" --tags chemistry smiles --data_card "$DATA_DIR/chemistry/data_card.json" \
  --results "$OUTPUT_DIR/freesolv-sma/results.json" "$OUTPUT_DIR/freesolv-random-masks/results.json" \
            "$OUTPUT_DIR/freesolv-scratch/results.json"

python - "$OUTPUT_DIR/sma-chemistry-small/model" <<'PY'
import sys

from huggingface_hub import ModelCard
from transformers import AutoModel, AutoTokenizer

import sma_hf  # noqa: F401  (registers SMA with the Auto classes)

folder = sys.argv[1]
model = AutoModel.from_pretrained(folder, classifier_pooling="mean").eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
embeddings = model(**tokenizer(["CCO", "c1ccccc1O"], padding=True, return_tensors="pt")).pooler_output
rmse = next(r for r in ModelCard.load(f"{folder}/README.md").data.eval_results if r.metric_type == "rmse")
print(f"Loaded {folder}: {type(model).__name__}, embeddings {tuple(embeddings.shape)}; "
      f"card: FreeSolv test RMSE {rmse.metric_value:.3f} kcal/mol")
PY
