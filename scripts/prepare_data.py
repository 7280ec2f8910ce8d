"""Prepare the SMA corpora: `python scripts/prepare_data.py --output_dir data [--permute_pixels]` (see --help)."""

from sma_hf.data_preparation_sma import main


if __name__ == "__main__":
    main()
