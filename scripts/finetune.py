"""Fine-tuning: `python scripts/finetune.py --model_name_or_path ... --task ...` is `sma-finetune` (see --help)."""

from sma_hf.finetuning_sma import main


if __name__ == "__main__":
    main()
