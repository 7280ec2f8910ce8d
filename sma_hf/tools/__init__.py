"""The tools around the SMA model: everything a checkpoint does not need to load and run.

One module per job, each behind a console script (`cli.py`):

- `data/` (`sma-prepare-data`): parquet corpora and data cards from files that pip and Debian packages ship, one
  module per corpus and `corpus.py` for what they share;
- `pretrain.py` (`sma-pretrain`): pretraining with accelerate on streamed corpora;
- `finetune.py` (`sma-finetune`): fine-tuning with `Trainer` on a task spec, several seeds, validation-only selection;
- `hub.py` (`sma-model-card`): model cards, hub-ready folders and pushes to the Hub;
- `mask_health.py`: whether self-guided masks collapsed, and figures of masks (logs, cards, README);
- `baselines.py`: classical baselines and the linear probe's fit (the `data` extra);
- `arguments.py`: every flag of `sma-pretrain` and `sma-finetune` (dataclasses on `HfArgumentParser`);
- `task_data.py`: task specs, their splits and the results record that fine-tuning and baselines write;
- `common.py` and `metrics.py`: what they share.

Package data: `presets/` (SMAConfig presets, `--config_name sma-chemistry-small`), `tasks/` (task specs,
`--task freesolv`) and `templates/` (the model and data card templates). These modules need the `train` extra
(`pip install "sma_hf[train]"`); `data/` also needs the `data` extra for its corpora.
"""
