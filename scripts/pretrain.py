"""SMA pretraining: `python scripts/pretrain.py --config_name ... --train_file ...` is `sma-pretrain` (see --help)."""

from sma_hf.pretraining_sma import main


if __name__ == "__main__":
    main()
